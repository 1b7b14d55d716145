"""Organizations, users, role grants and password sign-in, as plain Python.

Every state-changing method does four things, in this order (STYLE.md): checks who may
(the :class:`~gateway.authz.Authorizer`), checks that the state allows it, writes the
change as a job of the process's write queue (:mod:`gateway.db.writes`, which applies
the jobs waiting together in one transaction), and records the audit entry, which is
appended *before* that transaction commits. If the ledger cannot be written, the change
is rolled back: nothing happens that the ledger does not record. Refusals are recorded
too. Slow work (password hashing) is done before the job, never in it.

Reading follows the organization as the unit of trust: whoever may ``read_any`` (in the
shipped policy administrators and regulators) sees every organization and user; everyone
else sees their own organization and its members only. Another organization's object
asked for by id is answered exactly as an absent one (:class:`NotFound`, the same words),
so ids cannot be probed, and the attempt is recorded.

Nobody changes the standing of their own organization or the state of their own account
(:func:`self_administration_refusal`), and the platform always keeps one active
administrator. Methods return immutable snapshots (:class:`Account`,
:class:`OrganizationSnapshot`, :class:`UserSnapshot`, :class:`Page`), never table rows.

The web routes, the console and the ``sbx user`` / ``sbx org`` commands are thin shells
over this.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, CursorResult, Select, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from gateway.authz import Actor, Authorizer, Denied, Grant
from gateway.db.models import (
    ApiToken,
    Organization,
    OrganizationStatus,
    OrganizationType,
    RoleGrant,
    User,
    UserStatus,
    VerificationStatus,
    new_id,
)
from gateway.db.writes import WriteQueue
from gateway.identity.model import (
    ADMIN,
    MAX_NAME,
    MAX_REASON,
    MAX_SEARCH,
    MAX_TOKEN_DAYS,
    MIN_PASSWORD_LENGTH,
    PLATFORM,
    SHELL,
    SYSTEM,
    TOKEN_PREFIX,
    TOKEN_USE_EVERY,
    VERIFICATION_TRANSITIONS,
    Account,
    Conflict,
    IdentityError,
    LockoutPolicy,
    NotFound,
    OrganizationSnapshot,
    Page,
    R,
    Record,
    S,
    SignInFailed,
    UserSnapshot,
    _check_page,
    _entry,
    _get,
    _organization_of,
    _own_organization,
    _paged,
    _plausible,
    _shown,
    _token_hash,
    _totp_step,
    clean_text,
    grants_of,
    self_administration_refusal,
)
from gateway.identity.tokencache import TokenCache
from sandbox.identifiers.credit_code import InvalidCreditCode, normalize_credit_code


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
        writes: WriteQueue | None = None,
    ) -> None:
        """``writes``: the process's write queue for this database (state changes are
        applied through it, in batches); without one, the service makes its own, whose
        entries go to ``record``. With one, entries go to the queue's sink."""
        self.sessions = sessions
        self.authorizer = authorizer
        self.writes = writes if writes is not None else WriteQueue(sessions, record)
        self.record = self.writes.record
        self.hasher = hasher or PasswordHasher()
        self.lockout = lockout or LockoutPolicy()
        self.clock = clock
        self._standing: tuple[Grant, ...] = ()  # grants of system actors, not in the database
        self.tokens = TokenCache(sessions)
        with sessions() as session:
            self._refresh_grants(session)

    # ------------------------------------------------------------------ plumbing
    def _authorize(self, actor: Actor, obj: str, act: str, what: str) -> None:
        reason = self.authorizer.refusal(actor, obj, act)
        if reason is not None:
            self._deny(actor, f"{obj}.{act}", what, reason)

    def _deny(self, actor: Actor, action: str, what: str, reason: str, **detail: Any) -> None:
        self.record(_entry(actor.user, action, what, "denied", {"reason": reason, **detail}))
        raise Denied(reason)

    def _check_self(
        self,
        actor: Actor,
        action: str,
        what: str,
        *,
        organization_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        reason = self_administration_refusal(
            actor, organization_id=organization_id, user_id=user_id
        )
        if reason is not None:
            self._deny(actor, action, what, reason)

    def _refresh_grants(self, session: Session) -> None:
        session.flush()
        self.authorizer.set_grants([*grants_of(session), *self._standing])

    def _grants_changed(self) -> None:
        """In a write job: reload the role grants once its batch has committed."""
        self.writes.on_commit(self._reload_grants)

    def _reload_grants(self) -> None:
        with self.sessions() as session:
            self._refresh_grants(session)

    def sync_grants(self, account: Account) -> None:
        """Reload the role grants if ``account`` (just read from the database) holds other
        roles than the authorizer knows of: another process changed them (``sbx user
        grant`` beside a running gateway). Token and password sign-in do this themselves;
        call it after resolving any other credential (a browser session, say)."""
        if self._grants_differ(account):
            with self.sessions() as session:
                self._refresh_grants(session)

    def _sync_grants(self, session: Session, account: Account) -> None:
        if self._grants_differ(account):
            self._refresh_grants(session)

    def _grants_differ(self, account: Account) -> bool:
        held = self.authorizer.roles_of(f"user:{account.id}", f"org:{account.organization_id}")
        return held != account.roles

    def _reads_any(self, actor: Actor, obj: str) -> bool:
        return self.authorizer.allows(actor, obj, "read_any")

    def _hidden(self, actor: Actor, action: str, what: str, reason: str) -> None:
        """Record a read outside the actor's organization, which the caller then answers
        exactly as it answers an absent object."""
        self.record(_entry(actor.user, action, what, "denied", {"reason": reason}))

    # ------------------------------------------------------------------ organizations
    def create_organization(
        self, actor: Actor, *, kind: OrganizationType, name: str, credit_code: str
    ) -> OrganizationSnapshot:
        self._authorize(actor, "organization", "create", "organization:new")
        try:
            code = normalize_credit_code(credit_code)
        except InvalidCreditCode as exc:
            raise IdentityError(f"credit code: {exc}") from None
        name = clean_text(name, "an organization's name", MAX_NAME)

        def apply(session: Session) -> OrganizationSnapshot:
            organization = Organization(id=new_id(), type=kind, name=name, credit_code=code)
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
            return OrganizationSnapshot.of(organization)

        try:
            return self.writes.run(apply)
        except IntegrityError:
            raise Conflict(f"an organization with credit code {code} exists already") from None

    def list_organizations(
        self,
        actor: Actor,
        *,
        kind: OrganizationType | None = None,
        status: OrganizationStatus | None = None,
        text: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[OrganizationSnapshot]:
        """Organizations by type, status and text in the name or credit code, oldest first.
        Without ``organization:read_any`` the actor sees their own organization only."""
        self._authorize(actor, "organization", "read", "organization:list")
        _check_page(offset, limit)
        where: list[ColumnElement[bool]] = []
        if not self._reads_any(actor, "organization"):
            where.append(Organization.id == _own_organization(actor))
        if kind is not None:
            where.append(Organization.type == kind)
        if status is not None:
            where.append(Organization.status == status)
        if text:
            needle = clean_text(text, "a search", MAX_SEARCH)
            where.append(
                or_(
                    func.lower(Organization.name).contains(needle.lower(), autoescape=True),
                    Organization.credit_code.contains(needle.upper(), autoescape=True),
                )
            )
        query = select(Organization).where(*where)
        order = (Organization.created_at, Organization.id)
        with self.sessions() as session:
            total, rows = _paged(session, query, order, offset, limit)
            return Page(tuple(map(OrganizationSnapshot.of, rows)), total, offset, limit)

    def get_organization(self, actor: Actor, organization_id: str) -> OrganizationSnapshot:
        """One organization; another one than the actor's own reads as absent unless the
        actor may ``read_any`` (the attempt is recorded)."""
        return self._read_visible(
            actor,
            "organization",
            select(Organization).where(Organization.id == organization_id),
            key=organization_id,
            what=f"org:{_shown(organization_id)}",
            missing=f"no organization {_shown(organization_id)}",
            snapshot=OrganizationSnapshot.of,
        )

    def find_organization(self, actor: Actor, credit_code: str) -> OrganizationSnapshot:
        """The organization with this credit code, under the rules of
        :meth:`get_organization`."""
        try:
            code = normalize_credit_code(credit_code)
        except InvalidCreditCode as exc:
            raise IdentityError(f"credit code: {exc}") from None
        return self._read_visible(
            actor,
            "organization",
            select(Organization).where(Organization.credit_code == code),
            key=code,
            what=f"credit_code:{code}",
            missing=f"no organization with credit code {code}",
            snapshot=OrganizationSnapshot.of,
        )

    def _read_visible(
        self,
        actor: Actor,
        obj: str,
        query: Select[Any],
        *,
        key: str,
        what: str,
        missing: str,
        snapshot: Callable[[Any], S],
    ) -> S:
        """The one row of ``query`` (an organization or a user) as a snapshot, if the actor
        may see it. Without ``read_any``, a row outside the actor's organization and an
        absent one are both recorded and both answered with ``NotFound(missing)``."""
        self._authorize(actor, obj, "read", what)
        with self.sessions() as session:
            row = session.scalars(query).first() if _plausible(key) else None
            if not self._reads_any(actor, obj) and (
                row is None or _organization_of(row) != _own_organization(actor)
            ):
                reason = "absent" if row is None else "another organization"
                self._hidden(actor, f"{obj}.read", what, reason)
                raise NotFound(missing)
            if row is None:
                raise NotFound(missing)
            return snapshot(row)

    def set_organization_status(
        self, actor: Actor, organization_id: str, status: OrganizationStatus, reason: str
    ) -> OrganizationSnapshot:
        """Suspend or reactivate an organization: its members' tokens and sign-ins stop
        working at once while it is suspended."""

        def change(organization: Organization, session: Session) -> dict[str, Any]:
            if status is OrganizationStatus.SUSPENDED:
                self._keep_an_administrator(session, excluding_organization=organization.id)
            previous, organization.status = organization.status, status
            return {"previous": previous.value, "status": status.value}

        snapshot: OrganizationSnapshot = self._administer(
            actor, Organization, organization_id, "suspend", "organization.status", reason, change
        )
        return snapshot

    def set_organization_verification(
        self,
        actor: Actor,
        organization_id: str,
        verification: VerificationStatus,
        reason: str,
    ) -> OrganizationSnapshot:
        """Record the outcome of the real-name verification: verified or rejected
        (:data:`VERIFICATION_TRANSITIONS`; setting the current value again is allowed)."""

        def change(organization: Organization, session: Session) -> dict[str, Any]:
            previous = organization.verification
            allowed = VERIFICATION_TRANSITIONS.get(previous, frozenset()) | {previous}
            if verification is VerificationStatus.UNVERIFIED or verification not in allowed:
                raise Conflict(f"verification cannot go from {previous.value} to {verification}")
            organization.verification = verification
            return {"previous": previous.value, "status": verification.value}

        snapshot: OrganizationSnapshot = self._administer(
            actor,
            Organization,
            organization_id,
            "update",
            "organization.verification",
            reason,
            change,
        )
        return snapshot

    def set_organization_flag(
        self, actor: Actor, organization_id: str, flagged: bool, reason: str
    ) -> OrganizationSnapshot:
        """Put an organization on (or take it off) the dishonesty / serious-violation list."""

        def change(organization: Organization, session: Session) -> dict[str, Any]:
            previous, organization.flagged = organization.flagged, flagged
            return {"flagged": flagged, "previous": previous}

        snapshot: OrganizationSnapshot = self._administer(
            actor, Organization, organization_id, "update", "organization.flag", reason, change
        )
        return snapshot

    def _administer(
        self,
        actor: Actor,
        kind: type[R],
        key: str,
        act: str,
        action: str,
        reason: str,
        change: Callable[[R, Session], dict[str, Any]],
        *,
        reason_needed: bool = True,
    ) -> Any:
        """What every administrative change of an organization or a user does: check the
        policy (``organization`` or ``user`` : ``act``) and the self-administration rule,
        then, in one transaction, ``change`` the row (it returns what to record) and record
        ``action`` with the reason. Returns the row's snapshot afterwards."""
        if kind is Organization:
            obj, what, own = "organization", f"org:{_shown(key)}", {"organization_id": key}
        else:
            obj, what, own = "user", f"user:{_shown(key)}", {"user_id": key}
        self._authorize(actor, obj, act, what)
        self._check_self(actor, action, what, **own)
        reason = clean_text(reason, "a reason", MAX_REASON, empty=not reason_needed)
        snapshot: Callable[[Any], Any] = (
            OrganizationSnapshot.of if kind is Organization else UserSnapshot.of
        )

        def apply(session: Session) -> Any:
            row = _get(session, kind, key)
            detail = {**change(row, session), "reason": reason}
            self.record(_entry(actor.user, action, what, "ok", detail))
            return snapshot(row)

        return self.writes.run(apply)

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
        display_name = clean_text(display_name, "a display name", MAX_NAME, empty=True)
        password = secrets.token_urlsafe(12)
        password_hash = self.hasher.hash(password)  # slow on purpose: not on the writer

        def apply(session: Session) -> Account:
            organization = _get(session, Organization, organization_id)
            user = User(
                id=new_id(),
                organization_id=organization.id,
                username=username,
                display_name=display_name or username,
                password_hash=password_hash,
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
                    {"organization": organization.id, "roles": sorted(roles), "username": username},
                )
            )
            self._grants_changed()
            return Account.of(user)

        try:
            return self.writes.run(apply), password
        except IntegrityError:
            raise Conflict(f"the user name {username} is taken") from None

    def list_users(
        self,
        actor: Actor,
        *,
        organization_id: str | None = None,
        status: UserStatus | None = None,
        text: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[UserSnapshot]:
        """Users of one organization (``None``: of every organization the actor may read),
        by status and text in the user or display name, ordered by user name."""
        what = f"org:{organization_id}" if organization_id else "user:list"
        self._authorize(actor, "user", "read", what)
        _check_page(offset, limit)
        where: list[ColumnElement[bool]] = []
        if not self._reads_any(actor, "user"):
            own = _own_organization(actor)
            if organization_id is not None and organization_id != own:
                self._hidden(actor, "user.read", what, "not the actor's organization")
                raise NotFound(f"no organization {_shown(organization_id)}")
            organization_id = own
        if status is not None:
            where.append(User.status == status)
        if text:
            needle = clean_text(text, "a search", MAX_SEARCH).lower()
            where.append(
                or_(
                    User.username.contains(needle, autoescape=True),
                    func.lower(User.display_name).contains(needle, autoescape=True),
                )
            )
        with self.sessions() as session:
            if organization_id is not None:
                if (
                    not _plausible(organization_id)
                    or session.get(Organization, organization_id) is None
                ):
                    raise NotFound(f"no organization {_shown(organization_id)}")
                where.append(User.organization_id == organization_id)
            query = select(User).where(*where).options(selectinload(User.roles))
            total, rows = _paged(session, query, (User.username,), offset, limit)
            return Page(tuple(map(UserSnapshot.of, rows)), total, offset, limit)

    def get_user(self, actor: Actor, user_id: str) -> UserSnapshot:
        """One user; a user of another organization reads as absent unless the actor may
        ``read_any`` (the attempt is recorded)."""
        return self._read_visible(
            actor,
            "user",
            select(User).where(User.id == user_id),
            key=user_id,
            what=f"user:{_shown(user_id)}",
            missing=f"no user {_shown(user_id)}",
            snapshot=UserSnapshot.of,
        )

    def find_user(self, actor: Actor, username: str) -> UserSnapshot:
        """The user with this user name, under the rules of :meth:`get_user`."""
        name = username.strip().lower()
        return self._read_visible(
            actor,
            "user",
            select(User).where(User.username == name),
            key=name,
            what=f"username:{_shown(name)}",
            missing=f"no user {_shown(name)}",
            snapshot=UserSnapshot.of,
        )

    def set_user_status(
        self, actor: Actor, user_id: str, status: UserStatus, reason: str
    ) -> UserSnapshot:
        """Disable or re-enable an account: a disabled user's tokens and sign-ins stop
        working at once."""

        def change(user: User, session: Session) -> dict[str, Any]:
            if status is UserStatus.DISABLED:
                self._keep_an_administrator(session, excluding_user=user.id)
            previous, user.status = user.status, status
            return {"previous": previous.value, "status": status.value}

        snapshot: UserSnapshot = self._administer(
            actor, User, user_id, "lock", "user.status", reason, change
        )
        return snapshot

    def unlock_user(self, actor: Actor, user_id: str, reason: str = "") -> UserSnapshot:
        """Lift a lockout after repeated failed sign-ins (and forget the failures)."""

        def change(user: User, session: Session) -> dict[str, Any]:
            locked = user.locked_until.isoformat() if user.locked_until else None
            failures, user.failed_logins, user.locked_until = user.failed_logins, 0, None
            return {"failures": failures, "locked_until": locked}

        snapshot: UserSnapshot = self._administer(
            actor, User, user_id, "lock", "user.unlock", reason, change, reason_needed=False
        )
        return snapshot

    def reset_password(
        self, actor: Actor, user_id: str, reason: str = ""
    ) -> tuple[UserSnapshot, str]:
        """Replace a user's password with a new one-time password, returned once (stored
        only hashed), and lift any lockout. The user must change it at first sign-in; a
        second factor, if set up, stays required, so the one-time password alone does not
        sign anyone in as that user.

        A reset is what follows a lost or exposed credential, so it also ends the user's
        browser sessions and revokes every personal API token they hold (the entry says
        how many); the user issues new ones after signing in."""
        password = secrets.token_urlsafe(12)
        password_hash = self.hasher.hash(password)  # slow on purpose: not on the writer

        def change(user: User, session: Session) -> dict[str, Any]:
            now = self.clock()
            user.password_hash = password_hash
            user.must_change_password = True
            user.password_changed_at = now  # the user's open sessions end
            user.failed_logins, user.locked_until = 0, None
            revoked = cast(
                CursorResult[Any],
                session.execute(
                    update(ApiToken)
                    .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=now)
                ),
            )
            return {"tokens_revoked": revoked.rowcount}

        snapshot: UserSnapshot = self._administer(
            actor,
            User,
            user_id,
            "reset_password",
            "user.password_reset",
            reason,
            change,
            reason_needed=False,
        )
        return snapshot, password

    def grant_role(self, actor: Actor, user_id: str, role: str) -> None:
        self._authorize(actor, "role", "grant", f"user:{user_id}")
        if f"user:{user_id}" == actor.user:
            self._deny(
                actor,
                "role.grant",
                f"user:{user_id}",
                "nobody grants roles to themselves",
                role=role,
            )

        def apply(session: Session) -> None:
            user = _get(session, User, user_id)
            self._check_role_fits(user.organization, role)
            if role in {grant.role for grant in user.roles}:
                raise Conflict(f"{user.username} holds {role} already")
            user.roles.append(RoleGrant(role=role, granted_by=actor.user))
            self.record(_entry(actor.user, "role.grant", f"user:{user_id}", "ok", {"role": role}))
            self._grants_changed()

        self.writes.run(apply)

    def revoke_role(self, actor: Actor, user_id: str, role: str) -> None:
        self._authorize(actor, "role", "revoke", f"user:{user_id}")

        def apply(session: Session) -> None:
            user = _get(session, User, user_id)
            held = [grant for grant in user.roles if grant.role == role]
            if not held:
                raise NotFound(f"{user.username} does not hold {_shown(role)}")
            if role == ADMIN:
                self._keep_an_administrator(session, excluding_user=user_id)
            user.roles.remove(held[0])
            self.record(_entry(actor.user, "role.revoke", f"user:{user_id}", "ok", {"role": role}))
            self._grants_changed()

        self.writes.run(apply)

    def _check_role_fits(self, organization: Organization, role: str) -> None:
        allowed = self.authorizer.roles_for_organization_type(organization.type.value)
        if role not in allowed:
            raise IdentityError(
                f"a {organization.type.value} organization cannot hold the role {_shown(role)} "
                f"(it may hold: {', '.join(sorted(allowed)) or 'none'})"
            )

    def _keep_an_administrator(
        self,
        session: Session,
        *,
        excluding_user: str | None = None,
        excluding_organization: str | None = None,
    ) -> None:
        """Refuse a change that would leave no active administrator in an active
        organization (nobody could then administer the platform but from the shell)."""
        query = (
            select(func.count(func.distinct(User.id)))
            .join(RoleGrant, RoleGrant.user_id == User.id)
            .join(Organization, Organization.id == User.organization_id)
            .where(
                RoleGrant.role == ADMIN,
                User.status == UserStatus.ACTIVE,
                Organization.status == OrganizationStatus.ACTIVE,
            )
        )
        before = session.scalar(query) or 0
        if excluding_user is not None:
            query = query.where(User.id != excluding_user)
        if excluding_organization is not None:
            query = query.where(Organization.id != excluding_organization)
        if before > 0 and (session.scalar(query) or 0) == 0:
            raise Conflict("the platform would be left without an active administrator")

    def bootstrap_admin(
        self, *, operator_name: str, credit_code: str, username: str = "admin"
    ) -> tuple[Account, str] | None:
        """On first run (no user at all): the operator organization and its first
        administrator, with a one-time password to print once. Later: ``None``."""
        with self.sessions() as session:
            if session.scalars(select(User.id).limit(1)).first() is not None:
                return None
        system = Actor(SYSTEM, PLATFORM, frozenset())
        password = secrets.token_urlsafe(12)
        password_hash = self.hasher.hash(password)

        def apply(session: Session) -> Account:
            operator = Organization(
                id=new_id(),
                type=OrganizationType.OPERATOR,
                name=operator_name,
                credit_code=normalize_credit_code(credit_code),
            )
            session.add(operator)
            session.flush()
            admin = User(
                id=new_id(),
                organization_id=operator.id,
                username=username,
                display_name=username,
                password_hash=password_hash,
                must_change_password=True,
            )
            admin.roles.append(RoleGrant(role=ADMIN, granted_by=system.user))
            session.add(admin)
            session.flush()
            detail = {"organization": operator.id, "roles": [ADMIN], "username": username}
            self.record(_entry(system.user, "user.bootstrap", f"user:{admin.id}", "ok", detail))
            self._grants_changed()
            return Account.of(admin)

        return self.writes.run(apply), password

    def shell_actor(self, os_user: str) -> Actor:
        """The platform operator at the shell (``sbx org``, ``sbx user``): ``system:cli``
        holding the admin role, so that whatever the policy allows or denies administrators
        holds at the shell too. Taking the role is recorded, with the OS user's name,
        before it takes effect. Being no user and in no organization, the shell is the way
        back in when every administrator is locked out."""
        grant = Grant(SHELL, ADMIN, PLATFORM)
        detail = {"os_user": os_user, "roles": [ADMIN]}
        self.record(_entry(SHELL, "session.shell", SHELL, "ok", detail))
        if grant not in self._standing:
            self._standing = (*self._standing, grant)
            with self.sessions() as session:
                self._refresh_grants(session)
        return Actor(SHELL, PLATFORM, frozenset({ADMIN}))

    # ------------------------------------------------------------------ signing in
    def authenticate(
        self, username: str, password: str, *, totp: str | None = None, client: str = ""
    ) -> Account:
        """The user whose password this is, or :class:`SignInFailed` (recorded either way).

        The password is checked first, outside the write (the hashing is slow on purpose);
        the write then decides on the row as it is then, with the check counting only if
        the password it checked is still the one stored, and counts failures atomically."""
        now = self.clock()
        name = username.strip().lower()
        with self.sessions() as session:
            row = session.execute(select(User.password_hash).where(User.username == name)).first()
        stored = row[0] if row is not None else None
        verified = self._password_matches(stored, password)
        rehashed = None
        if verified and self.hasher.check_needs_rehash(stored or ""):
            rehashed = self.hasher.hash(password)

        def apply(session: Session) -> Account | None:
            user = session.scalars(select(User).where(User.username == name)).one_or_none()
            if user is None:
                detail = {"client": client, "reason": "unknown user"}
                self.record(_entry("anonymous", "session.login", "user:unknown", "failed", detail))
                return None
            reason = self._sign_in_refusal(
                user, verified and user.password_hash == stored, totp, now
            )
            if reason is None:
                user.failed_logins, user.locked_until = 0, None
                if rehashed is not None:
                    user.password_hash = rehashed
            elif reason in ("wrong password", "wrong second factor", "second factor used before"):
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
            return Account.of(user) if reason is None else None

        account = self.writes.run(apply)
        if account is None:
            raise SignInFailed()
        self.sync_grants(account)
        return account

    def _password_matches(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` is the one hashed in ``stored``; for no user at all, the
        same work is done (no timing oracle)."""
        if stored is None:
            self.hasher.hash(password)
            return False
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _sign_in_refusal(
        self, user: User, password_ok: bool, totp: str | None, now: datetime
    ) -> str | None:
        if user.status is not UserStatus.ACTIVE:
            return "account disabled"
        if user.organization.status is not OrganizationStatus.ACTIVE:
            return "organization suspended"
        if user.locked_until is not None and user.locked_until > now:
            return "account locked"
        if not password_ok:
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

        def apply(session: Session) -> None:
            user = _get(session, User, user_id)
            user.totp_secret, user.totp_last_step = secret, step
            self.record(_entry(f"user:{user.id}", "user.totp.enable", f"user:{user.id}", "ok", {}))

        self.writes.run(apply)

    # ------------------------------------------------------------------ API tokens
    def issue_token(self, actor: Actor, *, name: str, days: int = 90) -> tuple[str, str]:
        """A personal API token of ``actor``: ``(token id, secret)``. The secret is shown
        once and stored only as its SHA-256."""
        self._authorize(actor, "api_token", "manage", actor.user)
        if not 1 <= days <= MAX_TOKEN_DAYS:
            raise IdentityError(f"a token lives 1 to {MAX_TOKEN_DAYS} days")
        name = clean_text(name, "a token's name", 100)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = self.clock() + timedelta(days=days)
        token_id = new_id()  # known before the row is written: no flush of its own
        row = {
            "id": token_id,
            "user_id": actor.user.removeprefix("user:"),
            "name": name,
            "token_hash": _token_hash(secret),
            "expires_at": expires,
        }
        detail = {"expires": expires.isoformat(), "name": name}

        def apply(session: Session) -> None:
            session.add(ApiToken(**row))
            self.record(_entry(actor.user, "api_token.create", f"token:{token_id}", "ok", detail))

        self.writes.run(apply)
        return token_id, secret

    def revoke_token(self, actor: Actor, token_id: str) -> None:
        """Revoke one's own token (administrators: anyone's)."""
        self._authorize(actor, "api_token", "manage", f"token:{token_id}")

        def apply(session: Session) -> None:
            token = _get(session, ApiToken, token_id)
            if f"user:{token.user_id}" != actor.user and ADMIN not in actor.roles:
                raise NotFound(f"no apitoken {token_id}")  # others' tokens are not there
            if token.revoked_at is None:
                token.revoked_at = self.clock()
            self.record(_entry(actor.user, "api_token.revoke", f"token:{token_id}", "ok", {}))

        self.writes.run(apply)

    def authenticate_token(self, secret: str) -> Account:
        """The account a token belongs to, if it is live; :class:`SignInFailed` if not."""
        if not secret.startswith(TOKEN_PREFIX):
            raise SignInFailed()
        now = self.clock()
        generation = self.tokens.generation
        with self.sessions() as session:
            # Runs for every request the token cache cannot answer: two plain queries (the
            # token with its user and organization, then the roles), no ORM objects.
            found = session.execute(
                select(
                    ApiToken.id,
                    ApiToken.revoked_at,
                    ApiToken.expires_at,
                    ApiToken.last_used_at,
                    User.id,
                    User.username,
                    User.display_name,
                    User.organization_id,
                    User.must_change_password,
                    User.failed_logins,
                    User.status,
                    Organization.status,
                )
                .join(User, User.id == ApiToken.user_id)
                .join(Organization, Organization.id == User.organization_id)
                .where(ApiToken.token_hash == _token_hash(secret))
            ).one_or_none()
            if found is None:
                raise SignInFailed()
            (token_id, revoked, expires, last_used, user_id, *person, user_status, org_status) = (
                found
            )
            if (
                revoked is not None
                or expires <= now
                or user_status is not UserStatus.ACTIVE
                or org_status is not OrganizationStatus.ACTIVE
            ):
                raise SignInFailed()
            roles = session.scalars(select(RoleGrant.role).where(RoleGrant.user_id == user_id))
            username, display_name, organization_id, must_change, failures = person
            account = Account(
                id=user_id,
                username=username,
                display_name=display_name,
                organization_id=organization_id,
                roles=frozenset(roles),
                must_change_password=must_change,
                failed_logins=failures,
            )
            self._sync_grants(session, account)
        if last_used is None or now - last_used >= TOKEN_USE_EVERY:
            # What a token's owner sees; not a change of the platform's state.
            stamp = update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            self.writes.run(lambda session: session.execute(stamp))
        self.tokens.put(secret, account, expires, generation)
        return account

    def cached_token(self, secret: str) -> Account | None:
        """The account of a token resolved in the last seconds, if nothing changed since
        (see :mod:`gateway.identity.tokencache`); ``None``: ask :meth:`authenticate_token`.
        No I/O: safe to call on the event loop."""
        return self.tokens.get(secret, self.clock())

    def set_password(self, user_id: str, old: str, new: str) -> None:
        """Change one's own password (the one-time password must be changed first)."""
        if len(new) < MIN_PASSWORD_LENGTH:
            raise IdentityError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
        # The hashing is slow on purpose, so it is done before the write, which then
        # checks that the password it verified is still the one stored.
        with self.sessions() as session:
            current = _get(session, User, user_id).password_hash or ""
        try:
            self.hasher.verify(current, old)
        except (VerificationError, InvalidHashError):
            raise IdentityError("the current password is wrong") from None
        if new == old:
            raise IdentityError("the new password must differ from the current one")
        new_hash = self.hasher.hash(new)

        def apply(session: Session) -> None:
            user = _get(session, User, user_id)
            if user.password_hash != current:
                raise Conflict("the password was changed meanwhile; try again")
            user.password_hash = new_hash
            user.must_change_password = False
            user.password_changed_at = self.clock()
            self.record(_entry(f"user:{user.id}", "user.password", f"user:{user.id}", "ok", {}))

        self.writes.run(apply)
