"""``sbx demo``: walk through the platform on its embedded default, with visible output.

For now the demo exercises the audit ledger end to end: a day of operations is recorded,
checkpointed, proven, verified, and exported as an archive that the standalone verifier
checks in a separate process, as a regulator would.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import typer
from rich.panel import Panel

from audit import Ledger, entry
from gateway.cli.common import (
    console,
    entry_line,
    ledger_errors,
    open_ledger,
    settings_of,
    short,
)

# A day in the life of a public-data operation: who did what, in the ledger's words.
STORY: list[dict[str, object]] = [
    {
        "action": "dataset.register",
        "actor": "user:steward.li",
        "object": "dataset:enterprise-registry",
        "detail": {"org": "青岛市市场监督管理局", "role": "provider_steward", "security_level": 2},
    },
    {
        "action": "dataset.upload",
        "actor": "user:steward.li",
        "object": "dataset:enterprise-registry@v1",
        "detail": {"rows": 182_340, "sha256": "5d41402abc4b2a76b9719d911017c592" * 2},
    },
    {
        "action": "application.submit",
        "actor": "user:applicant.wang",
        "object": "application:A-2026-0042",
        "detail": {"org": "海岸线数据科技有限公司", "purpose": "小微企业信贷风险模型", "fields": 7},
    },
    {
        "action": "application.formal_check",
        "actor": "user:reviewer.zhao",
        "object": "application:A-2026-0042",
        "outcome": "passed",
        "detail": {"deadline_working_days": 5},
    },
    {
        "action": "application.opinion",
        "actor": "user:reviewer.zhao",
        "object": "application:A-2026-0042",
        "outcome": "recommend_approve",
        "detail": {"risk": "low"},
    },
    {
        "action": "application.approve",
        "actor": "user:approver.sun",
        "object": "application:A-2026-0042",
        "outcome": "approved",
    },
    {
        "action": "grant.create",
        "actor": "system:gateway",
        "object": "grant:G-0042",
        "detail": {"days": 90, "views": ["enterprise_by_district"]},
    },
    {
        "action": "sandbox.execute",
        "actor": "user:applicant.wang",
        "object": "grant:G-0042",
        "detail": {"code_sha256": "9f86d081884c7d659a2feaa0c55ad015" * 2, "cell": 3},
    },
    {
        "action": "request.denied",
        "actor": "user:applicant.wang",
        "object": "dataset:enterprise-registry@v1",
        "outcome": "denied",
        "detail": {"reason": "raw data is never readable from a sandbox"},
    },
    {
        "action": "export.request",
        "actor": "user:applicant.wang",
        "object": "export:E-0007",
        "detail": {"files": ["district_summary.csv"]},
    },
    {
        "action": "export.approve",
        "actor": "user:approver.sun",
        "object": "export:E-0007",
        "outcome": "approved",
        "detail": {"checks": "all passed", "second_approver": "user:reviewer.qian"},
    },
]


def demo(ctx: typer.Context) -> None:
    """Record a day of operations in the ledger, then prove and verify it."""
    settings = settings_of(ctx)
    console.print(Panel.fit("sbx demo — the audit ledger", style="bold"))
    console.print(f"data directory: {settings.prepare_data_dir().resolve()}")
    with ledger_errors(), open_ledger(settings, create=True) as ledger:
        before = ledger.checkpoint()
        console.print(f"ledger {ledger.ledger_id}, entries so far: {before.size}\n")
        first_seq = _record_story(ledger)
        after = ledger.checkpoint()
        console.print(
            f"\n[bold]checkpoint[/] size {after.size}, root {short(after.root.hex(), 24)}, "
            f"signed by key {short(after.key_id)}"
        )

        inclusion = ledger.prove_inclusion(first_seq + len(STORY) - 1)
        inclusion.verify(ledger.keychain())
        console.print(
            f"[bold]inclusion proof[/] of seq {inclusion.seq} (the export approval): "
            f"{len(inclusion.path)} hashes → [green]verified[/]"
        )
        consistency = ledger.prove_consistency(before.size, after.size)
        consistency.verify(ledger.keychain())
        console.print(
            f"[bold]consistency proof[/] {before.size} → {after.size}: "
            f"{len(consistency.path)} hashes → [green]verified[/] (history only grew)"
        )

        archive = settings.data_dir / "demo" / f"evidence-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.tar"
        manifest = ledger.export(first_seq, first_seq + len(STORY) - 1, archive)
        span = manifest["entries"]
        console.print(f"[bold]archive[/] of seq {span['first']}..{span['last']}: {archive}")
    console.print(
        "\n[bold]standalone verification[/] (what a regulator runs, needing only Python "
        "and cryptography):"
    )
    for target in (settings.ledger_dir, archive):
        command = [sys.executable, "-m", "audit.verify", str(target)]
        console.print(f"$ python -m audit.verify {target}", style="dim")
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        console.print(result.stdout.rstrip(), soft_wrap=True, markup=False)
        if result.returncode != 0:
            console.print(result.stderr, markup=False)
            raise typer.Exit(1)
    console.print("\nNext: `sbx audit tail`, `sbx audit verify`, `sbx audit --help`.")


def _record_story(ledger: Ledger) -> int:
    console.print("[bold]recorded[/] (each line is durable before it is shown):")
    first_seq = -1
    for event in STORY:
        receipt = ledger.append(**event)  # type: ignore[arg-type]
        first_seq = receipt.seq if first_seq < 0 else first_seq
        console.print(
            entry_line(receipt.seq, entry.parse(ledger.read_entry(receipt.seq))), soft_wrap=True
        )
    return first_seq
