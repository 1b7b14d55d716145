"""Abnormal-operation alerts derived from a real ledger through the real trail index: each
rule fires on its pattern and not below its threshold, an alert grows while its burst
goes on, acknowledgements are read from the ledger, and a rebuilt index gives the same
alerts with the same ids and states. The policy file is checked with clear errors."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from audit import Ledger, LedgerOptions
from gateway.trail import TrailIndex
from gateway.trail.alert_policy import (
    AlertPolicy,
    AlertPolicyError,
    Rule,
    Severity,
    load_alert_policy,
)
from gateway.trail.alert_service import Alert, AlertQuery, get_alert, list_alerts
from gateway.trail.alerts import CHINA, AlertDetector, AlertState, alert_id
from gateway.workdays import WorkCalendar
from tests.conftest import REPO_ROOT

POLICIES = REPO_ROOT / "policies"
TUESDAY = datetime(2026, 11, 3, 10, 0, tzinfo=CHINA)  # a working day, within working hours
PEOPLE = {"wang": "unit", "li": "unit", "zhao": "unit", "qian": "unit", "sun": "operator"}


class Scene:
    """A ledger written at a clock the test moves, indexed with the alert detector."""

    def __init__(
        self, folder: Path, *, start: datetime = TUESDAY, policy: AlertPolicy | None = None
    ) -> None:
        self.folder = folder
        self.now = start
        self.policy = policy or load_alert_policy(POLICIES / "alerts.yaml")
        options = LedgerOptions(clock=self.clock, checkpoint_interval=86_400.0)
        self.ledger = Ledger(folder / "ledger", options)
        self.index = self.open_index()
        for username, organization in PEOPLE.items():
            self.add(
                "user.create",
                "user:admin",
                f"user:{username}",
                organization=organization,
                username=username,
            )

    def open_index(self, *, with_alerts: bool = True) -> TrailIndex:
        calendar = WorkCalendar.from_file(POLICIES / "calendar.toml")
        observers = [AlertDetector(self.policy, calendar)] if with_alerts else []
        return TrailIndex(self.folder / "trail.sqlite3", self.ledger, observers)

    def clock(self) -> int:
        return int(self.now.timestamp()) * 1_000_000 + self.now.microsecond

    def add(
        self,
        action: str,
        actor: str,
        obj: str,
        outcome: str = "ok",
        /,
        *,
        wait: timedelta = timedelta(seconds=1),
        **detail: Any,
    ) -> int:
        self.now += wait
        receipt = self.ledger.append(
            action=action, actor=actor, object=obj, outcome=outcome, detail=detail
        )
        return receipt.seq

    def deny(
        self, username: str, n: int = 1, *, every: timedelta = timedelta(seconds=5)
    ) -> list[int]:
        """``n`` refused requests by ``username``, ``every`` apart."""
        return [
            self.add(
                "request.denied",
                f"user:{username}",
                "request",
                "denied",
                wait=every,
                reason="the roles do not allow this",
                status=403,
                action="alert:read",
            )
            for _ in range(n)
        ]

    def acknowledge(self, alert: str, by: str = "sun") -> int:
        return self.add("alert.acknowledge", f"user:{by}", f"alert:{alert}", note="已核实")

    def alerts(self, **query: Any) -> list[Alert]:
        """Every alert matching ``query``, oldest first."""
        self.index.catch_up()
        with self.index.read() as conn:
            found = list_alerts(conn, AlertQuery(limit=500, **query)).alerts
        return found[::-1]

    def alert(self, ident: str) -> Alert:
        self.index.catch_up()
        with self.index.read() as conn:
            found = get_alert(conn, ident)
        assert found is not None, ident
        return found

    def close(self) -> None:
        self.index.close()
        self.ledger.close()


@pytest.fixture
def scene(tmp_path: Path) -> Any:
    made = Scene(tmp_path)
    yield made
    made.close()


# ---------------------------------------------------------------------- the policy
def test_the_policy_file_gives_every_rule() -> None:
    policy = load_alert_policy(POLICIES / "alerts.yaml")
    assert set(policy.bursts) == set(Rule) - {Rule.BUDGET_LOW}
    denied = policy.bursts[Rule.DENIED_BURST]
    assert (denied.threshold, denied.window, denied.severity) == (10, 600_000_000, Severity.MEDIUM)
    assert policy.bursts[Rule.EXPORT_REFUSALS].window == 30 * 86_400_000_000
    assert (policy.budget.below, policy.budget.high_below) == (0.2, 0.05)
    assert policy.hours == "08:00–20:00"


def _policy_with(tmp_path: Path, change: Any) -> Path:
    data = yaml.safe_load((POLICIES / "alerts.yaml").read_text())
    change(data)
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["rules"].pop("off_hours"), "missing: off_hours"),
        (lambda d: d["rules"].update(flood={}), "unknown: flood"),
        (lambda d: d["rules"]["denied_burst"].update(window="10 minutes"), "denied_burst.window"),
        (lambda d: d["rules"]["denied_burst"].update(threshold=0), "denied_burst.threshold"),
        (lambda d: d["rules"]["denied_burst"].update(high_at=5), "high_at must be at least"),
        (lambda d: d["rules"]["download_burst"].update(severity="urgent"), "severity is one of"),
        (lambda d: d["rules"]["off_hours"].update(hours="9-5"), "unknown hours"),
        (lambda d: d["rules"]["off_hours"].update(enabled="no"), "enabled must be true"),
        (lambda d: d["rules"]["budget_low"].update(high_below=0.3), "0 < high_below < below"),
        (lambda d: d["working_hours"].update(end=1200), 'in quotes, such as "08:00"'),
        (lambda d: d["working_hours"].update(start="21:00"), "start must be before its end"),
        (lambda d: d.pop("working_hours"), "a mapping of working_hours and rules"),
    ],
)
def test_a_policy_that_cannot_be_used_is_refused_with_the_place(
    tmp_path: Path, change: Any, message: str
) -> None:
    path = _policy_with(tmp_path, change)
    with pytest.raises(AlertPolicyError, match=message) as refused:
        load_alert_policy(path)
    assert str(path) in str(refused.value)


def test_an_unreadable_or_broken_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AlertPolicyError, match="cannot be read"):
        load_alert_policy(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("rules: [")
    with pytest.raises(AlertPolicyError, match="not YAML"):
        load_alert_policy(tmp_path / "broken.yaml")


def test_working_hours_are_those_of_working_days_in_china_time(scene: Scene) -> None:
    detector = AlertDetector(scene.policy, WorkCalendar.from_file(POLICIES / "calendar.toml"))
    at = lambda *when: datetime(*when, tzinfo=CHINA)  # noqa: E731
    assert detector.in_working_hours(at(2026, 11, 3, 8, 0))
    assert detector.in_working_hours(at(2026, 11, 3, 19, 59))
    assert not detector.in_working_hours(at(2026, 11, 3, 7, 59))
    assert not detector.in_working_hours(at(2026, 11, 3, 20, 0))
    assert not detector.in_working_hours(at(2026, 11, 7, 10, 0))  # a Saturday
    assert not detector.in_working_hours(at(2026, 10, 1, 10, 0))  # National Day, a Thursday
    assert detector.in_working_hours(at(2026, 9, 20, 10, 0))  # a Sunday worked in lieu


# ---------------------------------------------------------------------- refusals
def test_refusals_by_a_person_open_one_alert_per_burst(scene: Scene) -> None:
    first = scene.deny("wang", 9)
    assert scene.alerts() == []
    tenth = scene.deny("wang")
    (alert,) = scene.alerts()
    assert (alert.rule, alert.subject, alert.person, alert.organization) == (
        Rule.DENIED_BURST,
        "user:wang",
        "user:wang",
        "unit",
    )
    assert (alert.first_seq, alert.last_seq, alert.count) == (first[0], tenth[0], 10)
    assert (alert.severity, alert.state) == (Severity.MEDIUM, AlertState.OPEN)
    assert alert.id == alert_id(Rule.DENIED_BURST, "user:wang", first[0])
    assert alert.facts == {"threshold": 10, "window": 600, "actions": ["request.denied"]}
    assert alert.person_name == "wang"

    more = scene.deny("wang", 5, every=timedelta(minutes=9))  # each within the window
    (grown,) = scene.alerts()
    assert (grown.id, grown.count, grown.last_seq) == (alert.id, 15, more[-1])
    assert scene.alert(alert.id).seqs == first + tenth + more

    slow = scene.deny("wang", 9, every=timedelta(minutes=11))  # the burst is over
    assert len(scene.alerts()) == 1
    scene.deny("wang", 9)  # with the last slow one, 10 within 10 minutes
    again = scene.alerts()[-1]
    assert (again.first_seq, again.count) == (slow[-1], 10)
    assert [a.count for a in scene.alerts()] == [15, 10]


def test_refusals_spread_out_never_reach_the_threshold(scene: Scene) -> None:
    scene.deny("wang", 12, every=timedelta(minutes=2))  # at most 5 in any 10 minutes
    assert scene.alerts() == []


def test_refusals_by_the_people_of_an_organization_together(scene: Scene) -> None:
    for username in ("wang", "li", "zhao"):
        scene.deny(username, 9)
    scene.deny("qian", 2)
    assert scene.alerts() == []  # 29, and nobody has 10
    scene.deny("qian")
    (alert,) = scene.alerts()
    assert (alert.rule, alert.subject, alert.person, alert.count) == (
        Rule.ORGANIZATION_DENIED_BURST,
        "org:unit",
        None,
        30,
    )
    assert alert.facts["people"] == ["user:wang", "user:li", "user:zhao", "user:qian"]


def test_failed_sign_ins_to_an_account_and_from_an_address(scene: Scene) -> None:
    failure = {"client": "10.0.0.7", "reason": "wrong password"}
    for _ in range(4):
        scene.add("session.login", "user:wang", "user:wang", "failed", **failure)
    assert scene.alerts() == []
    scene.add("session.login", "user:wang", "user:wang", "failed", **failure)
    (account,) = scene.alerts()
    assert (account.rule, account.subject, account.organization) == (
        Rule.SIGN_IN_FAILURES,
        "user:wang",
        "unit",
    )
    request = {"client": "10.0.0.7", "id": "r", "method": "GET", "path": "/api/v1/me"}
    for _ in range(14):
        scene.add("request.denied", "anonymous", "request", "denied", request=request, status=401)
    assert len(scene.alerts()) == 1  # 19 from the address
    scene.add("session.login", "anonymous", "user:unknown", "failed", client="10.0.0.7")
    address = scene.alerts()[-1]
    assert (address.rule, address.subject, address.count, address.severity) == (
        Rule.CLIENT_FAILURES,
        "client:10.0.0.7",
        20,
        Severity.HIGH,
    )
    assert address.facts["actions"] == ["session.login", "request.denied"]


# ---------------------------------------------------------------------- exports
def test_refused_exports_of_a_grant(scene: Scene) -> None:
    scene.add("grant.create", "user:sun", "grant:g1", organization="unit", members=["wang"])
    for export in ("e1", "e2", "e3", "e4"):
        scene.add("export.request", "user:wang", f"export:{export}", grant="g1", session="s1")
    scene.add("export.submit", "user:wang", "export:e1", grant="g1", status="blocked")
    scene.add("export.review", "user:zhou", "export:e2", approve=False, status="rejected")
    scene.add("export.review", "user:zhou", "export:e4", approve=True, status="approval")
    assert scene.alerts() == []
    last = scene.add("export.approve", "user:sun", "export:e3", approve=False, status="rejected")
    (alert,) = scene.alerts()
    assert (alert.rule, alert.subject, alert.person, alert.organization) == (
        Rule.EXPORT_REFUSALS,
        "grant:g1",
        "user:wang",
        "unit",
    )
    assert (alert.count, alert.last_seq, alert.severity) == (3, last, Severity.MEDIUM)
    assert (alert.facts["blocked"], alert.facts["refused"]) == (1, 2)
    assert alert.facts["exports"] == ["e1", "e2", "e3"]


def test_refused_exports_further_apart_than_the_period(scene: Scene) -> None:
    scene.add("grant.create", "user:sun", "grant:g2", organization="unit")
    for n in range(3):
        scene.add(
            "export.submit",
            "user:wang",
            f"export:x{n}",
            wait=timedelta(days=16),
            grant="g2",
            status="blocked",
        )
    assert scene.alerts() == []  # never three within 30 days


def test_bursts_of_downloads(scene: Scene) -> None:
    for n in range(19):
        scene.add("export.download", "user:wang", f"export:e{n % 3}", wait=timedelta(minutes=3))
    assert scene.alerts() == []
    scene.add("export.download", "user:wang", "export:e0")
    (alert,) = scene.alerts()
    assert (alert.rule, alert.count, alert.facts["exports"]) == (
        Rule.DOWNLOAD_BURST,
        20,
        ["e0", "e1", "e2"],
    )


# ---------------------------------------------------------------------- hours
def test_sandbox_use_outside_agreed_hours(tmp_path: Path) -> None:
    scene = Scene(tmp_path, start=datetime(2026, 9, 20, 9, 0, tzinfo=CHINA))
    try:
        start = {"grant": "g1", "hub_user": "wang"}
        scene.add("sandbox.start", "user:wang", "session:s1", wait=timedelta(hours=1), **start)
        assert scene.alerts() == []  # a Sunday worked in lieu, at 10:00
        holiday = datetime(2026, 10, 1, 10, 0, tzinfo=CHINA)
        seq = scene.add(
            "sandbox.start", "user:wang", "session:s2", wait=holiday - scene.now, **start
        )
        (alert,) = scene.alerts()
        assert (alert.rule, alert.first_seq, alert.severity) == (Rule.OFF_HOURS, seq, Severity.LOW)
        assert alert.facts["days"] == ["2026-10-01"]

        scene.add("sandbox.start", "user:wang", "session:s3", wait=TUESDAY - scene.now, **start)
        assert len(scene.alerts()) == 1  # a Tuesday at 10:00
        evening = datetime(2026, 11, 3, 21, 30, tzinfo=CHINA)
        scene.add("sandbox.start", "user:wang", "session:s4", wait=evening - scene.now, **start)
        scene.add("sandbox.execute", "user:wang", "session:s4", wait=timedelta(minutes=30))
        late = scene.alerts()[-1]
        assert (late.count, late.facts["starts"], late.facts["cells"]) == (2, 1, 1)
        assert late.facts["hours"] == "08:00–20:00" and late.facts["days"] == ["2026-11-03"]
        assert late.person == "user:wang" and late.organization == "unit"
    finally:
        scene.close()


# ---------------------------------------------------------------------- budgets
def test_a_privacy_budget_nearly_spent(scene: Scene) -> None:
    scene.add("privacy.budget.open", "system:view-builder", "grant:g1", epsilon_micro=3_000_000)
    spend = {"epsilon_micro": 500_000, "purpose": {}}
    scene.add("privacy.spend", "system:view-builder", "grant:g1", **spend, left_micro=2_500_000)
    assert scene.alerts() == []
    first = scene.add(
        "privacy.spend", "system:view-builder", "grant:g1", **spend, left_micro=590_000
    )
    (alert,) = scene.alerts()
    assert (alert.rule, alert.subject, alert.severity, alert.first_seq) == (
        Rule.BUDGET_LOW,
        "grant:g1",
        Severity.MEDIUM,
        first,
    )
    scene.add("privacy.spend", "system:view-builder", "grant:g1", **spend, left_micro=100_000)
    (grown,) = scene.alerts()
    assert (grown.id, grown.severity, grown.count) == (alert.id, Severity.HIGH, 2)
    assert grown.facts["left_micro"] == 100_000 and grown.facts["total_micro"] == 3_000_000
    scene.acknowledge(alert.id)
    scene.add("privacy.spend", "system:view-builder", "grant:g1", **spend, left_micro=50_000)
    (after,) = scene.alerts()
    assert (after.state, after.count) == (AlertState.ACKNOWLEDGED, 2)

    # acknowledged while medium: only falling below the high mark opens another
    scene.add("privacy.budget.open", "system:view-builder", "grant:g2", epsilon_micro=1_000_000)
    scene.add("privacy.spend", "system:view-builder", "grant:g2", **spend, left_micro=150_000)
    medium = scene.alerts()[-1]
    scene.acknowledge(medium.id)
    scene.add("privacy.spend", "system:view-builder", "grant:g2", **spend, left_micro=100_000)
    assert len(scene.alerts()) == 2
    scene.add("privacy.spend", "system:view-builder", "grant:g2", **spend, left_micro=40_000)
    high = scene.alerts()[-1]
    assert (high.subject, high.severity, high.state) == ("grant:g2", Severity.HIGH, "open")


# ---------------------------------------------------------------------- suspension
def test_use_of_a_suspended_grant(scene: Scene) -> None:
    scene.add("grant.create", "user:sun", "grant:g1", organization="unit", members=["wang"])
    scene.add("sandbox.start", "user:wang", "session:s1", grant="g1")
    scene.add("export.request", "user:wang", "export:e1", grant="g1", session="s1")
    scene.add("sandbox.execute", "user:wang", "session:s1", code="1 + 1")
    assert scene.alerts() == []
    scene.add("grant.suspend", "user:sun", "grant:g1", reason="objection", sessions=1)
    refused = {"reason": "the grant is suspended"}
    first = scene.add("sandbox.start", "user:wang", "grant:g1", "denied", **refused)
    (alert,) = scene.alerts()
    assert (alert.rule, alert.subject, alert.person, alert.organization) == (
        Rule.SUSPENDED_GRANT_USE,
        "grant:g1",
        "user:wang",
        "unit",
    )
    assert (alert.first_seq, alert.severity, alert.facts["refused"]) == (
        first,
        Severity.MEDIUM,
        1,
    )
    scene.add("sandbox.execute", "user:wang", "session:s1", code="2 + 2")  # not refused!
    scene.add("export.download", "user:wang", "export:e1", "denied", **refused)
    (grown,) = scene.alerts()
    assert (grown.count, grown.severity, grown.facts["succeeded"]) == (3, Severity.HIGH, 1)
    assert grown.facts["actions"] == ["sandbox.start", "sandbox.execute", "export.download"]
    scene.add("grant.resume", "user:sun", "grant:g1", reason="answered")
    scene.add("sandbox.start", "user:wang", "session:s2", grant="g1")
    assert scene.alerts()[0].count == 3


# ---------------------------------------------------------------------- acknowledging
def test_an_acknowledged_alert_stops_growing_and_a_burst_that_goes_on_opens_another(
    scene: Scene,
) -> None:
    scene.deny("wang", 10)
    (alert,) = scene.alerts()
    acknowledged = scene.acknowledge(alert.id)
    scene.acknowledge(alert.id, by="li")  # a second acknowledgement changes nothing
    after = scene.deny("wang", 9)
    (still,) = scene.alerts()
    assert (still.state, still.count) == (AlertState.ACKNOWLEDGED, 10)
    assert still.acknowledgement is not None
    assert (still.acknowledgement.seq, still.acknowledgement.by) == (acknowledged, "user:sun")
    assert (still.acknowledgement.by_name, still.acknowledgement.note) == ("sun", "已核实")
    scene.deny("wang")
    new = scene.alerts()[-1]
    assert (new.first_seq, new.count, new.state) == (after[0], 10, AlertState.OPEN)
    assert [a.state for a in scene.alerts(state=AlertState.OPEN)] == [AlertState.OPEN]


def test_a_rebuilt_index_gives_the_same_alerts_and_acknowledgements(scene: Scene) -> None:
    scene.deny("wang", 12)
    scene.add("session.login", "user:li", "user:li", "failed", wait=timedelta(0), client="x")
    for _ in range(4):
        scene.add("session.login", "user:li", "user:li", "failed", client="x")
    scene.add("privacy.budget.open", "system:view-builder", "grant:g1", epsilon_micro=10)
    scene.add("privacy.spend", "system:view-builder", "grant:g1", epsilon_micro=9, left_micro=1)
    before = scene.alerts()
    assert [a.rule for a in before] == [Rule.DENIED_BURST, Rule.SIGN_IN_FAILURES, Rule.BUDGET_LOW]
    scene.acknowledge(before[1].id)
    before = [a.to_dict() for a in scene.alerts()]

    scene.index.close()
    for name in ("trail.sqlite3", "trail.sqlite3-wal", "trail.sqlite3-shm"):
        (scene.folder / name).unlink(missing_ok=True)
    scene.index = scene.open_index()
    after = [a.to_dict() for a in scene.alerts()]
    assert after == before
    assert after[1]["state"] == "acknowledged"


def test_an_index_made_before_alerts_existed_is_caught_up(scene: Scene) -> None:
    scene.index.close()
    (scene.folder / "trail.sqlite3").unlink()
    scene.index = scene.open_index(with_alerts=False)
    scene.deny("wang", 10)
    scene.index.catch_up()
    scene.index.close()
    scene.index = scene.open_index()
    assert scene.alerts() == []  # nothing new ingested, nothing derived yet
    scene.add("sandbox.start", "user:wang", "session:s1", grant="g1")
    (alert,) = scene.alerts()
    assert (alert.rule, alert.count) == (Rule.DENIED_BURST, 10)


def test_a_rule_turned_off_gives_no_alerts(tmp_path: Path) -> None:
    path = _policy_with(tmp_path, lambda d: d["rules"]["denied_burst"].update(enabled=False))
    scene = Scene(tmp_path, policy=load_alert_policy(path))
    try:
        scene.deny("wang", 10)
        assert scene.alerts() == []
    finally:
        scene.close()


def test_listing_pages_and_filters(scene: Scene) -> None:
    for username in ("wang", "li", "zhao"):
        scene.deny(username, 10, every=timedelta(seconds=1))
    scene.now += timedelta(hours=1)
    scene.add("session.login", "user:qian", "user:qian", "failed", client="y")
    for _ in range(4):
        scene.add("session.login", "user:qian", "user:qian", "failed", client="y")
    scene.index.catch_up()
    with scene.index.read() as conn:
        first = list_alerts(conn, AlertQuery(limit=2))
        assert [a.subject for a in first.alerts] == ["user:qian", "org:unit"]
        assert first.next_before == first.alerts[-1].n
        rest = list_alerts(conn, AlertQuery(limit=2, before=first.next_before))
        assert [a.subject for a in rest.alerts] == ["user:zhao", "user:li"]
        rule = list_alerts(conn, AlertQuery(rule=Rule.SIGN_IN_FAILURES))
        assert [a.subject for a in rule.alerts] == ["user:qian"]
        late = list_alerts(conn, AlertQuery(since=scene.clock() - 60_000_000))
        assert [a.subject for a in late.alerts] == ["user:qian"]
        early = list_alerts(conn, AlertQuery(until=scene.clock() - 60_000_000))
        assert len(early.alerts) == 4 and early.next_before is None
        assert get_alert(conn, "nothing") is None
    with pytest.raises(ValueError, match="limit"):
        AlertQuery(limit=0)


# ---------------------------------------------------------------------- words
FACTS = {  # facts as the rules keep them
    Rule.DENIED_BURST: {"threshold": 10, "window": 600, "actions": ["request.denied"]},
    Rule.ORGANIZATION_DENIED_BURST: {
        "threshold": 30,
        "window": 600,
        "people": [f"user:{n}" for n in range(10)],
        "people_more": True,
    },
    Rule.SIGN_IN_FAILURES: {"threshold": 5, "window": 900},
    Rule.CLIENT_FAILURES: {"threshold": 20, "window": 600, "actions": ["session.login"]},
    Rule.EXPORT_REFUSALS: {"threshold": 3, "window": 2_592_000, "blocked": 1, "refused": 2},
    Rule.DOWNLOAD_BURST: {"threshold": 20, "window": 3600, "exports": ["e1", "e2"]},
    Rule.OFF_HOURS: {"hours": "08:00–20:00", "starts": 1, "cells": 2, "days": ["2026-10-01"]},
    Rule.SUSPENDED_GRANT_USE: {"refused": 2, "succeeded": 1, "actions": ["sandbox.start"]},
    Rule.BUDGET_LOW: {"left_micro": 100_000, "total_micro": 3_000_000, "below": 0.2},
}
WORDS = {  # (zh-CN, en): a part of each message
    Rule.DENIED_BURST: ("10 分钟内达 10 次或以上（request.denied）", "3 requests refused"),
    Rule.ORGANIZATION_DENIED_BURST: ("该单位 10+ 人", "by 10+ people"),
    Rule.SIGN_IN_FAILURES: ("15 分钟内达 5 次", "within 15 min"),
    Rule.CLIENT_FAILURES: ("该地址", "from this address"),
    Rule.EXPORT_REFUSALS: ("30 天内", "1 blocked by the airlock, 2 refused"),
    Rule.DOWNLOAD_BURST: ("涉及 2 个导出", "of 2 released exports, 20 or more within 1 h"),
    Rule.OFF_HOURS: ("工作日 08:00–20:00", "2 runs of code, on 2026-10-01"),
    Rule.SUSPENDED_GRANT_USE: ("其中 1 次未被拒绝", "1 of them not refused"),
    Rule.BUDGET_LOW: ("ε 0.1（共 3，3.3%）", "below 20% of the budget"),
}


@pytest.mark.parametrize("rule", list(Rule))
def test_every_alert_is_told_in_chinese_and_english(rule: Rule) -> None:
    from gateway.web.i18n import translations
    from gateway.web.pages.alerts import describe

    alert = Alert(
        n=1,
        id="a",
        rule=rule,
        severity=Severity.LOW,
        state=AlertState.OPEN,
        subject="user:u",
        person=None,
        person_name=None,
        organization=None,
        first_seq=1,
        last_seq=3,
        first_time=0,
        last_time=0,
        count=3,
        facts=FACTS[rule],
    )
    chinese, english = (describe(alert, translations(code).gettext) for code in ("zh-CN", "en"))
    assert WORDS[rule][0] in chinese and WORDS[rule][1] in english
