"""Shared pytest fixtures."""

from pathlib import Path

import pytest


@pytest.fixture
def shared_real_dir():
    """``../shared/data/real`` beside the repository; skips the test when absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
    if not path.is_dir():
        pytest.skip("../shared is absent")
    return path
