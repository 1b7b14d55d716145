"""``sbx audit``: append to, verify, prove, checkpoint, export, read and witness the audit
ledger."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from audit import Checkpoint, Ledger, LedgerError, canonical, entry
from audit.verify import Report, format_report, read_witnessed, verify
from audit.witness import Outcome
from audit.witness import format_report as format_witness_report
from audit.witness import witness as run_witness
from audit.witness_sources import TOKEN_ENV, open_source
from gateway.cli.common import (
    console,
    entry_line,
    errors,
    fail,
    format_time,
    ledger_errors,
    open_ledger,
    settings_of,
    short,
)

app = typer.Typer(
    help="The audit ledger: append, verify, prove, checkpoint, export, tail, witness.",
    no_args_is_help=True,
)
prove_app = typer.Typer(
    help="Produce Merkle proofs against signed checkpoints.", no_args_is_help=True
)
app.add_typer(prove_app, name="prove")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, ensure_ascii=False))


@app.command()
def append(
    ctx: typer.Context,
    action: Annotated[str, typer.Option(help="What was done, e.g. dataset.register.")],
    actor: Annotated[str, typer.Option(help="Who did it, e.g. user:alice.")],
    object: Annotated[str, typer.Option("--object", help="What it was done to, e.g. dataset:42.")],  # noqa: A002
    outcome: Annotated[str, typer.Option(help="How it ended.")] = "ok",
    detail: Annotated[str | None, typer.Option(help="A JSON object with anything else.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Append one entry; returns once it is durable."""
    details: dict[str, Any] | None = None
    if detail is not None:
        try:
            details = canonical.decode(detail.encode())
        except canonical.CanonicalError as exc:
            raise typer.BadParameter(
                f"not valid JSON for the ledger: {exc}", param_hint="--detail"
            ) from None
        if not isinstance(details, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--detail")
    with ledger_errors(), open_ledger(settings_of(ctx), create=True) as ledger:
        receipt = ledger.append(
            action=action, actor=actor, object=object, outcome=outcome, detail=details
        )
    if as_json:
        print_json({"leaf_hash": receipt.leaf_hash.hex(), "seq": receipt.seq, "time": receipt.time})
    else:
        console.print(
            f"appended seq [bold]{receipt.seq}[/] at {format_time(receipt.time)} "
            f"(leaf {short(receipt.leaf_hash.hex())})"
        )


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    archive: Annotated[
        Path | None, typer.Option(help="Verify this archive instead of the ledger.")
    ] = None,
    trusted_key: Annotated[
        list[str] | None, typer.Option(help="Key id the first key must be.")
    ] = None,
    witness: Annotated[
        list[Path] | None, typer.Option(help="File of checkpoints seen earlier.")
    ] = None,
    deep: Annotated[bool, typer.Option(help="Parse every entry in full as well.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check the whole ledger (or an archive). Exit 0 only if intact; otherwise print the
    first bad sequence number and why, and exit 1."""
    path = archive if archive is not None else settings_of(ctx).ledger_dir
    if not path.exists():
        fail(f"{path} does not exist", code=2)
    try:
        witnessed = read_witnessed(witness or [])
    except (OSError, LedgerError) as exc:
        fail(f"cannot read the witness file: {exc}", code=2)
    report = _verify_with_progress(path, trusted_key or None, witnessed, deep, quiet=as_json)
    if as_json:
        print_json(report.to_dict())
    else:
        first, *rest = format_report(report).splitlines()
        console.print(f"[bold {'green' if report.ok else 'red'}]{first}[/]")
        for line in rest:
            console.print(line, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)


def _verify_with_progress(
    path: Path, trusted: list[str] | None, witnessed: list[Checkpoint], deep: bool, quiet: bool
) -> Report:
    if quiet or not errors.is_terminal:
        return verify(path, trusted_keys=trusted, witnessed=witnessed, deep=deep)
    columns = (
        TextColumn("verifying"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=errors, transient=True) as progress:
        task = progress.add_task("verify", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return verify(path, trusted_keys=trusted, witnessed=witnessed, deep=deep, progress=advance)


@prove_app.command("inclusion")
def prove_inclusion(
    ctx: typer.Context,
    seq: Annotated[int, typer.Argument(help="Sequence number of the entry.", min=0)],
    size: Annotated[int | None, typer.Option(help="Tree size of an existing checkpoint.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Prove that entry SEQ is in the tree of a signed checkpoint."""
    with ledger_errors(), open_ledger(settings_of(ctx)) as ledger:
        proof = ledger.prove_inclusion(seq, size)
        proof.verify(ledger.keychain())
    if as_json:
        print_json(proof.to_dict())
        return
    table = _proof_table(f"Inclusion of seq {seq}", proof.checkpoint)
    table.add_row("entry", proof.entry.decode())
    table.add_row("leaf hash", proof.leaf_hash.hex())
    for number, node in enumerate(proof.path):
        table.add_row(f"path[{number}]", node.hex())
    console.print(table)
    console.print(
        f"[green]verified[/]: {len(proof.path)} hashes lead from the entry to the signed root"
    )


@prove_app.command("consistency")
def prove_consistency(
    ctx: typer.Context,
    old: Annotated[int, typer.Argument(help="Tree size of the older checkpoint.", min=1)],
    new: Annotated[
        int | None, typer.Argument(help="Tree size of the newer one (default: latest).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Prove that the tree at checkpoint OLD is a prefix of the tree at checkpoint NEW."""
    with ledger_errors(), open_ledger(settings_of(ctx)) as ledger:
        proof = ledger.prove_consistency(old, new)
        proof.verify(ledger.keychain())
    if as_json:
        print_json(proof.to_dict())
        return
    table = _proof_table(f"Consistency {proof.old.size} → {proof.new.size}", proof.new)
    table.add_row("old root", proof.old.root.hex())
    for number, node in enumerate(proof.path):
        table.add_row(f"path[{number}]", node.hex())
    console.print(table)
    console.print(f"[green]verified[/]: nothing before entry {proof.old.size} was changed")


def _proof_table(title: str, checkpoint: Checkpoint) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("tree size", str(checkpoint.size))
    table.add_row("root", checkpoint.root.hex())
    table.add_row("signed", f"{format_time(checkpoint.time)} by key {short(checkpoint.key_id)}")
    return table


@app.command()
def checkpoint(
    ctx: typer.Context,
    list_all: Annotated[bool, typer.Option("--list", help="List all checkpoints instead.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Sign a checkpoint of the current tree now (or list the checkpoints)."""
    with ledger_errors(), open_ledger(settings_of(ctx)) as ledger:
        checkpoints = ledger.checkpoints() if list_all else [ledger.checkpoint()]
    if as_json:
        print_json([cp.to_dict() for cp in checkpoints] if list_all else checkpoints[0].to_dict())
        return
    table = Table(title="Checkpoints" if list_all else "Latest checkpoint")
    for column in ("size", "root", "time", "key"):
        table.add_column(column, overflow="fold")
    for cp in checkpoints:
        table.add_row(str(cp.size), cp.root.hex(), format_time(cp.time), short(cp.key_id))
    console.print(table)


@app.command()
def export(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Archive to write (.tar, or .tar.gz to compress).")],
    first: Annotated[int, typer.Option("--from", help="First seq.", min=0)] = 0,
    last: Annotated[
        int | None, typer.Option("--to", help="Last seq (default: the newest).", min=0)
    ] = None,
) -> None:
    """Write a self-contained archive that verifies with `python -m audit.verify` alone."""
    if path.exists():
        fail(f"{path} already exists; choose another name", code=2)
    with ledger_errors(), open_ledger(settings_of(ctx)) as ledger:
        end = ledger.size - 1 if last is None else last
        manifest = ledger.export(first, end, path)
    span = manifest["entries"]
    console.print(
        f"wrote [bold]{path}[/]: entries {span['first']}..{span['last']} "
        f"({span['count']:,}), covered by the checkpoint of size {manifest['checkpoint']['size']}"
    )
    console.print(f"verify anywhere with: python -m audit.verify {path}")


@app.command()
def tail(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many entries.", min=1)] = 10,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show the newest entries."""
    with ledger_errors(), open_ledger(settings_of(ctx)) as ledger:
        start = max(0, ledger.size - lines)
        start = _print_entries(ledger, start, as_json)
        while follow:
            time.sleep(0.5)
            start = _print_entries(ledger, start, as_json)


def _print_entries(ledger: Ledger, start: int, as_json: bool) -> int:
    for seq, line in ledger.entries(start):
        if as_json:
            console.print(line.decode(), soft_wrap=True, markup=False)
        else:
            console.print(entry_line(seq, entry.parse(line)), soft_wrap=True)
        start = seq + 1
    return start


@app.command("rotate-key")
def rotate_key(ctx: typer.Context) -> None:
    """Replace the checkpoint signing key; the old key endorses the new one."""
    with ledger_errors(), open_ledger(settings_of(ctx)) as ledger:
        record = ledger.rotate_key()
    console.print(f"new signing key {record.key_id}, signing from tree size {record.from_size}")


@app.command()
def keys(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the ledger's signing keys, first (the one to pin) to newest."""
    with ledger_errors(), open_ledger(settings_of(ctx)) as ledger:
        chain = ledger.keychain()
    if as_json:
        print_json([record.to_dict() for record in chain.records])
        return
    table = Table(title=f"Keys of ledger {chain.ledger}")
    for column in ("key id", "signs from size", "created"):
        table.add_column(column, overflow="fold")
    for record in chain.records:
        table.add_row(record.key_id, str(record.from_size), format_time(record.created))
    console.print(table)


@app.command("witness")
def witness_command(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="Witness file: the checkpoints seen so far (FILE.pin beside it).")
    ],
    ledger: Annotated[
        Path | None,
        typer.Option(help="A ledger folder, only read (default: this deployment's ledger)."),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="A gateway, https://… (the token from --token-env).")
    ] = None,
    trusted_key: Annotated[
        str | None, typer.Option(help="The ledger's first key id, pinned at the first run.")
    ] = None,
    token_env: Annotated[
        str, typer.Option(help="Environment variable holding a regulator's API token.")
    ] = TOKEN_ENV,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA certificates to trust for --url (PEM).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request to --url.", min=0.1)] = 30.0,
    as_json: JsonFlag = False,
) -> None:
    """Witness the ledger: detect rollback, forks and changed keys.

    Checks the key chain from the pinned first key and the latest checkpoint's signature,
    proves the last checkpoint kept in FILE consistent with it, then keeps it. Exit 0 if
    all holds; 3 unreachable, 4 bad signature, 5 first key changed, 6 rollback, 7 fork
    (2: the witness file or the options)."""
    if ledger is None and url is None:
        ledger = settings_of(ctx).ledger_dir
    try:
        source = open_source(
            ledger=ledger, url=url, token_env=token_env, ca_file=ca_file, timeout=timeout
        )
    except ValueError as exc:
        fail(str(exc), code=int(Outcome.UNUSABLE))
    report = run_witness(source, file, trusted_key=trusted_key.lower() if trusted_key else None)
    if as_json:
        print_json(report.to_dict())
    else:
        first, *rest = format_witness_report(report).splitlines()
        colour = "green" if report.outcome is Outcome.OK else "red"
        label, _, message = first.partition(": ")
        console.print(f"[bold {colour}]{escape(label)}[/]: {escape(message)}", soft_wrap=True)
        for line in rest:
            console.print(escape(line), soft_wrap=True)
    raise typer.Exit(int(report.outcome))
