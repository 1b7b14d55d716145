"""Grants and the sandbox sessions they allow.

A grant lets the named applicants of one application unit work, from ``starts_at`` until
``ends_at``, in a notebook sandbox that holds the views in ``<data_dir>/views/<views>``.
An approver may suspend it at once (R19) and resume it. Its sandbox is JupyterHub's: the
gateway mints a sign-on ticket when a member opens it, the hub starts a session through
:meth:`SandboxService.start_session`, asks every ``sandbox.poll_seconds`` whether the
session is still allowed (:meth:`~SandboxService.session_state`) and ends it
(:meth:`~SandboxService.end_session`). Every executed cell, input and terminal command is
recorded in the ledger by :meth:`~SandboxService.record_execution`, which refuses as soon
as the grant is no longer active, so a suspended grant's kernels stop executing at once.

Grants are created by hand for now (:meth:`SandboxService.create_grant`, ``sbx grant
create``: the operator's manual path); grants made from signed agreements will use the
same tables.

Every change follows the order of the other services: who may, whether the state allows,
the change as a job of the write queue with its ledger entry committed with it; refusals
are recorded too. Secrets (session tokens, tickets) are never recorded: a session's token
is returned once and only its SHA-256 is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.authz import Actor, Authorizer, Denied
from gateway.db.models import (
    Grant,
    GrantMember,
    GrantStatus,
    Organization,
    OrganizationType,
    SandboxExecution,
    SandboxSession,
    SandboxUid,
    User,
)
from gateway.db.writes import WriteQueue, writing_here
from gateway.identity.model import (
    MAX_REASON,
    Account,
    Conflict,
    IdentityError,
    NotFound,
    _entry,
    _plausible,
    _token_hash,
    can_sign_in,
    clean_text,
)
from gateway.sandboxes.hub import HubClient
from gateway.sandboxes.receipts import Receipted, Slot
from gateway.sandboxes.secrets import SandboxSecrets
from gateway.settings import SandboxSettings
from sandbox.spawner.ticket import GRANT, TicketRefused, mint_ticket

log = logging.getLogger("sbx.gateway")
HUB = "system:hub"  # the hub, calling with its service token
SYSTEM = "system:gateway"
MAX_CODE = 48 * 1024  # UTF-8 bytes of one executed cell (the recorder's limit too)
MAX_ESCAPED = 56 * 1024  # ...and as a ledger entry writes it (control characters escaped)
MAX_LABEL = 128  # a kernel's or a message's id
MAX_TITLE = 200
MAX_MEMBERS = 200
OPERATOR_ROLES = frozenset({"approver", "reviewer", "regulator", "admin"})
APPLICANT = "applicant"
Kind = Literal["execute", "input", "command"]
KINDS: frozenset[str] = frozenset({"execute", "input", "command"})
_LABEL = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces

# A grant's lifecycle. Expiry is also read from ``ends_at``: a grant whose period is over
# is expired whatever its row says (:func:`effective_status`).
TRANSITIONS: dict[GrantStatus, frozenset[GrantStatus]] = {
    GrantStatus.ACTIVE: frozenset(
        {GrantStatus.SUSPENDED, GrantStatus.EXPIRED, GrantStatus.TERMINATED}
    ),
    GrantStatus.SUSPENDED: frozenset(
        {GrantStatus.ACTIVE, GrantStatus.EXPIRED, GrantStatus.TERMINATED}
    ),
    GrantStatus.EXPIRED: frozenset(),
    GrantStatus.TERMINATED: frozenset(),
}


class SandboxError(IdentityError):
    """A request about grants or sandboxes that cannot be taken as it is (422)."""


class CodeTooLarge(SandboxError):
    """Executed code above :data:`MAX_CODE` (413)."""


class SandboxRefused(Exception):
    """The hub or a session's recorder is refused: the user, grant or session does not
    allow it (any more). ``reason`` is safe to show (403)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownSession(Exception):
    """A session token that belongs to no session (401)."""


# ------------------------------------------------------------------ pure rules
def effective_status(status: GrantStatus, ends_at: datetime, now: datetime) -> GrantStatus:
    """The grant's status as of ``now``: an active or suspended grant whose period is
    over has expired."""
    if status in (GrantStatus.ACTIVE, GrantStatus.SUSPENDED) and now >= ends_at:
        return GrantStatus.EXPIRED
    return status


def use_refusal(
    status: GrantStatus, starts_at: datetime, ends_at: datetime, now: datetime
) -> str | None:
    """Why the grant's sandbox may not be used at ``now``, or ``None``."""
    current = effective_status(status, ends_at, now)
    if current is not GrantStatus.ACTIVE:
        return f"the grant is {current}"
    if now < starts_at:
        return f"the grant starts at {starts_at.isoformat(timespec='minutes')}"
    return None


def check_can_change(current: GrantStatus, to: GrantStatus) -> None:
    """Raise :class:`Conflict` unless :data:`TRANSITIONS` allows ``current`` → ``to``."""
    if to not in TRANSITIONS[current]:
        raise Conflict(f"a grant that is {current} cannot become {to}")


def can_change(current: GrantStatus, to: GrantStatus) -> bool:
    return to in TRANSITIONS[current]


def code_size(code: str) -> int:
    """Bytes ``code`` takes in a ledger entry (canonical JSON escapes control characters)."""
    return len(json.encoder.encode_basestring(code).encode()) - 2


# ------------------------------------------------------------------ what it returns
@dataclass(frozen=True)
class GrantSnapshot:
    id: str
    title: str
    organization_id: str
    organization_name: str
    views: str
    starts_at: datetime
    ends_at: datetime
    status: GrantStatus  # as of when it was read (expiry derived from ends_at)
    gid: int
    members: tuple[str, ...]  # user ids
    member_names: tuple[str, ...]  # their user names, in the same order
    created_by: str
    created_at: datetime
    suspended_by: str | None
    suspended_at: datetime | None
    suspended_reason: str | None
    agreement_id: str | None = None  # the signed agreement it was made from

    def usable(self, now: datetime) -> bool:
        """Whether its members may open its sandbox at ``now``."""
        return use_refusal(self.status, self.starts_at, self.ends_at, now) is None


@dataclass(frozen=True, repr=False)
class SessionStart:
    """What the hub needs to start a sandbox. ``token`` is the session's secret for its
    code recorder: returned once, never stored."""

    session: str
    token: str
    uid: int
    gid: int
    views: Path
    limits: dict[str, int | float]
    expires_at: datetime
    user: str
    grant: str

    def __repr__(self) -> str:
        return f"SessionStart(session={self.session!r}, user={self.user!r}, grant={self.grant!r})"


@dataclass(frozen=True)
class Receipt:
    """Where an execution's record is: the ledger entry's sequence number and the
    SHA-256 (hex) of the code's UTF-8 bytes."""

    seq: int
    sha256: str


class SandboxService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: WriteQueue,
        authorizer: Authorizer,
        *,
        settings: SandboxSettings,
        secrets: SandboxSecrets,
        views_root: Path,
        hub: HubClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``views_root``: the folder of the grants' views (``<data_dir>/views``). ``hub``:
        where suspended grants' servers are stopped (none: the hub's poll does it)."""
        self.sessions = sessions
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer
        self.settings = settings
        self.secrets = secrets
        self.views_root = views_root
        self.hub = hub
        self.clock = clock

    # ------------------------------------------------------------------ plumbing
    def _authorize(self, actor: Actor, obj: str, act: str, what: str) -> None:
        reason = self.authorizer.refusal(actor, obj, act)
        if reason is not None:
            self._deny(actor.user, f"{obj}.{act}", what, reason)

    def _deny(self, actor: str, action: str, what: str, reason: str, **detail: Any) -> NoReturn:
        self.record(_entry(actor, action, what, "denied", {"reason": reason, **detail}))
        raise Denied(reason)

    def _refuse(self, actor: str, action: str, what: str, reason: str, **detail: Any) -> NoReturn:
        self.record(_entry(actor, action, what, "denied", {"reason": reason, **detail}))
        raise SandboxRefused(reason)

    def _grant(self, session: Session, grant_id: str) -> Grant:
        found = session.get(Grant, grant_id) if _plausible(grant_id) else None
        if found is None:
            raise NotFound(f"no grant {grant_id[:64]!r}")
        return found

    def _snapshot(self, session: Session, grant: Grant) -> GrantSnapshot:
        members = session.execute(
            select(User.id, User.username)
            .join(GrantMember, GrantMember.user_id == User.id)
            .where(GrantMember.grant_id == grant.id)
            .order_by(User.username)
        ).all()
        organization = session.get(Organization, grant.organization_id)
        return GrantSnapshot(
            id=grant.id,
            title=grant.title,
            organization_id=grant.organization_id,
            organization_name=organization.name if organization else "",
            views=grant.views,
            starts_at=grant.starts_at,
            ends_at=grant.ends_at,
            status=effective_status(grant.status, grant.ends_at, self.clock()),
            gid=grant.gid,
            members=tuple(row[0] for row in members),
            member_names=tuple(row[1] for row in members),
            created_by=grant.created_by,
            created_at=grant.created_at,
            suspended_by=grant.suspended_by,
            suspended_at=grant.suspended_at,
            suspended_reason=grant.suspended_reason,
            agreement_id=grant.agreement_id,
        )

    def _end_open_sessions(
        self, session: Session, actor: str, reason: str, **where: str
    ) -> list[tuple[str, str]]:
        """End the open sessions matching ``where`` (grant_id, user_id); the (user name,
        grant) of each, for the hub."""
        query = select(SandboxSession, User.username).join(User, User.id == SandboxSession.user_id)
        query = query.where(SandboxSession.ended_at.is_(None))
        for column, value in where.items():
            query = query.where(getattr(SandboxSession, column) == value)
        ended = []
        now = self.clock()
        for row, username in session.execute(query).all():
            row.ended_at, row.end_reason = now, reason
            self.record(_stop_entry(actor, row, reason))
            ended.append((username, row.grant_id))
        return ended

    def _stop_servers(self, servers: Iterable[tuple[str, str]]) -> None:
        """Ask the hub to stop these servers now (never on the writer thread)."""
        hub, wanted = self.hub, list(servers)
        if hub is None or not wanted:
            return

        def stop() -> None:
            for user, grant in wanted:
                hub.stop_server(user, grant)

        if writing_here():  # called as a job: leave the writer to its batch
            self.writes.on_commit(lambda: threading.Thread(target=stop, daemon=True).start())
        else:
            stop()

    # ------------------------------------------------------------------ grants
    def create_grant(
        self,
        actor: Actor,
        *,
        grant_id: str,
        title: str,
        organization_id: str,
        members: Iterable[str],
        views: str,
        starts_at: datetime,
        ends_at: datetime,
        agreement: tuple[str, str] | None = None,
    ) -> GrantSnapshot:
        """Grant ``members`` (user ids, applicants of ``organization_id``) a sandbox on
        the views in ``<data_dir>/views/<views>`` from ``starts_at`` until ``ends_at``.
        ``agreement`` is the signed agreement's id and SHA-256 it is made from; without
        it, the operator's manual path, for an agreement signed outside the platform."""
        what = f"grant:{grant_id[:64]}"
        self._authorize(actor, "grant", "create", what)
        if not GRANT.match(grant_id):
            raise SandboxError("a grant id is 1 to 63 of a-z, 0-9 and -, starting with a-z or 0-9")
        name = clean_text(title, "a title", MAX_TITLE)
        if not GRANT.match(views) or not (self.views_root / views).is_dir():
            raise SandboxError(f"there is no folder of views {views[:64]!r}")
        if starts_at.tzinfo is None or ends_at.tzinfo is None:
            raise SandboxError("the period's times need a time zone")
        if ends_at <= starts_at:
            raise SandboxError("a grant ends after it starts")
        if ends_at <= self.clock():
            raise SandboxError("the grant's period is over already")
        wanted = sorted(set(members))
        if not wanted or len(wanted) > MAX_MEMBERS:
            raise SandboxError(f"a grant has 1 to {MAX_MEMBERS} members")

        def apply(session: Session) -> GrantSnapshot:
            if session.get(Grant, grant_id) is not None:
                raise Conflict(f"there is a grant {grant_id} already")
            organization = (
                session.get(Organization, organization_id) if _plausible(organization_id) else None
            )
            if organization is None:
                raise NotFound(f"no organization {organization_id[:64]!r}")
            if organization.type is not OrganizationType.APPLICATION_UNIT:
                raise SandboxError("grants are made to application units")
            for user_id in wanted:
                user = session.get(User, user_id) if _plausible(user_id) else None
                if user is None or user.organization_id != organization.id:
                    raise SandboxError(f"{user_id[:64]!r} is no user of {organization.name}")
                if APPLICANT not in {grant.role for grant in user.roles}:
                    raise SandboxError(f"{user.username} is not an applicant")
            gid = _lowest_free(
                session.scalars(select(Grant.gid)), self.settings.gid_base, self.settings.pool_size
            )
            if gid is None:
                raise Conflict("every gid of the sandbox pool is taken")
            grant = Grant(
                id=grant_id,
                title=name,
                organization_id=organization.id,
                views=views,
                starts_at=starts_at,
                ends_at=ends_at,
                status=GrantStatus.ACTIVE,
                gid=gid,
                created_by=actor.user,
                created_at=self.clock(),
                agreement_id=agreement[0] if agreement else None,
            )
            session.add(grant)
            session.flush()
            session.add_all(GrantMember(grant_id=grant_id, user_id=user_id) for user_id in wanted)
            session.flush()
            self.record(
                _entry(
                    actor.user,
                    "grant.create",
                    what,
                    "ok",
                    {
                        "title": name,
                        "organization": organization.id,
                        "members": wanted,
                        "views": views,
                        "starts_at": starts_at.isoformat(),
                        "ends_at": ends_at.isoformat(),
                        "gid": gid,
                        **(
                            {"agreement": agreement[0], "agreement_sha256": agreement[1]}
                            if agreement
                            else {}
                        ),
                    },
                )
            )
            return self._snapshot(session, grant)

        try:
            return self.writes.run(apply)
        except IntegrityError:  # another process took the id or the gid meanwhile
            raise Conflict(f"there is a grant {grant_id} already, or its gid was taken") from None

    def list_grants(self, actor: Actor) -> list[GrantSnapshot]:
        """Every grant for the operator's people and regulators; an applicant's own."""
        self.authorizer.authorize(actor, "grant", "read")
        query = select(Grant)
        if not OPERATOR_ROLES & actor.roles:
            query = query.join(GrantMember).where(
                GrantMember.user_id == actor.user.removeprefix("user:")
            )
        with self.sessions() as session:
            rows = session.scalars(query.order_by(Grant.created_at.desc(), Grant.id))
            return [self._snapshot(session, row) for row in rows]

    def get_grant(self, actor: Actor, grant_id: str) -> GrantSnapshot:
        """One grant, under the rules of :meth:`list_grants` (others read as absent)."""
        self.authorizer.authorize(actor, "grant", "read")
        with self.sessions() as session:
            grant = self._grant(session, grant_id)
            snapshot = self._snapshot(session, grant)
        if not OPERATOR_ROLES & actor.roles and actor.user[5:] not in snapshot.members:
            raise NotFound(f"no grant {grant_id[:64]!r}")
        return snapshot

    def suspend_grant(self, actor: Actor, grant_id: str, reason: str) -> GrantSnapshot:
        """Suspend the grant at once (R19): its open sessions end, the hub is asked to
        stop their servers, and its kernels' executions are refused from now on. Call it
        from a thread of its own (the hub is called after the change commits)."""
        what = f"grant:{grant_id[:64]}"
        self._authorize(actor, "grant", "suspend", what)
        why = clean_text(reason, "a reason", MAX_REASON)

        def apply(session: Session) -> tuple[GrantSnapshot, list[tuple[str, str]]]:
            grant = self._grant(session, grant_id)
            check_can_change(
                effective_status(grant.status, grant.ends_at, self.clock()), GrantStatus.SUSPENDED
            )
            grant.status = GrantStatus.SUSPENDED
            grant.suspended_by, grant.suspended_at = actor.user, self.clock()
            grant.suspended_reason = why
            stopped = self._end_open_sessions(
                session, actor.user, "grant suspended", grant_id=grant.id
            )
            self.record(
                _entry(
                    actor.user,
                    "grant.suspend",
                    what,
                    "ok",
                    {"reason": why, "sessions": len(stopped)},
                )
            )
            return self._snapshot(session, grant), stopped

        snapshot, stopped = self.writes.run(apply)
        self._stop_servers(stopped)
        return snapshot

    def resume_grant(self, actor: Actor, grant_id: str, reason: str) -> GrantSnapshot:
        """Lift a suspension (the grant's period must not be over)."""
        what = f"grant:{grant_id[:64]}"
        self._authorize(actor, "grant", "resume", what)
        why = clean_text(reason, "a reason", MAX_REASON)

        def apply(session: Session) -> GrantSnapshot:
            grant = self._grant(session, grant_id)
            current = effective_status(grant.status, grant.ends_at, self.clock())
            if current is not GrantStatus.SUSPENDED:
                raise Conflict(f"only a suspended grant is resumed; this one is {current}")
            check_can_change(current, GrantStatus.ACTIVE)
            grant.status = GrantStatus.ACTIVE
            grant.suspended_by = grant.suspended_at = grant.suspended_reason = None
            self.record(_entry(actor.user, "grant.resume", what, "ok", {"reason": why}))
            return self._snapshot(session, grant)

        return self.writes.run(apply)

    # ------------------------------------------------------------------ opening
    def open_sandbox(self, actor: Actor, grant_id: str, *, username: str) -> str:
        """Where to send the member's browser: the hub's sign-on address with a ticket
        for ``username`` (the actor's user name) and the grant, valid for a minute."""
        what = f"grant:{grant_id[:64]}"
        self._authorize(actor, "sandbox", "open", what)
        with self.sessions() as session:
            grant = self._grant(session, grant_id)
            member = session.get(GrantMember, (grant.id, actor.user.removeprefix("user:")))
            refusal = use_refusal(grant.status, grant.starts_at, grant.ends_at, self.clock())
            grant_id = grant.id
        if member is None:
            self._deny(actor.user, "sandbox.open", what, "you are not a member of this grant")
        if refusal is not None:
            self._deny(actor.user, "sandbox.open", what, refusal)
        try:
            ticket = mint_ticket(self.secrets.sso_secret, username, grant_id)
        except TicketRefused:
            raise SandboxError(
                f"the user name {username[:64]!r} cannot be used in a sandbox "
                "(a-z, 0-9, '.', '_' and '-' only)"
            ) from None
        self.record(_entry(actor.user, "sandbox.open", what, "ok", {"hub_user": username}))
        return f"{self.settings.hub_url.rstrip('/')}/hub/sbx-login?ticket={ticket}"

    # ------------------------------------------------------------------ the hub
    def start_session(self, username: str, grant_id: str) -> SessionStart:
        """A new session of ``username``'s sandbox for the grant, on behalf of the hub.
        :class:`SandboxRefused` unless the user is an active member of a grant that is
        active and within its period; :class:`NotFound` for an unknown user."""
        name = username.strip().lower()
        what = f"grant:{grant_id[:64]}"
        token = secrets.token_urlsafe(32)

        def apply(session: Session) -> SessionStart:
            user = (
                session.scalar(select(User).where(User.username == name))
                if _plausible(name)
                else None
            )
            if user is None:
                raise NotFound(f"no user {name[:64]!r}")
            actor = Account.of(user).actor()
            grant = session.get(Grant, grant_id) if _plausible(grant_id) else None
            if grant is None:
                self._refuse(actor.user, "sandbox.start", what, "there is no such grant")
            if not can_sign_in(user):
                self._refuse(actor.user, "sandbox.start", what, "the account is not active")
            if session.get(GrantMember, (grant.id, user.id)) is None:
                self._refuse(actor.user, "sandbox.start", what, "not a member of this grant")
            allowed = self.authorizer.refusal(actor, "sandbox", "open")
            if allowed is not None:
                self._refuse(actor.user, "sandbox.start", what, allowed)
            refusal = use_refusal(grant.status, grant.starts_at, grant.ends_at, self.clock())
            if refusal is not None:
                self._refuse(actor.user, "sandbox.start", what, refusal)
            uid = self._uid(session, user.id)
            self._end_open_sessions(
                session, HUB, "replaced by a new session", grant_id=grant.id, user_id=user.id
            )
            row = SandboxSession(
                grant_id=grant.id,
                user_id=user.id,
                token_hash=_token_hash(token),
                started_at=self.clock(),
            )
            session.add(row)
            session.flush()
            self.record(
                _entry(
                    actor.user,
                    "sandbox.start",
                    f"session:{row.id}",
                    "ok",
                    {"grant": grant.id, "hub_user": user.username, "uid": uid, "gid": grant.gid},
                )
            )
            return SessionStart(
                session=row.id,
                token=token,
                uid=uid,
                gid=grant.gid,
                views=(self.views_root / grant.views).resolve(),
                limits=self.settings.limits(),
                expires_at=grant.ends_at,
                user=user.username,
                grant=grant.id,
            )

        try:
            return self.writes.run(apply)
        except IntegrityError:  # another gateway process took the same uid meanwhile
            raise Conflict("the sandbox uid was taken meanwhile; start again") from None

    def _uid(self, session: Session, user_id: str) -> int:
        """The user's uid: allocated once (the lowest free one of the pool), then kept."""
        held = session.get(SandboxUid, user_id)
        if held is not None:
            return held.uid
        uid = _lowest_free(
            session.scalars(select(SandboxUid.uid)),
            self.settings.uid_base,
            self.settings.pool_size,
        )
        if uid is None:
            raise Conflict("every uid of the sandbox pool is taken")
        session.add(SandboxUid(user_id=user_id, uid=uid))
        session.flush()
        return uid

    def session_state(self, session_id: str) -> tuple[bool, str | None]:
        """Whether the session may go on; if not, why. A session whose grant or user no
        longer allows it is ended here (``sandbox.stop``)."""
        with self.sessions() as session:
            row = session.get(SandboxSession, session_id) if _plausible(session_id) else None
            if row is None:
                raise NotFound(f"no session {session_id[:64]!r}")
            if row.ended_at is not None:
                return False, row.end_reason
            reason = self._session_refusal(session, row)
        if reason is None:
            return True, None
        self.end_session(session_id, reason, actor=SYSTEM)
        return False, reason

    def _session_refusal(self, session: Session, row: SandboxSession) -> str | None:
        grant = session.get(Grant, row.grant_id)
        user = session.get(User, row.user_id)
        if grant is None or user is None:
            return "the grant or user is gone"
        if not can_sign_in(user):
            return "the account is not active"
        if session.get(GrantMember, (grant.id, user.id)) is None:
            return "no longer a member of the grant"
        return use_refusal(grant.status, grant.starts_at, grant.ends_at, self.clock())

    def end_session(self, session_id: str, reason: str, *, actor: str = HUB) -> None:
        """End the session (again: nothing happens); ``sandbox.stop`` in the ledger."""
        why = clean_text(reason or "stopped", "a reason", MAX_REASON)

        def apply(session: Session) -> None:
            row = session.get(SandboxSession, session_id) if _plausible(session_id) else None
            if row is None:
                raise NotFound(f"no session {session_id[:64]!r}")
            if row.ended_at is not None:
                return
            row.ended_at, row.end_reason = self.clock(), why
            self.record(_stop_entry(actor, row, why))

        self.writes.run(apply)

    # ------------------------------------------------------------------ the code record
    def record_execution(
        self, token: str, *, kernel: str, message: str, kind: str, code: str
    ) -> Receipt:
        """Record code a session's kernel is about to run (a cell, an input, a terminal
        command) and answer where the record is. :class:`UnknownSession` for a token of no
        session; :class:`SandboxRefused` (recorded) once the session has ended or its
        grant is not active; :class:`CodeTooLarge` above :data:`MAX_CODE`. One write job;
        call it from a thread other than the writer's (the answer needs the batch durable)."""
        if writing_here():
            raise RuntimeError("record_execution waits for its batch: not on the writer thread")
        if kind not in KINDS:
            raise SandboxError(f"kind is one of {', '.join(sorted(KINDS))}")
        for label, value in (("kernel", kernel), ("message", message)):
            if not _LABEL.match(value):
                raise SandboxError(f"{label} is 1 to {MAX_LABEL} printable ASCII characters")
        try:
            encoded = code.encode()
        except UnicodeEncodeError:
            raise SandboxError("the code is not valid Unicode") from None
        if len(encoded) > MAX_CODE or code_size(code) > MAX_ESCAPED:
            raise CodeTooLarge(f"the code is larger than {MAX_CODE // 1024} KiB; split it")
        digest = hashlib.sha256(encoded).hexdigest()
        slot = Slot()

        def apply(session: Session) -> None:
            row, grant = self.session_of_token(session, token, "sandbox.execute")
            actor, what = f"user:{row.user_id}", f"session:{row.id}"
            if row.ended_at is not None:
                ended = f"the session has ended ({row.end_reason or 'stopped'})"
                self._refuse(actor, "sandbox.execute", what, ended, sha256=digest)
            refusal = use_refusal(grant.status, grant.starts_at, grant.ends_at, self.clock())
            if refusal is not None:
                self._refuse(actor, "sandbox.execute", what, refusal, sha256=digest)
            detail = {
                "session": row.id,
                "grant": grant.id,
                "kernel": kernel,
                "message": message,
                "kind": kind,
                "sha256": digest,
                "code": code,
            }
            session.add(
                SandboxExecution(
                    session_id=row.id,
                    grant_id=grant.id,
                    user_id=row.user_id,
                    kind=kind,
                    sha256=digest,
                    code=code,
                    recorded_at=self.clock(),
                )
            )
            self.record(Receipted(_entry(actor, "sandbox.execute", what, "ok", detail), slot))

        self.writes.run(apply)
        if slot.seq is None:
            raise RuntimeError("the write queue's audit sink does not report ledger positions")
        return Receipt(slot.seq, digest)

    def session_of_token(
        self, session: Session, token: str, action: str
    ) -> tuple[SandboxSession, Grant]:
        """The session holding ``token`` and its grant, ended or not; for a token of no
        session, ``action`` is recorded as denied and :class:`UnknownSession` raised."""
        presented = _token_hash(token)
        found = session.execute(
            select(SandboxSession, Grant)
            .join(Grant, Grant.id == SandboxSession.grant_id)
            .where(SandboxSession.token_hash == presented)
        ).first()
        if found is None or not hmac.compare_digest(found[0].token_hash, presented):
            self.record(
                _entry(
                    "anonymous",
                    action,
                    "session:unknown",
                    "denied",
                    {"reason": "the session token is not valid"},
                )
            )
            raise UnknownSession("the session token is not valid")
        return found[0], found[1]

    def open_sessions(self, grant_id: str) -> int:
        """How many sessions of the grant are open (for pages and tests)."""
        with self.sessions() as session:
            count = session.scalar(
                select(func.count())
                .select_from(SandboxSession)
                .where(SandboxSession.grant_id == grant_id, SandboxSession.ended_at.is_(None))
            )
        return int(count or 0)


def _stop_entry(actor: str, row: SandboxSession, reason: str) -> dict[str, Any]:
    return _entry(
        actor,
        "sandbox.stop",
        f"session:{row.id}",
        "ok",
        {"grant": row.grant_id, "user": row.user_id, "reason": reason},
    )


def _lowest_free(taken: Iterable[int], base: int, size: int) -> int | None:
    """The lowest number of ``base`` … ``base + size - 1`` not in ``taken``."""
    used = set(taken)
    return next((n for n in range(base, base + size) if n not in used), None)
