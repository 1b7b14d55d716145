"""Generated reference pages match the code they are generated from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_cli_reference_is_current(tmp_path: Path) -> None:
    typer = Path(sys.executable).with_name("typer")
    generated = tmp_path / "cli.md"
    subprocess.run(
        [str(typer), "gateway.cli", "utils", "docs", "--name", "sbx", "--output", str(generated)],
        check=True,
        capture_output=True,
        cwd=REPO_ROOT,
    )
    committed = (REPO_ROOT / "docs" / "reference" / "cli.md").read_text()
    assert generated.read_text() == committed, "docs/reference/cli.md is stale: run `make docs`"


def test_configuration_reference_is_current() -> None:
    from gateway.settings import reference_table

    committed = (REPO_ROOT / "docs" / "reference" / "configuration.md").read_text()
    assert reference_table() in committed, "docs/reference/configuration.md is stale: make docs"
    assert "`web.secure_cookies`" in reference_table()  # nested settings are listed


def test_application_workflow_diagram_is_current() -> None:
    from gateway.applications.workflow import mermaid

    committed = (REPO_ROOT / "docs" / "explanation" / "applications.md").read_text()
    assert f"```mermaid\n{mermaid()}\n```" in committed, "the workflow diagram is stale: make docs"
