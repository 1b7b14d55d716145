"""Sandboxes end to end, all real: ``sbx demo`` sets up the demo grant, ``sbx serve`` runs
the gateway with JupyterHub and its proxy, the demo applicant signs in to the console in
Chromium, opens the sandbox with no second login and lands in JupyterLab; a cell runs in
the kernel's namespace and is in the ledger before it ran; suspending the grant stops the
sandbox within seconds; nobody reaches the hub without the gateway's ticket. And the
whole path, each step by its person in the console: an application through its queues,
the agreement, the grant, a cell that asks to export a table, its review and release,
and the bundle verified offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from audit.bundle import verify_bundle
from gateway.catalog.service import CHINA
from gateway.cli.demo_path import commitment_letter
from sandbox.runtime.spec import sandbox_name
from tests.conftest import REPO_ROOT
from tests.integration.test_console_browser import CHROMIUM, CHROMIUM_ARGS, sign_in
from tests.integration.test_serve import free_port, start, wait_for_health

GRANT = "demo-grant"
APPLICANT = "applicant.wang"


@dataclass
class Platform:
    data: Path
    stage: Path
    gateway: str
    hub: str
    hub_api: str
    accounts: dict[str, dict[str, str]]
    output: list[str] = field(default_factory=list)

    def sbx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from gateway.cli import main; main()", *args],
            cwd=REPO_ROOT,
            env={**os.environ, "SBX_DATA_DIR": str(self.data)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ledger(self, action: str) -> list[dict[str, Any]]:
        shown = self.sbx("audit", "tail", "-n", "400", "--json")
        assert shown.returncode == 0, shown.stderr
        entries = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
        flat = entries[0] if len(entries) == 1 and isinstance(entries[0], list) else entries
        return [e for e in flat if _action(e) == action]

    def stop_server(self, grant: str = GRANT) -> None:
        token = (self.data / "hub-api.token").read_text().strip()
        request = urllib.request.Request(  # noqa: S310 - the local hub
            f"{self.hub_api}/users/{APPLICANT}/servers/{grant}",
            method="DELETE",
            headers={"Authorization": f"token {token}"},
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass
        deadline = time.monotonic() + 30
        while grant in self.hub_servers():
            assert time.monotonic() < deadline, "the server did not stop"
            time.sleep(0.2)

    def hub_servers(self) -> dict[str, Any]:
        token = (self.data / "hub-api.token").read_text().strip()
        request = urllib.request.Request(  # noqa: S310 - the local hub
            f"{self.hub_api}/users/{APPLICANT}", headers={"Authorization": f"token {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return dict(json.loads(answer.read())["servers"])


def _action(entry: dict[str, Any]) -> str:
    inner = entry.get("entry", entry)
    return str(inner.get("action", ""))


def _detail(entry: dict[str, Any]) -> dict[str, Any]:
    inner = entry.get("entry", entry)
    return dict(inner.get("detail", {}))


def _free_pair() -> int:
    """A port whose successor is free too (the hub's API and its proxy's API)."""
    for _ in range(50):
        port = free_port()
        if port < 65000:
            try:
                import socket

                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise AssertionError("no free pair of ports")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("sandbox-hub") / "var"
    stage = Path(tempfile.mkdtemp(prefix="sbx-stage-", dir="/tmp"))  # noqa: S108
    os.chmod(stage, 0o711)  # noqa: S103
    gateway_port, hub_port, api_port = free_port(), free_port(), _free_pair()
    env = {
        "SBX_SANDBOX__HUB_URL": f"http://127.0.0.1:{hub_port}",
        "SBX_SANDBOX__HUB_API_URL": f"http://127.0.0.1:{api_port}/hub/api",
        "SBX_SANDBOX__STAGE_DIR": str(stage),
        "SBX_SANDBOX__POLL_SECONDS": "1",
    }
    demo = subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()", "demo", "--no-serve"],
        cwd=REPO_ROOT,
        env={**os.environ, "SBX_DATA_DIR": str(data), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    accounts = {a["username"]: a for a in json.loads((data / "demo-accounts.json").read_text())}
    process = start(data, gateway_port, hub=True, env=env)
    found = Platform(
        data,
        stage,
        f"http://127.0.0.1:{gateway_port}",
        f"http://127.0.0.1:{hub_port}",
        f"http://127.0.0.1:{api_port}/hub/api",
        accounts,
    )
    assert process.stdout is not None

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            found.output.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for_health(gateway_port, process)
        deadline = time.monotonic() + 60
        while not any("JupyterHub on" in line for line in found.output):
            assert time.monotonic() < deadline, "".join(found.output)
            assert process.poll() is None, "".join(found.output)
            time.sleep(0.2)
        yield found
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=5)
        process.stdout.close()
        mounts = Path("/proc/mounts").read_text()
        leftover = [line for line in mounts.splitlines() if str(stage) in line]
        for line in leftover:
            subprocess.run(["umount", "-l", line.split()[1]], check=False)
        shutil.rmtree(stage, ignore_errors=True)
        assert not leftover, leftover
    assert "Traceback" not in "".join(found.output), "".join(found.output)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


EXECUTE = """
async ([base, code]) => {
  const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
  const made = await fetch(base + "api/kernels", {method: "POST",
    headers: {"X-XSRFToken": decodeURIComponent(xsrf), "Content-Type": "application/json"},
    body: JSON.stringify({name: "sbx"})});
  if (!made.ok) return {error: "kernel " + made.status + " " + await made.text()};
  const kernel = await made.json();
  const url = base.replace(/^http/, "ws") + "api/kernels/" + kernel.id + "/channels";
  const socket = new WebSocket(url);
  await new Promise((ok, bad) => { socket.onopen = ok; socket.onerror = bad; });
  const id = crypto.randomUUID();
  const out = [];
  const done = new Promise((ok) => {
    socket.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.parent_header.msg_id !== id) return;
      if (msg.msg_type === "stream") out.push(msg.content.text);
      if (msg.msg_type === "error") out.push(msg.content.ename + ": " + msg.content.evalue);
      if (msg.msg_type === "execute_reply") ok(msg.content.status);
    };
  });
  socket.send(JSON.stringify({channel: "shell", header: {msg_id: id, msg_type: "execute_request",
    username: "", session: crypto.randomUUID(), date: new Date().toISOString(), version: "5.3"},
    parent_header: {}, metadata: {}, content: {code: code, silent: false, store_history: true,
    user_expressions: {}, allow_stdin: false, stop_on_error: true}, buffers: []}));
  const status = await done;
  socket.close();
  return {status: status, out: out.join(""), kernel: kernel.id, message: id};
}
"""


def open_sandbox(
    page: Page, platform: Platform, *, signed_in: bool = False, grant: str = GRANT
) -> str:
    if not signed_in:
        page.goto(platform.gateway + "/")
        sign_in(page, APPLICANT, platform.accounts[APPLICANT]["password"])
    page.goto(platform.gateway + "/grants")
    page.locator(f"#open-sandbox-{grant}").click()
    expect(page).to_have_url(
        re.compile(rf"/user/{re.escape(APPLICANT)}/{grant}/lab"), timeout=90_000
    )
    return page.url.split("/lab")[0] + "/"


def test_the_applicant_opens_a_sandbox_from_the_console_and_every_cell_is_recorded(
    platform: Platform, browser: Browser
) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    base = open_sandbox(page, platform)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)

    code = (
        "import os, socket, pandas\n"
        "print(os.getuid(), sorted(os.listdir('/data'))[:1], [n for _, n in socket.if_nameindex()])"
    )
    result = page.evaluate(EXECUTE, [base, code])
    assert result.get("status") == "ok", result
    uid, listing, interfaces = result["out"].split(" ", 2)
    assert int(uid) >= 200000
    assert interfaces.strip() == "['lo']"

    recorded = [e for e in platform.ledger("sandbox.execute") if _detail(e).get("code") == code]
    assert len(recorded) == 1, recorded
    detail = _detail(recorded[0])
    assert detail["grant"] == GRANT
    assert detail["message"] == result["message"]
    context.close()


def test_a_stopped_sandbox_opens_again_with_its_workspace(
    platform: Platform, browser: Browser
) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    base = open_sandbox(page, platform)
    kept = page.evaluate(EXECUTE, [base, "open('/home/jovyan/kept.txt', 'w').write('kept')"])
    assert kept.get("status") == "ok", kept
    platform.stop_server()
    base = open_sandbox(page, platform, signed_in=True)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
    again = page.evaluate(EXECUTE, [base, "print(open('/home/jovyan/kept.txt').read())"])
    assert again.get("status") == "ok", again
    assert again["out"].strip() == "kept"
    context.close()


def test_nobody_reaches_the_hub_without_a_ticket(platform: Platform) -> None:
    # A stranger at a sandbox's address ends at the console, never at a hub login form.
    with urllib.request.urlopen(  # noqa: S310 - the local hub
        platform.hub + f"/user/{APPLICANT}/{GRANT}/lab", timeout=10
    ) as answer:
        assert answer.url.startswith(platform.gateway + "/login"), answer.url
    forged = platform.hub + "/hub/sbx-login?ticket=eyJzdWIiOiJ4In0.AAAA"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=10)  # noqa: S310
    assert refused.value.code == 403
    assert "not issued by this platform" in refused.value.read().decode()
    refused.value.close()


def test_suspending_the_grant_stops_its_sandbox_within_seconds(
    platform: Platform, browser: Browser
) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    open_sandbox(page, platform)
    assert GRANT in platform.hub_servers()
    approving = browser.new_context(locale="zh-CN")
    approver = approving.new_page()
    approver.goto(platform.gateway + "/")
    sign_in(approver, "approver.sun", platform.accounts["approver.sun"]["password"])
    approver.goto(platform.gateway + "/grants")
    approver.locator(f"#suspend-{GRANT}").locator("xpath=ancestor::form").locator(
        "input[name=reason], textarea[name=reason]"
    ).fill("test: suspected misuse")
    approver.locator(f"#suspend-{GRANT}").click()
    expect(approver).to_have_url(re.compile(r"/grants\?notice=grant.suspended"))
    approving.close()
    suspended = sandbox_name(0, GRANT).split("-", 1)[1]  # the grant's part of the name

    def mounted() -> list[str]:
        return [
            line
            for line in Path("/proc/mounts").read_text().splitlines()
            if str(platform.stage) in line and f"-{suspended}/" in line
        ]

    # Stopped means the hub has no server and the sandbox's stage is unmounted (the
    # hub may see the server gone a moment before the spawner has released its stage).
    started = time.monotonic()
    while (GRANT in platform.hub_servers() or mounted()) and time.monotonic() - started < 15:
        time.sleep(0.25)
    stopped_after = time.monotonic() - started
    assert GRANT not in platform.hub_servers()
    assert not mounted()
    assert stopped_after < 10, stopped_after
    stops = platform.ledger("sandbox.stop")
    assert stops and "suspend" in json.dumps(stops[-1], ensure_ascii=False)
    context.close()


PATH_GRANT = "path-grant"
CELL = """
import os
import pandas as pd
from sandbox.notebook import request_export

view = pd.read_parquet("/data/records.parquet")
os.makedirs("results", exist_ok=True)
view.groupby("address").size().reset_index(name="count").to_csv(
    "results/by_district.csv", index=False
)
found = request_export(["results/by_district.csv"], "各区县档案数（由记录级视图汇总）")
print("EXPORT", found.id, found.status)
"""


def signed_in(browser: Browser, platform: Platform, username: str) -> Page:
    page = browser.new_context(locale="zh-CN", accept_downloads=True).new_page()
    page.goto(platform.gateway + "/")
    sign_in(page, username, platform.accounts[username]["password"])
    expect(page).not_to_have_url(re.compile(r"/login"))
    return page


def test_the_whole_path_from_an_application_to_a_verified_release(
    platform: Platform, browser: Browser, tmp_path: Path
) -> None:
    """apply → check → consent → review → approve → sign → grant → sandbox → export →
    review → release → verify, each step by its person in the console."""
    applicant = signed_in(browser, platform, APPLICANT)
    reviewer = signed_in(browser, platform, "reviewer.zhao")
    steward = signed_in(browser, platform, "steward.li")
    approver = signed_in(browser, platform, "approver.sun")

    # The applicant applies for four fields of the demo dataset, each justified.
    applicant.goto(platform.gateway + "/applications/new")
    chooser = applicant.locator("select[name=dataset]")
    dataset = chooser.locator("option").nth(1).get_attribute("value") or ""
    chooser.select_option(dataset)
    applicant.get_by_test_id("choose-dataset").locator("button").click()
    form = applicant.get_by_test_id("application-form")
    for name in ("sex", "age", "address", "visits"):
        form.locator(f"input[name=field][value={name}]").check()
        form.locator(f'input[name="justification.{name}"]').fill("按区县、年龄段统计就诊需求")
    form.locator("textarea[name=conditions]").fill("经伦理审查批准的健康研究，只发布汇总结果")
    form.locator("input[name=title]").fill("社区卫生资源配置（全流程）")
    form.locator("textarea[name=purpose]").fill("分析各区县的就诊需求")
    form.locator("textarea[name=scenario]").fill("沙箱内汇总，只导出区县层面的表")
    today = datetime.now(CHINA).date()
    form.locator("input[name=starts_on]").fill(today.isoformat())
    form.locator("input[name=ends_on]").fill((today + timedelta(days=90)).isoformat())
    form.locator("textarea[name=security_measures]").fill("专人专岗，仅在沙箱内处理")
    form.locator("button[type=submit]").click()
    expect(applicant).to_have_url(re.compile(r"/applications/[0-9a-f]{32}"))
    application = applicant.url.split("/applications/")[1].split("?")[0]
    letter = commitment_letter("海岸线数据科技有限公司")
    applicant.get_by_test_id("upload").locator("input[type=file]").set_input_files(
        {"name": "承诺书.pdf", "mimeType": "application/pdf", "buffer": letter}
    )
    applicant.get_by_test_id("upload").locator("button[type=submit]").click()
    applicant.get_by_test_id("submit-form").locator("button[type=submit]").click()
    page = f"{platform.gateway}/applications/{application}"

    # Formal check, the provider's consent, the opinion with its risk, the approval.
    reviewer.goto(page)
    reviewer.get_by_test_id("check-form").locator("button[value=yes]").click()
    steward.goto(page)
    steward.get_by_test_id("consent-form").locator("button[value=yes]").click()
    reviewer.goto(page)
    review = reviewer.get_by_test_id("review-form")
    review.locator("textarea[name=opinion]").fill("用途明确，字段最小必要")
    review.locator("select[name=level]").select_option(index=0)
    for name in ("reidentification", "misuse", "measures"):
        review.locator(f"textarea[name={name}]").fill("年龄分段、地址到区县，k=5")
    review.locator("button[value=yes]").click()
    approver.goto(page)
    approver.get_by_test_id("decision-form").locator("button[value=approve]").click()
    expect(approver.get_by_test_id("decision-form")).to_have_count(0)

    # The agreement, signed by both organizations; the grant on a record-level view.
    applicant.goto(page)
    applicant.locator("#show-agreement").click()
    applicant.get_by_test_id("sign-form").locator("button[type=submit]").click()
    approver.goto(page)  # the agreement is shown now that it has been made
    approver.get_by_test_id("sign-form").locator("button[type=submit]").click()
    grant = approver.get_by_test_id("grant-form")
    grant.locator("input[name=grant_id]").fill(PATH_GRANT)
    key = f"{dataset}."
    for name in ("sex", "visits"):
        grant.locator(f'select[name="treatment.{key}{name}"]').select_option("keep")
    grant.locator(f'select[name="treatment.{key}address"]').select_option("generalize")
    grant.locator(f'select[name="to.{key}address"]').select_option("district")
    grant.locator(f'select[name="treatment.{key}age"]').select_option("generalize")
    grant.locator(f'select[name="to.{key}age"]').select_option("band")
    grant.locator("button[type=submit]").click()
    expect(approver).to_have_url(re.compile(r"/grants"), timeout=60_000)
    expect(approver.locator(f'[data-grant="{PATH_GRANT}"]')).to_be_visible()

    # In the sandbox, a cell sums the view by district and asks to export the table.
    base = open_sandbox(applicant, platform, signed_in=True, grant=PATH_GRANT)
    try:
        ran = applicant.evaluate(EXECUTE, [base, CELL])
    finally:
        platform.stop_server(PATH_GRANT)  # the other tests count the stage's mounts
    assert ran.get("status") == "ok", ran
    marker, export_id, status = ran["out"].strip().splitlines()[-1].split()
    assert (marker, status) == ("EXPORT", "review"), ran["out"]

    # The reviewer and the approver release it; the applicant downloads the bundle.
    reviewer.goto(f"{platform.gateway}/exports/{export_id}")
    opinion = reviewer.get_by_test_id("review-form")
    opinion.locator("textarea[name=reasons]").fill("区县层面汇总，各单元格数千人")
    opinion.locator("select[name=risk]").select_option("normal")
    opinion.locator("button[value=approve]").click()
    approver.goto(f"{platform.gateway}/exports/{export_id}")
    decision = approver.get_by_test_id("decision-form")
    decision.locator("textarea[name=reasons]").fill("同意导出")
    decision.locator("button[value=approve]").click()
    expect(approver.get_by_test_id("release")).to_be_visible()
    applicant.goto(f"{platform.gateway}/exports/{export_id}")
    with applicant.expect_download() as downloading:
        applicant.get_by_test_id("bundle").click()
    bundle = tmp_path / "release.zip"
    downloading.value.save_as(bundle)

    # Anyone verifies it offline, against the ledger too (once a checkpoint covers it).
    report = verify_bundle(bundle)
    assert report.ok, report.problems
    assert report.manifest is not None and report.manifest["grant"]["id"] == PATH_GRANT
    names = {item["name"] for item in report.manifest["files"]}
    assert "results/results/by_district.csv" in names
    code = json.loads(zipfile.ZipFile(bundle).read("files/provenance/code.json"))
    assert any("request_export" in cell["code"] for cell in code)
    deadline = time.monotonic() + 30
    while True:
        verified = platform.sbx(
            "verify-bundle", str(bundle), "--ledger", str(platform.data / "ledger")
        )
        if verified.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "release recorded at seq" in verified.stdout
    for page_ in (applicant, reviewer, steward, approver):
        page_.context.close()
