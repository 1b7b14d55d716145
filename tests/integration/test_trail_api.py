"""The audit trail through the API, in process over a real database, ledger and index:
who may read it (regulators and administrators; applicants and reviewers are refused
and the refusal recorded), searching and paging, China-time days, an object's history,
and every bad parameter answered with a 4xx and its reason. The routes' schema is kept by
tests/integration/test_api_schema.py, whose gateway has the index too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.catalog.service import CHINA
from gateway.db.models import OrganizationType
from tests.integration.test_api_abuse import API, Gateway
from tests.integration.test_identity import credit_code
from tests.unit.test_trail_index import GRANT_HISTORY, World, build_world, labels


class Trail:
    """A gateway with the trail index, a regulator and a reviewer, and a grant's life
    in its ledger."""

    def __init__(self, tmp: Path) -> None:
        self.gateway = Gateway(f"sqlite:///{tmp / 'sbx.db'}", tmp / "var")
        g = self.gateway
        authority = g.identity.create_organization(
            g.admin.actor(),
            kind=OrganizationType.REGULATOR,
            name="大数据局",
            credit_code=credit_code(4),
        )
        for name, org, role in (
            ("regulator", authority.id, "regulator"),
            ("reviewer", g.admin.organization_id, "reviewer"),
        ):
            account, _ = g.member(org, name, role)
            g.tokens[name] = g.identity.issue_token(account.actor(), name="tests")[1]
        self.world: World = build_world(g.ledger)
        self.client = TestClient(g.app)

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(
            f"{API}/trail{path}", headers=self.gateway.headers(who), params=params
        )


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    made = Trail(tmp_path_factory.mktemp("trail-api"))
    with made.client:
        yield made
    made.gateway.close()


def test_regulators_and_administrators_read_the_trail_newest_first(trail: Trail) -> None:
    for who in ("regulator", "admin"):
        answer = trail.get(who, "/entries", limit=5)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seqs = [e["seq"] for e in page["entries"]]
        assert seqs == sorted(seqs, reverse=True) and len(seqs) == 5
        assert page["next_before"] == seqs[-1] and page["indexed"] >= seqs[0] + 1
    w = trail.world
    found = trail.get("regulator", "/entries", action="export.release").json()["entries"]
    [release] = [e for e in found if e["seq"] == w.seqs["e1.release"]]
    assert release["actor_name"] == "approver" and release["detail"]["grant"] == "clinic-2026"
    assert release["organization"] == w.id("operator")
    at = datetime.fromisoformat(release["at"])
    assert at.utcoffset() == timedelta(hours=8)
    assert at == datetime.fromtimestamp(release["time"] / 1e6, CHINA)


def test_applicants_and_reviewers_are_refused_and_the_refusal_recorded(trail: Trail) -> None:
    for who in ("ann", "reviewer"):
        for path in ("/entries", "/history/grant/clinic-2026"):
            answer = trail.get(who, path)
            assert answer.status_code == 403, answer.text
            assert "audit_trail" in answer.json()["detail"]
    refused = trail.get("regulator", "/entries", action="request.denied", limit=500).json()
    actions = [e["detail"].get("action") for e in refused["entries"]]
    assert actions.count("audit_trail:read") >= 4


def test_pages_follow_the_cursor_to_the_first_entry(trail: Trail) -> None:
    seen: list[int] = []
    before = None
    while True:
        params = {"limit": 7, "organization": trail.world.id("acme")}
        page = trail.get("admin", "/entries", **params, **({"before": before} if before else {}))
        assert page.status_code == 200, page.text
        seen += [e["seq"] for e in page.json()["entries"]]
        before = page.json()["next_before"]
        if before is None:
            break
    everything = trail.get("admin", "/entries", limit=500, organization=trail.world.id("acme"))
    assert seen == [e["seq"] for e in everything.json()["entries"]] and len(seen) > 7


def test_days_are_china_time_days_and_until_includes_its_day(trail: Trail) -> None:
    newest = trail.get("admin", "/entries", limit=1).json()["entries"][0]
    day = datetime.fromtimestamp(newest["time"] / 1e6, CHINA).date()
    today = trail.get("admin", "/entries", since=str(day), until=str(day), limit=1).json()
    assert today["entries"][0]["seq"] == newest["seq"]
    before = trail.get("admin", "/entries", until=str(day - timedelta(days=1))).json()
    assert before["entries"] == [] or before["entries"][0]["time"] < newest["time"]
    after = trail.get("admin", "/entries", since=str(day + timedelta(days=1))).json()
    assert after["entries"] == [] and after["next_before"] is None
    moment = datetime.fromtimestamp(newest["time"] / 1e6, CHINA).replace(tzinfo=None)
    exact = trail.get("admin", "/entries", since=moment.isoformat(), limit=500).json()
    assert exact["entries"][-1]["time"] >= newest["time"] - 1 and exact["entries"]


def test_a_grants_history_oldest_first_and_in_pieces(trail: Trail) -> None:
    whole = trail.get("regulator", "/history/grant/clinic-2026")
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert body["subject"] == "grant:clinic-2026" and body["next_after"] is None
    assert labels(trail.world, [_Seq(e["seq"]) for e in body["entries"]]) == GRANT_HISTORY
    first = trail.get("regulator", "/history/grant/clinic-2026", limit=10).json()
    assert len(first["entries"]) == 10 and first["next_after"] == first["entries"][-1]["seq"]
    rest = trail.get("regulator", "/history/grant/clinic-2026", after=first["next_after"]).json()
    assert first["entries"] + rest["entries"] == body["entries"]
    person = trail.get("admin", f"/history/user/{trail.world.id('pei')}").json()
    assert person["entries"][0]["action"] == "user.create"


class _Seq:
    def __init__(self, seq: int) -> None:
        self.seq = seq


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/entries", {"since": "2026-13-01"}, "since is not a day"),
        ("/entries", {"until": "yesterday"}, "until is not a day"),
        ("/entries", {"since": "2026-11-02", "until": "2026-11-01"}, "since is not before until"),
        ("/entries", {"since": "1969-12-31"}, "before 1970"),
        ("/entries", {"limit": 0}, "greater than or equal to 1"),
        ("/entries", {"limit": 501}, "less than or equal to 500"),
        ("/entries", {"limit": "many"}, "valid integer"),
        ("/entries", {"before": -1}, "greater than or equal to 0"),
        ("/entries", {"action": "export..approve"}, "prefix ending in '.'"),
        ("/entries", {"action": "export approve"}, "prefix ending in '.'"),
        ("/entries", {"subject": "grant"}, "kind:id"),
        ("/entries", {"subject": "grant:a b"}, "kind:id"),
        ("/entries", {"organization": "a b"}, "should match pattern"),
        ("/history/planet/x", {}, "unknown kind 'planet'"),
        ("/history/grant/a%20b", {}, "should match pattern"),
        ("/history/grant/x", {"limit": 0}, "greater than or equal to 1"),
        ("/history/grant/x", {"after": -5}, "greater than or equal to 0"),
    ],
)
def test_bad_parameters_are_422_with_the_reason(
    trail: Trail, path: str, params: dict[str, Any], reason: str
) -> None:
    answer = trail.get("regulator", path, **params)
    assert answer.status_code == 422, answer.text
    assert reason in str(answer.json()["detail"])
