"""Searching the trail index: check a query, plan it, run it.

Every answer is ``ORDER BY seq DESC LIMIT n`` below a cursor, so each plan *streams* in
seq order and stops after ``n + 1`` matches:

- a time window becomes a seq range by binary search (entry times never decrease);
- one filter drives: the primary key (seq) itself, ``entries(actor, seq, action)``,
  ``entries(action)`` (its rowid is seq), ``entries(outcome, seq, action)`` or
  ``links(subject, seq)`` (which keeps each link's action) for a subject or an
  organization; every other filter is checked on what the driver yields — from the
  driver's own index where it holds the column (an action, always), otherwise from the
  entry's row, and a second subject through the links' primary key;
- an action prefix driving is one stream per action under it, merged;
- the driver is the one with the least to read, estimated from the ``counts`` table:
  reading ``c`` postings of a filter finds ``n`` matches after about
  ``n / (selectivity of the others)`` of them and never reads more than ``c``; a posting
  whose check needs the row costs more than one checked in the index. A filter with no
  entry at all answers at once with nothing.
"""

from __future__ import annotations

import heapq
import re
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.trail.index import TrailPage, TrailQuery

MAX_LABEL = 256
MAX_TIME = 2**53 - 1
ACTION = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\.?")
SUBJECT = re.compile(r"[a-z][a-z0-9_\-]*:[^\s]+")
ORGANIZATION = re.compile(r"[A-Za-z0-9_\-.]+")

# What reading one posting of a driver costs, relative to one index entry read in order:
# the seq driver reads whole rows (in order); the others read index entries and fetch a
# row only when a filter needs a column their index does not hold. A fetch or a probe of
# links is a random read: a disk seek when cold (measured on 10^7 entries: 50,000 row
# fetches took 4.7 s cold, 450,000 index entries in order well under a second).
_SEQ_COST = 3.0
_FETCH_COST = 20.0
_CHECK_COST = 10.0  # a residual link check (a primary-key probe of links)
# the filters each driver's index answers without reading the entry's row
_COVERS = {
    "actor": frozenset({"actor", "action"}),  # entries(actor, seq, action)
    "action": frozenset({"action"}),  # entries(action), rowid
    "outcome": frozenset({"outcome", "action"}),  # entries(outcome, seq, action)
    "link": frozenset({"link", "action"}),  # links(subject, seq) with its action
}


def check_query(query: TrailQuery) -> None:
    """Raise :class:`TrailQueryError` naming the first parameter that cannot be right."""
    from gateway.trail.index import MAX_LIMIT, TrailQueryError

    def bad(reason: str) -> TrailQueryError:
        return TrailQueryError(reason)

    limit = query.limit
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise bad(f"limit must be between 1 and {MAX_LIMIT}")
    for name in ("since", "until", "before"):
        value = getattr(query, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIME
        ):
            raise bad(f"{name} must be a whole number between 0 and {MAX_TIME}")
    if query.since is not None and query.until is not None and query.since > query.until:
        raise bad("since is after until")
    for name in ("actor", "organization", "subject", "action", "outcome"):
        value = getattr(query, name)
        if value is not None and (
            not isinstance(value, str) or not value or len(value) > MAX_LABEL
        ):
            raise bad(f"{name} must be between 1 and {MAX_LABEL} characters")
    if query.action is not None and not ACTION.fullmatch(query.action):
        raise bad(
            "action is an action such as 'export.approve' or a prefix ending in '.' such "
            "as 'export.'"
        )
    if query.subject is not None and not SUBJECT.fullmatch(query.subject):
        raise bad("subject is 'kind:id', e.g. 'grant:1f0c…'")
    if query.organization is not None and not ORGANIZATION.fullmatch(
        query.organization.removeprefix("org:")
    ):
        raise bad("organization is an organization's id")


# ---------------------------------------------------------------------- time -> seq
def first_seq_at(conn: sqlite3.Connection, time: int, size: int) -> int:
    """The first seq whose entry was written at or after ``time`` (``size`` if none):
    a binary search over the primary key, as entry times never decrease."""
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute("SELECT time FROM entries WHERE seq = ?", (mid,)).fetchone()
        if row is None:  # not indexed (never happens below size)
            hi = mid
        elif row[0] < time:
            lo = mid + 1
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------- plans
@dataclass
class Filters:
    """The query's filters as SQL over ``entries e``; which are checked where."""

    actor: str | None
    action: str | None  # exact
    prefix: str | None  # action prefix ending in "."
    outcome: str | None
    subjects: list[str] = field(default_factory=list)  # subject and org:<id>

    def conditions(
        self, skip: str | None = None, *, seq: str = "e.seq", action: str = "e.action"
    ) -> tuple[list[str], list[Any]]:
        """SQL terms and their arguments for every filter but ``skip``; ``seq`` and
        ``action`` name the driver's own columns, so terms on them are checked before
        the entry's row is read."""
        sql: list[str] = []
        args: list[Any] = []
        if self.actor is not None and skip != "actor":
            sql.append("e.actor = ?")
            args.append(self.actor)
        if self.action is not None and skip != "action":
            sql.append(f"{action} = ?")
            args.append(self.action)
        if self.prefix is not None and skip != "action":
            sql.append(f"{action} >= ? AND {action} < ?")
            args += [self.prefix, prefix_end(self.prefix)]
        if self.outcome is not None and skip != "outcome":
            sql.append("e.outcome = ?")
            args.append(self.outcome)
        for number, subject in enumerate(self.subjects):
            if skip != f"link{number}":
                sql.append(f"EXISTS (SELECT 1 FROM links x WHERE x.subject = ? AND x.seq = {seq})")  # noqa: S608
                args.append(subject)
        return sql, args


def prefix_end(prefix: str) -> str:
    """The first string after every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass
class Stream:
    """One ``ORDER BY seq DESC`` query of the plan."""

    driver: str
    sql: str
    args: list[Any]


@dataclass
class Plan:
    driver: str
    cost: float
    streams: list[Stream]


def _count(conn: sqlite3.Connection, name: str, value: str) -> int:
    row = conn.execute(
        "SELECT n FROM counts WHERE field = ? AND value = ?", (name, value)
    ).fetchone()
    return int(row[0]) if row else 0


def _prefix_counts(conn: sqlite3.Connection, prefix: str) -> list[tuple[str, int]]:
    return [
        (str(a), int(n))
        for a, n in conn.execute(
            "SELECT value, n FROM counts WHERE field = 'action' AND value >= ? AND value < ?",
            (prefix, prefix_end(prefix)),
        )
    ]


def plan_search(
    conn: sqlite3.Connection, query: TrailQuery, size: int
) -> tuple[Plan | None, int, int]:
    """The cheapest plan and the seq range ``[lo, hi)`` it reads; no plan when some
    filter matches nothing."""
    lo = first_seq_at(conn, query.since, size) if query.since is not None else 0
    hi = first_seq_at(conn, query.until, size) if query.until is not None else size
    if query.before is not None:
        hi = min(hi, query.before)
    if lo >= hi:
        return None, lo, hi
    prefix = query.action if query.action and query.action.endswith(".") else None
    filters = Filters(
        actor=query.actor,
        action=None if prefix else query.action,
        prefix=prefix,
        outcome=query.outcome,
    )
    if query.subject is not None:
        filters.subjects.append(query.subject)
    if query.organization is not None:
        organization = query.organization.removeprefix("org:")
        filters.subjects.append(f"org:{organization}")

    # the postings of each filter (all time), and per action for a prefix
    counts: dict[str, int] = {}
    actions: list[tuple[str, int]] = []
    if filters.actor is not None:
        counts["actor"] = _count(conn, "actor", filters.actor)
    if filters.action is not None:
        actions = [(filters.action, _count(conn, "action", filters.action))]
        counts["action"] = actions[0][1]
    if filters.prefix is not None:
        actions = [(a, n) for a, n in _prefix_counts(conn, filters.prefix) if n]
        counts["action"] = sum(n for _, n in actions)
    if filters.outcome is not None:
        counts["outcome"] = _count(conn, "outcome", filters.outcome)
    for number, subject in enumerate(filters.subjects):
        counts[f"link{number}"] = _count(conn, "subject", subject)
    if any(n == 0 for n in counts.values()):
        return None, lo, hi

    total = max(size, 1)
    share = (hi - lo) / total  # the part of the ledger the window covers
    wanted = query.limit + 1

    def selectivity(skip: str | None) -> float:
        product = 1.0
        for name, n in counts.items():
            if name != skip:
                product *= n / total
        return max(product, 1 / total)

    def reads(postings: float, skip: str | None) -> float:
        return min(postings, wanted / selectivity(skip))

    def row_cost(driver: str, skip: str | None) -> float:
        """What each posting read through ``driver`` costs, with the others' checks."""
        others = {("link" if n.startswith("link") else n) for n in counts if n != skip}
        links = sum(1 for n in counts if n.startswith("link") and n != skip)
        if driver == "seq":
            return _SEQ_COST + _CHECK_COST * links
        fetch = bool(others - _COVERS[driver] - {"link"})
        return 1 + _FETCH_COST * fetch + _CHECK_COST * links

    plans: list[Plan] = []
    where, args = filters.conditions()
    plans.append(
        Plan(
            "seq",
            reads(hi - lo, None) * row_cost("seq", None),
            [_stream("seq", "entries e", "e.seq", where, args)],
        )
    )
    for name in counts:
        where, args = filters.conditions(skip=name)
        if name == "action":
            cost = sum(reads(n * share, name) for _, n in actions) * row_cost(name, name)
            streams = [
                _stream(
                    "action",
                    "entries e INDEXED BY entries_action",
                    "e.seq",
                    ["e.action = ?", *where],
                    [action, *args],
                )
                for action, _ in actions
            ]
        elif name.startswith("link"):
            where, args = filters.conditions(skip=name, seq="l.seq", action="l.action")
            subject = filters.subjects[int(name[4:])]
            cost = reads(counts[name] * share, name) * row_cost("link", name)
            streams = [
                _stream(
                    "link",
                    "links l CROSS JOIN entries e ON e.seq = l.seq",
                    "l.seq",
                    ["l.subject = ?", *where],
                    [subject, *args],
                )
            ]
        else:
            column = {"actor": filters.actor, "outcome": filters.outcome}[name]
            cost = reads(counts[name] * share, name) * row_cost(name, name)
            streams = [
                _stream(
                    name,
                    f"entries e INDEXED BY entries_{name}",
                    "e.seq",
                    [f"e.{name} = ?", *where],
                    [column, *args],
                )
            ]
        plans.append(Plan(name if not name.startswith("link") else "link", cost, streams))
    return min(plans, key=lambda p: p.cost), lo, hi


def _stream(driver: str, source: str, seq: str, where: list[str], args: list[Any]) -> Stream:
    from gateway.trail.index import ENTRY_COLUMNS

    conditions = " AND ".join([f"{seq} >= ? AND {seq} < ?", *where])
    sql = (
        f"SELECT {ENTRY_COLUMNS} FROM {source} LEFT JOIN people p ON p.user = e.actor "  # noqa: S608
        f"WHERE {conditions} ORDER BY {seq} DESC LIMIT ?"
    )
    return Stream(driver, sql, args)


def run_search(conn: sqlite3.Connection, query: TrailQuery) -> TrailPage:
    from gateway.trail.index import TrailPage, _state_int, entry_of

    size = _state_int(conn, "size")
    plan, lo, hi = plan_search(conn, query, size)
    if plan is None:
        return TrailPage([], None, size)
    wanted = query.limit + 1
    results = [
        conn.execute(stream.sql, [lo, hi, *stream.args, wanted]).fetchall()
        for stream in plan.streams
    ]
    rows = results[0] if len(results) == 1 else _merge(results, wanted)
    entries = [entry_of(row) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    return TrailPage(entries, entries[-1].seq if more else None, size)


def _merge(results: list[list[Any]], wanted: int) -> list[Any]:
    """The first ``wanted`` rows of several lists each newest first, without repeats."""
    merged: list[Any] = []
    last = None
    for row in heapq.merge(*results, key=lambda r: -r[0]):
        if row[0] != last:
            merged.append(row)
            last = row[0]
            if len(merged) >= wanted:
                break
    return merged


def explain(conn: sqlite3.Connection, query: TrailQuery) -> tuple[str, list[str]]:
    """The driver chosen for ``query`` and SQLite's plan of its first stream."""
    from gateway.trail.index import _state_int

    size = _state_int(conn, "size")
    plan, lo, hi = plan_search(conn, query, size)
    if plan is None:
        return "none", []
    stream = plan.streams[0]
    rows = conn.execute(f"EXPLAIN QUERY PLAN {stream.sql}", [lo, hi, *stream.args, 1])
    return plan.driver, [str(r[3]) for r in rows]
