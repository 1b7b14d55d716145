"""``sbx org`` and ``sbx user``: organizations and users, administered from the shell.

Whoever runs these holds the deployment's data directory, so they act as the platform
operator: ``system:cli``, holding the admin role
(:meth:`~gateway.identity.service.IdentityService.shell_actor`). Taking that role is
recorded with the OS user's name, and every entry the command writes carries the OS user
and an id of the invocation (as ``detail.request``, where the API puts the client and the
request id). The administrators' deny lines bind the shell as they bind anyone holding
the role, and the same rules apply as in the API: a reason for each change, one-time
passwords shown once, the platform keeps an active administrator.

Exit codes: 0 done; 1 refused (absent, conflicting, denied, the ledger or database
unavailable); 2 bad input.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from audit import LedgerError
from gateway.api import context, open_services
from gateway.api.deps import Services
from gateway.authz import Actor, Denied, PolicyError
from gateway.cli.audit import JsonFlag, print_json
from gateway.cli.common import console, fail, settings_of
from gateway.db.models import (
    OrganizationStatus,
    OrganizationType,
    UserStatus,
    VerificationStatus,
)
from gateway.identity.model import (
    MAX_PAGE,
    Conflict,
    IdentityError,
    NotFound,
    OrganizationSnapshot,
    Page,
    UserSnapshot,
)
from gateway.identity.service import IdentityService
from gateway.sandboxes.service import SandboxService
from sandbox.identifiers.credit_code import LENGTH as CREDIT_CODE_LENGTH

org_app = typer.Typer(
    help="Organizations: create, list, show, suspend, verify, flag.", no_args_is_help=True
)
user_app = typer.Typer(
    help="Users: create, list, show, grant and revoke roles, disable, unlock, reset passwords.",
    no_args_is_help=True,
)

Organization = Annotated[
    str, typer.Argument(metavar="ORG", help="Organization id or unified social credit code.")
]
Username = Annotated[str, typer.Argument(metavar="USER", help="User name (or user id).")]
Reason = Annotated[str, typer.Option("--reason", help="Why; recorded in the audit ledger.")]
Search = Annotated[str | None, typer.Option("--search", help="Text to look for.")]
Offset = Annotated[int, typer.Option(min=0, help="How many to skip.")]
Limit = Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="How many to show.")]


@dataclasses.dataclass(frozen=True)
class Shell:
    """The identity service and the shell's actor, for one command (and the other
    services, for the commands of other areas that share this shell)."""

    identity: IdentityService
    actor: Actor
    services: Services | None = None

    @property
    def sandboxes(self) -> SandboxService:
        if self.services is None or self.services.sandboxes is None:
            fail("this gateway has no sandboxes")
        return self.services.sandboxes

    def organization(self, key: str) -> OrganizationSnapshot:
        """By credit code if ``key`` has a credit code's length (ids are longer), else by id."""
        if len("".join(key.split())) == CREDIT_CODE_LENGTH:
            return self.identity.find_organization(self.actor, key)
        return self.identity.get_organization(self.actor, key.strip())

    def user(self, key: str) -> UserSnapshot:
        """By user name, else by id."""
        try:
            return self.identity.find_user(self.actor, key)
        except NotFound:
            return self.identity.get_user(self.actor, key.strip())


def os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container, say)
        return f"uid:{os.getuid()}"


@contextmanager
def shell(ctx: typer.Context) -> Iterator[Shell]:
    """Open the deployment's services as the shell's actor; turn refusals into a message
    and an exit code."""
    who = os_user()
    invocation = context.RequestContext(
        request_id=secrets.token_hex(12),
        client=f"shell:{who}",
        method="CLI",
        path=ctx.command_path,
    )
    token = context.current.set(invocation)
    services = None
    try:
        services = open_services(settings_of(ctx))
        yield Shell(services.identity, services.identity.shell_actor(who), services)
    except Denied as exc:
        fail(f"refused: {exc.reason}")
    except (NotFound, Conflict) as exc:
        fail(str(exc))
    except IdentityError as exc:
        fail(str(exc), code=2)
    except (LedgerError, PolicyError) as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"the database cannot be used: {getattr(exc, 'orig', None) or exc}")
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    finally:
        context.current.reset(token)
        if services is not None:
            services.close()


# ------------------------------------------------------------------ organizations


@org_app.command("create")
def create_organization(
    ctx: typer.Context,
    kind: Annotated[OrganizationType, typer.Option("--type", help="What kind of organization.")],
    name: Annotated[str, typer.Option(help="Its registered name.")],
    credit_code: Annotated[str, typer.Option(help="Its unified social credit code.")],
) -> None:
    """Register an organization."""
    with shell(ctx) as sh:
        made = sh.identity.create_organization(
            sh.actor, kind=kind, name=name, credit_code=credit_code
        )
    console.print(f"created organization [bold]{escape(made.name)}[/] with id {made.id}")


@org_app.command("list")
def list_organizations(
    ctx: typer.Context,
    kind: Annotated[OrganizationType | None, typer.Option("--type", help="Only this type.")] = None,
    status: Annotated[OrganizationStatus | None, typer.Option(help="Only this status.")] = None,
    search: Search = None,
    offset: Offset = 0,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """List organizations, oldest first."""
    with shell(ctx) as sh:
        page = sh.identity.list_organizations(
            sh.actor, kind=kind, status=status, text=search, offset=offset, limit=limit
        )
    if as_json:
        print_json(page_json(page))
        return
    table = Table(title=f"Organizations {page_span(page)}")
    for column in ("id", "type", "name", "credit code", "verification", "flagged", "status"):
        table.add_column(column, overflow="fold")
    for item in page.items:
        table.add_row(
            item.id,
            item.type.value,
            escape(item.name),
            item.credit_code,
            item.verification.value,
            "yes" if item.flagged else "",
            item.status.value,
        )
    console.print(table)


@org_app.command("show")
def show_organization(ctx: typer.Context, key: Organization, as_json: JsonFlag = False) -> None:
    """Show an organization and its members."""
    with shell(ctx) as sh:
        organization = sh.organization(key)
        members = sh.identity.list_users(sh.actor, organization_id=organization.id, limit=MAX_PAGE)
    if as_json:
        print_json({**jsonable(organization), "members": page_json(members)})
        return
    console.print(details(f"Organization {escape(organization.name)}", organization))
    console.print(users_table(f"Members {page_span(members)}", members))


def set_status(ctx: typer.Context, key: str, status: OrganizationStatus, reason: str) -> None:
    with shell(ctx) as sh:
        changed = sh.identity.set_organization_status(
            sh.actor, sh.organization(key).id, status, reason
        )
    console.print(f"{escape(changed.name)} is now {changed.status.value}")


@org_app.command("suspend")
def suspend_organization(ctx: typer.Context, key: Organization, reason: Reason) -> None:
    """Suspend an organization: its members can no longer sign in or use their tokens."""
    set_status(ctx, key, OrganizationStatus.SUSPENDED, reason)


@org_app.command("activate")
def activate_organization(ctx: typer.Context, key: Organization, reason: Reason) -> None:
    """Reactivate a suspended organization."""
    set_status(ctx, key, OrganizationStatus.ACTIVE, reason)


@org_app.command("verify")
def verify_organization(
    ctx: typer.Context,
    key: Organization,
    reason: Reason,
    reject: Annotated[bool, typer.Option("--reject", help="Record a failed check.")] = False,
) -> None:
    """Record the outcome of the real-name verification (verified, or with --reject
    rejected)."""
    outcome = VerificationStatus.REJECTED if reject else VerificationStatus.VERIFIED
    with shell(ctx) as sh:
        changed = sh.identity.set_organization_verification(
            sh.actor, sh.organization(key).id, outcome, reason
        )
    console.print(f"{escape(changed.name)} is now {changed.verification.value}")


def set_flag(ctx: typer.Context, key: str, flagged: bool, reason: str) -> None:
    with shell(ctx) as sh:
        changed = sh.identity.set_organization_flag(
            sh.actor, sh.organization(key).id, flagged, reason
        )
    where = "on" if changed.flagged else "off"
    console.print(f"{escape(changed.name)} is {where} the dishonesty / serious-violation list")


@org_app.command("flag")
def flag_organization(ctx: typer.Context, key: Organization, reason: Reason) -> None:
    """Put an organization on the dishonesty / serious-violation list."""
    set_flag(ctx, key, True, reason)


@org_app.command("unflag")
def unflag_organization(ctx: typer.Context, key: Organization, reason: Reason) -> None:
    """Take an organization off the dishonesty / serious-violation list."""
    set_flag(ctx, key, False, reason)


# ------------------------------------------------------------------ users


@user_app.command("create")
def create_user(
    ctx: typer.Context,
    username: Annotated[
        str, typer.Argument(metavar="USERNAME", help="Letters and digits, with dots between.")
    ],
    organization: Annotated[
        str, typer.Option("--org", help="Organization id or unified social credit code.")
    ],
    display_name: Annotated[str, typer.Option("--name", help="The name shown.")] = "",
    roles: Annotated[
        list[str] | None, typer.Option("--role", help="A role to grant (repeatable).")
    ] = None,
) -> None:
    """Create a user and print their one-time password (once)."""
    with shell(ctx) as sh:
        account, password = sh.identity.create_user(
            sh.actor,
            organization_id=sh.organization(organization).id,
            username=username,
            display_name=display_name,
            roles=tuple(roles or ()),
        )
    console.print(f"created user [bold]{account.username}[/] with id {account.id}")
    print_password(account.username, password)


@user_app.command("list")
def list_users(
    ctx: typer.Context,
    organization: Annotated[
        str | None, typer.Option("--org", help="Only this organization (id or credit code).")
    ] = None,
    status: Annotated[UserStatus | None, typer.Option(help="Only this status.")] = None,
    search: Search = None,
    offset: Offset = 0,
    limit: Limit = 50,
    as_json: JsonFlag = False,
) -> None:
    """List users by user name."""
    with shell(ctx) as sh:
        page = sh.identity.list_users(
            sh.actor,
            organization_id=sh.organization(organization).id if organization else None,
            status=status,
            text=search,
            offset=offset,
            limit=limit,
        )
    if as_json:
        print_json(page_json(page))
        return
    console.print(users_table(f"Users {page_span(page)}", page))


@user_app.command("show")
def show_user(ctx: typer.Context, key: Username, as_json: JsonFlag = False) -> None:
    """Show a user: roles, state, lockout."""
    with shell(ctx) as sh:
        user = sh.user(key)
    if as_json:
        print_json(jsonable(user))
        return
    console.print(details(f"User {escape(user.username)}", user))


@user_app.command("grant")
def grant_role(
    ctx: typer.Context, key: Username, role: Annotated[str, typer.Argument(help="The role.")]
) -> None:
    """Grant a user a role (one their organization's type may hold)."""
    with shell(ctx) as sh:
        user = sh.user(key)
        sh.identity.grant_role(sh.actor, user.id, role)
    console.print(f"{user.username} now holds {escape(role)}")


@user_app.command("revoke")
def revoke_role(
    ctx: typer.Context, key: Username, role: Annotated[str, typer.Argument(help="The role.")]
) -> None:
    """Revoke a role from a user."""
    with shell(ctx) as sh:
        user = sh.user(key)
        sh.identity.revoke_role(sh.actor, user.id, role)
    console.print(f"{user.username} no longer holds {escape(role)}")


def set_user_status(ctx: typer.Context, key: str, status: UserStatus, reason: str) -> None:
    with shell(ctx) as sh:
        changed = sh.identity.set_user_status(sh.actor, sh.user(key).id, status, reason)
    console.print(f"{changed.username} is now {changed.status.value}")


@user_app.command("disable")
def disable_user(ctx: typer.Context, key: Username, reason: Reason) -> None:
    """Disable an account: it can no longer sign in or use its tokens."""
    set_user_status(ctx, key, UserStatus.DISABLED, reason)


@user_app.command("enable")
def enable_user(ctx: typer.Context, key: Username, reason: Reason) -> None:
    """Enable a disabled account again."""
    set_user_status(ctx, key, UserStatus.ACTIVE, reason)


@user_app.command("unlock")
def unlock_user(ctx: typer.Context, key: Username, reason: Reason = "") -> None:
    """Lift a lockout after repeated failed sign-ins."""
    with shell(ctx) as sh:
        changed = sh.identity.unlock_user(sh.actor, sh.user(key).id, reason)
    console.print(f"{changed.username} is unlocked")


@user_app.command("reset-password")
def reset_password(ctx: typer.Context, key: Username, reason: Reason = "") -> None:
    """Give a user a new one-time password (printed once; a second factor stays on)."""
    with shell(ctx) as sh:
        user, password = sh.identity.reset_password(sh.actor, sh.user(key).id, reason)
    print_password(user.username, password)


# ------------------------------------------------------------------ output


def print_password(username: str, password: str) -> None:
    console.print(
        f"one-time password of {username}: [bold]{escape(password)}[/] "
        "(shown once; to be changed at first sign-in)",
        soft_wrap=True,
    )


def jsonable(snapshot: Any) -> dict[str, Any]:
    """A snapshot as JSON values: enums by value, times in ISO 8601, roles sorted."""

    def value(item: Any) -> Any:
        if isinstance(item, Enum):
            return item.value
        if isinstance(item, datetime):
            return item.isoformat()
        if isinstance(item, frozenset):
            return sorted(item)
        return item

    return {
        field.name: value(getattr(snapshot, field.name)) for field in dataclasses.fields(snapshot)
    }


def page_json(page: Page[Any]) -> dict[str, Any]:
    items = [jsonable(item) for item in page.items]
    return {"items": items, "limit": page.limit, "offset": page.offset, "total": page.total}


def page_span(page: Page[Any]) -> str:
    if not page.items:
        return f"(none of {page.total})"
    return f"({page.offset + 1}–{page.offset + len(page.items)} of {page.total})"


def details(title: str, snapshot: Any) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, item in jsonable(snapshot).items():
        shown = ", ".join(item) if isinstance(item, list) else "" if item is None else str(item)
        table.add_row(name.replace("_", " "), escape(shown))
    return table


def users_table(title: str, page: Page[UserSnapshot]) -> Table:
    table = Table(title=title)
    for column in ("id", "user name", "display name", "organization", "roles", "status"):
        table.add_column(column, overflow="fold")
    for user in page.items:
        table.add_row(
            user.id,
            user.username,
            escape(user.display_name),
            user.organization_id,
            ", ".join(sorted(user.roles)),
            user.status.value,
        )
    return table
