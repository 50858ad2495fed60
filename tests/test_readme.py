"""The README stays a short front page (issue 25): under ~10 KB, every local link resolves."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _local_links(markdown: Path) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", markdown.read_text(encoding="utf-8"))
    return [link for link in links if not re.match(r"[a-z]+://", link)]


def test_readme_is_a_short_front_page():
    # Why: benchmark tables and how-to belong in docs/; a new user reads one screen of set-up.
    assert (ROOT / "README.md").stat().st_size <= 10 * 1024


def test_readme_and_docs_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        for link in _local_links(page):
            target = link.split("#", 1)[0]
            if target and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {link}")
    assert missing == []
