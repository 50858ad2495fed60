"""The wheel ships the npe2 manifest and the weights folder; the editable install finds them.

``napari.yaml`` and ``weights/`` live at the repository root and are reached from the package
through relative symlinks (``src/napari_any2reg/napari.yaml -> ../../napari.yaml``), see
ENVIRONMENT.md. These tests make sure the links become real files in a built wheel.
"""

from __future__ import annotations

import configparser
import re
import importlib.resources
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_resolves_manifest_and_weights():
    package = importlib.resources.files("napari_any2reg")
    manifest = package / "napari.yaml"
    assert manifest.is_file()
    assert "name: napari-any2reg" in manifest.read_text()
    weights = package / "weights"
    assert weights.is_dir()
    assert (weights / "README.md").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = sorted(out.glob("napari_any2reg-*.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    return wheels[0]


@pytest.mark.slow
def test_wheel_contains_real_manifest_and_weights(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "napari_any2reg/napari.yaml" in names
        info = zf.getinfo("napari_any2reg/napari.yaml")
        # a symlink stored as a link would have the S_IFLNK mode bits and hold only a path
        assert (info.external_attr >> 16) & 0o170000 != 0o120000
        text = zf.read("napari_any2reg/napari.yaml").decode()
        assert text.startswith("name: napari-any2reg") or "\nname: napari-any2reg" in text
        assert "contributions:" in text
        assert text.strip() == (ROOT / "napari.yaml").read_text().strip()

        weights = [n for n in names if n.startswith("napari_any2reg/weights/") and not n.endswith("/")]
        assert "napari_any2reg/weights/README.md" in weights
        assert zf.read("napari_any2reg/weights/README.md").strip()
        # only the weights a user picks ship; the manifest marks the others "packaged": false
        import json

        manifest = json.loads(zf.read("napari_any2reg/weights/manifest.json"))
        packaged = {f"napari_any2reg/weights/{name}" for name, entry in manifest.items() if entry.get("packaged", True)}
        assert {n for n in weights if n.endswith(".pt")} == packaged and len(packaged) == 1

        for module in ("__init__.py", "__main__.py", "widgets/registration.py", "widgets/_reader.py"):
            assert f"napari_any2reg/{module}" in names, module

        entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert len(entry_points) == 1
        parser = configparser.ConfigParser()
        parser.read_string(zf.read(entry_points[0]).decode())
    assert parser["napari.manifest"]["napari-any2reg"] == "napari_any2reg:napari.yaml"


@pytest.mark.slow
def test_wheel_manifest_validates(wheel, tmp_path):
    npe2 = pytest.importorskip("npe2")
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("napari_any2reg/napari.yaml", tmp_path)
    manifest = npe2.PluginManifest.from_file(tmp_path / "napari_any2reg" / "napari.yaml")
    assert manifest.name == "napari-any2reg"


# The README stays a short front page (issue 25): under ~10 KB, every local link resolves.
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
