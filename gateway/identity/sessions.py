"""Browser sessions: sign-in with a password (and second factor), a cookie, and a CSRF token.

The cookie carries 256 random bits; only their SHA-256 is stored, so a copy of the
database does not sign anyone in. Each session has its own CSRF token, which every
state-changing browser request must echo (a form field or the ``X-CSRF-Token`` header).
A session ends at sign-out, after ``idle`` without use, ``lifetime`` after sign-in, when
its user changes their password, or as soon as the user or their organization stops
being active. Opening and ending a session are recorded in the audit ledger; the
session's id (never its secret) is what the ledger names.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.models import BrowserSession, User, new_id
from gateway.identity.model import Account, can_sign_in
from gateway.identity.service import IdentityService

SEEN_EVERY = timedelta(seconds=60)  # write last_seen_at at most this often per session


@dataclass(frozen=True)
class SignedIn:
    """A session just opened: ``secret`` goes into the cookie and nowhere else."""

    secret: str
    session_id: str
    csrf_token: str
    account: Account


@dataclass(frozen=True)
class ActiveSession:
    session_id: str
    csrf_token: str
    account: Account

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and secrets.compare_digest(
            presented.encode(), self.csrf_token.encode()
        )


class SessionService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        identity: IdentityService,
        *,
        idle: timedelta = timedelta(minutes=30),
        lifetime: timedelta = timedelta(hours=12),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.identity = identity
        self.writes = identity.writes  # the same queue (and audit sink) as the identity service
        self.record = self.writes.record
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock

    def sign_in(
        self, username: str, password: str, *, totp: str | None = None, client: str = ""
    ) -> SignedIn:
        """Check the credentials (recorded by the identity service, with lockout) and open
        a session. Raises :class:`~gateway.identity.service.SignInFailed`."""
        account = self.identity.authenticate(username, password, totp=totp, client=client)
        secret = secrets.token_urlsafe(32)
        now = self.clock()

        def apply(session: Session) -> SignedIn:
            row = BrowserSession(
                id=new_id(),
                user_id=account.id,
                secret_hash=_hash(secret),
                csrf_token=secrets.token_urlsafe(32),
                client=client[:64],
                created_at=now,
                last_seen_at=now,
                expires_at=now + self.lifetime,
            )
            session.add(row)
            session.flush()
            self.record(
                {
                    "action": "session.open",
                    "actor": f"user:{account.id}",
                    "object": f"session:{row.id}",
                    "outcome": "ok",
                    "detail": {"client": client, "expires": row.expires_at.isoformat()},
                }
            )
            return SignedIn(secret, row.id, row.csrf_token, account)

        return self.writes.run(apply)

    def resolve(self, secret: str) -> ActiveSession | None:
        """The live session whose cookie this is, or ``None``."""
        if not secret or len(secret) > 128:
            return None
        now = self.clock()
        with self.sessions() as session:
            row = session.scalars(
                select(BrowserSession).where(BrowserSession.secret_hash == _hash(secret))
            ).one_or_none()
            if row is None or row.ended_at is not None or row.expires_at <= now:
                return None
            if row.last_seen_at + self.idle <= now:
                return None
            user = session.get(User, row.user_id)
            if user is None or not can_sign_in(user):
                return None
            if user.password_changed_at is not None and row.created_at < user.password_changed_at:
                return None  # opened with a password that has been changed or reset since
            active = ActiveSession(row.id, row.csrf_token, Account.of(user))
            seen = row.last_seen_at
        if now - seen >= SEEN_EVERY:
            stamp = (
                update(BrowserSession)
                .where(BrowserSession.id == active.session_id)
                .values(last_seen_at=now)
            )
            self.writes.run(lambda session: session.execute(stamp))
        self.identity.sync_grants(active.account)  # roles granted from another process
        return active

    def sign_out(self, active: ActiveSession, *, reason: str = "signed out") -> None:
        """End one session (idempotent) and record it."""

        def apply(session: Session) -> None:
            row = session.get(BrowserSession, active.session_id)
            if row is None or row.ended_at is not None:
                return
            row.ended_at = self.clock()
            self.record(
                {
                    "action": "session.close",
                    "actor": f"user:{active.account.id}",
                    "object": f"session:{row.id}",
                    "outcome": "ok",
                    "detail": {"reason": reason},
                }
            )

        self.writes.run(apply)

    def end_all(self, user_id: str, *, reason: str) -> int:
        """End every open session of a user (after a password change, say): how many."""
        now = self.clock()

        def apply(session: Session) -> int:
            rows = session.scalars(
                select(BrowserSession).where(
                    BrowserSession.user_id == user_id, BrowserSession.ended_at.is_(None)
                )
            ).all()
            for row in rows:
                row.ended_at = now
            ended = len(rows)
            if ended:
                self.record(
                    {
                        "action": "session.close",
                        "actor": f"user:{user_id}",
                        "object": f"user:{user_id}",
                        "outcome": "ok",
                        "detail": {"reason": reason, "sessions": ended},
                    }
                )
            return ended

        return self.writes.run(apply)


def second_factor_enabled(sessions: sessionmaker[Session], user_id: str) -> bool:
    """Whether sign-in asks this user for an authenticator code."""
    with sessions() as session:
        user = session.get(User, user_id)
        return user is not None and user.totp_secret is not None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
