"""An object's whole history, from the provenance edges the index keeps.

Structural objects (datasets, applications, agreements, grants, sandbox sessions,
exports, objections, feedback) form a graph of ``child → parent`` edges
(:mod:`gateway.trail.links`): ``session → grant``, ``export → grant``, ``export →
session``, ``grant → agreement``, ``grant → dataset``, ``agreement → application``,
``application → dataset``, ``objection → dataset``, ``feedback → grant`` / ``dataset``.

The *family* of an object ``X`` is ``X``, its ancestors (parents, their parents, …) and its
descendants (children, their children, …). The *anchors* of an entry are the most specific
structural objects it names: those named objects that are not an ancestor of another
object it names (``export.request`` names export, session and grant; its anchor is the
export).

**The history of a structural object X is every entry with at least one anchor in X's
family**, oldest first. So an ancestor's own entries belong to it (a dataset's
registration, review, approval, upload and vault store, for a grant built on that
dataset), but not the ancestor's entries about another branch (the same dataset's views
for another grant, another application's consent, an objection to it: their anchors are
that grant, that application, that objection, none of them in X's family).

The history of anything else — a person (``user:…``), an organization (``org:…``), a
key, a token — is every entry linked to it: for a person, what they did and what was done
to them; for an organization, what its people did and what was done about it.
"""

from __future__ import annotations

import heapq
import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator

from gateway.trail import links as linking
from gateway.trail.index import ENTRY_COLUMNS, TrailEntry, entry_of

CHUNK = 2000  # candidate entries read at a time


def parents_of(conn: sqlite3.Connection, subject: str) -> list[str]:
    return [p for (p,) in conn.execute("SELECT parent FROM edges WHERE child = ?", (subject,))]


def children_of(conn: sqlite3.Connection, subject: str) -> list[str]:
    return [c for (c,) in conn.execute("SELECT child FROM edges WHERE parent = ?", (subject,))]


def _closure(conn: sqlite3.Connection, start: str, step: str) -> set[str]:
    query = (
        "SELECT parent FROM edges WHERE child = ?"
        if step == "up"
        else "SELECT child FROM edges WHERE parent = ?"
    )
    seen: set[str] = set()
    todo = [start]
    while todo:
        current = todo.pop()
        for (found,) in conn.execute(query, (current,)):
            if found not in seen and found != start:
                seen.add(found)
                todo.append(found)
    return seen


def ancestors(conn: sqlite3.Connection, subject: str) -> set[str]:
    return _closure(conn, subject, "up")


def descendants(conn: sqlite3.Connection, subject: str) -> set[str]:
    return _closure(conn, subject, "down")


def family(conn: sqlite3.Connection, subject: str) -> set[str]:
    """``subject``, its ancestors and its descendants (just ``subject`` if not structural)."""
    if not linking.is_structural(subject):
        return {subject}
    return {subject} | ancestors(conn, subject) | descendants(conn, subject)


class _Anchors:
    """The anchors of entries, with each named object's ancestors looked up once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.cache: dict[str, set[str]] = {}

    def _ancestors(self, subject: str) -> set[str]:
        found = self.cache.get(subject)
        if found is None:
            found = self.cache[subject] = ancestors(self.conn, subject)
        return found

    def of(self, named: Iterable[str]) -> set[str]:
        named = set(named)
        above: set[str] = set()
        if len(named) > 1:
            for subject in named:
                above |= self._ancestors(subject)
        return named - above


def _postings(conn: sqlite3.Connection, subject: str, after: int) -> Iterator[int]:
    """The seqs of ``subject``'s entries after ``after``, read in growing pages."""
    page = 16
    while True:
        seqs = [
            seq
            for (seq,) in conn.execute(
                "SELECT seq FROM links WHERE subject = ? AND seq > ? ORDER BY seq LIMIT ?",
                (subject, after, page),
            )
        ]
        yield from seqs
        if len(seqs) < page:
            return
        after, page = seqs[-1], min(page * 4, 4096)


def candidates(conn: sqlite3.Connection, members: set[str], after: int) -> Iterator[int]:
    """Every seq linked to one of ``members`` after ``after``, in order, once: the
    members' postings merged, each read only as far as the answer needs."""
    last = after
    for seq in heapq.merge(*(_postings(conn, m, after) for m in sorted(members))):
        if seq != last:
            last = seq
            yield seq


def run_history(
    conn: sqlite3.Connection, subject: str, *, after: int | None = None, limit: int | None = None
) -> list[TrailEntry]:
    structural = linking.is_structural(subject)
    members = family(conn, subject)
    # An entry about the subject or one of its descendants has an anchor in the family
    # (its object, or something below it); only the others need their anchors worked out.
    below = members - ancestors(conn, subject) if structural else members
    anchors = _Anchors(conn)
    found: list[TrailEntry] = []
    seqs = candidates(conn, members, -1 if after is None else after)
    while limit is None or len(found) < limit:
        chunk = list(itertools.islice(seqs, CHUNK))
        if not chunk:
            break
        rows = conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries e LEFT JOIN people p ON p.user = e.actor "  # noqa: S608
            "WHERE e.seq IN (SELECT value FROM json_each(?)) ORDER BY e.seq",
            (json.dumps(chunk),),
        ).fetchall()
        for row in rows:
            if (
                structural
                and row[4] not in below
                and not anchors.of(linking.structural_links(row[4], row[6])) & members
            ):
                continue
            found.append(entry_of(row))
            if limit is not None and len(found) >= limit:
                break
    return found
