"""Accounts of recently used API tokens, so that most authenticated requests are decided
without the database and without leaving the event loop.

An entry lives ``ttl`` seconds (2 by default) and never past its token's expiry. Every
commit of the identity database in this process empties the cache (a revocation, a role,
user or organization change takes effect at the next request), and an entry read from the
database while such a commit happened is not kept. Changes made by another process
(``sbx user`` beside the gateway) take effect within ``ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from gateway.identity.model import Account

MAX_ENTRIES = 10_000


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
        self.generation = 0  # bumped by every commit
        event.listen(sessions, "after_commit", self._forget_all)

    def _forget_all(self, _session: Any) -> None:
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


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
