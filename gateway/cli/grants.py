"""``sbx grant``: grants, administered from the shell.

As ``sbx org`` and ``sbx user`` do, these act as the platform operator, ``system:cli``
holding the admin role (taking it is recorded with the OS user's name), under the same
rules as the API. ``create`` is the operator's manual path: a grant for an agreement
signed outside the platform. ``suspend`` stops the grant's sandboxes at once (R19) and
``resume`` lifts a suspension; both are approvers' decisions, so the shipped policy
refuses them to the shell (an approver suspends in the console or through the API) unless
a deployment's policy gives administrators ``grant suspend`` and ``grant resume``.

Exit codes: 0 done; 1 refused (absent, conflicting, denied, the ledger or database
unavailable); 2 bad input.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from gateway.cli.audit import JsonFlag, print_json
from gateway.cli.common import console, fail
from gateway.cli.identity import shell
from gateway.sandboxes.service import GrantSnapshot

app = typer.Typer(
    help="Grants: create (by hand), list, suspend and resume sandbox grants.",
    no_args_is_help=True,
)
GrantId = Annotated[str, typer.Argument(metavar="GRANT", help="The grant's id.")]
Reason = Annotated[str, typer.Option("--reason", help="Why; recorded in the audit ledger.")]


def moment(value: str, option: str) -> datetime:
    """An ISO 8601 time (a date alone is midnight UTC; no zone means UTC)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"{option}: {value!r} is not an ISO 8601 date or time", code=2)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def grant_json(grant: GrantSnapshot) -> dict[str, Any]:
    return {
        "id": grant.id,
        "title": grant.title,
        "organization_id": grant.organization_id,
        "organization_name": grant.organization_name,
        "views": grant.views,
        "starts_at": grant.starts_at.isoformat(),
        "ends_at": grant.ends_at.isoformat(),
        "status": grant.status.value,
        "gid": grant.gid,
        "members": list(grant.member_names),
        "created_by": grant.created_by,
        "suspended_by": grant.suspended_by,
        "suspended_reason": grant.suspended_reason,
    }


@app.command("create")
def create_grant(
    ctx: typer.Context,
    grant_id: GrantId,
    title: Annotated[str, typer.Option(help="What the grant is for.")],
    organization: Annotated[str, typer.Option(help="The application unit's id.")],
    member: Annotated[
        list[str], typer.Option("--member", help="An applicant of the unit (user name); repeat.")
    ],
    views: Annotated[str, typer.Option(help="The folder of views under <data_dir>/views.")],
    starts: Annotated[
        str | None, typer.Option(help="Start, ISO 8601 (default: now).", show_default=False)
    ] = None,
    ends: Annotated[
        str | None, typer.Option(help="End, ISO 8601 (default: --days after the start).")
    ] = None,
    days: Annotated[
        int, typer.Option(min=1, max=3660, help="Length when --ends is not given.")
    ] = 90,
) -> None:
    """Grant applicants of an application unit a sandbox on a folder of views, for a
    period (for an agreement signed outside the platform)."""
    starts_at = moment(starts, "--starts") if starts else datetime.now(UTC)
    ends_at = moment(ends, "--ends") if ends else starts_at + timedelta(days=days)
    with shell(ctx) as sh:
        members = [sh.identity.find_user(sh.actor, name).id for name in member]
        made = sh.sandboxes.create_grant(
            sh.actor,
            grant_id=grant_id,
            title=title,
            organization_id=organization,
            members=members,
            views=views,
            starts_at=starts_at,
            ends_at=ends_at,
        )
    console.print(
        f"created grant [bold]{made.id}[/] for {escape(', '.join(made.member_names))} "
        f"until {made.ends_at:%Y-%m-%d %H:%M} UTC (gid {made.gid})"
    )


@app.command("list")
def list_grants(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List every grant, newest first."""
    with shell(ctx) as sh:
        grants = sh.sandboxes.list_grants(sh.actor)
    if as_json:
        print_json([grant_json(grant) for grant in grants])
        return
    table = Table(title=f"Grants ({len(grants)})")
    for column in ("id", "title", "organization", "members", "from", "until", "status"):
        table.add_column(column, overflow="fold")
    for grant in grants:
        table.add_row(
            grant.id,
            escape(grant.title),
            escape(grant.organization_name),
            escape(", ".join(grant.member_names)),
            f"{grant.starts_at:%Y-%m-%d %H:%M}",
            f"{grant.ends_at:%Y-%m-%d %H:%M}",
            grant.status.value,
        )
    console.print(table)


@app.command("suspend")
def suspend_grant(ctx: typer.Context, grant_id: GrantId, reason: Reason) -> None:
    """Suspend a grant at once: its sandboxes stop and its kernels stop executing."""
    with shell(ctx) as sh:
        changed = sh.sandboxes.suspend_grant(sh.actor, grant_id, reason)
    console.print(f"grant {changed.id} is now {changed.status.value}")


@app.command("resume")
def resume_grant(ctx: typer.Context, grant_id: GrantId, reason: Reason) -> None:
    """Lift a grant's suspension."""
    with shell(ctx) as sh:
        changed = sh.sandboxes.resume_grant(sh.actor, grant_id, reason)
    console.print(f"grant {changed.id} is now {changed.status.value}")
