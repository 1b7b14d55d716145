"""The trail index: a derived, searchable SQLite copy of the audit ledger.

The ledger is the record; this file is only a way to read it fast. It can be deleted at
any time and is rebuilt from the ledger: it keeps the number of entries it covers and the
leaf hash of the last one, and starts over when the ledger no longer has that entry with
that hash (another ledger, or one restored from an older copy).

Ingest reads ``Ledger.entries(start)`` in batches, one transaction each, under one writer
lock (and SQLite's own write lock across processes); observers — alerts, evidence — are
called inside each batch's transaction with ``(conn, first_seq, stop_seq)`` and see the
batch's rows as committed together with their own. ``first_seq == 0`` means the index
starts from scratch: an observer drops what it derived before. Readers use their own
connections (WAL) and never wait for the writer. The indexes serve the search planner of
:mod:`gateway.trail.search`; docs/explanation/trail.md tells the whole story.

Tables (the shared contract; more may be added, none renamed):

- ``entries``: one row per ledger entry; ``organization`` is the actor's organization at
  the time, ``detail`` the entry's detail as canonical JSON text.
- ``links(subject, seq, action)``: every subject an entry is linked to
  (:mod:`gateway.trail.links`), with the entry's action so that a subject's postings
  answer an action filter without reading the entries.
- ``people(user, username, organization)``: from ``user.create`` / ``user.bootstrap``.
- ``edges(child, parent)``: provenance between structural objects (for :meth:`history`).
- ``counts(field, value, n)``: how many entries have each actor, action, outcome and
  subject; the search planner picks the most selective index with them.
- ``state(key, value)``: the ledger id, the size covered and the last leaf hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import audit
from gateway.trail import links as linking

log = logging.getLogger("sbx.trail")
Observer = Callable[[sqlite3.Connection, int, int], None]

SCHEMA_VERSION = 1
BATCH = 10_000  # entries per ingest transaction
MAX_LIMIT = 500
PAGE_SIZE = 16_384
PEOPLE_ACTIONS = frozenset({"user.create", "user.bootstrap"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, object TEXT NOT NULL, outcome TEXT NOT NULL,
    organization TEXT, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_actor ON entries(actor, seq, action);
CREATE INDEX IF NOT EXISTS entries_action ON entries(action);
CREATE INDEX IF NOT EXISTS entries_outcome ON entries(outcome, seq, action);
CREATE TABLE IF NOT EXISTS links(
    subject TEXT NOT NULL, seq INTEGER NOT NULL, action TEXT,
    PRIMARY KEY (subject, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS people(user TEXT PRIMARY KEY, username TEXT, organization TEXT);
CREATE TABLE IF NOT EXISTS edges(
    child TEXT NOT NULL, parent TEXT NOT NULL, PRIMARY KEY (child, parent)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_parent ON edges(parent, child);
CREATE TABLE IF NOT EXISTS counts(
    field TEXT NOT NULL, value TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (field, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""
DERIVED_TABLES = ("entries", "links", "people", "edges", "counts")


class TrailQueryError(ValueError):
    """A search parameter that cannot be right; the message says which and why."""


@dataclass(frozen=True)
class TrailQuery:
    since: int | None = None  # µs, inclusive
    until: int | None = None  # µs, exclusive
    actor: str | None = None  # exact actor, e.g. "user:<id>"
    organization: str | None = None  # org id: entries by its people or about it
    subject: str | None = None  # "kind:id": entries linked to it (object, ids in detail)
    action: str | None = None  # exact ("export.approve") or prefix ending in "." ("export.")
    outcome: str | None = None
    before: int | None = None  # cursor: only seq < before
    limit: int = 50  # 1..500

    def __post_init__(self) -> None:
        from gateway.trail.search import check_query

        check_query(self)


@dataclass(frozen=True)
class TrailEntry:
    seq: int
    time: int
    actor: str
    action: str
    object: str
    outcome: str
    detail: dict[str, Any]
    actor_name: str | None  # username when the actor is a known user
    organization: str | None  # the actor's organization id when known

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "actor_name": self.actor_name,
            "organization": self.organization,
            "action": self.action,
            "object": self.object,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class TrailPage:
    entries: list[TrailEntry]  # newest first
    next_before: int | None  # cursor for the next page; None at the end
    indexed: int  # ledger entries the index covers


# the columns every reader selects, in TrailEntry's order (entries e, people p)
ENTRY_COLUMNS = (
    "e.seq, e.time, e.actor, e.action, e.object, e.outcome, e.detail, p.username, e.organization"
)


def entry_of(row: Sequence[Any]) -> TrailEntry:
    seq, time, actor, action, obj, outcome, detail, username, organization = row
    return TrailEntry(
        seq, time, actor, action, obj, outcome, json.loads(detail), username, organization
    )


def connect(path: Path, *, cache_mib: int = 64) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
    # Large pages (on a new file only, so before WAL): a scan of postings reads a quarter
    # of the pages, each about as dear as a small one to fetch when cold.
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # derived data: rebuilt if ever lost
    conn.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


@dataclass
class _Progress:
    size: int
    last_hash: str | None


class TrailIndex:
    """The index of ``ledger`` in the SQLite file ``path`` (created on first use)."""

    def __init__(
        self,
        path: Path,
        ledger: audit.Ledger,
        observers: Sequence[Observer] = (),
        *,
        batch: int = BATCH,
    ) -> None:
        self.path = Path(path)
        self.batch = batch
        self.ledger = ledger
        self.observers = tuple(observers)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer in this process
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._stopping = threading.Event()  # close() asks a long catch-up to stop
        self._background: threading.Thread | None = None
        self._writer = connect(self.path, cache_mib=256)
        self._writer.executescript(SCHEMA)
        self._people: dict[str, tuple[str | None, str | None]] | None = None
        self._people_at = -1  # the size the cached people are valid for

    # ------------------------------------------------------------------ reading
    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read connection (a snapshot per statement; open a transaction for more)."""
        if self._closed:
            raise RuntimeError("the trail index is closed")
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=ON")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            with self._readers_lock:
                if self._closed:
                    conn.close()
                else:
                    self._readers.append(conn)

    def indexed(self) -> int:
        """How many ledger entries the index covers."""
        with self.read() as conn:
            return _state_int(conn, "size")

    def search(self, query: TrailQuery) -> TrailPage:
        """The entries matching ``query``, newest first, a page at a time. Catches up with
        the ledger first unless another thread is doing so already."""
        from gateway.trail.search import run_search

        self.refresh()
        with self.read() as conn:
            conn.execute("BEGIN")
            return run_search(conn, query)

    def history(
        self, subject: str, *, after: int | None = None, limit: int | None = None
    ) -> list[TrailEntry]:
        """The whole history of ``subject`` (``"kind:id"``), oldest first; ``after`` and
        ``limit`` page through a long one. See :mod:`gateway.trail.history` for what
        belongs to an object's history."""
        from gateway.trail.history import run_history

        self.refresh()
        with self.read() as conn:
            conn.execute("BEGIN")
            return run_history(conn, subject, after=after, limit=limit)

    # ------------------------------------------------------------------ ingest
    def refresh(self) -> None:
        """Before a read: index what is new if that is a batch or less (cheap when
        nothing is new), otherwise let a background catch-up do it and read what is
        indexed so far."""
        behind = self.ledger.size - self.indexed()
        if behind == 0:
            return
        if 0 < behind <= self.batch:
            self.catch_up(wait=False)
        else:  # far behind, or another ledger: never in a reader's request
            self.start_catching_up()

    def catch_up(self, *, wait: bool = True) -> int:
        """Index the ledger entries not yet indexed; return the size indexed. With
        ``wait=False`` return at once when another thread is indexing."""
        if not self._lock.acquire(blocking=wait):
            return self.indexed()
        try:
            if self._closed:
                raise RuntimeError("the trail index is closed")
            return self._catch_up()
        finally:
            self._lock.release()

    def _catch_up(self) -> int:
        conn = self._writer
        target = self.ledger.size
        progress = self._progress(conn)
        if progress.size and not self._still_in_ledger(conn, progress):
            self._reset(conn)
            progress = _Progress(0, None)
        if progress.size >= target:
            return progress.size
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                progress = self._progress(conn)  # another process may have gone on
                if progress.size >= target:
                    conn.execute("COMMIT")
                    return progress.size
                stop = min(progress.size + self.batch, target)
                last_hash = self._ingest(conn, progress.size, stop)
                for observer in self.observers:
                    observer(conn, progress.size, stop)
                _set_state(conn, size=stop, last_hash=last_hash, ledger=self.ledger.ledger_id)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._people = None
                raise
            if stop >= target or self._stopping.is_set():
                return stop

    def _progress(self, conn: sqlite3.Connection) -> _Progress:
        found = dict(conn.execute("SELECT key, value FROM state").fetchall())
        if found.get("version", SCHEMA_VERSION) != SCHEMA_VERSION or (
            found.get("ledger") not in (None, self.ledger.ledger_id)
        ):
            return _Progress(-1, None)  # never a size the ledger has: rebuild
        return _Progress(int(found.get("size", 0)), found.get("last_hash"))

    def _still_in_ledger(self, conn: sqlite3.Connection, progress: _Progress) -> bool:
        """Whether the ledger still holds the last indexed entry, with the same hash."""
        if progress.size < 0 or progress.size > self.ledger.size:
            return False
        try:
            leaf = self.ledger.index.leaf(progress.size - 1).hex()
        except audit.LedgerError:
            return False
        return leaf == progress.last_hash

    def _reset(self, conn: sqlite3.Connection) -> None:
        """Start over: the ledger is not the one indexed (observers clear theirs when
        they are next called with ``first_seq`` 0)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in DERIVED_TABLES:
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
            conn.execute("DELETE FROM state")
            _set_state(conn, size=0, last_hash=None, ledger=self.ledger.ledger_id)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._people = None

    def _known_people(
        self, conn: sqlite3.Connection, start: int
    ) -> dict[str, tuple[str | None, str | None]]:
        """The people known before ``start`` (re-read when another process indexed)."""
        if self._people is None or self._people_at != start:
            rows = conn.execute("SELECT user, username, organization FROM people")
            self._people = {user: (name, org) for user, name, org in rows}
        return self._people

    def _ingest(self, conn: sqlite3.Connection, start: int, stop: int) -> str:
        """Index entries ``start..stop-1``; return the last one's leaf hash (hex)."""
        people = self._known_people(conn, start)
        rows: list[tuple[Any, ...]] = []
        link_rows: list[tuple[str, int, str]] = []
        edges: set[tuple[str, str]] = set()
        new_people: list[tuple[str, str | None, str | None]] = []
        counts: Counter[tuple[str, str]] = Counter()
        entry_links, entry_edges = linking.entry_links, linking.entry_edges
        line = b""
        expected = start
        for seq, line in self.ledger.entries(start, stop):
            if seq != expected:
                raise audit.LedgerDamaged(f"the ledger skipped from {expected} to {seq}")
            expected += 1
            action, actor, detail, obj, outcome, time = split_entry(line.decode())
            if action in PEOPLE_ACTIONS and outcome == "ok":
                value = json.loads(detail)
                person = (_text(value.get("username")), _text(value.get("organization")))
                people[obj] = person
                new_people.append((obj, *person))
            known = people.get(actor)
            organization = known[1] if known else None
            rows.append((seq, time, actor, action, obj, outcome, organization, detail))
            linked = entry_links(obj, actor, detail, organization)
            link_rows.extend((subject, seq, action) for subject in linked)
            edges.update(entry_edges(obj, outcome, linked))
            counts[("actor", actor)] += 1
            counts[("action", action)] += 1
            counts[("outcome", outcome)] += 1
            for subject in linked:
                counts[("subject", subject)] += 1
        if expected != stop:
            raise audit.LedgerDamaged(f"the ledger ended at {expected}, not {stop}")
        conn.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?)", rows)
        link_rows.sort()
        conn.executemany("INSERT OR IGNORE INTO links VALUES (?,?,?)", link_rows)
        conn.executemany("INSERT OR IGNORE INTO edges VALUES (?,?)", sorted(edges))
        conn.executemany(
            "INSERT INTO people VALUES (?,?,?) ON CONFLICT(user) DO UPDATE SET "
            "username=excluded.username, organization=excluded.organization",
            new_people,
        )
        conn.executemany(
            "INSERT INTO counts VALUES (?,?,?) ON CONFLICT(field, value) DO UPDATE SET "
            "n = n + excluded.n",
            sorted((field, value, n) for (field, value), n in counts.items()),
        )
        self._people_at = stop
        return hashlib.sha256(b"\x00" + line).hexdigest()

    # ------------------------------------------------------------------ closing
    def start_catching_up(self) -> threading.Thread:
        """Catch up in a background thread (a long ledger must not hold up start-up);
        searches meanwhile answer from what is indexed so far. One at a time."""
        with self._readers_lock:
            running = self._background
            if running is not None and running.is_alive():
                return running

        def run() -> None:
            try:
                self.catch_up()
            except Exception:
                if not self._stopping.is_set():  # not merely closed meanwhile
                    log.exception("the trail index could not catch up with the ledger")

        thread = threading.Thread(target=run, name="trail-catch-up", daemon=True)
        with self._readers_lock:
            self._background = thread
        thread.start()
        return thread

    def close(self) -> None:
        """Stop a catch-up between two batches, then close every connection."""
        self._stopping.set()
        with self._lock:
            self._closed = True
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


_HEAD = '{"action":"'
_TAIL = ',"v":1}'


def _string(raw: str) -> str:
    """A JSON string's content, as it stands between its quotes."""
    return raw if "\\" not in raw else str(json.loads(f'"{raw}"'))


def split_entry(text: str) -> tuple[str, str, str, str, str, int]:
    """``(action, actor, detail JSON text, object, outcome, time)`` of an encoded entry,
    cut from its canonical layout (FORMAT.md §3.1: members in key order, quotes inside
    strings always escaped, so ``","actor":"`` and the like only occur as separators);
    the detail is not parsed. An entry of any other layout is parsed in full."""
    try:
        if not (text.startswith(_HEAD) and text.endswith(_TAIL)):
            raise ValueError(text[:20])
        actor_at = text.index('","actor":"', 11)
        detail_at = text.index('","detail":', actor_at + 11)
        cut = text.rindex('},"object":"')
        outcome_at = text.index('","outcome":"', cut + 12)
        prev_at = text.index('","prev":"', outcome_at + 13)
        time_at = text.rindex(',"time":', prev_at)
        return (
            _string(text[11:actor_at]),
            _string(text[actor_at + 11 : detail_at]),
            text[detail_at + 11 : cut + 1],
            _string(text[cut + 12 : outcome_at]),
            _string(text[outcome_at + 13 : prev_at]),
            int(text[time_at + 8 : -len(_TAIL)]),
        )
    except ValueError:
        value = json.loads(text)
        detail = json.dumps(
            value["detail"], ensure_ascii=False, separators=(",", ":"), sort_keys=True
        )
        return (
            value["action"],
            value["actor"],
            detail,
            value["object"],
            value["outcome"],
            value["time"],
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _state_int(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _set_state(conn: sqlite3.Connection, **values: Any) -> None:
    conn.executemany(
        "INSERT INTO state VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [*values.items(), ("version", SCHEMA_VERSION)],
    )
