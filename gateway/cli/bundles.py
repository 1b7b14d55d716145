"""``sbx verify-bundle`` and ``sbx verify-evidence``: check a release bundle or an
evidence bundle offline, and against the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from audit.bundle import ledger_problems, parse_trusted_key, verify_bundle
from audit.evidence import china_time, ledger_match, verify_evidence
from audit.evidenceformat import EXIT_USAGE
from audit.signedzip import HEX64
from gateway.cli.common import console, fail


def verify_bundle_command(
    bundle: Annotated[Path, typer.Argument(help="The release bundle (.zip).")],
    ledger: Annotated[
        Path | None,
        typer.Option(help="Ledger folder that must publish the key and record the release."),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(help="KEYID=BASE64 of a key the bundle may be signed with (repeatable)."),
    ] = None,
    ledger_key: Annotated[
        list[str] | None, typer.Option(help="Key id the ledger's first key must be.")
    ] = None,
) -> None:
    """Check a release bundle: its members, every file's size and SHA-256, the signature
    over the manifest and, with --ledger, that the ledger published the signing key and
    recorded the release. Exit 0 if everything holds, 1 if a problem is found."""
    if not bundle.is_file():
        fail(f"{escape(str(bundle))} does not exist or is not a file", code=2)
    if ledger is not None and not ledger.is_dir():
        fail(f"{escape(str(ledger))} is not a ledger folder", code=2)
    trusted = None
    if key:
        try:
            trusted = dict(parse_trusted_key(text) for text in key)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--key") from None
    report = verify_bundle(bundle, trusted_keys=trusted)
    check = (
        None if ledger is None else ledger_problems(ledger, report, trusted_ledger_keys=ledger_key)
    )
    ok = report.ok and (check is None or check.ok)
    verdict = "[bold green]OK[/]" if ok else "[bold red]FAILED[/]"
    console.print(f"{verdict}: release bundle {escape(str(bundle))}", soft_wrap=True)
    checked = "members, file sizes and SHA-256, manifest, Ed25519 signature"
    if trusted is not None:
        checked += ", trusted keys"
    if check is not None:
        checked += f", ledger {escape(str(ledger))} ({check.entries:,} entries)"
    console.print(f"  checked: {checked}", soft_wrap=True)
    for problem in (*report.problems, *(check.problems if check else ())):
        console.print(f"  [red]problem:[/] {escape(problem)}", soft_wrap=True)
    files = report.files()
    if files:
        table = Table(title=f"{len(files)} files, {sum(size for _, size in files):,} bytes")
        table.add_column("file", overflow="fold")
        table.add_column("bytes", justify="right")
        for name, size in files:
            table.add_row(escape(name), f"{size:,}")
        console.print(table)
    if report.manifest_sha256:
        console.print(f"  manifest sha256: {report.manifest_sha256}", soft_wrap=True)
    if report.key_id:
        pinned = "trusted" if report.trusted else "not pinned: pass --key to require it"
        console.print(f"  signed by key: {report.key_id} ({pinned})", soft_wrap=True)
    if check is not None:
        console.print(f"  ledger: {check.summary()}", soft_wrap=True)
        if check.trust:
            console.print(f"  ledger trust: {escape(check.trust)}", soft_wrap=True)
    raise typer.Exit(0 if ok else 1)


def verify_evidence_command(
    bundle: Annotated[Path, typer.Argument(help="The evidence bundle (.zip).")],
    trusted_key: Annotated[
        list[str] | None,
        typer.Option(help="Key id the ledger's first key must be (repeatable; else on trust)."),
    ] = None,
    ledger: Annotated[
        Path | None,
        typer.Option(help="Ledger folder whose checkpoint the bundle's must be."),
    ] = None,
) -> None:
    """Check an evidence bundle: its members, every entry against its leaf hash and its
    inclusion proof against the checkpoint, the checkpoint's signature and the key chain,
    the ledger key's signature over the manifest and every document against the entry
    naming it; with --ledger, that the checkpoint is that ledger's. Exit 0: it verifies;
    1: altered or damaged; 3: intact but not from the trusted ledger; 4: not the given
    ledger's."""
    if not bundle.is_file():
        fail(f"{escape(str(bundle))} does not exist or is not a file", code=EXIT_USAGE)
    if ledger is not None and not ledger.is_dir():
        fail(f"{escape(str(ledger))} is not a ledger folder", code=EXIT_USAGE)
    for key in trusted_key or ():
        if not HEX64.fullmatch(key):
            raise typer.BadParameter("a key id is 64 hex digits", param_hint="--trusted-key")
    report = verify_evidence(bundle, trusted_keys=trusted_key or None)
    match = None if ledger is None else ledger_match(ledger, report, trusted_key or None)
    code = report.exit_code(match)
    verdict = {0: "[bold green]OK[/]", 3: "[bold yellow]NOT TRUSTED[/]"}.get(
        code, "[bold red]FAILED[/]"
    )
    console.print(f"{verdict}: evidence bundle {escape(str(bundle))}", soft_wrap=True)
    problems = [
        *report.problems,
        *report.untrusted,
        *(f"ledger: {problem}" for problem in (match.problems if match else ())),
    ]
    for problem in problems:
        console.print(f"  [red]problem:[/] {escape(problem)}", soft_wrap=True)
    manifest = report.manifest or {}
    if manifest:
        console.print(f"  scope: {escape(str(manifest['scope']))}", soft_wrap=True)
        made = f"{manifest['created_by']} at {china_time(manifest['created'])}"
        console.print(f"  made by: {escape(made)}", soft_wrap=True)
        console.print(
            f"  entries: {report.entries:,} of {len(manifest['entries']):,} verified",
            soft_wrap=True,
        )
    if report.checkpoint is not None:
        console.print(f"  checkpoint: size {report.checkpoint.size:,}", soft_wrap=True)
    documents = report.documents()
    if documents:
        table = Table(title=f"{len(documents)} documents")
        table.add_column("document", overflow="fold")
        table.add_column("kind")
        table.add_column("bytes", justify="right")
        table.add_column("entry", justify="right")
        for item in documents:
            table.add_row(
                escape(item["name"]), item["kind"], f"{item['bytes']:,}", str(item["seq"])
            )
        console.print(table)
    if report.key_id:
        console.print(f"  signed by ledger key: {report.key_id}", soft_wrap=True)
    console.print(f"  trust: {escape(report.trust)}", soft_wrap=True)
    if match is not None:
        console.print(f"  ledger: {escape(match.summary())}", soft_wrap=True)
    raise typer.Exit(code)
