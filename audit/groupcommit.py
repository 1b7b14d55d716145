"""Leader/follower group commit: many callers, one durable write.

Callers queue what they want written. The first caller that finds no commit under way
becomes the *leader*: it takes everything queued — its own item and those of callers
that arrived meanwhile — commits it all with one call (one sync), answers each caller,
and hands the lead to the first caller that queued during its commit. Everyone else
waits on a lock of their own and is woken exactly once. A lone caller commits its own
item without any thread hand-off; under load, one sync serves the whole queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from audit.errors import LedgerError

Result = TypeVar("Result")


class _Waiter:
    __slots__ = ("body", "error", "lead", "lock", "result")

    def __init__(self, body: bytes | None) -> None:
        self.body = body  # None: a barrier that only waits for what was queued before it
        self.lock = threading.Lock()
        self.lock.acquire()
        self.lead = False
        self.result: object = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Result]):
    """Serialises calls of ``commit(bodies) -> results`` (one result per body, in order)
    and batches the bodies submitted while a call is under way."""

    def __init__(self, commit: Callable[[list[bytes]], list[Result]]) -> None:
        self._commit = commit
        self._mutex = threading.Lock()
        self._queue: list[_Waiter] = []
        self._leading = False
        self._closed = False

    def submit(self, body: bytes) -> Result:
        """Commit ``body`` together with whatever else is queued; return its result."""
        waiter = self._enqueue(body, refuse_when_closed=True)
        if waiter.error is not None:
            raise LedgerError(f"entry not recorded: {waiter.error}") from waiter.error
        return waiter.result  # type: ignore[return-value]

    def barrier(self) -> None:
        """Return once everything submitted before this call is committed."""
        self._enqueue(None, refuse_when_closed=False)

    def close(self) -> None:
        """Refuse new submissions and wait for those already queued."""
        with self._mutex:
            self._closed = True
        self.barrier()

    def _enqueue(self, body: bytes | None, *, refuse_when_closed: bool) -> _Waiter:
        waiter = _Waiter(body)
        with self._mutex:
            if self._closed and refuse_when_closed:
                raise LedgerError("the ledger is closed")
            self._queue.append(waiter)
            lead = not self._leading
            self._leading = True
        if not lead:
            waiter.lock.acquire()  # answered, or promoted to lead the next batch
            if not waiter.lead:
                return waiter
        self._lead()
        return waiter

    def _lead(self) -> None:
        with self._mutex:
            batch, self._queue = self._queue, []
        try:
            writes = [waiter for waiter in batch if waiter.body is not None]
            if writes:
                results = self._commit([waiter.body for waiter in writes])  # type: ignore[misc]
                for waiter, result in zip(writes, results, strict=True):
                    waiter.result = result
        except BaseException as exc:
            for waiter in batch:
                waiter.error = exc
            if not isinstance(exc, Exception):
                raise  # an interrupt: still pass the lead on (below), then stop this thread
        finally:
            with self._mutex:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leading = False
                else:
                    successor.lead = True
            for waiter in batch:
                waiter.lock.release()
            if successor is not None:
                successor.lock.release()
