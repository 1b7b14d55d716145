"""Accounts of recently used API tokens, so that most authenticated requests are decided
without the database and without leaving the event loop.

An entry lives ``ttl`` seconds (2 by default) and never past its token's expiry. A commit
in this process that changed what a token resolves to empties the cache at once, and an
entry read from the database while such a commit happened is not kept: a revocation, a
role, user or organization change takes effect at the next request. Such a commit is one
that changed or deleted a user, an organization or a token, or added or removed a role
grant (seen in the session's flushes and in its UPDATE and DELETE statements); adding a
token, a user or an organization, or anything outside identity (browser sessions, say),
leaves the cache alone. Changes made by another process (``sbx user`` beside the gateway)
take effect within ``ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from gateway.db.models import ApiToken, Organization, RoleGrant, User
from gateway.identity.model import Account

MAX_ENTRIES = 10_000
IDENTITY = (User, Organization, RoleGrant, ApiToken)  # what a token resolves through
_CHANGED = "sbx.identity_changed"  # session.info key


class TokenCache:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        ttl: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.monotonic = monotonic
        self._entries: dict[str, tuple[float, datetime, Account]] = {}
        self.generation = 0  # bumped by every commit that changed identities
        event.listen(sessions, "after_flush", _note_flush)
        event.listen(sessions, "do_orm_execute", _note_statement)
        event.listen(sessions, "after_commit", self._after_commit)
        event.listen(sessions, "after_rollback", _forget_note)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(_CHANGED, False):
            self.forget_all()

    def forget_all(self) -> None:
        self.generation += 1
        self._entries.clear()

    def get(self, secret: str, now: datetime) -> Account | None:
        entry = self._entries.get(_key(secret))
        if entry is None:
            return None
        stored, expires, account = entry
        if self.monotonic() - stored >= self.ttl or now >= expires:
            return None
        return account

    def put(self, secret: str, account: Account, expires: datetime, generation: int) -> None:
        """Keep ``account`` unless a commit happened since ``generation`` was read."""
        if generation != self.generation or self.ttl <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[_key(secret)] = (self.monotonic(), expires, account)


def _note_flush(session: Session, _context: Any) -> None:
    changed = (*session.dirty, *session.deleted)
    if any(isinstance(row, IDENTITY) for row in changed) or any(
        isinstance(row, RoleGrant) for row in session.new
    ):
        session.info[_CHANGED] = True


def _note_statement(state: ORMExecuteState) -> None:
    if state.is_update or state.is_delete:
        mapper = state.bind_mapper
        if mapper is None or issubclass(mapper.class_, IDENTITY):
            state.session.info[_CHANGED] = True


def _forget_note(session: Session) -> None:
    session.info.pop(_CHANGED, None)


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
