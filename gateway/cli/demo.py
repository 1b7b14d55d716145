"""``sbx demo``: the platform on its embedded default, with demo organizations and a user
of every role, then the gateway and its console.

On first run in a data directory it registers one organization of each type and a user
for each role, through the same identity service (and so the same audit ledger) as
everything else; their passwords are generated then and kept, owner-only, in
``<data dir>/demo-accounts.json`` so that later runs can print them again. It then takes
a synthetic dataset through the whole path (:mod:`gateway.cli.demo_data`): registered
in the catalog, reviewed and approved, uploaded and sealed in the vault, and turned into
a record-level, an aggregated and a differentially private view with signed manifests.
It shows that the ledger recorded all of it — a checkpoint, an inclusion and a
consistency proof, an evidence archive, and the standalone verifier run in a separate
process, as a regulator would — and serves the console until interrupted.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from gateway.api.deps import Services
from gateway.authz import Actor
from gateway.cli.common import console, fail, ledger_errors, settings_of, short
from gateway.cli.demo_data import ship_dataset
from gateway.cli.demo_path import take_the_path
from gateway.cli.serve import OPERATOR_NAME, run_gateway
from gateway.db.models import OrganizationType, VerificationStatus
from gateway.identity.model import Account, IdentityError
from gateway.settings import Settings
from sandbox.identifiers.credit_code import check_character

ACCOUNTS_FILE = "demo-accounts.json"

# (type, name, credit code head without its check character, [(user, name, role)]).
ORGANIZATIONS: list[tuple[OrganizationType, str, str, list[tuple[str, str, str]]]] = [
    (
        OrganizationType.PROVIDER,
        "青岛市市场监督管理局",
        "11370200MB0000001",
        [("steward.li", "李数据", "provider_steward")],
    ),
    (
        OrganizationType.APPLICATION_UNIT,
        "海岸线数据科技有限公司",
        "91370200MA0000002",
        [("applicant.wang", "王应用", "applicant")],
    ),
    (
        OrganizationType.REGULATOR,
        "青岛市大数据发展管理局",
        "11370200MB0000003",
        [("regulator.chen", "陈监管", "regulator")],
    ),
]
OPERATOR_USERS = [("reviewer.zhao", "赵审核", "reviewer"), ("approver.sun", "孙审批", "approver")]


def demo(
    ctx: typer.Context,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Run the gateway afterwards.")
    ] = True,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Set up demo organizations and a user of every role, prove the ledger recorded it,
    then run the gateway and its console."""
    from gateway.api import open_services

    settings = settings_of(ctx)
    console.print(Panel.fit("sbx demo — public data, usable but not visible", style="bold"))
    console.print(f"data directory: {settings.prepare_data_dir().resolve()}")
    with ledger_errors():
        services = open_services(settings)
    try:
        with ledger_errors():
            accounts = _accounts(settings, services)
            _show_accounts(accounts, f"http://{host}:{port}/")
            archive = _prove(settings, services)
        _verify_standalone(settings, archive)
        if serve:
            run_gateway(settings, services, host=host, port=port)
    finally:
        services.close()


def _accounts(settings: Settings, services: Services) -> list[dict[str, str]]:
    """The demo accounts: made on first run, read back afterwards."""
    path = settings.data_dir / ACCOUNTS_FILE
    if path.exists():
        accounts: list[dict[str, str]] = json.loads(path.read_text())
        return accounts
    try:
        accounts, actors = _seed(settings, services)
    except IdentityError as exc:
        fail(f"the demo could not set up its accounts: {exc}")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as target:
        json.dump(accounts, target, ensure_ascii=False, indent=2)
    try:
        dataset = ship_dataset(settings, services, actors)
        if dataset is not None:
            take_the_path(services, actors, dataset)
    except IdentityError as exc:
        fail(f"the demo could not take its dataset through the platform: {exc}")
    return accounts


def _seed(settings: Settings, services: Services) -> tuple[list[dict[str, str]], dict[str, Actor]]:
    identity = services.identity
    made = identity.bootstrap_admin(
        operator_name=OPERATOR_NAME, credit_code=settings.operator_credit_code
    )
    if made is None:
        fail(
            "this data directory has users already, but no demo accounts: run the demo "
            "with a fresh --data-dir (or SBX_DATA_DIR)"
        )
    admin, one_time = made
    accounts = [_settle(services, admin.id, "admin", one_time, "admin", OPERATOR_NAME)]
    actor = admin.actor()
    actors: dict[str, Actor] = {}
    console.print("[bold]setting up[/] (each step recorded in the audit ledger):")
    for username, name, role in OPERATOR_USERS:
        account, made_user = _user(
            services, actor, admin.organization_id, OPERATOR_NAME, username, name, role
        )
        accounts.append(account)
        actors[role] = made_user.actor()
    for kind, org_name, head, users in ORGANIZATIONS:
        organization = identity.create_organization(
            actor, kind=kind, name=org_name, credit_code=_credit_code(head)
        )
        identity.set_organization_verification(
            actor, organization.id, VerificationStatus.VERIFIED, "demo: licence checked"
        )
        console.print(f"  organization {org_name} ({kind.value}), real name verified")
        for username, name, role in users:
            account, made_user = _user(
                services, actor, organization.id, org_name, username, name, role
            )
            accounts.append(account)
            actors[role] = made_user.actor()
    return accounts, actors


def _user(
    services: Services,
    actor: Any,
    organization_id: str,
    organization: str,
    username: str,
    name: str,
    role: str,
) -> tuple[dict[str, str], Account]:
    account, one_time = services.identity.create_user(
        actor,
        organization_id=organization_id,
        username=username,
        display_name=name,
        roles=(role,),
    )
    console.print(f"  user {username} ({role}) in {organization}")
    return _settle(services, account.id, username, one_time, role, organization), account


def _settle(
    services: Services, user_id: str, username: str, one_time: str, role: str, organization: str
) -> dict[str, str]:
    """Replace the one-time password by a demo password, so the demo users sign in at once."""
    password = "demo-" + secrets.token_urlsafe(9)
    services.identity.set_password(user_id, one_time, password)
    return {"username": username, "password": password, "role": role, "organization": organization}


def _credit_code(head: str) -> str:
    return head + check_character(head)


def _show_accounts(accounts: list[dict[str, str]], url: str) -> None:
    table = Table(title=f"Sign in at {url} — demo accounts (kept in {ACCOUNTS_FILE})")
    for column in ("user name", "password", "role", "organization"):
        table.add_column(column)
    for account in accounts:
        table.add_row(
            account["username"], account["password"], account["role"], account["organization"]
        )
    console.print(table)


def _prove(settings: Settings, services: Services) -> Path:
    """Checkpoint, prove and export the ledger as it stands; the archive's path."""
    ledger = services.ledger
    latest = ledger.checkpoint()
    console.print(
        f"\n[bold]audit ledger[/] {ledger.ledger_id}: {latest.size} entries, checkpoint root "
        f"{short(latest.root.hex(), 24)}, signed by key {short(latest.key_id)}"
    )
    last = latest.size - 1
    inclusion = ledger.prove_inclusion(last)
    inclusion.verify(ledger.keychain())
    console.print(
        f"[bold]inclusion proof[/] of entry {last}: {len(inclusion.path)} hashes → [green]verified"
    )
    earlier = [c.size for c in ledger.checkpoints() if 0 < c.size < latest.size]
    if earlier:
        consistency = ledger.prove_consistency(earlier[0], latest.size)
        consistency.verify(ledger.keychain())
        console.print(
            f"[bold]consistency proof[/] {earlier[0]} → {latest.size}: "
            f"{len(consistency.path)} hashes → [green]verified[/] (history only grew)"
        )
    archive = settings.data_dir / "demo" / f"evidence-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.tar"
    ledger.export(0, last, archive)
    console.print(f"[bold]evidence archive[/] of entries 0..{last}: {archive}")
    return archive


def _verify_standalone(settings: Settings, archive: Path) -> None:
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
