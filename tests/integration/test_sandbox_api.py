"""Grants and sandbox sessions through the API, on SQLite and PostgreSQL: the hub starts
sessions with its service token, the code recorder records each execution with the
session's token, an approver suspends a grant and everything stops at once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from audit.entry import parse
from gateway.api import create_app, open_services
from gateway.api.deps import Services
from gateway.db.models import OrganizationType
from gateway.sandboxes.hub import HubClient
from gateway.sandboxes.secrets import SandboxSecrets
from gateway.sandboxes.service import SandboxService
from gateway.settings import load_settings
from sandbox.spawner.ticket import verify_ticket
from tests.integration.test_catalog import credit_code

NOW = datetime(2026, 10, 12, 2, 0, tzinfo=UTC)
HUB_API = "http://hub.test:8081/hub/api"
WRONG = "not-the-service-token"  # noqa: S105 - a wrong token, on purpose


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Platform:
    client: TestClient
    services: Services
    sandboxes: SandboxService
    secrets: SandboxSecrets
    tokens: dict[str, str]  # user name -> personal API token
    ids: dict[str, str]  # user name -> user id
    unit: str  # the application unit's id
    clock: Clock
    hub_calls: list[httpx.Request] = field(default_factory=list)

    def call(self, who: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kwargs.pop("headers", {})}
        return self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    def hub(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        bearer = self.secrets.service_token if token is None else token
        headers = {"Authorization": f"Bearer {bearer}"}
        return self.client.request(method, f"/api/v1/sandbox{path}", headers=headers, **kwargs)

    def execute(self, token: str, code: str, **overrides: Any) -> Any:
        body = {"kernel": "k-1", "message": "m-1", "kind": "execute", "code": code, **overrides}
        return self.client.post(
            "/api/v1/sandbox/executions", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    def raw_ledger(self) -> str:
        return b"\n".join(line for _, line in self.services.ledger.entries(0)).decode()

    def entries(self) -> list[tuple[int, dict[str, Any]]]:
        return [(seq, parse(line)) for seq, line in self.services.ledger.entries(0)]

    def grant(self, grant_id: str = "coast-2026", members: tuple[str, ...] = ("ann",)) -> Any:
        made = self.call(
            "sun",
            "POST",
            "/grants",
            json={
                "id": grant_id,
                "title": "海岸线数据 × 市场主体",
                "organization_id": self.unit,
                "members": [self.ids[name] for name in members],
                "views": "coast",
                "starts_at": (NOW - timedelta(days=1)).isoformat(),
                "ends_at": (NOW + timedelta(days=30)).isoformat(),
            },
        )
        assert made.status_code == 201, made.text
        return made.json()


@pytest.fixture
def platform(database_url: str, tmp_path: Path) -> Iterator[Platform]:
    settings = load_settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        sandbox={"hub_api_url": HUB_API, "hub_url": "https://hub.test"},
    )
    services = open_services(settings)
    clock = Clock()
    services.identity.clock = clock
    sandboxes = services.sandboxes
    assert sandboxes is not None
    sandboxes.clock = clock
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(204)

    sandboxes.hub = HubClient(
        HUB_API, sandboxes.secrets.hub_api_token, transport=httpx.MockTransport(answer)
    )
    (settings.data_dir / "views" / "coast").mkdir(parents=True)
    identity = services.identity
    made = identity.bootstrap_admin(operator_name="运营", credit_code=credit_code(1))
    assert made is not None
    admin = made[0].actor()
    unit = identity.create_organization(
        admin,
        kind=OrganizationType.APPLICATION_UNIT,
        name="海尔数据科技有限公司",
        credit_code=credit_code(3),
    ).id
    other = identity.create_organization(
        admin, kind=OrganizationType.APPLICATION_UNIT, name="其他公司", credit_code=credit_code(4)
    ).id
    people = {
        "ann": (unit, "applicant"),
        "bob": (unit, "applicant"),
        "cho": (other, "applicant"),
        "sun": (made[0].organization_id, "approver"),
        "zhao": (made[0].organization_id, "reviewer"),
    }
    tokens, ids = {"admin": identity.issue_token(admin, name="t")[1]}, {"admin": made[0].id}
    for username, (organization, role) in people.items():
        account, _ = identity.create_user(
            admin,
            organization_id=organization,
            username=username,
            display_name=username,
            roles=(role,),
        )
        tokens[username] = identity.issue_token(account.actor(), name="tests")[1]
        ids[username] = account.id
    with TestClient(create_app(settings, services)) as client:
        yield Platform(
            client, services, sandboxes, sandboxes.secrets, tokens, ids, unit, clock, calls
        )
    services.close()


def test_secrets_are_made_once_owner_only_and_read_back(tmp_path: Path) -> None:
    first = SandboxSecrets.load_or_create(tmp_path)
    again = SandboxSecrets.load_or_create(tmp_path)
    assert first == again and len(first.sso_secret) == 32
    assert first.service_token != first.hub_api_token
    for name in ("hub-service.token", "hub-api.token", "hub-sso.secret"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert first.service_token not in repr(first)


def test_the_hub_starts_a_session_and_the_recorder_records_every_execution(
    platform: Platform,
) -> None:
    grant = platform.grant()
    assert grant["status"] == "active" and grant["gid"] == 210_000
    assert grant["member_names"] == ["ann"]
    started = platform.hub("POST", "/sessions", json={"user": "ann", "grant": "coast-2026"})
    assert started.status_code == 201, started.text
    session = started.json()
    assert session["uid"] == 200_000 and session["gid"] == 210_000
    assert session["user"] == "ann" and session["grant"] == "coast-2026"
    assert Path(session["views"]).is_absolute() and session["views"].endswith("/views/coast")
    assert session["limits"] == {
        "memory_bytes": 2048 << 20,
        "pids": 256,
        "disk_bytes": 2048 << 20,
        "tmp_bytes": 256 << 20,
        "cpus": 1.0,
    }
    assert session["expires_at"].startswith("2026-11-11T02:00")
    token = session["token"]

    cells = ["import pandas as pd", "df = pd.read_parquet('/data/citizens.parquet')", "df.head()"]
    receipts = []
    for number, code in enumerate(cells):
        answer = platform.execute(token, code, message=f"m-{number}")
        assert answer.status_code == 201, answer.text
        receipts.append(answer.json())
    assert [r["sha256"] for r in receipts] == [
        hashlib.sha256(code.encode()).hexdigest() for code in cells
    ]
    assert receipts[0]["seq"] < receipts[1]["seq"] < receipts[2]["seq"]
    by_seq = dict(platform.entries())
    for receipt, code in zip(receipts, cells, strict=True):
        entry = by_seq[receipt["seq"]]
        assert entry["action"] == "sandbox.execute" and entry["outcome"] == "ok"
        assert entry["actor"] == f"user:{platform.ids['ann']}"
        detail = entry["detail"]
        assert detail["grant"] == "coast-2026" and detail["session"] == session["session"]
        assert detail["code"] == code and detail["sha256"] == receipt["sha256"]
        assert detail["kind"] == "execute" and detail["kernel"] == "k-1"
    # the session's token is never in the ledger, nor the service token
    raw = platform.raw_ledger()
    assert token not in raw and platform.secrets.service_token not in raw
    start = next(e for _, e in platform.entries() if e["action"] == "sandbox.start")
    assert start["actor"] == f"user:{platform.ids['ann']}" and start["detail"]["uid"] == 200_000

    state = platform.hub("GET", f"/sessions/{session['session']}")
    assert state.status_code == 200 and state.json() == {
        "session": session["session"],
        "active": True,
        "reason": None,
    }
    for _ in range(2):  # ending is idempotent
        ended = platform.hub("DELETE", f"/sessions/{session['session']}?reason=server+stopped")
        assert ended.status_code == 204, ended.text
    stops = [e for _, e in platform.entries() if e["action"] == "sandbox.stop"]
    assert len(stops) == 1 and stops[0]["detail"]["reason"] == "server stopped"
    assert platform.hub("GET", f"/sessions/{session['session']}").json()["active"] is False
    refused = platform.execute(token, "print(1)")
    assert refused.status_code == 403 and "ended" in refused.json()["detail"]


def test_only_the_hub_may_start_sessions(platform: Platform) -> None:
    platform.grant()
    body = {"user": "ann", "grant": "coast-2026"}
    assert platform.hub("POST", "/sessions", token=WRONG, json=body).status_code == 401
    assert (
        platform.hub("POST", "/sessions", token=platform.tokens["sun"], json=body).status_code
        == 401
    )
    unsigned = platform.client.post("/api/v1/sandbox/sessions", json=body)
    assert unsigned.status_code == 401
    assert platform.hub("GET", "/sessions/abc", token=WRONG).status_code == 401
    assert platform.hub("DELETE", "/sessions/abc", token="").status_code == 401
    assert platform.hub("GET", "/sessions/abc").status_code == 404


def test_members_of_active_grants_only(platform: Platform) -> None:
    platform.grant()
    cases = {
        "bob": "not a member",  # same unit, not named in the grant
        "cho": "not a member",
    }
    for user, reason in cases.items():
        refused = platform.hub("POST", "/sessions", json={"user": user, "grant": "coast-2026"})
        assert refused.status_code == 403 and reason in refused.json()["detail"]
    unknown = platform.hub("POST", "/sessions", json={"user": "nobody", "grant": "coast-2026"})
    assert unknown.status_code == 404
    no_grant = platform.hub("POST", "/sessions", json={"user": "ann", "grant": "nope"})
    assert no_grant.status_code == 403
    bad = platform.hub("POST", "/sessions", json={"user": "ann", "grant": "Bad Grant"})
    assert bad.status_code == 422
    denied = [e for _, e in platform.entries() if e["action"] == "sandbox.start"]
    assert {e["outcome"] for e in denied} == {"denied"} and len(denied) == 3

    platform.clock.now = NOW + timedelta(days=31)  # the grant has expired
    expired = platform.hub("POST", "/sessions", json={"user": "ann", "grant": "coast-2026"})
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    listed = platform.call("ann", "GET", "/grants").json()
    assert [g["status"] for g in listed] == ["expired"]


def test_uids_are_stable_per_user_and_gids_per_grant(platform: Platform) -> None:
    first = platform.grant("coast-2026", ("ann", "bob"))
    second = platform.grant("coast-2027", ("ann",))
    assert (first["gid"], second["gid"]) == (210_000, 210_001)

    def start(user: str, grant: str) -> dict[str, Any]:
        answer = platform.hub("POST", "/sessions", json={"user": user, "grant": grant})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    ann = start("ann", "coast-2026")
    bob = start("bob", "coast-2026")
    ann_again = start("ann", "coast-2027")
    assert ann["uid"] == ann_again["uid"] != bob["uid"]
    assert {ann["uid"], bob["uid"]} == {200_000, 200_001}
    assert ann["gid"] == bob["gid"] == 210_000 and ann_again["gid"] == 210_001
    # a new session of the same user and grant replaces the old one
    replaced = start("ann", "coast-2026")
    state = platform.hub("GET", f"/sessions/{ann['session']}").json()
    assert state["active"] is False and state["reason"] == "replaced by a new session"
    assert replaced["uid"] == ann["uid"] and replaced["token"] != ann["token"]


def test_suspending_stops_sessions_executions_and_the_hub_servers(platform: Platform) -> None:
    platform.grant()
    session = platform.hub("POST", "/sessions", json={"user": "ann", "grant": "coast-2026"})
    token, session_id = session.json()["token"], session.json()["session"]
    assert platform.execute(token, "1 + 1").status_code == 201

    suspended = platform.call(
        "sun", "POST", "/grants/coast-2026/suspend", json={"reason": "疑似数据外泄，先行暂停"}
    )
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"
    assert suspended.json()["suspended_reason"] == "疑似数据外泄，先行暂停"
    [call] = platform.hub_calls
    assert call.method == "DELETE"
    assert str(call.url) == f"{HUB_API}/users/ann/servers/coast-2026"
    assert call.headers["Authorization"] == f"token {platform.secrets.hub_api_token}"

    refused = platform.execute(token, "df.to_csv('/tmp/all.csv')")
    assert refused.status_code == 403 and "suspended" in refused.json()["detail"]
    state = platform.hub("GET", f"/sessions/{session_id}").json()
    assert state == {"session": session_id, "active": False, "reason": "grant suspended"}
    again = platform.hub("POST", "/sessions", json={"user": "ann", "grant": "coast-2026"})
    assert again.status_code == 403
    opened = platform.call("ann", "POST", "/grants/coast-2026/open")
    assert opened.status_code == 403 and "suspended" in opened.json()["detail"]
    actions = [(e["action"], e["outcome"]) for _, e in platform.entries()]
    assert ("grant.suspend", "ok") in actions and ("sandbox.stop", "ok") in actions
    assert ("sandbox.execute", "denied") in actions
    # suspending twice is a conflict; resuming brings it back
    twice = platform.call("sun", "POST", "/grants/coast-2026/suspend", json={"reason": "再次"})
    assert twice.status_code == 409
    resumed = platform.call("sun", "POST", "/grants/coast-2026/resume", json={"reason": "已核实"})
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    assert resumed.json()["suspended_by"] is None
    assert platform.execute(token, "1").status_code == 403  # that session ended for good
    fresh = platform.hub("POST", "/sessions", json={"user": "ann", "grant": "coast-2026"})
    assert platform.execute(fresh.json()["token"], "1").status_code == 201


def test_a_hub_that_cannot_be_reached_does_not_stop_the_suspension(platform: Platform) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    platform.sandboxes.hub = HubClient(HUB_API, "t", transport=httpx.MockTransport(down))
    platform.grant()
    platform.hub("POST", "/sessions", json={"user": "ann", "grant": "coast-2026"})
    suspended = platform.call("sun", "POST", "/grants/coast-2026/suspend", json={"reason": "x"})
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"


def test_bad_executions_are_refused_with_a_reason(platform: Platform) -> None:
    platform.grant()
    token = platform.hub("POST", "/sessions", json={"user": "ann", "grant": "coast-2026"}).json()[
        "token"
    ]
    assert platform.execute(token, "x" * (48 * 1024)).status_code == 201
    too_large = platform.execute(token, "x" * (48 * 1024 + 1))
    assert too_large.status_code == 413 and "48 KiB" in too_large.json()["detail"]
    escaped = platform.execute(token, "\x01" * 20_000)  # small, but six bytes each recorded
    assert escaped.status_code == 413
    assert platform.execute(token, "1", kind="shell").status_code == 422
    assert platform.execute(token, "1", kernel="has space").status_code == 422
    assert platform.execute(token, "1", extra="no").status_code == 422
    unknown = platform.execute("not-a-session-token", "1")
    assert unknown.status_code == 401
    missing = platform.client.post(
        "/api/v1/sandbox/executions",
        json={"kernel": "k", "message": "m", "kind": "execute", "code": "1"},
    )
    assert missing.status_code == 401
    chinese = platform.execute(token, "print('海岸线')", kind="input")
    assert chinese.status_code == 201
    assert chinese.json()["sha256"] == hashlib.sha256("print('海岸线')".encode()).hexdigest()


def test_separation_of_duties(platform: Platform) -> None:
    body = {
        "id": "mine",
        "title": "自己给自己",
        "organization_id": platform.unit,
        "members": [platform.ids["ann"]],
        "views": "coast",
        "starts_at": NOW.isoformat(),
        "ends_at": (NOW + timedelta(days=1)).isoformat(),
    }
    assert platform.call("ann", "POST", "/grants", json=body).status_code == 403
    assert platform.call("zhao", "POST", "/grants", json=body).status_code == 403
    platform.grant()
    for who in ("ann", "zhao"):
        refused = platform.call(who, "POST", "/grants/coast-2026/suspend", json={"reason": "x"})
        assert refused.status_code == 403
    # a non-member applicant cannot open it, nor see it
    assert platform.call("bob", "POST", "/grants/coast-2026/open").status_code == 403
    assert platform.call("cho", "POST", "/grants/coast-2026/open").status_code == 403
    assert platform.call("bob", "GET", "/grants").json() == []
    assert [g["id"] for g in platform.call("zhao", "GET", "/grants").json()] == ["coast-2026"]
    assert platform.call("sun", "POST", "/grants/coast-2026/open").status_code == 403
    opens = [e for _, e in platform.entries() if e["action"] == "sandbox.open"]
    assert [e["outcome"] for e in opens] == ["denied", "denied"]
    assert "not a member" in opens[0]["detail"]["reason"]


def test_creating_a_grant_checks_members_views_and_period(platform: Platform) -> None:
    base = {
        "id": "coast-2026",
        "title": "海岸线",
        "organization_id": platform.unit,
        "members": [platform.ids["ann"]],
        "views": "coast",
        "starts_at": NOW.isoformat(),
        "ends_at": (NOW + timedelta(days=1)).isoformat(),
    }
    problems = {
        "members": [platform.ids["cho"]],  # another unit's applicant
        "views": "missing",
        "ends_at": (NOW - timedelta(days=1)).isoformat(),
    }
    for name, value in problems.items():
        refused = platform.call("sun", "POST", "/grants", json={**base, name: value})
        assert refused.status_code == 422, (name, refused.text)
    sun = platform.call("sun", "POST", "/grants", json={**base, "members": [platform.ids["sun"]]})
    assert sun.status_code == 422 and "no user" in sun.json()["detail"]
    traversal = platform.call("sun", "POST", "/grants", json={**base, "views": "../ledger"})
    assert traversal.status_code == 422
    assert platform.call("sun", "POST", "/grants", json=base).status_code == 201
    assert platform.call("admin", "POST", "/grants", json=base).status_code == 409
    [created] = [e for _, e in platform.entries() if e["action"] == "grant.create"]
    assert created["detail"]["members"] == [platform.ids["ann"]]


def test_opening_gives_a_ticket_for_the_user_and_grant(platform: Platform) -> None:
    platform.grant()
    opened = platform.call("ann", "POST", "/grants/coast-2026/open")
    assert opened.status_code == 200, opened.text
    url = urlsplit(opened.json()["url"])
    assert (url.scheme, url.netloc, url.path) == ("https", "hub.test", "/hub/sbx-login")
    [ticket] = parse_qs(url.query)["ticket"]
    checked = verify_ticket(platform.secrets.sso_secret, ticket)
    assert (checked.user, checked.grant) == ("ann", "coast-2026")
    raw = platform.raw_ledger()
    assert ticket not in raw
    [entry] = [e for _, e in platform.entries() if e["action"] == "sandbox.open"]
    assert entry["outcome"] == "ok" and entry["object"] == "grant:coast-2026"
    platform.clock.now = NOW - timedelta(days=2)  # before the grant starts
    early = platform.call("ann", "POST", "/grants/coast-2026/open")
    assert early.status_code == 403 and "starts" in early.json()["detail"]
