"""The trail index: ingest rate, file size and search latency on a platform-like ledger.

A ledger of ``N`` entries is written with the real :class:`audit.Ledger` (``append_many``
batches of 1,000, a simulated clock spreading them over a year) from the entries of a
simulated busy platform (:mod:`bench.trail_platform`: the actions and details the
gateway's services write, most of them executed cells). It is cached under ``var/bench/``
and reused.

The index is built from scratch (entries/s, file size), then each kind of query is run
*cold* — fresh connections, the index file dropped from the page cache
(``posix_fadvise(DONTNEED)``), parameters never asked before — and *warm* (the same
queries again), p50 and p99 against the 1 s target. The baseline, in the same run, is the
same query answered without the secondary indexes, once per kind: the entries table
scanned newest first (``NOT INDEXED``; a subject still checked through the links' primary
key) and, for a history, the links table scanned whole for the object's family.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, VAR, Results, Table, console, human_bytes, percentile
from bench.trail_platform import platform_entries

SIZE = 10_000_000
QUICK_SIZE = 200_000
TARGET_SECONDS = 1.0
TRAIL_CACHE_FORMAT = 1
BATCH = 1000
START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_DAYS = 365
COLD_SAMPLES = 5
WARM_REPEATS = 4


# ---------------------------------------------------------------------- the ledger
class SimulatedClock:
    """The ledger's clock: set before each batch, so entries spread over ``SPAN_DAYS``."""

    def __init__(self) -> None:
        self.now = int(START.timestamp() * 1_000_000)

    def __call__(self) -> int:
        return self.now


def cached_platform_ledger(entries: int, *, rebuild: bool = False) -> Path:
    """A platform-like ledger of exactly ``entries`` entries under ``var/bench/``."""
    folder = VAR / f"trail-ledger-{entries}"
    marker = VAR / f"trail-ledger-{entries}.json"
    if not rebuild and marker.exists() and (folder / "LEDGER.json").exists():
        info = json.loads(marker.read_text())
        if info.get("cache_format") == TRAIL_CACHE_FORMAT and info.get("entries") == entries:
            return folder
    marker.unlink(missing_ok=True)
    if folder.exists():
        shutil.rmtree(folder)
    console.print(
        f"building a platform-like ledger of {entries:,} entries in {folder.relative_to(ROOT)} …"
    )
    started = time.perf_counter()
    write_platform_ledger(folder, entries, progress=entries >= 1_000_000)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (folder / "segments").glob("*.log"))
    info = {
        "cache_format": TRAIL_CACHE_FORMAT,
        "entries": entries,
        "build_seconds": round(seconds, 1),
        "segment_bytes": size,
    }
    marker.write_text(json.dumps(info, indent=2) + "\n")
    console.print(
        f"  built in {seconds:.0f} s ({entries / seconds:,.0f} entries/s, "
        f"{human_bytes(size)} of segments)"
    )
    return folder


def write_platform_ledger(folder: Path, entries: int, *, progress: bool = False) -> None:
    """Write a new ledger of exactly ``entries`` entries (genesis included) in ``folder``."""
    from audit import Ledger, LedgerOptions

    clock = SimulatedClock()
    step = SPAN_DAYS * 86_400_000_000 // max(1, entries // BATCH)
    ledger = Ledger(
        folder, LedgerOptions(checkpoint_every=100_000, checkpoint_interval=3600.0, clock=clock)
    )
    started = time.perf_counter()
    stream = platform_entries()
    try:
        done, shown = 1, 0  # the genesis entry
        while done < entries:
            count = min(BATCH, entries - done)
            ledger.append_many([next(stream) for _ in range(count)])
            clock.now += int(step * random.Random(done).uniform(0.5, 1.5))
            done += count
            if progress and done * 20 // entries > shown:
                shown = done * 20 // entries
                elapsed = time.perf_counter() - started
                console.print(f"  {done:>12,} entries  {elapsed:6.0f} s  ({done / elapsed:,.0f}/s)")
    finally:
        ledger.close()


# ---------------------------------------------------------------------- indexing
def index_ledger(folder: Path, path: Path, *, progress: bool = True) -> dict[str, Any]:
    """Index the ledger into a new file at ``path``: seconds, entries/s, file size."""
    from audit import Ledger
    from gateway.trail import TrailIndex

    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    ledger = Ledger(folder)
    try:
        size = ledger.size
        index = TrailIndex(path, ledger)
        started = time.perf_counter()
        try:
            if progress and size >= 1_000_000:
                done, lap = 0, size // 10
                while done < size:
                    ledger_stop = min(size, done + lap)
                    done = _catch_up_to(index, ledger_stop)
                    elapsed = time.perf_counter() - started
                    console.print(
                        f"  indexed {done:>12,}  {elapsed:6.0f} s  ({done / elapsed:,.0f}/s)"
                    )
            else:
                index.catch_up()
            seconds = time.perf_counter() - started
            with index.read() as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            index.close()
    finally:
        ledger.close(checkpoint=False)
    return {
        "entries": size,
        "seconds": seconds,
        "rate": size / seconds,
        "bytes": path.stat().st_size,
    }


def _catch_up_to(index: Any, stop: int) -> int:
    """Catch up with the first ``stop`` entries only (for progress lines)."""

    class Limited:
        def __init__(self, ledger: Any) -> None:
            self._ledger = ledger

        def __getattr__(self, name: str) -> Any:
            return getattr(self._ledger, name)

        @property
        def size(self) -> int:
            return stop

    real = index.ledger
    index.ledger = Limited(real)
    try:
        return int(index.catch_up())
    finally:
        index.ledger = real


# ---------------------------------------------------------------------- queries
@dataclass
class Kind:
    """One kind of query: its name and, for sample ``i``, the query to run."""

    name: str
    make: Callable[[int], Any]  # -> TrailQuery, or ("history", subject)


def query_kinds(conn: sqlite3.Connection, size: int) -> list[Kind]:
    """The kinds of query an explorer sends, with parameters taken from the index: many
    values of each, so every cold sample asks for something not asked before."""
    from gateway.trail import TrailQuery

    def values(sql: str, *args: Any) -> list[Any]:
        found = [row[0] for row in conn.execute(sql, args)]
        if not found:
            raise SystemExit(f"the benchmark's ledger has nothing for: {sql}")
        return found

    counts = "SELECT value FROM counts WHERE field = ? AND value LIKE ? ORDER BY n {} LIMIT 40"
    stewards = values(
        "SELECT p.user FROM people p JOIN counts c ON c.field = 'actor' AND c.value = p.user "
        "WHERE p.username LIKE 'steward.%' ORDER BY c.n LIMIT 40"
    )
    applicants = values(
        "SELECT p.user FROM people p JOIN counts c ON c.field = 'actor' AND c.value = p.user "
        "WHERE p.username LIKE 'applicant.%' ORDER BY c.n DESC LIMIT 40"
    )
    big_orgs = [v.removeprefix("org:") for v in values(counts.format("DESC"), "subject", "org:%")]
    operator = values("SELECT organization FROM people WHERE username = 'admin'")[0]
    grants = values(counts.format("DESC"), "subject", "grant:%")
    first = conn.execute("SELECT time FROM entries WHERE seq = 1").fetchone()[0]
    last = conn.execute("SELECT time FROM entries WHERE seq = ?", (size - 1,)).fetchone()[0]
    days = max(1, (last - first) // 86_400_000_000)
    day = 86_400_000_000

    def day_start(i: int) -> int:
        return int(first + ((i * 37) % days) * day)

    return [
        Kind("newest page, no filter", lambda i: TrailQuery(before=size - i * 997)),
        Kind("a person (steward)", lambda i: TrailQuery(actor=stewards[i % len(stewards)])),
        Kind(
            "a person + action prefix (export.)",
            lambda i: TrailQuery(actor=applicants[i % len(applicants)], action="export."),
        ),
        Kind("an organization", lambda i: TrailQuery(organization=big_orgs[i % len(big_orgs)])),
        Kind(
            "an organization + action prefix (agreement.)",
            lambda i: TrailQuery(organization=big_orgs[i % len(big_orgs)], action="agreement."),
        ),
        Kind(
            "rare action over all time (grant.suspend)",
            lambda i: TrailQuery(action="grant.suspend", before=size - i * 1009),
        ),
        Kind(
            "rare outcome (refused)",
            lambda i: TrailQuery(outcome="refused", before=size - i * 1013),
        ),
        Kind("a day's window", lambda i: TrailQuery(since=day_start(i), until=day_start(i) + day)),
        Kind(
            "a day's window + action (export.approve)",
            lambda i: TrailQuery(
                since=day_start(i), until=day_start(i) + day, action="export.approve"
            ),
        ),
        Kind("a grant (subject)", lambda i: TrailQuery(subject=grants[i % len(grants)])),
        Kind(
            "matches nothing (operator + sandbox.)",
            lambda i: TrailQuery(organization=operator, action="sandbox.", before=size - i * 7),
        ),
        Kind(
            "matches nothing (system:hub + export.approve)",
            lambda i: TrailQuery(actor="system:hub", action="export.approve", before=size - i),
        ),
        Kind(
            "deep page (before = middle, limit 500)",
            lambda i: TrailQuery(before=size // 2 - i * 10_007, limit=500, outcome="ok"),
        ),
        Kind("a grant's whole history", lambda i: ("history", grants[i % len(grants)])),
    ]


def _drop_from_page_cache(path: Path) -> None:
    for name in (path, path.with_name(path.name + "-wal")):
        if name.exists():
            fd = os.open(name, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _run(index: Any, made: Any) -> int:
    if isinstance(made, tuple):
        return len(index.history(made[1]))
    return len(index.search(made).entries)


def baseline(conn: sqlite3.Connection, made: Any) -> tuple[float, int]:
    """The same answer without the secondary indexes: the entries table scanned newest
    first with every filter checked on each row; for a history, the links of the
    object's family found by reading the whole links table."""
    from gateway.trail.history import family
    from gateway.trail.search import first_seq_at, prefix_end

    started = time.perf_counter()
    if isinstance(made, tuple):
        members = json.dumps(sorted(family(conn, made[1])))
        found = conn.execute(
            "SELECT count(DISTINCT seq) FROM links "
            "WHERE +subject IN (SELECT value FROM json_each(?))",  # +: no index
            (members,),
        ).fetchone()[0]
        return time.perf_counter() - started, int(found)
    size = conn.execute("SELECT value FROM state WHERE key = 'size'").fetchone()[0]
    lo = first_seq_at(conn, made.since, size) if made.since is not None else 0
    hi = first_seq_at(conn, made.until, size) if made.until is not None else size
    if made.before is not None:
        hi = min(hi, made.before)
    where, args = ["e.seq >= ? AND e.seq < ?"], [lo, hi]
    if made.actor:
        where.append("e.actor = ?")
        args.append(made.actor)
    if made.action and made.action.endswith("."):
        where.append("e.action >= ? AND e.action < ?")
        args += [made.action, prefix_end(made.action)]
    elif made.action:
        where.append("e.action = ?")
        args.append(made.action)
    if made.outcome:
        where.append("e.outcome = ?")
        args.append(made.outcome)
    for subject in [made.subject, f"org:{made.organization}" if made.organization else None]:
        if subject:
            where.append("EXISTS (SELECT 1 FROM links x WHERE x.subject = ? AND x.seq = e.seq)")
            args.append(subject)
    rows = conn.execute(
        f"SELECT e.seq FROM entries e NOT INDEXED WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY e.seq DESC LIMIT ?",
        [*args, made.limit],
    ).fetchall()
    return time.perf_counter() - started, len(rows)


def measure_queries(
    folder: Path, path: Path, *, samples: int, with_baseline: bool = True
) -> list[dict[str, Any]]:
    from audit import Ledger
    from gateway.trail import TrailIndex
    from gateway.trail.search import explain

    ledger = Ledger(folder)
    measured: list[dict[str, Any]] = []
    try:
        with sqlite3.connect(path) as conn:
            size = conn.execute("SELECT value FROM state WHERE key = 'size'").fetchone()[0]
            kinds = query_kinds(conn, size)
        for kind in kinds:
            cold: list[float] = []
            found: list[int] = []
            for i in range(samples):
                _drop_from_page_cache(path)
                index = TrailIndex(path, ledger)  # fresh connections: an empty SQLite cache
                try:
                    made = kind.make(i)
                    started = time.perf_counter()
                    found.append(_run(index, made))
                    cold.append(time.perf_counter() - started)
                finally:
                    index.close()
            index = TrailIndex(path, ledger)
            try:
                warm: list[float] = []
                for _ in range(WARM_REPEATS):
                    for i in range(samples):
                        made = kind.make(i)
                        started = time.perf_counter()
                        _run(index, made)
                        warm.append(time.perf_counter() - started)
                with index.read() as conn:
                    made = kind.make(0)
                    plan = ("history", []) if isinstance(made, tuple) else explain(conn, made)
                    base = baseline(conn, made) if with_baseline else (float("nan"), 0)
            finally:
                index.close()
            measured.append(
                {
                    "kind": kind.name,
                    "cold": sorted(cold),
                    "warm": sorted(warm),
                    "found": found,
                    "plan": plan,
                    "baseline": base,
                }
            )
            console.print(
                f"  {kind.name}: cold p99 {percentile(sorted(cold), 99) * 1000:,.1f} ms, "
                f"warm p50 {percentile(sorted(warm), 50) * 1000:,.2f} ms, "
                f"baseline {base[0] * 1000:,.0f} ms ({plan[0]})"
            )
    finally:
        ledger.close(checkpoint=False)
    return measured


def _ratio(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def run(results: Results, *, quick: bool, rebuild: bool = False) -> None:
    entries = QUICK_SIZE if quick else SIZE
    folder = cached_platform_ledger(entries, rebuild=rebuild)
    path = VAR / f"trail-{entries}.sqlite3"
    console.print(f"indexing {entries:,} entries into {path.relative_to(ROOT)} …")
    built = index_ledger(folder, path)
    ledger_bytes = sum(p.stat().st_size for p in (folder / "segments").glob("*.log"))
    ingest = Table(
        "Trail index: ingest from the ledger",
        ["entries", "seconds", "entries/s", "index file", "ledger segments"],
    )
    ingest.add(
        f"{built['entries']:,}",
        f"{built['seconds']:,.1f}",
        f"{built['rate']:,.0f}",
        human_bytes(built["bytes"]),
        human_bytes(ledger_bytes),
    )
    results.table(ingest)
    measured = measure_queries(folder, path, samples=COLD_SAMPLES)
    table = Table(
        f"Trail search on {entries:,} entries (ms; target {TARGET_SECONDS * 1000:,.0f} ms)",
        [
            "query",
            "driver",
            "rows",
            "cold p50",
            "cold p99",
            "warm p50",
            "warm p99",
            "baseline (scan)",
            "speed-up",
        ],
    )
    worst = 0.0
    for m in measured:
        cold, warm = m["cold"], m["warm"]
        worst = max(worst, percentile(cold, 99), percentile(warm, 99))
        table.add(
            m["kind"],
            m["plan"][0],
            f"{min(m['found'])}–{max(m['found'])}"
            if min(m["found"]) != max(m["found"])
            else f"{m['found'][0]}",
            f"{percentile(cold, 50) * 1000:,.1f}",
            f"{percentile(cold, 99) * 1000:,.1f}",
            f"{percentile(warm, 50) * 1000:,.2f}",
            f"{percentile(warm, 99) * 1000:,.2f}",
            f"{m['baseline'][0] * 1000:,.0f}",
            _ratio(m["baseline"][0] / max(percentile(warm, 50), 1e-6)),
        )
    table.notes += [
        f"cold: {COLD_SAMPLES} samples per kind, each on fresh connections with the index "
        "file dropped from the page cache and parameters not asked before; warm: the same "
        f"queries {WARM_REPEATS} more times",
        f"target: every query under {TARGET_SECONDS * 1000:,.0f} ms cold and warm "
        f"[{'MET' if worst < TARGET_SECONDS else 'MISSED'}: worst {worst * 1000:,.0f} ms]",
        "baseline, once per kind: the same query over the entries table without its "
        "secondary indexes (NOT INDEXED, newest first); for a history, the whole links "
        "table scanned for the family's subjects",
    ]
    results.table(table)
