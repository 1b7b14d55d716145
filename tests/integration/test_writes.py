"""The write queue (gateway.db.writes): many state changes in one transaction and one
durable ledger append, each caller answered only after both; failures kept apart."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audit import Ledger, LedgerError
from audit.entry import parse
from gateway.api.context import LedgerSink
from gateway.db import make_engine, migrate, session_factory
from gateway.db.models import Organization, OrganizationType
from gateway.db.writes import QueueClosed, WriteQueue, WriterBusy
from sandbox.identifiers.credit_code import check_character


def credit_code(serial: int) -> str:
    head = f"91370200MA{serial:07d}"
    return head + check_character(head)


class Bench:
    """A database, a ledger and the write queue over them."""

    def __init__(self, url: str, ledger_dir: Path) -> None:
        self.engine = make_engine(url)
        migrate(self.engine)
        self.sessions = session_factory(self.engine)
        self.ledger = Ledger(ledger_dir)
        self.writes = WriteQueue(self.sessions, LedgerSink(self.ledger))

    def add_organization(self, serial: int, *, then: Callable[[], None] | None = None) -> Any:
        """A job: one organization, recorded; ``then`` runs after the row is added."""

        def apply(session: Session) -> str:
            session.add(
                Organization(
                    id=f"org{serial:029d}",
                    type=OrganizationType.PROVIDER,
                    name=f"provider {serial}",
                    credit_code=credit_code(serial),
                )
            )
            session.flush()
            self.writes.record(
                {"action": "test.add", "actor": "test", "object": f"org:{serial}", "detail": {}}
            )
            if then is not None:
                then()
            return f"org{serial:029d}"

        return apply

    def organizations(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.count()).select_from(Organization)) or 0

    def actions(self) -> list[str]:
        return [parse(body)["action"] for _, body in self.ledger.entries(1)]

    def close(self) -> None:
        self.writes.close()
        self.ledger.close()
        self.engine.dispose()


@pytest.fixture
def bench(database_url: str, tmp_path: Path) -> Iterator[Bench]:
    made = Bench(database_url, tmp_path / "ledger")
    yield made
    made.close()


def held_batch(bench: Bench, jobs: list[Any]) -> list[Any]:
    """Run ``jobs`` from threads of their own while the writer is held by a first job, so
    that all of them are queued together; the outcome of each (result or exception)."""
    release = threading.Event()

    def hold(session: Session) -> None:
        release.wait(10)

    outcomes: list[Any] = [None] * len(jobs)

    def call(index: int) -> None:
        try:
            outcomes[index] = bench.writes.run(jobs[index])
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[index] = exc

    with ThreadPoolExecutor(len(jobs) + 1) as pool:
        first = pool.submit(bench.writes.run, hold)
        while bench.writes.queued:  # the writer has taken the first job
            time.sleep(0.001)
        calls = [pool.submit(call, index) for index in range(len(jobs))]
        deadline = time.monotonic() + 10
        while bench.writes.queued < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert bench.writes.queued == len(jobs)
        batches = bench.writes.batches
        release.set()
        first.result()
        for done in calls:
            done.result()
    assert bench.writes.batches >= batches + 1
    return outcomes


def test_queued_changes_commit_together_with_one_ledger_append(bench: Bench) -> None:
    fsyncs = []
    commit = bench.ledger._commit  # count the ledger's commits (each one sync)
    bench.ledger._commit = lambda bodies: fsyncs.append(len(bodies)) or commit(bodies)  # type: ignore[method-assign]
    outcomes = held_batch(bench, [bench.add_organization(n) for n in range(1, 21)])
    assert outcomes == [f"org{n:029d}" for n in range(1, 21)]
    assert bench.organizations() == 20
    assert fsyncs == [20]  # one append for the twenty entries
    assert bench.actions() == ["test.add"] * 20  # in queue order
    assert [parse(b)["object"] for _, b in bench.ledger.entries(1)] == [
        f"org:{n}" for n in range(1, 21)
    ]


def test_a_job_refused_before_changing_anything_fails_alone_and_keeps_its_record(
    bench: Bench,
) -> None:
    def refused(session: Session) -> None:
        bench.writes.record({"action": "test.denied", "actor": "test", "object": "x"})
        raise PermissionError("not allowed")

    outcomes = held_batch(bench, [bench.add_organization(1), refused, bench.add_organization(2)])
    assert isinstance(outcomes[1], PermissionError)
    assert outcomes[0] == f"org{1:029d}" and outcomes[2] == f"org{2:029d}"
    assert bench.organizations() == 2
    assert bench.actions() == ["test.add", "test.denied", "test.add"]


def test_a_job_failing_after_writing_is_undone_and_the_others_are_applied_one_by_one(
    bench: Bench,
) -> None:
    def boom() -> None:
        raise ValueError("half-way")

    jobs = [
        bench.add_organization(1),
        bench.add_organization(2, then=boom),  # its row was added before it failed
        bench.add_organization(1),  # the same credit code again: a conflict
        bench.add_organization(3),
    ]
    outcomes = held_batch(bench, jobs)
    assert outcomes[0] == f"org{1:029d}" and outcomes[3] == f"org{3:029d}"
    assert isinstance(outcomes[1], ValueError)
    assert "IntegrityError" in type(outcomes[2]).__name__
    assert bench.organizations() == 2
    with bench.sessions() as session:
        assert session.get(Organization, f"org{2:029d}") is None
    # Applied alone, a failed job's entries are appended and its changes rolled back, as
    # without batching: the second recorded before failing; the third failed before.
    assert [parse(body)["object"] for _, body in bench.ledger.entries(1)] == [
        "org:1",
        "org:2",
        "org:3",
    ]


def test_when_the_ledger_fails_nothing_commits_and_every_caller_hears_it(bench: Bench) -> None:
    bench.ledger.close()
    outcomes = held_batch(bench, [bench.add_organization(n) for n in range(1, 6)])
    assert all(isinstance(outcome, LedgerError) for outcome in outcomes), outcomes
    assert bench.organizations() == 0


def test_nested_writes_join_the_batch_and_a_write_transaction_of_its_own_is_refused(
    bench: Bench,
) -> None:
    def outer(session: Session) -> tuple[str, str]:
        return bench.writes.run(bench.add_organization(1)), bench.writes.run(
            bench.add_organization(2)
        )

    batches = bench.writes.batches
    assert bench.writes.run(outer) == (f"org{1:029d}", f"org{2:029d}")
    assert bench.writes.batches == batches + 1

    def sneaky(session: Session) -> None:
        with bench.sessions.begin():
            pass

    with pytest.raises(WriterBusy):
        bench.writes.run(sneaky)
    assert bench.organizations() == 2


def test_the_event_loop_waits_without_blocking_and_on_commit_runs_after_commit(
    bench: Bench,
) -> None:
    committed: list[int] = []

    def with_callback(serial: int) -> Callable[[Session], str]:
        add = bench.add_organization(serial)

        def apply(session: Session) -> str:
            bench.writes.on_commit(lambda: committed.append(bench.organizations()))
            return str(add(session))

        return apply

    async def main() -> list[str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(ticker())
        done = await asyncio.gather(*(bench.writes.submit(with_callback(n)) for n in range(1, 9)))
        beat.cancel()
        assert ticks > 0  # the loop kept running while the writer worked
        return list(done)

    assert asyncio.run(main()) == [f"org{n:029d}" for n in range(1, 9)]
    assert len(committed) == 8 and min(committed) >= 1  # each saw its own row committed
    assert bench.organizations() == 8


def test_a_closed_queue_refuses_new_work(bench: Bench) -> None:
    bench.writes.run(bench.add_organization(1))
    bench.writes.close()
    with pytest.raises(QueueClosed):
        bench.writes.run(bench.add_organization(2))
    assert bench.organizations() == 1


def test_the_writer_thread_ends_when_idle_and_starts_again(bench: Bench) -> None:
    bench.writes.idle_seconds = 0.05
    bench.writes.run(bench.add_organization(1))
    deadline = time.monotonic() + 5
    while bench.writes._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bench.writes._thread is None
    assert bench.writes.run(bench.add_organization(2)) == f"org{2:029d}"
    assert bench.organizations() == 2


def test_a_failure_that_recorded_nothing_keeps_its_own_error_when_the_ledger_is_down(
    bench: Bench,
) -> None:
    def missing(session: Session) -> None:
        raise LookupError("no such organization")

    bench.ledger.close()
    with pytest.raises(LookupError, match="no such organization"):
        bench.writes.run(missing)  # not hidden behind the ledger's refusal: nothing to record
    with pytest.raises(LedgerError):
        bench.writes.run(bench.add_organization(1))
    assert bench.organizations() == 0
