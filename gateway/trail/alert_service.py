"""Reading and acknowledging alerts: the domain service behind the API and the console.

Alerts are read from the tables the detector (:mod:`gateway.trail.alerts`) keeps in the
trail index's file, through the index's read connections. An acknowledgement is a ledger
entry (``alert.acknowledge``) written through the write queue like every state change;
the detector derives the alert's new state from it when the trail index ingests it, so
nothing here writes to the index.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from sqlalchemy.orm import Session

from gateway.authz import Actor, Authorizer, Denied
from gateway.db.writes import WriteQueue
from gateway.identity.model import Conflict, NotFound, _entry, clean_text
from gateway.trail.alert_policy import Rule, Severity
from gateway.trail.alerts import AlertState
from gateway.trail.index import ENTRY_COLUMNS, TrailEntry, entry_of

MAX_NOTE = 2000
MAX_LIMIT = 500
MAX_SEQS = 500  # entries of an alert given with it
# Where an acknowledgement names the alert's subject, so the subject's trail shows it.
SUBJECT_KEYS = {"grant": "grant", "user": "user", "org": "organization"}


# ---------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Acknowledgement:
    seq: int
    by: str
    by_name: str | None
    at: int
    note: str


@dataclass(frozen=True)
class Alert:
    n: int  # its place in the order alerts opened (the listing's cursor)
    id: str
    rule: Rule
    severity: Severity
    state: AlertState
    subject: str
    person: str | None
    person_name: str | None
    organization: str | None
    first_seq: int
    last_seq: int
    first_time: int
    last_time: int
    count: int
    facts: dict[str, Any]
    acknowledgement: Acknowledgement | None = None
    seqs: list[int] = field(default_factory=list)  # its entries (the first MAX_SEQS), by get

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["acknowledgement"] = vars(self.acknowledgement) if self.acknowledgement else None
        return data


@dataclass(frozen=True)
class AlertQuery:
    rule: Rule | None = None
    state: AlertState | None = None
    since: int | None = None  # µs: alerts whose last entry is at or after
    until: int | None = None  # µs: alerts whose first entry is before
    before: int | None = None  # cursor: only alerts opened before alert ``n``
    limit: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit is 1 to {MAX_LIMIT}")


@dataclass(frozen=True)
class AlertPage:
    alerts: list[Alert]  # newest first
    next_before: int | None


_COLUMNS = (
    "a.n, a.id, a.rule, a.severity, a.state, a.subject, a.person, p.username, a.organization,"
    " a.first_seq, a.last_seq, a.first_time, a.last_time, a.count, a.facts,"
    " a.acknowledged_seq, a.acknowledged_by, q.username, a.acknowledged_at, a.note"
)
_FROM = (
    "FROM alerts a LEFT JOIN people p ON p.user = a.person"
    " LEFT JOIN people q ON q.user = a.acknowledged_by"
)


def _alert_of(row: tuple[Any, ...]) -> Alert:
    (n, ident, rule, severity, state, subject, person, name, organization) = row[:9]
    first_seq, last_seq, first_time, last_time, count, facts = row[9:15]
    acknowledged = None
    if row[15] is not None:
        acknowledged = Acknowledgement(row[15], row[16], row[17], row[18], row[19] or "")
    return Alert(
        n,
        ident,
        Rule(rule),
        Severity(severity),
        AlertState(state),
        subject,
        person,
        name,
        organization,
        first_seq,
        last_seq,
        first_time,
        last_time,
        count,
        json.loads(facts),
        acknowledged,
    )


def _has_alerts(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'")
    return found.fetchone() is not None


def list_alerts(conn: sqlite3.Connection, query: AlertQuery) -> AlertPage:
    """The alerts matching ``query``, newest first, a page at a time."""
    if not _has_alerts(conn):
        return AlertPage([], None)
    where, values = ["1 = 1"], []
    for clause, value in (
        ("a.rule = ?", query.rule),
        ("a.state = ?", query.state),
        ("a.last_time >= ?", query.since),
        ("a.first_time < ?", query.until),
        ("a.n < ?", query.before),
    ):
        if value is not None:
            where.append(clause)
            values.append(value)
    rows = conn.execute(
        f"SELECT {_COLUMNS} {_FROM} WHERE {' AND '.join(where)} ORDER BY a.n DESC LIMIT ?",  # noqa: S608
        (*values, query.limit + 1),
    ).fetchall()
    alerts = [_alert_of(row) for row in rows[: query.limit]]
    return AlertPage(alerts, alerts[-1].n if len(rows) > query.limit else None)


def get_alert(conn: sqlite3.Connection, alert: str) -> Alert | None:
    """The alert with its entries (the first :data:`MAX_SEQS`), or ``None``."""
    if not _has_alerts(conn):
        return None
    row = conn.execute(f"SELECT {_COLUMNS} {_FROM} WHERE a.id = ?", (alert,)).fetchone()  # noqa: S608
    if row is None:
        return None
    seqs = conn.execute(
        "SELECT seq FROM alert_entries WHERE alert = ? ORDER BY seq LIMIT ?", (alert, MAX_SEQS)
    )
    found = _alert_of(row)
    return Alert(**{**vars(found), "seqs": [seq for (seq,) in seqs]})


def entries_of(conn: sqlite3.Connection, alert: str, limit: int) -> list[TrailEntry]:
    """The first ``limit`` entries behind the alert, oldest first."""
    if not _has_alerts(conn):
        return []
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM alert_entries x JOIN entries e ON e.seq = x.seq"  # noqa: S608
        " LEFT JOIN people p ON p.user = e.actor WHERE x.alert = ? ORDER BY x.seq LIMIT ?",
        (alert, limit),
    )
    return [entry_of(row) for row in rows]


# ---------------------------------------------------------------------- the service
class TrailReader(Protocol):
    """What the service needs of the trail index."""

    def catch_up(self, *, wait: bool = True) -> int: ...

    def read(self) -> AbstractContextManager[sqlite3.Connection]: ...


class AlertService:
    """Reading alerts (``alert:read``) and acknowledging them (``alert:acknowledge``).
    An acknowledgement is a ledger entry written through the write queue; the detector
    derives the alert's new state from it when the index ingests it."""

    def __init__(self, trail: TrailReader, writes: WriteQueue, authorizer: Authorizer) -> None:
        self.trail = trail
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer

    def _deny(self, actor: Actor, what: str, reason: str) -> NoReturn:
        self.record(_entry(actor.user, "alert.acknowledge", what, "denied", {"reason": reason}))
        raise Denied(reason)

    def list_alerts(self, actor: Actor, query: AlertQuery) -> AlertPage:
        self.authorizer.authorize(actor, "alert", "read")
        self.trail.catch_up()
        with self.trail.read() as conn:
            conn.execute("BEGIN")
            return list_alerts(conn, query)

    def get(self, actor: Actor, alert: str) -> Alert:
        self.authorizer.authorize(actor, "alert", "read")
        self.trail.catch_up()
        with self.trail.read() as conn:
            conn.execute("BEGIN")
            found = get_alert(conn, alert)
        if found is None:
            raise NotFound(f"no alert {alert[:64]!r}")
        return found

    def entries(self, actor: Actor, alert: Alert, *, limit: int) -> list[TrailEntry]:
        """The first ``limit`` ledger entries behind ``alert``, oldest first."""
        self.authorizer.authorize(actor, "alert", "read")
        with self.trail.read() as conn:
            conn.execute("BEGIN")
            return entries_of(conn, alert.id, limit)

    def acknowledge(self, actor: Actor, alert: str, note: str) -> Alert:
        """Acknowledge an open alert with a note: recorded, then read back acknowledged.
        Nobody acknowledges an alert about themselves."""
        what = f"alert:{alert[:64]}"
        reason = self.authorizer.refusal(actor, "alert", "acknowledge")
        if reason is not None:
            self._deny(actor, what, reason)
        text = clean_text(note, "a note", MAX_NOTE, lines=True)
        found = self.get(actor, alert)
        if found.state is not AlertState.OPEN:
            raise Conflict("the alert has been acknowledged already")
        if found.person == actor.user:
            self._deny(actor, what, "nobody acknowledges an alert about themselves")
        detail: dict[str, Any] = {
            "note": text,
            "rule": str(found.rule),
            "subject": found.subject,
            "last_seq": found.last_seq,
        }
        kind, ident = found.subject.partition(":")[::2]
        if kind in SUBJECT_KEYS:
            detail[SUBJECT_KEYS[kind]] = ident

        def apply(_session: Session) -> None:
            self.record(_entry(actor.user, "alert.acknowledge", f"alert:{found.id}", "ok", detail))

        self.writes.run(apply)
        return self.get(actor, alert)
