"""The console in a real browser: Chromium (Debian's) driven by Playwright against the
real server started by ``sbx serve``."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway.api import create_app, open_services
from gateway.api.deps import Services
from gateway.db.models import OrganizationType
from gateway.identity.model import Account
from gateway.settings import load_settings
from tests.integration.test_catalog import ENTRY, credit_code, visits_csv
from tests.integration.test_serve import free_port, start, wait_for_health
from tests.webconsole import served

CHROMIUM = "/usr/bin/chromium"
# Quiet, offline Chromium: no background connections to the outside (this machine's
# network is closed), no sandbox (tests run as root), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NEW_PASSWORD = "a-long-console-password"  # noqa: S105 - a test password


@dataclass
class Server:
    url: str
    admin_password: str
    output: list[str]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    process = start(tmp_path / "var", port)
    output: list[str] = []
    assert process.stdout is not None
    first_line = threading.Event()

    def drain() -> None:  # keep reading, so that the server never blocks on its output
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "sbx console on" in line:
                first_line.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for_health(port, process)
        assert first_line.wait(30)
        found = re.search(r"one-time password (\S+)", "".join(output))
        assert found, output
        yield Server(f"http://127.0.0.1:{port}", found.group(1), output)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        reader.join(timeout=5)
        process.stdout.close()
    assert process.returncode == 0, "".join(output)
    assert "Traceback" not in "".join(output)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def sign_in(page: Page, username: str, password: str) -> None:
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码", exact=True).fill(password)
    page.get_by_role("button", name="登录").click()


def change_password(page: Page, current: str) -> None:
    expect(page).to_have_url(re.compile(r"/account/password$"))
    page.get_by_label("当前密码").fill(current)
    page.get_by_label("新密码（至少 12 个字符）").fill(NEW_PASSWORD)
    page.get_by_label("再次输入新密码").fill(NEW_PASSWORD)
    page.get_by_role("button", name="修改密码").click()
    expect(page.get_by_role("status")).to_contain_text("密码已修改")


def test_an_admin_signs_in_and_registers_an_organization_with_a_user(
    server: Server, browser: Browser
) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    expect(page.get_by_role("heading", name="登录")).to_be_visible()

    sign_in(page, "admin", "wrong password")
    expect(page.get_by_role("alert")).to_contain_text("用户名、密码或验证码错误")
    sign_in(page, "admin", server.admin_password)
    change_password(page, server.admin_password)
    sign_in(page, "admin", NEW_PASSWORD)
    expect(page.get_by_role("heading", name="欢迎，admin")).to_be_visible()
    expect(page.get_by_test_id("roles")).to_contain_text("系统管理员")
    cookie = next(c for c in context.cookies() if c["name"] == "__Host-sbx_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"

    # The administrator's task: register an organization and give it its first user.
    page.get_by_role("navigation").get_by_role("link", name="单位").click()
    page.get_by_label("类型").last.select_option("application_unit")
    page.get_by_label("名称", exact=True).last.fill("海岸线数据科技有限公司")
    page.get_by_label("统一社会信用代码").last.fill("91370200MA00000129")
    page.get_by_role("button", name="登记", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("单位已登记")
    expect(page.get_by_role("heading", name="海岸线数据科技有限公司")).to_be_visible()

    form = page.locator("form[action$='/users']")
    form.get_by_label("用户名").fill("wang.gong")
    form.get_by_label("名称").fill("王工")
    form.get_by_label("数据申请人").check()
    form.get_by_role("button", name="添加用户").click()
    one_time = page.get_by_test_id("one-time-password").locator(".secret").inner_text()
    expect(page.get_by_test_id("users")).to_contain_text("wang.gong")
    expect(page.get_by_test_id("users")).to_contain_text("数据申请人")

    # The console speaks English on request, and remembers it.
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    page.goto(server.url + "/")
    expect(page.get_by_test_id("roles")).to_contain_text("Administrator")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    context.close()

    # The new user signs in with the one-time password and must replace it first.
    newcomer = browser.new_context(locale="zh-CN").new_page()
    newcomer.goto(server.url + "/")
    sign_in(newcomer, "wang.gong", one_time)
    change_password(newcomer, one_time)
    sign_in(newcomer, "wang.gong", NEW_PASSWORD)
    expect(newcomer.get_by_test_id("roles")).to_contain_text("数据申请人")
    expect(newcomer.get_by_text("管理单位和用户")).to_have_count(0)
    newcomer.context.close()


@dataclass
class Gateway:
    """The gateway served by uvicorn inside the test's own process, so that the test can
    also act through its services; the people of a provider and of the operator."""

    url: str
    found: Services
    accounts: dict[str, Account]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    settings = load_settings(data_dir=tmp_path / "var")
    found = open_services(settings)
    identity = found.identity
    made = identity.bootstrap_admin(operator_name="运营", credit_code=credit_code(1))
    assert made is not None
    admin = made[0].actor()
    provider = identity.create_organization(
        admin,
        kind=OrganizationType.PROVIDER,
        name="青岛市卫生健康委员会",
        credit_code=credit_code(2),
    ).id
    accounts = {}
    for username, organization, role in (
        ("steward", provider, "provider_steward"),
        ("reviewer", made[0].organization_id, "reviewer"),
        ("approver", made[0].organization_id, "approver"),
    ):
        account, one_time = identity.create_user(
            admin, organization_id=organization, username=username, roles=(role,), display_name=""
        )
        identity.set_password(account.id, one_time, NEW_PASSWORD)
        accounts[username] = account
    try:
        with served(create_app(settings, found)) as url:
            yield Gateway(url, found, accounts)
    finally:
        found.close()


def test_a_steward_registers_a_dataset_and_uploads_its_data(
    gateway: Gateway, browser: Browser, tmp_path: Path
) -> None:
    page = browser.new_context(locale="zh-CN").new_page()
    page.goto(gateway.url + "/catalog")
    sign_in(page, "steward", NEW_PASSWORD)
    expect(page.get_by_role("heading", name="数据目录")).to_be_visible()

    page.get_by_role("link", name="登记数据资源").click()
    page.get_by_label("数据资源名称").fill(ENTRY["name"])
    page.get_by_label("描述", exact=True).fill(ENTRY["description"])
    page.get_by_label("更新周期").select_option("monthly")
    page.get_by_label("安全级别").select_option("L3")
    page.get_by_label("共享属性").select_option("conditional")
    page.get_by_label("共享限制的法律依据").fill(ENTRY["legal_basis"]["share"])
    page.get_by_label("开放属性").select_option("not_open")
    page.get_by_label("开放限制的法律依据").fill(ENTRY["legal_basis"]["open"])
    page.get_by_label("使用条件").fill(ENTRY["usage_conditions"])
    lines = [
        f"{f['name']} | {f['type']} | {f['sensitivity']} | {f.get('identifier', '')} | "
        f"{f['description']}"
        for f in ENTRY["fields"]
    ]
    page.get_by_label("字段（每行一个）").fill("\n".join(lines))
    page.get_by_label("理由", exact=True).fill("首次登记")
    page.get_by_role("button", name="登记", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("数据资源已登记")
    expect(page.get_by_test_id("fields")).to_contain_text("直接标识符")
    dataset_id = page.url.split("?")[0].rsplit("/", 1)[1]

    # The operator's review and approval, through the service (their pages are tested
    # over HTTP in test_web_catalog).
    catalog = gateway.found.catalog
    assert catalog is not None
    reviewer, approver = gateway.accounts["reviewer"], gateway.accounts["approver"]
    catalog.review(reviewer.actor(), dataset_id, 1, recommends=True, opinion="分级合理")
    catalog.decide(approver.actor(), dataset_id, 1, approve=True, reason="同意发布")

    page.goto(f"{gateway.url}/catalog/{dataset_id}")
    expect(page.get_by_test_id("status")).to_have_text("已发布")
    data = tmp_path / "visits.csv"
    data.write_bytes(visits_csv(200, bad_ids=3))
    page.get_by_label("数据文件").set_input_files(data)
    page.get_by_role("button", name="上传", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("文件已通过检查并存储")
    expect(page.get_by_test_id("quality-summary")).to_contain_text("200 行")
    quality = page.get_by_test_id("quality")
    expect(quality.locator("tr[data-field='id_number']")).to_contain_text("98.5%")
    expect(page.get_by_test_id("warnings")).to_contain_text("fail their checksum")
    assert [v.rows for v in catalog.versions(approver.actor(), dataset_id)] == [200]
    page.context.close()
