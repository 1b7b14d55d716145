"""The identity service's vocabulary: its errors, the immutable snapshots it returns,
its limits, and the small pure functions the service and its callers share (who may
administer whom, whether an account may sign in, input cleaning, paging).
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import pyotp
from pydantic import ValidationError
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from gateway.authz import Actor, Grant
from gateway.db.models import (
    Organization,
    OrganizationStatus,
    OrganizationType,
    RoleGrant,
    User,
    UserStatus,
    VerificationStatus,
)

Record = Callable[[dict[str, Any]], None]
SYSTEM = "system:gateway"
SHELL = "system:cli"  # the platform operator at the shell (`sbx org`, `sbx user`)
PLATFORM = "org:platform"  # the domain the system actors act in
MIN_PASSWORD_LENGTH = 12
TOKEN_PREFIX = "sbx_"  # noqa: S105 - not a secret: lets scanners recognise a leaked token
MAX_TOKEN_DAYS = 365
TOKEN_USE_EVERY = timedelta(seconds=60)  # how often a token's last use is written
MAX_PAGE = 100
MAX_OFFSET = 1_000_000
MAX_REASON = 500
MAX_NAME = 200
MAX_SEARCH = 100
ADMIN = "admin"

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R", Organization, User)


class IdentityError(Exception):
    """A request about identities is refused; the message says why (safe to show)."""


class NotFound(IdentityError):
    pass


class Conflict(IdentityError):
    pass


class SignInFailed(IdentityError):
    """Wrong user name or password, or a locked or disabled account: one message for all,
    so that sign-in does not tell which user names exist."""

    def __init__(self) -> None:
        super().__init__("the user name or password is wrong, or the account is locked")


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int = 5
    lock_for: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Account:
    """A user as the rest of the gateway sees them (never the table row itself)."""

    id: str
    username: str
    display_name: str
    organization_id: str
    roles: frozenset[str]
    must_change_password: bool
    failed_logins: int

    @classmethod
    def of(cls, user: User) -> Account:
        return cls(**_account_fields(user))

    def actor(self) -> Actor:
        return Actor(f"user:{self.id}", f"org:{self.organization_id}", self.roles)


@dataclass(frozen=True)
class OrganizationSnapshot:
    """An organization as it was when read."""

    id: str
    type: OrganizationType
    name: str
    credit_code: str
    verification: VerificationStatus
    flagged: bool  # on a dishonesty / serious-violation list
    status: OrganizationStatus
    created_at: datetime

    @classmethod
    def of(cls, row: Organization) -> OrganizationSnapshot:
        return cls(
            id=row.id,
            type=row.type,
            name=row.name,
            credit_code=row.credit_code,
            verification=row.verification,
            flagged=row.flagged,
            status=row.status,
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class UserSnapshot(Account):
    """A user as administrators and colleagues see them: the account and its state, no
    credentials."""

    status: UserStatus
    second_factor: bool
    locked_until: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserSnapshot:
        return cls(
            **_account_fields(user),
            status=user.status,
            second_factor=user.totp_secret is not None,
            locked_until=user.locked_until,
            created_at=user.created_at,
        )

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


def _account_fields(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "organization_id": user.organization_id,
        "roles": frozenset(grant.role for grant in user.roles),
        "must_change_password": user.must_change_password,
        "failed_logins": user.failed_logins,
    }


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: ``items`` from ``offset`` on, of ``total`` matching."""

    items: tuple[T, ...]
    total: int
    offset: int
    limit: int


# Real-name verification (R10): decided once, revisable either way, never undone.
VERIFICATION_TRANSITIONS: dict[VerificationStatus, frozenset[VerificationStatus]] = {
    VerificationStatus.UNVERIFIED: frozenset(
        {VerificationStatus.VERIFIED, VerificationStatus.REJECTED}
    ),
    VerificationStatus.VERIFIED: frozenset({VerificationStatus.REJECTED}),
    VerificationStatus.REJECTED: frozenset({VerificationStatus.VERIFIED}),
}


def self_administration_refusal(
    actor: Actor, *, organization_id: str | None = None, user_id: str | None = None
) -> str | None:
    """Why ``actor`` may not change this organization's standing or this account's state,
    or ``None``. Verifying or un-flagging one's own organization would be an escalation;
    suspending it, or disabling, re-enabling, unlocking or resetting one's own account, a
    lock-out trap or a way around the lockout and the current-password check."""
    if organization_id is not None and actor.organization == f"org:{organization_id}":
        return "nobody changes the standing of their own organization"
    if user_id is not None and actor.user == f"user:{user_id}":
        return "nobody changes the state of their own account"
    return None


def can_administer(
    actor: Actor, *, organization_id: str | None = None, user_id: str | None = None
) -> bool:
    """Whether the self-administration rule lets ``actor`` act here (the policy aside)."""
    refusal = self_administration_refusal(actor, organization_id=organization_id, user_id=user_id)
    return refusal is None


def can_sign_in(user: User) -> bool:
    """Whether the user's account and organization are both active (any credential)."""
    return (
        user.status is UserStatus.ACTIVE and user.organization.status is OrganizationStatus.ACTIVE
    )


def actor_of(account: Account) -> Actor:
    return account.actor()


def grants_of(session: Session) -> list[Grant]:
    """Every role grant, as the authorizer needs them."""
    rows = session.execute(select(RoleGrant.role, User.id, User.organization_id).join(User))
    return [Grant(f"user:{uid}", role, f"org:{org}") for role, uid, org in rows]


def clean_text(
    value: str, what: str, max_length: int, *, empty: bool = False, lines: bool = False
) -> str:
    """``value`` stripped, if it is 1 to ``max_length`` characters (0 too if ``empty``) of
    text; control characters and lone surrogates (which no database stores) are refused,
    but for line feeds and tabs when ``lines`` (a paragraph; ``\r\n`` becomes ``\n``)."""
    text = value.strip()
    allowed = "\n\t" if lines else ""
    if lines:
        text = text.replace("\r\n", "\n")
    if not text and not empty:
        raise IdentityError(f"{what} is needed")
    if len(text) > max_length:
        raise IdentityError(f"{what} has at most {max_length} characters")
    if any(unicodedata.category(char) in ("Cc", "Cs") and char not in allowed for char in text):
        raise IdentityError(f"{what} may not contain control characters")
    return text


def validation_problems(exc: ValidationError, whole: str) -> str:
    """A model's validation errors on one line, each with where it is (``whole`` when it
    concerns the whole model)."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or whole}: {error['msg']}" for error in exc.errors()
    )


def _check_page(offset: int, limit: int) -> None:
    if not 0 <= offset <= MAX_OFFSET:
        raise IdentityError(f"offset is 0 to {MAX_OFFSET}")
    if not 1 <= limit <= MAX_PAGE:
        raise IdentityError(f"a page holds 1 to {MAX_PAGE} items")


def _paged(
    session: Session,
    query: Select[Any],
    order: Sequence[Any],
    offset: int,
    limit: int,
) -> tuple[int, list[Any]]:
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = list(session.scalars(query.order_by(*order).offset(offset).limit(limit)))
    return int(total or 0), rows


def _own_organization(actor: Actor) -> str:
    return actor.organization.removeprefix("org:")


def _organization_of(row: Organization | User) -> str:
    return row.id if isinstance(row, Organization) else row.organization_id


def _plausible(identifier: str) -> bool:
    """Whether ``identifier`` could be a key at all (ids are hex; user names letters,
    digits and dots): anything else is absent without asking the database, which may not
    even accept it (PostgreSQL refuses NUL characters)."""
    return 0 < len(identifier) <= 64 and all(char.isalnum() or char in "._-" for char in identifier)


def _shown(identifier: str) -> str:
    """An identifier fit to quote in a message."""
    return identifier if _plausible(identifier) else repr(identifier[:64])


def _totp_step(secret: str, code: str, now: datetime) -> int | None:
    """The 30-second step (of now, or one either side for clock drift) whose code this is."""
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // totp.interval
    for step in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.at(step * totp.interval), code.strip()):
            return step
    return None


def _token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _get(session: Session, kind: type[Any], identifier: str) -> Any:
    found = session.get(kind, identifier) if _plausible(identifier) else None
    if found is None:
        raise NotFound(f"no {kind.__name__.lower()} {_shown(identifier)}")
    return found


def _entry(
    actor: str, action: str, obj: str, outcome: str, detail: dict[str, Any]
) -> dict[str, Any]:
    return {"action": action, "actor": actor, "object": obj, "outcome": outcome, "detail": detail}
