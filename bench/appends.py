"""Durable appends: throughput and latency of ``Ledger.append`` against a naive loop.

Every writer (a thread, or a thread in one of several processes) calls ``append`` in a
loop for a fixed time and records each call's latency. The baseline is what one would
write without group commit: encode the same entry, chain it, write it and ``fsync``
the file, once per entry, with one lock around the shared file.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audit import Ledger
from audit.verify import verify
from bench.common import VAR, Results, Table, bench_entry, percentile

THREADS = (1, 8, 64)
PROCESSES = ((4, 1), (8, 1), (4, 16), (8, 8))  # (processes, writer threads in each)
TARGET_RATE = 20_000
TARGET_P99_MS = 10.0
TARGET_SPEEDUP = 5.0


# ---------------------------------------------------------------------- helpers
class SyncCounter:
    """Counts ``fsync``/``fdatasync`` calls made in this process (the ledger calls them
    through the ``os`` module, so wrapping the module attributes sees every one)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[SyncCounter]:
        real_fsync, real_fdatasync = os.fsync, os.fdatasync

        def counted(real: Callable[[int], None]) -> Callable[[int], None]:
            def call(fd: int) -> None:
                real(fd)
                with self._lock:
                    self.count += 1

            return call

        os.fsync, os.fdatasync = counted(real_fsync), counted(real_fdatasync)  # type: ignore[assignment]
        try:
            yield self
        finally:
            os.fsync, os.fdatasync = real_fsync, real_fdatasync  # type: ignore[assignment]


_CYCLE_MASK = 1023


def _entries(threads: int, base: int = 0) -> list[list[dict[str, Any]]]:
    """Per writer, 1,024 distinct entries to cycle through: building the caller's dict is
    not what is measured, encoding and committing it is."""
    return [
        [bench_entry((base + t) * 1_000_000 + i) for i in range(_CYCLE_MASK + 1)]
        for t in range(threads)
    ]


def _fresh(name: str) -> Path:
    folder = VAR / "tmp" / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def _summary(count: int, seconds: float, latencies: list[float] | array) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "count": count,
        "seconds": seconds,
        "rate": count / seconds,
        "p50_ms": percentile(ordered, 50) * 1e3,
        "p99_ms": percentile(ordered, 99) * 1e3,
        "max_ms": (ordered[-1] if ordered else float("nan")) * 1e3,
    }


def _run_threads(
    threads: int, duration: float, call: Callable[[int, int], None]
) -> dict[str, float]:
    """``threads`` threads each run ``call(thread, i)`` in a loop for ``duration``
    seconds; returns throughput and latency percentiles over every call."""
    barrier = threading.Barrier(threads + 1)
    results: list[array] = [array("d") for _ in range(threads)]
    deadline = [0.0]

    def writer(number: int) -> None:
        lat = results[number]
        clock = time.perf_counter
        barrier.wait()
        end = deadline[0]
        i = 0
        while True:
            started = clock()
            if started >= end:
                break
            call(number, i)
            lat.append(clock() - started)
            i += 1

    pool = [threading.Thread(target=writer, args=(n,), name=f"writer-{n}") for n in range(threads)]
    for thread in pool:
        thread.start()
    deadline[0] = time.perf_counter() + duration
    started = time.perf_counter()
    barrier.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    merged = array("d")
    for lat in results:
        merged.extend(lat)
    return _summary(len(merged), elapsed, merged)


# ---------------------------------------------------------------------- the disk
def fsync_cost(duration: float) -> Table:
    """Cost of one small appending write followed by fdatasync / fsync on this disk."""
    table = Table(
        "fsync cost of this disk (one 250-byte append, then sync)",
        ["call", "syncs/s", "p50 (µs)", "p99 (µs)"],
    )
    path = VAR / "tmp" / "fsync.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = b"x" * 249 + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    try:
        for name, sync in (("write + fdatasync", os.fdatasync), ("write + fsync", os.fsync)):
            lat = array("d")
            end = time.perf_counter() + duration
            while (started := time.perf_counter()) < end:
                os.write(fd, line)
                sync(fd)
                lat.append(time.perf_counter() - started)
            ordered = sorted(lat)
            table.add(
                name,
                f"{len(lat) / duration:,.0f}",
                f"{percentile(ordered, 50) * 1e6:,.0f}",
                f"{percentile(ordered, 99) * 1e6:,.0f}",
            )
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return table


# ---------------------------------------------------------------------- the ledger
def ledger_threads(threads: int, duration: float) -> dict[str, Any]:
    folder = _fresh(f"ledger-threads-{threads}")
    ledger = Ledger(folder)
    ledger.append(**bench_entry(0))  # creation, first key load and committer start: not timed
    counter = SyncCounter()

    entries = _entries(threads)

    def call(number: int, i: int) -> None:
        ledger.append(**entries[number][i & _CYCLE_MASK])

    with counter.installed():
        result = _run_threads(threads, duration, call)
    syncs = counter.count
    ledger.close()
    report = verify(folder)
    result.update(syncs=syncs, verified=report.ok and report.entries == result["count"] + 2)
    shutil.rmtree(folder)
    return result


def naive_threads(threads: int, duration: float) -> dict[str, Any]:
    """The baseline: one lock, and per entry encode, chain, write and fsync."""
    from audit import entry

    folder = _fresh(f"naive-threads-{threads}")
    folder.mkdir(parents=True)
    fd = os.open(folder / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lock = threading.Lock()
    state = {"seq": 0, "prev": entry.GENESIS_PREV}
    sha256 = hashlib.sha256

    entries = _entries(threads)

    def call(number: int, i: int) -> None:
        body = entry.encode_body(**entries[number][i & _CYCLE_MASK])
        with lock:
            line = entry.seal_body(
                body, prev=state["prev"], seq=state["seq"], time=time.time_ns() // 1000
            )
            os.write(fd, line + b"\n")
            os.fsync(fd)
            state["prev"] = sha256(b"\x00" + line).hexdigest()
            state["seq"] += 1

    try:
        result = _run_threads(threads, duration, call)
    finally:
        os.close(fd)
        shutil.rmtree(folder)
    return result


def _process_worker(
    folder: str, threads: int, duration: float, ready: Any, start: Any, results: Any, number: int
) -> None:
    ledger = Ledger(folder)
    ledger.append(**bench_entry(0))  # open, first sync with the others: not timed
    barrier = threading.Barrier(threads + 1)
    latencies = [array("d") for _ in range(threads)]
    window = [0.0, 0.0]
    entries = _entries(threads, base=number * 100)

    def writer(t: int) -> None:
        lat = latencies[t]
        clock = time.perf_counter
        barrier.wait()
        i = 0
        while (started := clock()) < window[1]:
            ledger.append(**entries[t][i & _CYCLE_MASK])
            lat.append(clock() - started)
            i += 1

    pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    ready.put(number)
    start.wait()
    window[0] = time.perf_counter()
    window[1] = window[0] + duration
    barrier.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - window[0]
    merged = array("d")
    for lat in latencies:
        merged.extend(lat)
    ledger.close()
    results.put((number, elapsed, merged.tobytes()))


def ledger_processes(processes: int, threads: int, duration: float) -> dict[str, Any]:
    folder = _fresh(f"ledger-procs-{processes}x{threads}")
    Ledger(folder).close()  # created once, before the writers race for it
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(
            target=_process_worker, args=(str(folder), threads, duration, ready, start, results, n)
        )
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    start.set()
    collected = [results.get(timeout=duration + 300) for _ in workers]
    for worker in workers:
        worker.join()
    merged = array("d")
    for _, _, raw in collected:
        part = array("d")
        part.frombytes(raw)
        merged.extend(part)
    seconds = max(elapsed for _, elapsed, _ in collected)
    result: dict[str, Any] = _summary(len(merged), seconds, merged)
    report = verify(folder)
    result["verified"] = report.ok and report.entries == len(merged) + processes + 1
    shutil.rmtree(folder)
    return result


# ---------------------------------------------------------------------- the run
def _ms(value: float) -> str:
    return f"{value:,.2f}"


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with the range of all runs' throughput."""
    ordered = sorted(runs, key=lambda r: r["rate"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rates"] = [r["rate"] for r in runs]
    chosen["verified"] = all(r.get("verified", True) for r in runs)
    return chosen


def _spread(run: dict[str, Any]) -> str:
    rates = run["rates"]
    return f"{min(rates):,.0f}–{max(rates):,.0f}" if len(rates) > 1 else "–"


def run(results: Results, *, quick: bool, repeat: int | None = None) -> dict[str, Any]:
    duration = 1.0 if quick else 5.0
    repeat = repeat or (1 if quick else 3)
    results.table(fsync_cost(0.5 if quick else 2.0))

    table = Table(
        f"Durable appends, writer threads in one process ({duration:g} s per run, median of "
        f"{repeat} run{'s' if repeat > 1 else ''}, default LedgerOptions)",
        [
            "writers",
            "ledger appends/s",
            "range",
            "p50 (ms)",
            "p99 (ms)",
            "max (ms)",
            "entries/sync",
            "naive appends/s",
            "naive range",
            "naive p50",
            "naive p99",
            "speed-up",
        ],
    )
    summary: dict[str, Any] = {"threads": {}, "processes": {}}
    for threads in THREADS:
        ours_runs, naive_runs = [], []
        for _ in range(repeat):  # interleaved, so that a slow spell hits both
            ours_runs.append(ledger_threads(threads, duration))
            naive_runs.append(naive_threads(threads, duration))
        ours, naive = _median(ours_runs), _median(naive_runs)
        summary["threads"][threads] = {"ledger": ours, "naive": naive}
        table.add(
            threads,
            f"{ours['rate']:,.0f}",
            _spread(ours),
            _ms(ours["p50_ms"]),
            _ms(ours["p99_ms"]),
            _ms(ours["max_ms"]),
            f"{ours['count'] / max(ours['syncs'], 1):,.1f}",
            f"{naive['rate']:,.0f}",
            _spread(naive),
            _ms(naive["p50_ms"]),
            _ms(naive["p99_ms"]),
            f"{ours['rate'] / naive['rate']:.1f}x",
        )
        if not ours["verified"]:
            table.notes.append(f"WARNING: a {threads}-writer ledger did not verify afterwards")
    top = summary["threads"][THREADS[-1]]
    met = (
        top["ledger"]["rate"] >= TARGET_RATE
        and top["ledger"]["p99_ms"] < TARGET_P99_MS
        and top["ledger"]["rate"] >= TARGET_SPEEDUP * top["naive"]["rate"]
    )
    table.notes.append(
        f"target at {THREADS[-1]} writers: >= {TARGET_RATE:,}/s, p99 < {TARGET_P99_MS:g} ms, "
        f">= {TARGET_SPEEDUP:g}x naive -> measured {top['ledger']['rate']:,.0f}/s, "
        f"p99 {top['ledger']['p99_ms']:.2f} ms, "
        f"{top['ledger']['rate'] / top['naive']['rate']:.1f}x naive: {'MET' if met else 'MISSED'}"
    )
    table.notes.append(
        "latencies and entries/sync are those of the median run; entries/sync: "
        "appended entries per fsync/fdatasync call the ledger made (segment, index "
        "and checkpoint syncs together); every ledger was verified with "
        "audit.verify afterwards"
    )
    results.table(table)

    table = Table(
        f"Durable appends, several processes each with its own Ledger on one folder "
        f"({duration:g} s per run, median of {repeat})",
        [
            "processes x threads",
            "writers",
            "appends/s",
            "range",
            "p50 (ms)",
            "p99 (ms)",
            "max (ms)",
            "naive, same writers",
            "vs naive",
        ],
    )
    naive_by_threads = {t: summary["threads"][t]["naive"]["rate"] for t in THREADS}
    for processes, threads in PROCESSES:
        if quick and threads > 1:
            continue
        writers = processes * threads
        ours_runs, naive_runs = [], []
        for _ in range(repeat):
            ours_runs.append(ledger_processes(processes, threads, duration))
            if writers not in naive_by_threads:
                naive_runs.append(naive_threads(writers, duration))
        if naive_runs:
            naive_by_threads[writers] = _median(naive_runs)["rate"]
        ours = _median(ours_runs)
        summary["processes"][f"{processes}x{threads}"] = ours
        naive_rate = naive_by_threads[writers]
        table.add(
            f"{processes} x {threads}",
            writers,
            f"{ours['rate']:,.0f}",
            _spread(ours),
            _ms(ours["p50_ms"]),
            _ms(ours["p99_ms"]),
            _ms(ours["max_ms"]),
            f"{naive_rate:,.0f}",
            f"{ours['rate'] / naive_rate:.1f}x",
        )
        if not ours["verified"]:
            table.notes.append(f"WARNING: a {processes}x{threads} ledger did not verify afterwards")
    table.notes.append(
        "naive: the single-process naive baseline above with the same number of "
        "writer threads, measured in this run"
    )
    results.table(table)
    return summary
