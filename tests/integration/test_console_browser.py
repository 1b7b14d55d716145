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

from tests.integration.test_serve import free_port, start, wait_for_health

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
