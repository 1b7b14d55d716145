"""The ``sbx`` command line. Commands parse, call the domain code, and print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from gateway.cli import audit as audit_commands
from gateway.cli import bundles as bundle_commands
from gateway.cli import demo as demo_command
from gateway.cli import grants as grant_commands
from gateway.cli import identity as identity_commands
from gateway.cli import sandbox as sandbox_commands
from gateway.cli import serve as serve_command
from gateway.cli.common import fail
from gateway.settings import load_settings

app = typer.Typer(
    name="sbx",
    help="sbx — a secure data-operation sandbox for public data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(audit_commands.app, name="audit")
app.add_typer(grant_commands.app, name="grant")
app.add_typer(identity_commands.org_app, name="org")
app.add_typer(identity_commands.user_app, name="user")
app.add_typer(sandbox_commands.app, name="sandbox")
app.command("demo")(demo_command.demo)
app.command("serve")(serve_command.serve)
app.command("verify-bundle")(bundle_commands.verify_bundle_command)
app.command("verify-evidence")(bundle_commands.verify_evidence_command)


@app.callback()
def configure(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data directory (default: SBX_DATA_DIR or ./var)."),
    ] = None,
) -> None:
    """Load the configuration once for every command."""
    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    try:
        ctx.obj = load_settings(**overrides)
    except (ValidationError, FileNotFoundError) as exc:
        fail(f"invalid configuration: {exc}", code=2)


def main() -> None:
    app()
