"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webconsole import Console, open_console


@pytest.fixture
def console(database_url: str, tmp_path: Path) -> Iterator[Console]:
    """The gateway with its console, signed in as nobody yet, on each database in turn."""
    yield from open_console(database_url, tmp_path)
