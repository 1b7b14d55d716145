"""Grants in the console, on SQLite and PostgreSQL: a member sees the grant and opens its
sandbox (a redirect to the hub with a valid sign-on ticket), an approver suspends it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from gateway.api import create_app, open_services
from gateway.db.models import OrganizationType
from gateway.settings import load_settings
from sandbox.spawner.ticket import verify_ticket
from tests.integration.test_catalog import credit_code
from tests.webconsole import Console, Desk, form_token, staff

PEOPLE = {  # user name: (organization, roles)
    "wang": ("unit", ("applicant",)),
    "li": ("unit", ("applicant",)),
    "sun": ("operator", ("approver",)),
    "chen": ("regulator", ("regulator",)),
}


@pytest.fixture
def desk(database_url: str, tmp_path: Path) -> Iterator[Desk]:
    settings = load_settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        sandbox={"hub_url": "https://hub.test"},
    )
    found = open_services(settings)
    sandboxes = found.sandboxes
    assert sandboxes is not None
    sandboxes.hub = None  # no hub in these tests: its own poll would stop the servers
    staffed = staff(
        found,
        [
            ("unit", OrganizationType.APPLICATION_UNIT, "海尔数据科技有限公司", 3),
            ("regulator", OrganizationType.REGULATOR, "市大数据局", 4),
        ],
        PEOPLE,
        credit_code,
    )
    accounts, organizations = staffed.accounts, staffed.organizations
    (settings.data_dir / "views" / "coast").mkdir(parents=True)
    now = datetime.now(UTC)
    sandboxes.create_grant(
        accounts["sun"].actor(),
        grant_id="demo-grant",
        title="海岸线数据 × 市场主体 演示授权",
        organization_id=organizations["unit"],
        members=[accounts["wang"].id],
        views="coast",
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(days=90),
    )
    with TestClient(create_app(settings, found), base_url="https://testserver") as client:
        yield Desk(Console(client, found, staffed.admin_password), accounts)
    found.close()


def test_a_member_sees_the_grant_and_opens_its_sandbox(desk: Desk) -> None:
    desk.sign_in("wang")
    page = desk.client.get("/grants")
    assert page.status_code == 200
    assert "demo-grant" in page.text and "海岸线数据 × 市场主体 演示授权" in page.text
    assert 'id="open-sandbox-demo-grant"' in page.text and "打开沙箱" in page.text
    assert 'href="/grants"' in page.text  # in the navigation
    assert "suspend-demo-grant" not in page.text  # applicants do not suspend
    opened = desk.client.post(
        "/grants/demo-grant/open", data={"csrf_token": form_token(page)}, follow_redirects=False
    )
    assert opened.status_code == 303
    target = urlsplit(opened.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("https", "hub.test", "/hub/sbx-login")
    [ticket] = parse_qs(target.query)["ticket"]
    sandboxes = desk.console.found.sandboxes
    assert sandboxes is not None
    checked = verify_ticket(sandboxes.secrets.sso_secret, ticket)
    assert (checked.user, checked.grant) == ("wang", "demo-grant")
    assert ("sandbox.open", "ok") in desk.actions()


def test_opening_needs_the_csrf_token(desk: Desk) -> None:
    desk.sign_in("wang")
    refused = desk.client.post("/grants/demo-grant/open", data={}, follow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = desk.client.post(
        "/grants/demo-grant/open", data={"csrf_token": "x"}, follow_redirects=False
    )
    assert wrong.status_code == 403
    assert ("sandbox.open", "ok") not in desk.actions()


def test_others_see_no_open_button_and_cannot_open(desk: Desk) -> None:
    token = desk.sign_in("li")  # same unit, not a member
    page = desk.client.get("/grants")
    assert page.status_code == 200 and "demo-grant" not in page.text
    refused = desk.client.post(
        "/grants/demo-grant/open", data={"csrf_token": token}, follow_redirects=False
    )
    assert refused.status_code == 403 and "not a member" in refused.text
    desk.sign_in("chen")  # the regulator reads every grant, opens none
    page = desk.client.get("/grants")
    assert "demo-grant" in page.text and "open-sandbox-demo-grant" not in page.text


def test_an_approver_suspends_the_grant_from_the_page(desk: Desk) -> None:
    desk.sign_in("sun")
    page = desk.client.get("/grants")
    assert 'id="suspend-demo-grant"' in page.text and "open-sandbox" not in page.text
    token = form_token(page)
    empty = desk.client.post("/grants/demo-grant/suspend", data={"csrf_token": token, "reason": ""})
    assert empty.status_code == 422 and "reason" in empty.text
    done = desk.client.post(
        "/grants/demo-grant/suspend",
        data={"csrf_token": token, "reason": "疑似违规使用"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"].startswith("/grants?notice=")
    shown = desk.client.get(done.headers["location"])
    assert "授权已暂停" in shown.text and "已暂停" in shown.text and "疑似违规使用" in shown.text
    assert ("grant.suspend", "ok") in desk.actions()
    desk.sign_in("wang")  # the member's button is gone
    page = desk.client.get("/grants")
    assert "open-sandbox-demo-grant" not in page.text
    refused = desk.client.post(
        "/grants/demo-grant/open", data={"csrf_token": form_token(page)}, follow_redirects=False
    )
    assert refused.status_code == 403 and re.search("suspended", refused.text)
