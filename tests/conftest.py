"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The steering repository's ``shared/`` folder, which CI places beside the clone."""
    return Path(os.environ.get("SBX_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    return tmp_path / "ledger"
