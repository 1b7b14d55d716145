"""Organizations, users, role grants and password sign-in, as plain Python.

Every state-changing method does four things, in this order (STYLE.md): checks who may
(the :class:`~gateway.authz.Authorizer`), checks that the state allows it, writes the
change in a database transaction, and appends the audit entry *before* that transaction
commits. If the ledger cannot be written, the change is rolled back: nothing happens
that the ledger does not record. Refusals are recorded too.

The web routes and the ``sbx user`` / ``sbx org`` commands are thin shells over this.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.authz import Actor, Authorizer, Denied, Grant
from gateway.db.models import (
    ApiToken,
    Organization,
    OrganizationStatus,
    OrganizationType,
    RoleGrant,
    User,
    UserStatus,
)
from gateway.identity.credit_code import InvalidCreditCode, normalize_credit_code

Record = Callable[[dict[str, Any]], None]
SYSTEM = "system:gateway"
MIN_PASSWORD_LENGTH = 12
TOKEN_PREFIX = "sbx_"  # noqa: S105 - not a secret: lets scanners recognise a leaked token
MAX_TOKEN_DAYS = 365


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
        return cls(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            organization_id=user.organization_id,
            roles=frozenset(grant.role for grant in user.roles),
            must_change_password=user.must_change_password,
            failed_logins=user.failed_logins,
        )

    def actor(self) -> Actor:
        return Actor(f"user:{self.id}", f"org:{self.organization_id}", self.roles)


def actor_of(account: Account) -> Actor:
    return account.actor()


def grants_of(session: Session) -> list[Grant]:
    """Every role grant, as the authorizer needs them."""
    rows = session.execute(select(RoleGrant.role, User.id, User.organization_id).join(User))
    return [Grant(f"user:{uid}", role, f"org:{org}") for role, uid, org in rows]


class IdentityService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        authorizer: Authorizer,
        record: Record,
        *,
        hasher: PasswordHasher | None = None,
        lockout: LockoutPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.authorizer = authorizer
        self.record = record
        self.hasher = hasher or PasswordHasher()
        self.lockout = lockout or LockoutPolicy()
        self.clock = clock
        with sessions() as session:
            authorizer.set_grants(grants_of(session))

    # ------------------------------------------------------------------ plumbing
    def _authorize(self, actor: Actor, obj: str, act: str, what: str) -> None:
        reason = self.authorizer.refusal(actor, obj, act)
        if reason is not None:
            self.record(_entry(actor.user, f"{obj}.{act}", what, "denied", {"reason": reason}))
            raise Denied(reason)

    def _refresh_grants(self, session: Session) -> None:
        session.flush()
        self.authorizer.set_grants(grants_of(session))

    # ------------------------------------------------------------------ organizations
    def create_organization(
        self, actor: Actor, *, kind: OrganizationType, name: str, credit_code: str
    ) -> Organization:
        self._authorize(actor, "organization", "create", "organization:new")
        try:
            code = normalize_credit_code(credit_code)
        except InvalidCreditCode as exc:
            raise IdentityError(f"credit code: {exc}") from None
        name = name.strip()
        if not name:
            raise IdentityError("an organization needs a name")
        try:
            with self.sessions.begin() as session:
                organization = Organization(type=kind, name=name, credit_code=code)
                session.add(organization)
                session.flush()
                self.record(
                    _entry(
                        actor.user,
                        "organization.create",
                        f"org:{organization.id}",
                        "ok",
                        {"credit_code": code, "name": name, "type": kind.value},
                    )
                )
        except IntegrityError:
            raise Conflict(f"an organization with credit code {code} exists already") from None
        return organization

    def set_organization_status(
        self, actor: Actor, organization_id: str, status: OrganizationStatus, reason: str
    ) -> None:
        self._authorize(actor, "organization", "suspend", f"org:{organization_id}")
        with self.sessions.begin() as session:
            organization = _get(session, Organization, organization_id)
            organization.status = status
            self.record(
                _entry(
                    actor.user,
                    "organization.status",
                    f"org:{organization_id}",
                    "ok",
                    {"reason": reason, "status": status.value},
                )
            )

    # ------------------------------------------------------------------ users
    def create_user(
        self,
        actor: Actor,
        *,
        organization_id: str,
        username: str,
        display_name: str,
        roles: tuple[str, ...] = (),
    ) -> tuple[Account, str]:
        """Create a user with a one-time password (returned once, stored only hashed)."""
        self._authorize(actor, "user", "create", f"org:{organization_id}")
        username = username.strip().lower()
        if not username or len(username) > 64 or not username.replace(".", "").isalnum():
            raise IdentityError("a user name is 1-64 letters and digits, with dots between")
        password = secrets.token_urlsafe(12)
        try:
            with self.sessions.begin() as session:
                organization = _get(session, Organization, organization_id)
                user = User(
                    organization_id=organization.id,
                    username=username,
                    display_name=display_name.strip() or username,
                    password_hash=self.hasher.hash(password),
                    must_change_password=True,
                )
                session.add(user)
                session.flush()
                for role in roles:
                    self._check_role_fits(organization, role)
                    user.roles.append(RoleGrant(role=role, granted_by=actor.user))
                self.record(
                    _entry(
                        actor.user,
                        "user.create",
                        f"user:{user.id}",
                        "ok",
                        {
                            "organization": organization.id,
                            "roles": sorted(roles),
                            "username": username,
                        },
                    )
                )
                self._refresh_grants(session)
                account = Account.of(user)
        except IntegrityError:
            raise Conflict(f"the user name {username} is taken") from None
        return account, password

    def grant_role(self, actor: Actor, user_id: str, role: str) -> None:
        self._authorize(actor, "role", "grant", f"user:{user_id}")
        if f"user:{user_id}" == actor.user:
            self.record(
                _entry(actor.user, "role.grant", f"user:{user_id}", "denied", {"role": role})
            )
            raise Denied("nobody grants roles to themselves")
        with self.sessions.begin() as session:
            user = _get(session, User, user_id)
            self._check_role_fits(user.organization, role)
            if role in {grant.role for grant in user.roles}:
                raise Conflict(f"{user.username} holds {role} already")
            user.roles.append(RoleGrant(role=role, granted_by=actor.user))
            self.record(_entry(actor.user, "role.grant", f"user:{user_id}", "ok", {"role": role}))
            self._refresh_grants(session)

    def revoke_role(self, actor: Actor, user_id: str, role: str) -> None:
        self._authorize(actor, "role", "revoke", f"user:{user_id}")
        with self.sessions.begin() as session:
            user = _get(session, User, user_id)
            held = [grant for grant in user.roles if grant.role == role]
            if not held:
                raise NotFound(f"{user.username} does not hold {role}")
            user.roles.remove(held[0])
            self.record(_entry(actor.user, "role.revoke", f"user:{user_id}", "ok", {"role": role}))
            self._refresh_grants(session)

    def _check_role_fits(self, organization: Organization, role: str) -> None:
        allowed = self.authorizer.roles_for_organization_type(organization.type.value)
        if role not in allowed:
            raise IdentityError(
                f"a {organization.type.value} organization cannot hold the role {role} "
                f"(it may hold: {', '.join(sorted(allowed)) or 'none'})"
            )

    def bootstrap_admin(
        self, *, operator_name: str, credit_code: str, username: str = "admin"
    ) -> tuple[Account, str] | None:
        """On first run (no user at all): the operator organization and its first
        administrator, with a one-time password to print once. Later: ``None``."""
        with self.sessions() as session:
            if session.scalars(select(User.id).limit(1)).first() is not None:
                return None
        system = Actor(SYSTEM, "org:platform", frozenset())
        password = secrets.token_urlsafe(12)
        with self.sessions.begin() as session:
            operator = Organization(
                type=OrganizationType.OPERATOR,
                name=operator_name,
                credit_code=normalize_credit_code(credit_code),
            )
            session.add(operator)
            session.flush()
            admin = User(
                organization_id=operator.id,
                username=username,
                display_name=username,
                password_hash=self.hasher.hash(password),
                must_change_password=True,
            )
            admin.roles.append(RoleGrant(role="admin", granted_by=system.user))
            session.add(admin)
            session.flush()
            detail = {"organization": operator.id, "roles": ["admin"], "username": username}
            self.record(_entry(system.user, "user.bootstrap", f"user:{admin.id}", "ok", detail))
            self._refresh_grants(session)
            account = Account.of(admin)
        return account, password

    # ------------------------------------------------------------------ signing in
    def authenticate(
        self, username: str, password: str, *, totp: str | None = None, client: str = ""
    ) -> Account:
        """The user whose password this is, or :class:`SignInFailed` (recorded either way)."""
        now = self.clock()
        with self.sessions.begin() as session:
            user = session.scalars(
                select(User).where(User.username == username.strip().lower())
            ).one_or_none()
            if user is None:
                self.hasher.hash(password)  # the same work as a real check: no timing oracle
                detail = {"client": client, "reason": "unknown user"}
                self.record(_entry("anonymous", "session.login", "user:unknown", "failed", detail))
                raise SignInFailed()
            reason = self._sign_in_refusal(user, password, totp, now)
            if reason is None:
                user.failed_logins, user.locked_until = 0, None
                if self.hasher.check_needs_rehash(user.password_hash or ""):
                    user.password_hash = self.hasher.hash(password)
            else:
                if reason in ("wrong password", "wrong second factor", "second factor used before"):
                    user.failed_logins += 1
                    if user.failed_logins >= self.lockout.max_failures:
                        user.locked_until = now + self.lockout.lock_for
                        reason = f"wrong password; locked after {user.failed_logins} failures"
            self.record(
                _entry(
                    f"user:{user.id}",
                    "session.login",
                    f"user:{user.id}",
                    "ok" if reason is None else "failed",
                    {"client": client} if reason is None else {"client": client, "reason": reason},
                )
            )
            account = Account.of(user)
        if reason is not None:
            raise SignInFailed()
        return account

    def _sign_in_refusal(
        self, user: User, password: str, totp: str | None, now: datetime
    ) -> str | None:
        if user.status is not UserStatus.ACTIVE:
            return "account disabled"
        if user.organization.status is not OrganizationStatus.ACTIVE:
            return "organization suspended"
        if user.locked_until is not None and user.locked_until > now:
            return "account locked"
        try:
            self.hasher.verify(user.password_hash or "", password)
        except (VerificationError, InvalidHashError):
            return "wrong password"
        if user.totp_secret is not None:
            if not totp:
                return "second factor missing"
            step = _totp_step(user.totp_secret, totp, now)
            if step is None:
                return "wrong second factor"
            if user.totp_last_step is not None and step <= user.totp_last_step:
                return "second factor used before"  # a code seen over a shoulder, replayed
            user.totp_last_step = step
        return None

    # ------------------------------------------------------------------ second factor
    @staticmethod
    def new_totp_secret() -> str:
        """A fresh TOTP secret to show (as a QR code) before :meth:`enable_totp`."""
        return pyotp.random_base32()

    @staticmethod
    def totp_uri(secret: str, username: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name="sbx")

    def enable_totp(self, user_id: str, secret: str, code: str) -> None:
        """Turn on the second factor once the user shows a code made with ``secret``."""
        step = _totp_step(secret, code, self.clock())
        if step is None:
            raise IdentityError("that code does not match; check the authenticator's clock")
        with self.sessions.begin() as session:
            user = _get(session, User, user_id)
            user.totp_secret, user.totp_last_step = secret, step
            self.record(_entry(f"user:{user.id}", "user.totp.enable", f"user:{user.id}", "ok", {}))

    # ------------------------------------------------------------------ API tokens
    def issue_token(self, actor: Actor, *, name: str, days: int = 90) -> tuple[str, str]:
        """A personal API token of ``actor``: ``(token id, secret)``. The secret is shown
        once and stored only as its SHA-256."""
        self._authorize(actor, "api_token", "manage", actor.user)
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise IdentityError(f"a token lives 1 to {MAX_TOKEN_DAYS} days")
        name = name.strip()
        if not name or len(name) > 100:
            raise IdentityError("a token needs a name of up to 100 characters")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = self.clock() + timedelta(days=days)
        with self.sessions.begin() as session:
            token = ApiToken(
                user_id=actor.user.removeprefix("user:"),
                name=name,
                token_hash=_token_hash(secret),
                expires_at=expires,
            )
            session.add(token)
            session.flush()
            detail = {"expires": expires.isoformat(), "name": name}
            self.record(_entry(actor.user, "api_token.create", f"token:{token.id}", "ok", detail))
        return token.id, secret

    def revoke_token(self, actor: Actor, token_id: str) -> None:
        """Revoke one's own token (administrators: anyone's)."""
        self._authorize(actor, "api_token", "manage", f"token:{token_id}")
        with self.sessions.begin() as session:
            token = _get(session, ApiToken, token_id)
            if f"user:{token.user_id}" != actor.user and "admin" not in actor.roles:
                raise NotFound(f"no apitoken {token_id}")  # others' tokens are not there
            if token.revoked_at is None:
                token.revoked_at = self.clock()
            self.record(_entry(actor.user, "api_token.revoke", f"token:{token_id}", "ok", {}))

    def authenticate_token(self, secret: str) -> Account:
        """The account a token belongs to, if it is live; :class:`SignInFailed` if not."""
        if not secret.startswith(TOKEN_PREFIX):
            raise SignInFailed()
        now = self.clock()
        with self.sessions() as session:
            token = session.scalars(
                select(ApiToken).where(ApiToken.token_hash == _token_hash(secret))
            ).one_or_none()
            if token is None or token.revoked_at is not None or token.expires_at <= now:
                raise SignInFailed()
            user = _get(session, User, token.user_id)
            if (
                user.status is not UserStatus.ACTIVE
                or user.organization.status is not OrganizationStatus.ACTIVE
            ):
                raise SignInFailed()
            return Account.of(user)

    def set_password(self, user_id: str, old: str, new: str) -> None:
        """Change one's own password (the one-time password must be changed first)."""
        if len(new) < MIN_PASSWORD_LENGTH:
            raise IdentityError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
        with self.sessions.begin() as session:
            user = _get(session, User, user_id)
            try:
                self.hasher.verify(user.password_hash or "", old)
            except (VerificationError, InvalidHashError):
                raise IdentityError("the current password is wrong") from None
            if new == old:
                raise IdentityError("the new password must differ from the current one")
            user.password_hash = self.hasher.hash(new)
            user.must_change_password = False
            self.record(_entry(f"user:{user.id}", "user.password", f"user:{user.id}", "ok", {}))


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
    found = session.get(kind, identifier)
    if found is None:
        raise NotFound(f"no {kind.__name__.lower()} {identifier}")
    return found


def _entry(
    actor: str, action: str, obj: str, outcome: str, detail: dict[str, Any]
) -> dict[str, Any]:
    return {"action": action, "actor": actor, "object": obj, "outcome": outcome, "detail": detail}
