"""What every command shares: consoles, error exits, time formatting, opening the ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from audit import Ledger, LedgerError
from gateway.settings import Settings

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (1: failed, 2: bad usage)."""
    errors.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def ledger_errors() -> Iterator[None]:
    """Turn ledger errors into a one-line message and exit status 1."""
    try:
        yield
    except LedgerError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))


def settings_of(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):  # only when a command is invoked outside `sbx`
        raise RuntimeError("sbx commands need the settings loaded by the `sbx` callback")
    return settings


def open_ledger(settings: Settings, *, create: bool = False) -> Ledger:
    """The deployment's ledger; creates it (and the data directory) only if ``create``."""
    if not create and not (settings.ledger_dir / "LEDGER.json").exists():
        fail(
            f"no ledger at {settings.ledger_dir} (append an entry or run `sbx demo` first)", code=2
        )
    settings.prepare_data_dir()
    return Ledger(settings.ledger_dir, settings.ledger.options())


def format_time(microseconds: int) -> str:
    """An entry time as ISO 8601 in UTC, to the millisecond."""
    moment = datetime.fromtimestamp(microseconds / 1_000_000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry_line(seq: int, value: dict[str, Any]) -> str:
    """One entry as one line of console markup: seq, time, actor, action, object, outcome."""
    detail = json.dumps(value["detail"], ensure_ascii=False) if value.get("detail") else ""
    return (
        f"[dim]{seq:>8}[/] {format_time(value['time'])} [cyan]{escape(value['actor'])}[/] "
        f"[bold]{escape(value['action'])}[/] {escape(value['object'])} → {escape(value['outcome'])}"
        f" [dim]{escape(detail)}[/]"
    ).rstrip()


def short(hex_text: str, length: int = 16) -> str:
    return hex_text[:length] + "…" if len(hex_text) > length else hex_text
