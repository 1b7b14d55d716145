"""The audit trail in the console, in real Chromium against the real gateway: a regulator
signs in, finds a grant's entries with the filters, opens the grant's whole history —
from its dataset's catalog entry through the application, agreement, grant, session and
executed cell, the export's checks, review and release, to the download — and verifies
an entry in the browser. When the proof the server returns is altered (an entry byte, a
path hash), or the table shows something other than the entry says, the page shows the
failure with its reason. The search refuses unclear input with 422 and a reason, speaks
English too, and an applicant cannot open the trail.

The platform is built once through the API (the export helpers of test_exports) and
served by uvicorn in this process; the JupyterHub fixtures are not needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from gateway.api import create_app
from gateway.catalog.service import CHINA
from gateway.settings import load_settings
from gateway.trail.times import china_time
from tests.integration import test_console_browser
from tests.integration.test_catalog import Platform
from tests.integration.test_catalog import build_platform as catalog_platform
from tests.integration.test_console_browser import sign_in
from tests.integration.test_exports import decide, export, granted, table
from tests.integration.test_web_exports import sign_in_everyone
from tests.webconsole import NEW_PASSWORD, Desk, served

browser = test_console_browser.browser


@dataclass
class World:
    """The platform after one export's whole life, served at ``url``; the console's
    HTTP client (``desk``) for the checks that need no browser."""

    url: str
    platform: Platform
    desk: Desk
    grant: str
    export: str
    dataset: str
    organizations: dict[str, str]


def build_platform(root: Path) -> tuple[Platform, Any]:
    """The people and organizations of test_catalog's ``platform`` fixture, on SQLite."""
    settings = load_settings(data_dir=root / "var", database_url=f"sqlite:///{root / 'sbx.db'}")
    return catalog_platform(settings), settings


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    platform, settings = build_platform(tmp_path_factory.mktemp("trail"))
    services = platform.services
    with platform.client:
        token = granted(platform)
        cell = platform.client.post(
            "/api/v1/sandbox/executions",
            json={"kernel": "k-1", "message": "cell-1", "kind": "execute", "code": "1 + 1"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert cell.status_code == 201, cell.text
        export_id = export(platform, token, {"tables/visits.csv": table([("市南区", 200)])})["id"]
        assert decide(platform, "reviewer", export_id, True, risk="normal").status_code == 200
        released = decide(platform, "approver", export_id, True)
        assert released.json()["status"] == "released", released.text
        bundle = platform.call("applicant", "GET", f"/exports/{export_id}/bundle")
        assert bundle.status_code == 200
        grant = platform.call("approver", "GET", "/grants").json()[0]["id"]
        dataset = platform.call("applicant", "GET", "/datasets").json()["items"][0]["id"]
        desk = sign_in_everyone(platform)  # passwords for the console, and a regulator
        with served(create_app(settings, services)) as url:
            yield World(
                url,
                platform,
                desk,
                grant,
                export_id,
                dataset,
                platform.organizations,
            )
    services.close()


def rows(page: Page) -> list[dict[str, str]]:
    """The shown rows of the page's trail tables: seq, action, object, outcome, person."""
    return list(
        page.eval_on_selector_all(
            "tr[data-entry]",
            """rows => rows.map((row) => ({
                seq: row.querySelector('[data-field=seq]').textContent.trim(),
                action: row.querySelector('[data-field=action]').textContent.trim(),
                object: row.querySelector('[data-field=object]').textContent.trim(),
                outcome: row.querySelector('[data-field=outcome]').textContent.trim(),
                person: row.querySelector('[data-testid=person]').textContent.trim(),
            }))""",
        )
    )


def search(page: Page, **fields: str) -> list[dict[str, str]]:
    """Fill in the search form's fields (by name) and search."""
    form = page.get_by_test_id("search")
    for name, value in fields.items():
        control = form.locator(f"[name={name}]")
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    form.get_by_role("button", name="查询").click()
    expect(page.get_by_test_id("entries")).to_be_visible()
    return rows(page)


def altered(change: Any) -> Any:
    """A route handler that passes the server's inclusion proof through ``change``."""

    def handle(route: Route) -> None:
        answer = route.fetch()
        route.fulfill(response=answer, body=json.dumps(change(answer.json())))

    return handle


def test_a_regulator_finds_a_grants_history_and_verifies_it_in_the_browser(
    world: World, browser: Browser
) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    refusals: list[str] = []
    page.on("console", lambda message: refusals.append(message.text))
    page.goto(world.url + "/trail")
    sign_in(page, "regulator", NEW_PASSWORD)
    expect(page.get_by_role("heading", name="审计记录", exact=True)).to_be_visible()
    expect(page.get_by_role("navigation").get_by_role("link", name="审计记录")).to_be_visible()

    # The export entries that name the grant, newest first, by the filters.
    expect(page.get_by_test_id("search").get_by_label("授权（编号）")).to_be_visible()
    found = search(page, grant=world.grant, action="export.")
    actions = [row["action"] for row in found]
    assert actions == ["export.release", "export.submit", "export.request"], actions
    assert {row["object"] for row in found} == {f"export:{world.export}"}
    assert [int(row["seq"]) for row in found] == sorted(
        (int(r["seq"]) for r in found), reverse=True
    )
    assert all(row["action"].startswith("export.") for row in found)
    assert any(
        "applicant" in row["person"] and "海尔数据科技有限公司" in row["person"] for row in found
    )
    # By person, organization, outcome and days (China time).
    mine = search(page, grant="", action="", person="applicant")  # the form keeps the rest
    assert mine and all(row["person"].startswith("applicant") for row in mine)
    assert "export.download" in [row["action"] for row in mine]
    operator = search(page, person="", organization=world.organizations["operator"], action="")
    assert {"export.review", "export.approve"} <= {row["action"] for row in operator}
    assert "export.request" not in {row["action"] for row in operator}
    today = datetime.now(CHINA).date()
    dated = search(page, organization="", since=str(today - timedelta(days=1)), until=str(today))
    assert len(dated) == 50 and page.get_by_test_id("older").is_visible()  # a page of 50
    page.get_by_test_id("older").click()
    older = rows(page)
    assert older and int(older[0]["seq"]) < int(dated[-1]["seq"])
    assert search(page, since="2020-01-01", until="2020-01-02") == []

    # The grant's whole history, from the grants page, by stage.
    page.goto(world.url + "/grants")
    page.get_by_test_id(f"history-{world.grant}").click()
    expect(page.get_by_test_id("subject")).to_have_text(f"grant:{world.grant}")
    history = rows(page)
    actions = [row["action"] for row in history]
    for action in (
        "catalog.register",
        "catalog.approve",
        "dataset.upload",
        "application.submit",
        "application.approve",
        "agreement.create",
        "agreement.sign",
        "grant.create",
        "sandbox.start",
        "sandbox.execute",
        "export.request",
        "export.review",
        "export.approve",
        "export.release",
        "export.download",
    ):
        assert action in actions, (action, actions)
    assert [int(row["seq"]) for row in history] == sorted(int(row["seq"]) for row in history)
    stages = page.eval_on_selector_all("section[data-stage]", "s => s.map(e => e.dataset.stage)")
    assert stages[:1] == ["catalog"] and stages[-1] == "download"
    for stage in ("application", "agreement", "grant", "session", "export", "review", "release"):
        assert stage in stages, stages
    expect(page.locator("section[data-stage=session] h2")).to_have_text("沙箱会话与执行的代码")

    # Verify the release in the browser: the ledger's first key is pinned and shown.
    release = next(row for row in history if row["action"] == "export.release")
    seq = int(release["seq"])
    row = page.locator(f"tr[data-entry='{seq}']")
    row.get_by_role("button", name="验证").click()
    result = page.get_by_test_id(f"result-{seq}")
    expect(result).to_have_attribute("data-outcome", "verified")
    ledger = world.platform.services.ledger
    checkpoint = ledger.latest_checkpoint()
    assert checkpoint is not None
    expect(result).to_contain_text(f"已验证：条目 {seq} 包含在由密钥")
    expect(result).to_contain_text(f"签名的 {checkpoint.size} 条记录的树中")
    first_key = ledger.keychain().records[0].key_id
    expect(page.get_by_test_id("trusted-key")).to_have_text(first_key)
    expect(page.get_by_test_id("witness")).to_contain_text(f"{checkpoint.size} 条")
    assert result.get_by_test_id("verified-entry").text_content() == ledger.read_entry(seq).decode()

    # A proof whose entry lost or changed a byte, or whose path has another hash, fails.
    proof = "**/api/v1/ledger/entries/*/proof"
    spaced = altered(lambda p: {**p, "entry": p["entry"].replace(',"outcome"', ', "outcome"')})
    page.route(proof, spaced)
    row.get_by_role("button", name="验证").click()
    expect(result).to_have_attribute("data-reason", "entry-not-canonical")
    page.unroute(proof)
    page.route(
        proof, altered(lambda p: {**p, "entry": p["entry"].replace("export.", "expert.", 1)})
    )
    row.get_by_role("button", name="验证").click()
    expect(result).to_have_attribute("data-outcome", "failed")
    expect(result).to_have_attribute("data-reason", "leaf-hash")
    expect(result).to_contain_text("未通过验证：条目的字节与证明中的叶哈希不符。")
    page.unroute(proof)

    def other_hash(p: dict[str, Any]) -> dict[str, Any]:
        path = list(p["path"])
        path[0] = ("1" if path[0][0] == "0" else "0") + path[0][1:]
        return {**p, "path": path}

    page.route(proof, altered(other_hash))
    row.get_by_role("button", name="验证").click()
    expect(result).to_have_attribute("data-reason", "path")
    expect(result).to_contain_text("审计路径")
    page.unroute(proof)
    # The table altered (as a compromised page would show it): the entry says otherwise.
    row.locator("[data-field=outcome]").evaluate("cell => { cell.textContent = 'denied'; }")
    row.get_by_role("button", name="验证").click()
    expect(result).to_have_attribute("data-reason", "shown-differs")
    expect(result).to_contain_text("页面显示的内容与已验证的条目不符：结果。")
    page.reload()
    page.locator(f"tr[data-entry='{seq}']").get_by_role("button", name="验证").click()
    expect(page.get_by_test_id(f"result-{seq}")).to_have_attribute("data-outcome", "verified")

    # A first key the regulator holds that is not the ledger's: every entry fails.
    trust = page.get_by_test_id("trust-form")
    trust.get_by_label("运营方公布的首个密钥编号").fill("ab" * 32)
    trust.get_by_role("button", name="信任此密钥").click()
    expect(page.get_by_test_id("trusted-key")).to_have_text("ab" * 32)
    page.locator(f"tr[data-entry='{seq}']").get_by_role("button", name="验证").click()
    expect(page.get_by_test_id(f"result-{seq}")).to_have_attribute("data-reason", "first-key")
    trust.get_by_label("运营方公布的首个密钥编号").fill(first_key)
    trust.get_by_role("button", name="信任此密钥").click()

    # In English, an entry of the export's history.
    page.goto(f"{world.url}/trail/history/export/{world.export}")
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", name="Export reviews")).to_be_visible()
    first = page.locator("tr[data-entry]").first
    first.get_by_role("button", name="Verify").click()
    expect(first.locator("[data-result]")).to_contain_text("Verified: entry")
    assert not [text for text in refusals if "Content Security Policy" in text], refusals
    context.close()


def test_unclear_searches_are_refused_with_a_reason(world: World) -> None:
    desk = world.desk
    desk.sign_in("regulator")
    client = desk.client
    for params, reason in (
        ({"since": "2026-13-01"}, "不是 YYYY-MM-DD 格式的日期"),
        ({"since": "2026-11-03", "until": "2026-11-02"}, "起始日晚于截止日"),
        ({"dataset": world.dataset, "grant": world.grant}, "不能同时"),
        ({"person": "nobody.here"}, "nobody.here"),
        ({"action": "export..x"}, "action"),
        ({"grant": "has space"}, "subject"),
    ):
        answer = client.get("/trail", params=params)
        assert answer.status_code == 422, (params, answer.text)
        assert reason in answer.text and 'role="alert"' in answer.text
    assert client.get("/trail", params={"before": "x"}).status_code == 422
    assert client.get("/trail/history/Bad/kind").status_code == 422
    nothing = client.get("/trail/history/grant/no-such-grant")
    assert nothing.status_code == 200 and 'data-testid="empty"' in nothing.text
    found = client.get("/trail", params={"dataset": world.dataset, "action": "catalog."})
    assert found.status_code == 200 and "catalog.register" in found.text
    # Each row shows its entry's time in China time, to the second.
    newest = client.get("/trail", params={"action": "export.download"}).text
    seq = int(re.findall(r'<td data-field="seq">(\d+)</td>', newest)[0])
    entry = json.loads(world.platform.services.ledger.read_entry(seq))
    assert entry["action"] == "export.download" and china_time(entry["time"]) in newest


def test_an_applicant_cannot_open_the_trail(world: World, browser: Browser) -> None:
    page = browser.new_context(locale="zh-CN").new_page()
    page.goto(world.url + "/")
    sign_in(page, "applicant", NEW_PASSWORD)
    expect(page.get_by_role("navigation").get_by_role("link", name="导出")).to_be_visible()
    expect(page.get_by_role("navigation").get_by_role("link", name="审计记录")).to_have_count(0)
    answer = page.goto(world.url + "/trail")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("heading", name="无权操作")).to_be_visible()
    assert page.goto(f"{world.url}/trail/history/grant/{world.grant}").status == 403  # type: ignore[union-attr]
    assert page.request.get(f"{world.url}/api/v1/ledger/keys").status == 403
    page.context.close()
    assert ("request.denied", "denied") in world.desk.actions()


def test_times_are_china_time() -> None:
    moment = datetime(2026, 11, 2, 16, 30, 5, 123456, tzinfo=UTC)
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert china_time(micros) == "2026-11-03 00:30:05"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", china_time(0))
