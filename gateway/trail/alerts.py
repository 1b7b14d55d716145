"""Abnormal-operation alerts (R21; R16, R18, R19), derived from the audit ledger.

The :class:`AlertDetector` is an observer of the trail index: inside each ingest
transaction it reads the batch's rows of ``entries`` (and ``people``), and keeps its own
tables in the same file — ``alerts``, the entries behind each (``alert_entries``) and the
little state the rules need (``alert_*``). Like the index, alerts can be deleted and are
rebuilt from the ledger with the same ids: an id is a digest of the rule, the subject and
the first entry that caused it.

The rules and their thresholds are data (``policies/alerts.yaml``, read by
:mod:`gateway.trail.alert_policy`). Most count entries of one kind about one subject
within a window; an open alert grows with each further entry that comes within the window
of the one before. Acknowledging is itself a ledger entry (``alert.acknowledge``, written
by :mod:`gateway.trail.alert_service`): the detector reads it like any other entry, so an
alert's state is derived from the ledger too, and survives a rebuild.

Messages are not stored: an alert keeps its facts (counts, ids, the thresholds it was
measured against), and the console renders them in the reader's language.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.trail.alert_policy import (
    AlertPolicy,
    BurstRule,
    Rule,
    Severity,
    load_alert_policy,
)
from gateway.workdays import WorkCalendar

CHINA = ZoneInfo("Asia/Shanghai")
MAX_SEEN = 10  # distinct values an alert keeps of each kind (actions, exports, days)


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


# What use of a grant looks like in the ledger (refused or not).
USE_ACTIONS = frozenset(
    "sandbox.open sandbox.start sandbox.execute export.request export.upload export.submit"
    " export.review export.approve export.download privacy.spend".split()
)
# The entries any rule or state reads besides refusals and failures.
READ_ACTIONS = USE_ACTIONS | frozenset(
    "grant.create grant.suspend grant.resume privacy.budget.open alert.acknowledge".split()
)
_ENTRIES = (  # an executed cell's code is never parsed: nothing here needs it
    "SELECT seq, time, actor, action, object, outcome, organization,"
    " CASE WHEN action = 'sandbox.execute' THEN '{}' ELSE detail END FROM entries"
    " WHERE seq >= ? AND seq < ? AND (outcome IN ('denied', 'failed')"
    " OR action IN (SELECT value FROM json_each(?))) ORDER BY seq"
)
_READ = json.dumps(sorted(READ_ACTIONS))


# ---------------------------------------------------------------------- the tables
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS alerts("
    " n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, rule TEXT NOT NULL,"
    " severity TEXT NOT NULL, state TEXT NOT NULL, subject TEXT NOT NULL, person TEXT,"
    " organization TEXT, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,"
    " first_time INTEGER NOT NULL, last_time INTEGER NOT NULL, count INTEGER NOT NULL,"
    " facts TEXT NOT NULL, acknowledged_seq INTEGER, acknowledged_by TEXT,"
    " acknowledged_at INTEGER, note TEXT)",
    "CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state, n)",
    "CREATE INDEX IF NOT EXISTS alerts_rule ON alerts(rule, n)",
    "CREATE TABLE IF NOT EXISTS alert_entries("
    " alert TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (alert, seq)) WITHOUT ROWID",
    # entries counted towards a threshold not reached yet, with what each adds
    "CREATE TABLE IF NOT EXISTS alert_marks("
    " rule TEXT NOT NULL, key TEXT NOT NULL, time INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " event TEXT NOT NULL, PRIMARY KEY (rule, key, time, seq)) WITHOUT ROWID",
    # the open alert of each rule and subject, and when its last entry came
    "CREATE TABLE IF NOT EXISTS alert_keys("
    " rule TEXT NOT NULL, key TEXT NOT NULL, alert TEXT, last_time INTEGER NOT NULL,"
    " PRIMARY KEY (rule, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS alert_grants("
    " grant_id TEXT PRIMARY KEY, organization TEXT, suspended INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alert_sessions(session TEXT PRIMARY KEY, grant_id TEXT)",
    "CREATE TABLE IF NOT EXISTS alert_exports("
    " export TEXT PRIMARY KEY, grant_id TEXT, requester TEXT)",
    "CREATE TABLE IF NOT EXISTS alert_budgets("
    " grant_id TEXT PRIMARY KEY, total INTEGER NOT NULL, band INTEGER NOT NULL, alert TEXT)",
    "CREATE TABLE IF NOT EXISTS alert_progress(name TEXT PRIMARY KEY, covered INTEGER NOT NULL)",
)
TABLES = tuple(s.split("(")[0].split()[-1] for s in SCHEMA if s.startswith("CREATE TABLE"))


def alert_id(rule: Rule, subject: str, first_seq: int) -> str:
    """The alert's id: the same rule, subject and first entry give the same id."""
    return hashlib.sha256(f"{rule}\n{subject}\n{first_seq}".encode()).hexdigest()[:24]


# ---------------------------------------------------------------------- the detector
@dataclass(frozen=True)
class _Entry:
    seq: int
    time: int
    actor: str
    action: str
    object: str
    outcome: str
    organization: str | None
    detail: dict[str, Any]

    @property
    def user(self) -> str | None:
        return self.actor if self.actor.startswith("user:") else None

    @property
    def object_id(self) -> str:
        return self.object.partition(":")[2]


@dataclass(frozen=True)
class Event:
    """One entry counted by a rule about a subject: what it adds to the alert's facts."""

    rule: Rule
    key: str  # the subject, "kind:id"
    person: str | None = None
    organization: str | None = None
    tally: tuple[str, ...] = ()  # facts counted, one each
    seen: tuple[tuple[str, str], ...] = ()  # (fact, value): distinct values kept

    def to_json(self) -> str:
        return json.dumps([self.person, self.organization, self.tally, self.seen])

    @classmethod
    def from_json(cls, rule: Rule, key: str, text: str) -> Event:
        person, organization, tally, seen = json.loads(text)
        return cls(rule, key, person, organization, tuple(tally), tuple(map(tuple, seen)))


class AlertDetector:
    """The trail index's observer that derives alerts (``Observer`` of
    :mod:`gateway.trail.index`): call it with ``(conn, first_seq, stop_seq)`` inside the
    transaction that indexed entries ``first_seq..stop_seq-1``. ``first_seq`` 0 starts
    over; a range past what it has seen (an index built before alerts were) is caught up
    from the ``entries`` table."""

    def __init__(self, policy: AlertPolicy, calendar: WorkCalendar) -> None:
        self.policy = policy
        self.calendar = calendar
        self._workdays: dict[date, bool] = {}

    @classmethod
    def from_policies(cls, folder: Path, calendar: WorkCalendar) -> AlertDetector:
        """The detector of ``folder/alerts.yaml`` (:class:`AlertPolicyError` if unusable)."""
        return cls(load_alert_policy(folder / "alerts.yaml"), calendar)

    def __call__(self, conn: sqlite3.Connection, first_seq: int, stop_seq: int) -> None:
        for statement in SCHEMA:
            conn.execute(statement)
        row = conn.execute("SELECT covered FROM alert_progress WHERE name = 'alerts'").fetchone()
        covered = row[0] if row else 0
        start = covered if covered <= first_seq else 0
        if start == 0:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
        for entry in _entries(conn, start, stop_seq):
            self._ingest(conn, entry)
        conn.execute(
            "INSERT INTO alert_progress VALUES ('alerts', ?) "
            "ON CONFLICT(name) DO UPDATE SET covered = excluded.covered",
            (stop_seq,),
        )

    # ------------------------------------------------------------------ one entry
    def _ingest(self, conn: sqlite3.Connection, entry: _Entry) -> None:
        self._keep_state(conn, entry)
        for event in self._events(conn, entry):
            rule = self.policy.bursts[event.rule]
            if rule.enabled:
                self._count(conn, rule, entry, event)
        if entry.action == "privacy.spend" and self.policy.budget.enabled:
            self._budget(conn, entry)

    def _keep_state(self, conn: sqlite3.Connection, entry: _Entry) -> None:
        """What later entries are read against: grants and their suspension, sessions'
        and exports' grants, budgets, acknowledgements."""
        if entry.outcome != "ok":
            return
        action, detail, ident = entry.action, entry.detail, entry.object_id
        if action == "grant.create":
            conn.execute(
                "INSERT OR REPLACE INTO alert_grants VALUES (?, ?, 0)",
                (ident, _text(detail.get("organization"))),
            )
        elif action in ("grant.suspend", "grant.resume"):
            conn.execute(
                "INSERT INTO alert_grants VALUES (?, NULL, ?) ON CONFLICT(grant_id) "
                "DO UPDATE SET suspended = excluded.suspended",
                (ident, int(action == "grant.suspend")),
            )
        elif action == "sandbox.start":
            conn.execute(
                "INSERT OR REPLACE INTO alert_sessions VALUES (?, ?)",
                (ident, _text(detail.get("grant"))),
            )
        elif action == "export.request":
            conn.execute(
                "INSERT OR REPLACE INTO alert_exports VALUES (?, ?, ?)",
                (ident, _text(detail.get("grant")), entry.actor),
            )
        elif action == "privacy.budget.open" and isinstance(detail.get("epsilon_micro"), int):
            conn.execute(
                "INSERT OR REPLACE INTO alert_budgets VALUES (?, ?, 0, NULL)",
                (ident, detail["epsilon_micro"]),
            )
        elif action == "alert.acknowledge":
            _acknowledge(conn, entry)

    def _events(self, conn: sqlite3.Connection, entry: _Entry) -> Iterator[Event]:
        """What ``entry`` counts towards, rule by rule."""
        user, org, detail = entry.user, entry.organization, entry.detail
        action, outcome = entry.action, entry.outcome
        if outcome == "denied" and user is not None:
            yield Event(Rule.DENIED_BURST, user, user, org, seen=(("actions", action),))
            if org:
                both = (("actions", action), ("people", user))
                yield Event(Rule.ORGANIZATION_DENIED_BURST, f"org:{org}", None, org, seen=both)
        failed_sign_in = action == "session.login" and outcome == "failed"
        if failed_sign_in and entry.object.startswith("user:") and entry.object != "user:unknown":
            owner = entry.object
            yield Event(Rule.SIGN_IN_FAILURES, owner, owner, _organization_of(conn, owner))
        client = _client(detail)
        if client and (failed_sign_in or (entry.actor == "anonymous" and outcome == "denied")):
            yield Event(Rule.CLIENT_FAILURES, f"client:{client}", seen=(("actions", action),))
        if outcome == "ok":
            yield from self._ok_events(conn, entry)
        if action in USE_ACTIONS and outcome in ("ok", "denied"):
            grant = _grant_of(conn, entry)
            suspended = (
                grant
                and conn.execute(
                    "SELECT organization FROM alert_grants WHERE grant_id = ? AND suspended = 1",
                    (grant,),
                ).fetchone()
            )
            if suspended:
                yield Event(
                    Rule.SUSPENDED_GRANT_USE,
                    f"grant:{grant}",
                    user,
                    suspended[0] or org,
                    tally=("succeeded" if outcome == "ok" else "refused",),
                    seen=(("actions", action),),
                )

    def _ok_events(self, conn: sqlite3.Connection, entry: _Entry) -> Iterator[Event]:
        user, action, detail = entry.user, entry.action, entry.detail
        refused: tuple[str, str | None, str | None] | None = None  # (how, grant, requester)
        if action == "export.submit" and detail.get("status") == "blocked":
            refused = ("blocked", _text(detail.get("grant")), entry.actor)
        elif action in ("export.review", "export.approve") and detail.get("approve") is False:
            row = conn.execute(
                "SELECT grant_id, requester FROM alert_exports WHERE export = ?",
                (entry.object_id,),
            ).fetchone()
            refused = ("refused", row[0], row[1]) if row else None
        if refused is not None and refused[1]:
            how, grant, requester = refused
            yield Event(
                Rule.EXPORT_REFUSALS,
                f"grant:{grant}",
                requester,
                _grant_organization(conn, grant) or _organization_of(conn, requester),
                tally=(how,),
                seen=(("exports", entry.object_id),),
            )
        if action == "export.download" and user is not None:
            seen = (("exports", entry.object_id),)
            yield Event(Rule.DOWNLOAD_BURST, user, user, entry.organization, seen=seen)
        if action in ("sandbox.start", "sandbox.execute") and user is not None:
            local = datetime.fromtimestamp(entry.time // 1_000_000, CHINA)
            if not self.in_working_hours(local):
                yield Event(
                    Rule.OFF_HOURS,
                    user,
                    user,
                    entry.organization,
                    tally=("starts" if action == "sandbox.start" else "cells",),
                    seen=(("days", local.date().isoformat()),),
                )

    def in_working_hours(self, local: datetime) -> bool:
        """Whether ``local`` (China time) is within the agreed hours of a working day."""
        day = local.date()
        workday = self._workdays.get(day)
        if workday is None:
            workday = self._workdays[day] = self.calendar.is_workday(day)
        minute = local.hour * 60 + local.minute
        return workday and self.policy.work_start <= minute < self.policy.work_end

    # ------------------------------------------------------------------ counting
    def _count(
        self, conn: sqlite3.Connection, rule: BurstRule, entry: _Entry, event: Event
    ) -> None:
        """Grow the subject's open alert if the entry comes within the window of its last
        one; otherwise count the entry and open an alert once the threshold is reached."""
        key = (rule.rule, event.key)
        state = conn.execute(
            "SELECT alert, last_time FROM alert_keys WHERE rule = ? AND key = ?", key
        ).fetchone()
        if state and state[0] is not None and entry.time - state[1] <= rule.window:
            self._grow(conn, state[0], entry, [event], rule)
            conn.execute(
                "UPDATE alert_keys SET last_time = ? WHERE rule = ? AND key = ?",
                (entry.time, *key),
            )
            return
        conn.execute(
            "INSERT OR IGNORE INTO alert_marks VALUES (?, ?, ?, ?, ?)",
            (*key, entry.time, entry.seq, event.to_json()),
        )
        conn.execute(
            "DELETE FROM alert_marks WHERE rule = ? AND key = ? AND time <= ?",
            (*key, entry.time - rule.window),
        )
        marks = conn.execute(
            "SELECT seq, time, event FROM alert_marks WHERE rule = ? AND key = ? ORDER BY seq",
            key,
        ).fetchall()
        opened = None
        if len(marks) >= rule.threshold:
            first_seq, first_time = marks[0][0], marks[0][1]
            opened = alert_id(rule.rule, event.key, first_seq)
            events = [Event.from_json(rule.rule, event.key, text) for _, _, text in marks]
            _insert(
                conn,
                opened,
                rule.rule,
                event.key,
                first_seq,
                first_time,
                _base_facts(self.policy, rule),
            )
            self._grow(conn, opened, entry, events, rule, seqs=[seq for seq, _, _ in marks])
            conn.execute("DELETE FROM alert_marks WHERE rule = ? AND key = ?", key)
        conn.execute(
            "INSERT INTO alert_keys VALUES (?, ?, ?, ?) ON CONFLICT(rule, key) "
            "DO UPDATE SET alert = excluded.alert, last_time = excluded.last_time",
            (*key, opened, entry.time),
        )

    def _grow(
        self,
        conn: sqlite3.Connection,
        alert: str,
        entry: _Entry,
        events: list[Event],
        rule: BurstRule,
        seqs: list[int] | None = None,
    ) -> None:
        row = conn.execute(
            "SELECT count, facts, person, organization FROM alerts WHERE id = ?", (alert,)
        ).fetchone()
        count, facts, person, organization = row[0], json.loads(row[1]), row[2], row[3]
        for event in events:
            count += 1
            person = person or event.person
            organization = organization or event.organization
            for name in event.tally:
                facts[name] = facts.get(name, 0) + 1
            for name, value in event.seen:
                kept = facts.setdefault(name, [])
                if value not in kept and len(kept) < MAX_SEEN:
                    kept.append(value)
                elif value not in kept:
                    facts[f"{name}_more"] = True  # more values than are kept
        high = (rule.high_at is not None and count >= rule.high_at) or facts.get("succeeded")
        severity = Severity.HIGH if high else rule.severity
        _update(conn, alert, entry, count, facts, severity, person, organization)
        conn.executemany(
            "INSERT OR IGNORE INTO alert_entries VALUES (?, ?)",
            [(alert, seq) for seq in (seqs or [entry.seq])],
        )

    def _budget(self, conn: sqlite3.Connection, entry: _Entry) -> None:
        """One alert per grant while its budget is below ``below``, high below
        ``high_below``; after an acknowledgement, only a lower band opens another."""
        left, grant = entry.detail.get("left_micro"), entry.object_id
        found = conn.execute(
            "SELECT total, band, alert FROM alert_budgets WHERE grant_id = ?", (grant,)
        ).fetchone()
        if not isinstance(left, int) or found is None or found[0] <= 0:
            return
        total, band, alert = found
        rule = self.policy.budget
        part = left / total
        now = 2 if part < rule.high_below else 1 if part < rule.below else 0
        if alert is None and now <= band:
            return
        facts: dict[str, Any] = {
            "left_micro": left,
            "total_micro": total,
            "below": rule.below,
            "high_below": rule.high_below,
        }
        severity = Severity.HIGH if max(now, band) == 2 else rule.severity
        if alert is None:
            alert = alert_id(Rule.BUDGET_LOW, f"grant:{grant}", entry.seq)
            _insert(conn, alert, Rule.BUDGET_LOW, f"grant:{grant}", entry.seq, entry.time, facts)
            count = 1
        else:
            count = conn.execute("SELECT count FROM alerts WHERE id = ?", (alert,)).fetchone()[0]
            count += 1
        organization = _grant_organization(conn, grant)
        _update(conn, alert, entry, count, facts, severity, None, organization)
        conn.execute("INSERT OR IGNORE INTO alert_entries VALUES (?, ?)", (alert, entry.seq))
        conn.execute(
            "UPDATE alert_budgets SET band = ?, alert = ? WHERE grant_id = ?",
            (max(now, band), alert, grant),
        )


def _entries(conn: sqlite3.Connection, start: int, stop: int) -> Iterator[_Entry]:
    """The entries ``start..stop-1`` that a rule or the state reads (an executed cell's
    code is never parsed: nothing here needs it)."""
    rows = conn.execute(_ENTRIES, (start, stop, _READ))
    for seq, time, actor, action, obj, outcome, organization, detail in rows:
        parsed = json.loads(detail)
        yield _Entry(
            seq,
            time,
            actor,
            action,
            obj,
            outcome,
            organization,
            parsed if isinstance(parsed, dict) else {},
        )


def _base_facts(policy: AlertPolicy, rule: BurstRule) -> dict[str, Any]:
    facts: dict[str, Any] = {"threshold": rule.threshold, "window": rule.window // 1_000_000}
    if rule.rule is Rule.OFF_HOURS:
        facts["hours"] = policy.hours
    return facts


def _insert(
    conn: sqlite3.Connection,
    alert: str,
    rule: Rule,
    subject: str,
    first_seq: int,
    first_time: int,
    facts: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO alerts (id, rule, severity, state, subject, first_seq, last_seq,"
        " first_time, last_time, count, facts) VALUES (?, ?, 'low', 'open', ?, ?, ?, ?, ?, 0, ?)",
        (alert, rule, subject, first_seq, first_seq, first_time, first_time, json.dumps(facts)),
    )


def _update(
    conn: sqlite3.Connection,
    alert: str,
    entry: _Entry,
    count: int,
    facts: dict[str, Any],
    severity: Severity,
    person: str | None,
    organization: str | None,
) -> None:
    conn.execute(
        "UPDATE alerts SET last_seq = ?, last_time = ?, count = ?, facts = ?, severity = ?,"
        " person = ?, organization = ? WHERE id = ?",
        (
            entry.seq,
            entry.time,
            count,
            json.dumps(facts, ensure_ascii=False, sort_keys=True),
            severity,
            person,
            organization,
            alert,
        ),
    )


def _acknowledge(conn: sqlite3.Connection, entry: _Entry) -> None:
    """The alert is acknowledged (the first acknowledgement counts) and stops growing."""
    note = _text(entry.detail.get("note")) or ""
    changed = conn.execute(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_seq = ?, acknowledged_by = ?,"
        " acknowledged_at = ?, note = ? WHERE id = ? AND state = 'open'",
        (entry.seq, entry.actor, entry.time, note, entry.object_id),
    ).rowcount
    if changed:
        conn.execute("UPDATE alert_keys SET alert = NULL WHERE alert = ?", (entry.object_id,))
        conn.execute("UPDATE alert_budgets SET alert = NULL WHERE alert = ?", (entry.object_id,))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _client(detail: Mapping[str, Any]) -> str | None:
    """The client address an entry was recorded for (sign-ins carry it in ``client``,
    API requests in ``request.client``)."""
    request = detail.get("request")
    found = _text(detail.get("client")) or (
        _text(request.get("client")) if isinstance(request, dict) else None
    )
    return found[:64] if found else None


def _organization_of(conn: sqlite3.Connection, user: str | None) -> str | None:
    if user is None:
        return None
    row = conn.execute("SELECT organization FROM people WHERE user = ?", (user,)).fetchone()
    return row[0] if row else None


def _grant_organization(conn: sqlite3.Connection, grant: str | None) -> str | None:
    row = conn.execute(
        "SELECT organization FROM alert_grants WHERE grant_id = ?", (grant,)
    ).fetchone()
    return row[0] if row else None


def _grant_of(conn: sqlite3.Connection, entry: _Entry) -> str | None:
    """The grant an entry acts on: its object, the grant its detail names, or the grant
    of the session or export it is about."""
    kind, ident = entry.object.partition(":")[::2]
    if kind == "grant":
        return ident
    named = _text(entry.detail.get("grant"))
    if named or kind not in ("session", "export"):
        return named
    table = "alert_sessions" if kind == "session" else "alert_exports"
    row = conn.execute(
        f"SELECT grant_id FROM {table} WHERE {kind} = ?",  # noqa: S608 - fixed names
        (ident,),
    ).fetchone()
    return row[0] if row else None
