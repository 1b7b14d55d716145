"""Group commit for the control plane: one writer applies many state changes in one
database transaction, records their audit entries with one durable ledger append, and
then commits.

A state change is a *job*: a function of a SQLAlchemy session that changes rows and
records what it did (``WriteQueue.record``). Request handlers hand jobs to the process's
one :class:`WriteQueue` — from a thread with :meth:`WriteQueue.run`, which blocks, or from
the event loop with :meth:`WriteQueue.submit` — and a writer thread takes every job queued
meanwhile and applies them in order, in one transaction::

    BEGIN; job 1; job 2; ... job n; flush
    ledger: append the entries of jobs 1..n together, durably (one sync)
    COMMIT; answer every caller

So the guarantee of every single change is kept — its audit entries are durable before it
commits and before anyone is answered; if the ledger cannot be written, nothing commits
and every caller gets the error (fail closed) — while one sync and one commit serve the
whole queue. SQLite lets one transaction write at a time, and before this each change
held that lock across its own durable append (docs/benchmarks.md, section 5).

Jobs in a batch see each other's changes, in queue order, as if they had run one after
another. When a job fails:

- if nothing was flushed during the job and the session holds no pending change (a
  refusal or a missing row before any write, the common case), it alone gets its error;
  the entries it recorded (a refusal's) are appended with the batch, and the others go on;
- otherwise (it may have changed rows, or may have touched what an earlier job left
  pending) the batch is rolled back, nothing of it is appended, and its jobs are applied
  again one at a time, each in a transaction of its own. Jobs must therefore do nothing
  but read and write through their session and record; they may run twice.

A job alone follows the same order as before batching: its entries are appended whether
it succeeds or not (a failed sign-in is recorded and its transaction rolled back), then it
commits or rolls back.

A job that calls :meth:`run` itself (a service method calling another) joins the batch it
runs in. Code on the writer thread must not open a write transaction of its own
(``sessions.begin()``), which would wait for the batch's own lock: it raises instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

T = TypeVar("T")
P = ParamSpec("P")
Job = Callable[[Session], T]
MAX_BATCH = 256  # jobs per transaction
IDLE_SECONDS = 5.0  # the writer thread ends after this long without work
_CHANGES = "sbx.writes"  # session.info key: flushes and data-changing statements seen


@runtime_checkable
class AuditSink(Protocol):
    """Where recorded entries go. ``prepare`` runs where the entry is recorded (in the
    request's context, to add the request id, say); ``append`` and ``append_many`` must
    return only once the entries are durable and raise if they are not."""

    def prepare(self, fields: dict[str, Any]) -> dict[str, Any]: ...

    def append(self, fields: dict[str, Any]) -> None: ...

    def append_many(self, entries: list[dict[str, Any]]) -> None: ...


class FunctionSink:
    """An :class:`AuditSink` over a plain ``record(fields)`` function, one call per entry."""

    def __init__(self, record: Callable[[dict[str, Any]], None]) -> None:
        self._record = record

    def prepare(self, fields: dict[str, Any]) -> dict[str, Any]:
        return fields

    def append(self, fields: dict[str, Any]) -> None:
        self._record(fields)

    def append_many(self, entries: list[dict[str, Any]]) -> None:
        for fields in entries:
            self._record(fields)


class WriterBusy(RuntimeError):
    """Code on the writer thread tried to open a write transaction of its own."""


class QueueClosed(RuntimeError):
    """A job was handed to a write queue that has been closed."""


@dataclass(eq=False)
class _Job:
    apply: Job[Any]
    context: contextvars.Context
    settle: Callable[[Any, BaseException | None], None]


@dataclass(eq=False)
class _Running:
    """The writer thread's current transaction and job (thread-local)."""

    session: Session
    entries: list[dict[str, Any]] = field(default_factory=list)
    on_commit: list[Callable[[], None]] = field(default_factory=list)


class _Tangled(Exception):
    """A job of a batch failed after changing rows: the batch is applied one by one."""


_local = threading.local()


def writing_here() -> bool:
    """Whether this thread is a writer applying a batch."""
    return getattr(_local, "running", None) is not None


class WriteQueue:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        sink: AuditSink | Callable[[dict[str, Any]], None],
        *,
        max_batch: int = MAX_BATCH,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.sink: AuditSink = sink if isinstance(sink, AuditSink) else FunctionSink(sink)
        self.max_batch = max_batch
        self.idle_seconds = idle_seconds
        self.batches = 0  # transactions committed, for tests and benchmarks
        self._queue: deque[_Job] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False
        event.listen(sessions, "after_flush", _count_flush)
        event.listen(sessions, "do_orm_execute", _count_statement)

    # ------------------------------------------------------------------ callers
    def run(self, apply: Job[T]) -> T:
        """Apply ``apply`` in the next batch and return its result once that batch has
        committed (raise its error if it failed). Blocks; inside a job, joins its batch."""
        running: _Running | None = getattr(_local, "running", None)
        if running is not None:
            return apply(running.session)
        outcome: Future[T] = Future()

        def settle(result: Any, error: BaseException | None) -> None:
            if error is None:
                outcome.set_result(result)
            else:
                outcome.set_exception(error)

        self._put(_Job(apply, contextvars.copy_context(), settle))
        return outcome.result()

    async def submit(self, apply: Job[T]) -> T:
        """:meth:`run` for the event loop: waits for the batch without blocking the loop."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle_future, outcome, result, error)

        self._put(_Job(apply, contextvars.copy_context(), settle))
        return await outcome

    async def call(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a (synchronous) service method on the writer thread, from the event loop:
        its :meth:`run` calls join the batch, and the loop is never blocked."""
        return await self.submit(lambda _session: method(*args, **kwargs))

    def record(self, fields: dict[str, Any]) -> None:
        """Record an audit entry: inside a job, with the job's batch (durable before it
        commits); anywhere else, now and durably."""
        running: _Running | None = getattr(_local, "running", None)
        prepared = self.sink.prepare(fields)
        if running is None:
            self.sink.append(prepared)
        else:
            running.entries.append(prepared)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the running job's batch has committed (at once outside a
        job). For in-memory state derived from the database, such as role grants."""
        running: _Running | None = getattr(_local, "running", None)
        if running is None:
            callback()
        else:
            running.on_commit.append(callback)

    @property
    def queued(self) -> int:
        """Jobs waiting for the writer (not counting the batch being applied)."""
        return len(self._queue)

    def close(self) -> None:
        """Apply what is queued, then stop the writer; later jobs raise :class:`QueueClosed`."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ------------------------------------------------------------------ the writer
    def _put(self, job: _Job) -> None:
        with self._wake:
            if self._closed:
                raise QueueClosed("the write queue is closed")
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="sbx-writer", daemon=True)
                self._thread.start()
            else:
                self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                if not self._queue and not self._closed:
                    self._wake.wait(self.idle_seconds)
                if not self._queue:
                    self._thread = None  # idle or closed: the next job starts a new one
                    return
                jobs = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
            self._apply(jobs)

    def _apply(self, jobs: list[_Job]) -> None:
        if len(jobs) > 1:
            try:
                outcomes = self._transaction(jobs, alone=False)
            except Exception:  # noqa: S110 - _Tangled, the ledger, the commit: go one by one
                pass
            else:
                for job, (result, error) in zip(jobs, outcomes, strict=True):
                    job.settle(result, error)
                return
        for job in jobs:
            try:
                ((result, error),) = self._transaction([job], alone=True)
            except BaseException as exc:  # noqa: BLE001 - the caller gets whatever it was
                job.settle(None, exc)
            else:
                job.settle(result, error)

    def _transaction(
        self, jobs: list[_Job], *, alone: bool
    ) -> list[tuple[Any, BaseException | None]]:
        outcomes: list[tuple[Any, BaseException | None]] = []
        entries: list[dict[str, Any]] = []
        on_commit: list[Callable[[], None]] = []
        with self.sessions.begin() as session:
            try:
                for job in jobs:
                    running = _Running(session)
                    _local.running = running
                    before = _changes(session)
                    try:
                        result = job.context.run(job.apply, session)
                        if alone:
                            session.flush()
                    except Exception as exc:
                        if alone:
                            _local.running = None
                            if running.entries:  # a refusal or failure it recorded stays
                                self.sink.append_many(running.entries)
                            raise
                        if _changes(session) != before or _pending(session):
                            raise _Tangled() from exc
                        outcomes.append((None, exc))
                    else:
                        outcomes.append((result, None))
                        on_commit += running.on_commit
                    entries += running.entries
                _local.running = None
                session.flush()
                if entries:
                    self.sink.append_many(entries)
            finally:
                _local.running = None
        self.batches += 1
        for callback in on_commit:
            callback()
        return outcomes


def _count_flush(session: Session, _context: Any) -> None:
    session.info[_CHANGES] = session.info.get(_CHANGES, 0) + 1


def _count_statement(state: ORMExecuteState) -> None:
    if not state.is_select:
        session = state.session
        session.info[_CHANGES] = session.info.get(_CHANGES, 0) + 1


def _pending(session: Session) -> bool:
    """Whether the session holds changes not yet flushed. Checked when a job of a batch
    fails: a pending change may be the failed job's own (even on an object an earlier job
    changed too), so any pending change sends the batch back to one job at a time."""
    return bool(session.new or session.dirty or session.deleted)


def _changes(session: Session) -> int:
    count: int = session.info.get(_CHANGES, 0)
    return count


def _settle_future(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away (its request was cancelled)
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
