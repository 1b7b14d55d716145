"""Exports in the console, on SQLite and PostgreSQL: the sandbox sends two exports through
the API (one the airlock blocks, one it passes); then, signed in, the applicant sees them
with the findings and nothing to decide, the reviewer reads a file and gives an opinion
with a high risk, two different approvers release it, and the applicant downloads the
signed bundle the page links to, which verifies. A colleague of the applicant cannot
decide, a form without the CSRF token is refused, and the pages speak both languages."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from httpx2 import Response

from audit.bundle import verify_bundle
from gateway.db.models import OrganizationType
from tests.integration import test_catalog
from tests.integration.test_catalog import Platform, credit_code, visits_csv
from tests.integration.test_exports import export, granted, table
from tests.integration.test_identity import FAST_HASHER
from tests.integration.test_web_catalog import alert, section
from tests.webconsole import NEW_PASSWORD, Console, Desk

platform = test_catalog.platform


def sign_in_everyone(platform: Platform) -> Desk:
    """Passwords for the platform's applicant, reviewer and approver (which ends their API
    tokens: the exports are made by then), and more people: a second approver, a colleague
    of the applicant and a regulator; the console over the platform's gateway."""
    identity = platform.services.identity
    identity.hasher = FAST_HASHER  # the passwords of a test need not resist cracking
    admin = platform.admin
    regulator = identity.create_organization(
        admin, kind=OrganizationType.REGULATOR, name="青岛市数据局", credit_code=credit_code(9)
    ).id
    platform.organizations["regulator"] = regulator
    for username in ("applicant", "reviewer", "approver"):
        found = identity.find_user(admin, username)
        once = identity.reset_password(admin, found.id)[1]
        identity.set_password(found.id, once, NEW_PASSWORD)
    for username, organization, role in (
        ("approver2", "operator", "approver"),
        ("colleague", "application_unit", "applicant"),
        ("regulator", "regulator", "regulator"),
    ):
        account, once = identity.create_user(
            admin,
            organization_id=platform.organizations[organization],
            username=username,
            display_name=f"{username} 王",
            roles=(role,),
        )
        identity.set_password(account.id, once, NEW_PASSWORD)
    client = TestClient(platform.client.app, base_url="https://testserver")
    return Desk(Console(client, platform.services, ""), {})


def card(page: Response, testid: str) -> str:
    found = re.search(
        rf'<section class="card" data-testid="{testid}">.*?</section>', page.text, re.S
    )
    assert found, f"no {testid} on the page"
    return found.group(0)


def status_of(page: Response) -> str:
    found = re.search(r'data-testid="status"><span class="tag [^"]*">([^<]+)<', page.text)
    assert found, page.text
    return found.group(1)


def test_an_export_from_the_checks_to_the_downloaded_bundle(
    platform: Platform, tmp_path: Path
) -> None:
    token = granted(platform)
    blocked = export(platform, token, {"copy.csv": visits_csv(20)})["id"]
    export_id = export(platform, token, {"tables/visits.csv": table([("市南区", 200)])})["id"]
    desk = sign_in_everyone(platform)
    client = desk.client
    page = f"/exports/{export_id}"
    decision = f"{page}/decision"

    # The applicant: both exports, the findings that block one, nothing to decide.
    csrf = desk.sign_in("applicant")
    listing = client.get("/exports")
    assert listing.status_code == 200 and '<a href="/exports">导出</a>' in listing.text
    assert 'data-testid="queue"' not in listing.text
    assert export_id in section(listing, "exports") and blocked in section(listing, "exports")
    only = section(client.get("/exports", params={"status": "blocked"}), "exports")
    assert blocked in only and export_id not in only
    assert client.get("/exports", params={"status": ""}).status_code == 200  # any status
    assert client.get("/exports", params={"status": "lost"}).status_code == 422
    stopped = client.get(f"/exports/{blocked}")
    assert status_of(stopped) == "被自动检查拦截"
    findings = section(stopped, "findings")
    assert "个人标识符" in findings and "拦截导出" in findings and "copy.csv" in findings
    shown = client.get(page)
    assert status_of(shown) == "待审核" and "各区就诊人次" in section(shown, "summary")
    assert 'data-testid="actions"' not in shown.text and "tables/visits.csv" in shown.text
    assert "request_export" in client.get("/grants").text  # how to ask for one

    # A colleague of the applicant sees it too, and may not decide, even by a forged form.
    csrf = desk.sign_in("colleague")
    assert 'data-testid="actions"' not in client.get(page).text
    forged = {"decision": "approve", "reasons": "同意", "risk": "normal", "csrf_token": csrf}
    refused = client.post(decision, data=forged)
    assert refused.status_code == 403
    assert "your roles do not allow review on export" in alert(refused)
    unguarded = client.post(decision, data={**forged, "csrf_token": ""})
    assert unguarded.status_code == 403 and "CSRF" in unguarded.text
    assert ("export.review", "denied") in desk.actions()

    # The reviewer: in the queue, reads the file as a download, gives an opinion.
    csrf = desk.sign_in("reviewer")
    assert export_id in section(client.get("/exports"), "queue")
    opened = client.get(page)
    assert 'data-testid="review-form"' in opened.text
    link = re.search(rf'href="({page}/files/0)"', opened.text)
    assert link is not None
    read = client.get(link.group(1))
    assert read.content == table([("市南区", 200)])
    assert "sandbox" in read.headers.get_list("content-security-policy")  # and the site's
    assert set(read.headers.get_list("x-content-type-options")) == {"nosniff"}
    assert read.headers["content-type"] == "application/octet-stream"
    assert read.headers["content-disposition"].startswith("attachment")
    opinion = {"decision": "approve", "reasons": "汇总表\r\n单元格均大于阈值", "risk": "high"}
    reviewed = client.post(decision, data={**opinion, "csrf_token": csrf})
    assert reviewed.history[0].status_code == 303 and "审核意见已记录" in reviewed.text
    assert status_of(reviewed) == "待审批" and "高风险" in section(reviewed, "risk")
    assert "汇总表\n单元格均大于阈值" in section(reviewed, "history")
    assert 'data-testid="actions"' not in reviewed.text

    # Two different approvers: the first may not take the second step.
    csrf = desk.sign_in("approver")
    assert export_id in section(client.get("/exports"), "queue")
    form = client.get(page)
    assert 'data-testid="decision-form"' in form.text and "另一名审批人" in form.text
    approve = {"decision": "approve", "reasons": "同意导出", "csrf_token": csrf}
    first = client.post(decision, data=approve)
    assert "第二名审批人" in first.text and status_of(first) == "待第二次审批"
    assert 'data-testid="another-decides"' in first.text
    again = client.post(decision, data=approve)
    assert again.status_code == 403 and "drafted an opinion" in alert(again)
    csrf = desk.sign_in("approver2")
    released = client.post(decision, data={**approve, "csrf_token": csrf})
    assert status_of(released) == "已放行" and "已签名的导出包" in released.text

    # The applicant downloads the bundle the page links to; it verifies offline.
    desk.sign_in("applicant")
    done = client.get(page)
    release = card(done, "release")
    assert f"sbx verify-bundle release-{export_id}.zip --ledger" in release
    digest = re.search(r'data-testid="manifest">([0-9a-f]{64})<', release)
    bundle_link = re.search(r'href="(/exports/\w+/bundle)"', release)
    assert digest is not None and bundle_link is not None
    bundle = client.get(bundle_link.group(1))
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
    path = tmp_path / f"release-{export_id}.zip"
    path.write_bytes(bundle.content)
    report = verify_bundle(path)
    assert report.ok, report.problems
    assert report.manifest_sha256 == digest.group(1)
    assert client.get(f"/exports/{blocked}/bundle").status_code == 409

    # A regulator sees everything and decides nothing; the pages speak English too.
    desk.sign_in("regulator")
    everything = client.get("/exports")
    assert 'data-testid="read-only"' in everything.text and blocked in everything.text
    assert 'data-testid="actions"' not in client.get(page).text
    client.get("/lang/en", params={"next": page})
    english = client.get(page)
    assert status_of(english) == "Released" and "Download the signed bundle" in english.text
    assert '<a href="/exports">Exports</a>' in english.text
