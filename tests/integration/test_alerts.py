"""Alerts end to end on the real gateway (SQLite): refused requests made through the API
raise an alert that approvers, regulators and administrators read through the API and
the console (zh-CN first, en too); approvers and regulators acknowledge it, through the
API or the console's form, and the acknowledgement, a ledger entry, survives a rebuild of
the trail index. Bad input gets a 4xx with the reason; nobody acknowledges an alert about
themselves.

One gateway for the module: the tests run in order and build on each other's entries."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from gateway.api import create_app, open_services, open_trail
from gateway.api.deps import Services
from gateway.db.models import OrganizationType
from gateway.identity.model import SignInFailed
from gateway.settings import Settings, load_settings
from gateway.trail.alerts import CHINA, AlertDetector
from tests.integration.test_api_schema import CONFIG as SUITE_CONFIG
from tests.integration.test_api_schema import EXCLUDED_CHECKS
from tests.integration.test_catalog import credit_code
from tests.integration.test_identity import FAST_HASHER
from tests.webconsole import Console, Desk, form_token, staff

API = "/api/v1"
PEOPLE = {  # user name: (organization, roles)
    "wang": ("unit", ("applicant",)),
    "li": ("unit", ("applicant",)),
    "sun": ("operator", ("approver",)),
    "qin": ("operator", ("approver",)),
    "chen": ("regulator", ("regulator",)),
}


@dataclass
class Gateway:
    settings: Settings
    found: Services
    desk: Desk
    tokens: dict[str, str]
    ids: dict[str, str]  # user name or organization key -> id

    @property
    def client(self) -> TestClient:
        return self.desk.client

    def api(self, method: str, path: str, who: str | None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.request(method, API + path, headers=headers, **kwargs)

    def alerts(self, who: str = "chen", **params: Any) -> list[dict[str, Any]]:
        answer = self.api("GET", "/alerts", who, params=params)
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["alerts"]
        return found

    def alert_about(self, username: str, rule: str = "denied_burst") -> dict[str, Any]:
        (found,) = [
            a for a in self.alerts(rule=rule) if a["subject"] == f"user:{self.ids[username]}"
        ]
        return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("alerts")
    settings = load_settings(data_dir=folder / "var", database_url=f"sqlite:///{folder / 'sbx.db'}")
    found = open_services(settings)
    found.identity.hasher = FAST_HASHER  # the passwords of a test need not resist cracking
    staffed = staff(
        found,
        [
            ("unit", OrganizationType.APPLICATION_UNIT, "海尔数据科技有限公司", 3),
            ("regulator", OrganizationType.REGULATOR, "市大数据局", 4),
        ],
        PEOPLE,
        credit_code,
    )
    identity = found.identity
    tokens = {
        name: identity.issue_token(account.actor(), name="tests")[1]
        for name, account in staffed.accounts.items()
    }
    tokens["admin"] = identity.issue_token(staffed.admin, name="tests")[1]
    ids = {name: account.id for name, account in staffed.accounts.items()}
    ids.update(staffed.organizations)
    with TestClient(create_app(settings, found), base_url="https://testserver") as client:
        desk = Desk(Console(client, found, staffed.admin_password), staffed.accounts)
        yield Gateway(settings, found, desk, tokens, ids)
    found.close()


def test_refused_requests_raise_one_alert_that_readers_see(gateway: Gateway) -> None:
    for _ in range(9):
        assert gateway.api("GET", "/alerts", "wang").status_code == 403
    assert gateway.alerts() == []
    assert gateway.api("GET", "/alerts", "wang").status_code == 403
    (alert,) = gateway.alerts()
    assert alert["rule"] == "denied_burst" and alert["severity"] == "medium"
    assert alert["subject"] == f"user:{gateway.ids['wang']}" and alert["person_name"] == "wang"
    assert (alert["organization"], alert["count"], alert["state"]) == (
        gateway.ids["unit"],
        10,
        "open",
    )
    assert (
        alert["message"]["zh-CN"] == "请求被拒绝 10 次，10 分钟内达 10 次或以上（request.denied）。"
    )
    assert alert["message"]["en"].startswith("10 requests refused, 10 or more within 10 min")
    assert alert["first_at"].endswith("+08:00") and alert["url"] == f"/alerts/{alert['id']}"
    assert [a["id"] for a in gateway.alerts("admin")] == [alert["id"]]  # administrators read

    detail = gateway.api("GET", f"/alerts/{alert['id']}", "sun").json()
    assert len(detail["seqs"]) == 10 and detail["seqs"][-1] == alert["last_seq"]
    entries = {entry["seq"]: entry for entry in gateway.desk.console.entries()}
    for seq in detail["seqs"]:
        assert entries[seq]["action"] == "request.denied"
        assert entries[seq]["actor"] == f"user:{gateway.ids['wang']}"


def test_alerts_are_filtered_and_paged(gateway: Gateway) -> None:
    today = datetime.now(CHINA).date().isoformat()
    assert len(gateway.alerts(rule="denied_burst", state="open", since=today)) == 1
    assert gateway.alerts(rule="budget_low") == []
    assert gateway.alerts(state="acknowledged") == []
    assert gateway.alerts(until="2000-01-01") == []
    page = gateway.api("GET", "/alerts", "chen", params={"limit": 1}).json()
    assert len(page["alerts"]) == 1 and page["next_before"] is None


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"rule": "flood"}, "rule"),
        ({"state": "closed"}, "state"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"before": 0}, "before"),
        ({"since": "2026-13-01"}, "since is not a day"),
        ({"until": "yesterday"}, "until is not a day"),
    ],
)
def test_bad_queries_get_a_422_with_the_reason(
    gateway: Gateway, params: dict[str, Any], reason: str
) -> None:
    answer = gateway.api("GET", "/alerts", "chen", params=params)
    assert answer.status_code == 422 and reason in answer.text


def test_who_may_read_and_acknowledge(gateway: Gateway) -> None:
    alert = gateway.alert_about("wang")
    assert gateway.api("GET", "/alerts", None).status_code == 401
    assert gateway.api("GET", f"/alerts/{alert['id']}", "wang").status_code == 403
    assert gateway.api("GET", "/alerts/ffff", "chen").status_code == 404
    assert gateway.api("GET", "/alerts/not%20an%20id", "chen").status_code == 422
    note = {"note": "已联系该单位核实"}
    acknowledge = f"/alerts/{alert['id']}/acknowledge"
    refused = gateway.api("POST", acknowledge, "admin", json=note)  # administrators only read
    assert refused.status_code == 403
    last = gateway.desk.console.entries()[-1]
    assert (last["action"], last["detail"]["action"]) == ("request.denied", "alert:acknowledge")
    assert gateway.api("POST", acknowledge, "chen", json={"note": ""}).status_code == 422
    assert gateway.api("POST", acknowledge, "chen", json={**note, "x": 1}).status_code == 422
    assert gateway.api("POST", acknowledge, "chen", json={"note": "\x00"}).status_code == 422
    assert gateway.api("POST", "/alerts/ffff/acknowledge", "chen", json=note).status_code == 404
    assert gateway.alert_about("wang")["state"] == "open"


def test_an_acknowledgement_is_a_ledger_entry_that_survives_a_rebuild(gateway: Gateway) -> None:
    alert = gateway.alert_about("wang")
    path = f"/alerts/{alert['id']}/acknowledge"
    done = gateway.api("POST", path, "sun", json={"note": "已联系该单位核实"})
    assert done.status_code == 200, done.text
    acknowledged = done.json()
    assert acknowledged["state"] == "acknowledged" and acknowledged["id"] == alert["id"]
    assert acknowledged["acknowledgement"]["by_name"] == "sun"
    assert acknowledged["acknowledgement"]["note"] == "已联系该单位核实"
    entry = gateway.desk.console.entries()[acknowledged["acknowledgement"]["seq"]]
    assert (entry["action"], entry["actor"], entry["object"]) == (
        "alert.acknowledge",
        f"user:{gateway.ids['sun']}",
        f"alert:{alert['id']}",
    )
    assert entry["detail"]["note"] == "已联系该单位核实"
    assert entry["detail"]["user"] == gateway.ids["wang"]  # linked to the subject's trail
    again = gateway.api("POST", path, "chen", json={"note": "再次确认"})
    assert again.status_code == 409 and "acknowledged already" in again.text

    found = gateway.found
    assert found.trail is not None
    found.trail.close()
    for name in ("trail.sqlite3", "trail.sqlite3-wal", "trail.sqlite3-shm"):
        (gateway.settings.data_dir / name).unlink(missing_ok=True)
    assert found.catalog is not None
    detector = AlertDetector.from_policies(gateway.settings.policies_dir, found.catalog.calendar)
    found.trail = open_trail(gateway.settings, found.ledger, [detector])
    rebuilt = gateway.api("GET", f"/alerts/{alert['id']}", "chen").json()
    assert {k: v for k, v in rebuilt.items() if k != "seqs"} == acknowledged
    assert gateway.alerts(state="acknowledged")[0]["id"] == alert["id"]


def test_nobody_acknowledges_an_alert_about_themselves(gateway: Gateway) -> None:
    for _ in range(5):
        with pytest.raises(SignInFailed):
            gateway.found.identity.authenticate("qin", "not the password")
    alert = gateway.alert_about("qin", "sign_in_failures")
    assert alert["organization"] == gateway.ids["operator"]
    path = f"/alerts/{alert['id']}/acknowledge"
    refused = gateway.api("POST", path, "qin", json={"note": "是我自己输错了"})
    assert refused.status_code == 403 and "about themselves" in refused.text
    last = gateway.desk.console.entries()[-1]
    assert (last["action"], last["outcome"]) == ("alert.acknowledge", "denied")
    assert gateway.api("POST", path, "sun", json={"note": "已电话确认"}).status_code == 200


def test_the_console_shows_alerts_in_chinese_and_acknowledges_them(gateway: Gateway) -> None:
    for _ in range(10):
        gateway.api("GET", "/alerts", "li")
    alert = gateway.alert_about("li")
    desk = gateway.desk

    desk.sign_in("chen")  # a regulator: the alerts, with links to the trail
    home = desk.client.get("/")
    assert 'href="/alerts"' in home.text and "告警" in home.text
    page = desk.client.get("/alerts")
    assert page.status_code == 200, page.text
    assert "<h1>告警</h1>" in page.text and "短时间内多次被拒绝" in page.text
    assert "请求被拒绝 10 次" in page.text and "账号多次登录失败" in page.text
    opened = page.text.split('data-testid="open-alerts"')[1].split("</table>")[0]
    assert f'data-alert="{alert["id"]}"' in opened
    assert "/trail?person=li&amp;outcome=denied" in opened
    assert "海尔数据科技有限公司" in opened
    link = re.search(r'href="(/trail\?person=li[^"]+)" data-testid="trail-link"', opened)
    assert link is not None
    trail = desk.client.get(link.group(1).replace("&amp;", "&"))
    assert trail.status_code == 200 and trail.text.count("request.denied") >= 10
    done = page.text.split('data-testid="acknowledged-alerts"')[1].split("</table>")[0]
    assert gateway.alert_about("wang")["id"] in done
    desk.client.cookies.set("sbx_lang", "en")
    english = desk.client.get("/alerts?rule=denied_burst")
    assert "Refusals in a burst" in english.text and "10 requests refused" in english.text
    assert "Failed sign-ins to an account" not in english.text.split("<h2>")[1]
    assert desk.client.get("/alerts?rule=flood").status_code == 422
    desk.client.cookies.delete("sbx_lang")

    token = desk.sign_in("sun")  # an approver: no trail links, the form
    detail = desk.client.get(f"/alerts/{alert['id']}")
    assert detail.status_code == 200 and 'data-testid="acknowledge-form"' in detail.text
    assert "/trail?" not in detail.text and "引发告警的账本记录" in detail.text
    assert detail.text.count("<tr data-entry=") == 10
    path = f"/alerts/{alert['id']}/acknowledge"
    empty = desk.client.post(path, data={"note": " ", "csrf_token": token})
    assert empty.status_code == 422 and "a note is needed" in empty.text
    no_token = desk.client.post(path, data={"note": "已核实"})
    assert no_token.status_code == 403
    done_page = desk.client.post(
        path, data={"note": "已联系李某核实", "csrf_token": form_token(detail)}
    )
    assert done_page.status_code == 200 and done_page.url.path == f"/alerts/{alert['id']}"
    assert "告警已确认" in done_page.text and "已联系李某核实" in done_page.text
    assert 'data-testid="acknowledge-form"' not in done_page.text
    assert desk.client.get("/alerts/ffff").status_code == 404

    desk.sign_in("wang")  # an applicant: nothing
    assert 'href="/alerts"' not in desk.client.get("/").text
    assert desk.client.get("/alerts").status_code == 403


# The alerts' operations against their own schema, on a gateway where alerts exist (the
# suite-wide schema test, tests/integration/test_api_schema.py, whose settings these are,
# has none to name); last, as a regulator acknowledges what it finds.
CONFIG = {**SUITE_CONFIG, "generation": {**SUITE_CONFIG["generation"], "max-examples": 8}}
schema = schemathesis.openapi.from_dict(
    create_app(load_settings()).openapi(), config=schemathesis.Config.from_dict(CONFIG)
).include(tag="alerts")


# Both readers: the operator's approver and the regulator (the parametrization also gives
# each operation a test id of its own, which xdist needs to run them all).
@pytest.mark.parametrize("caller", ["sun", "chen"])
@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_alerts_keep_to_their_schema(case: Any, gateway: Gateway, caller: str) -> None:
    case.operation.app = case.operation.schema.app = gateway.client.app
    existing = [alert["id"] for alert in gateway.alerts()]
    for name, value in list((case.path_parameters or {}).items()):
        pick = zlib.crc32(str(value).encode()) % (len(existing) + 1)  # a function of the case
        if name == "alert_id" and pick < len(existing):
            case.path_parameters[name] = existing[pick]
    headers = {"Authorization": f"Bearer {gateway.tokens[caller]}"}
    case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)
