"""The reports and feedback after use in the console, on SQLite and PostgreSQL: a
regulator and an approver read the operation report in Chinese and English and download
it as CSV and PDF, an applicant may not; the annual evaluation with its charts (inline
SVG) and the regulator's verdict through the form (refused first), which an approver
reads but may not give; the contribution page; an applicant member of a grant gives
feedback through the form (refused first, with every reason), which the regulator reads.

One test on each database, in parts that share the console's people and grant."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.api import create_app, open_services
from gateway.db.models import OrganizationType
from gateway.settings import load_settings
from tests.integration.test_catalog import credit_code
from tests.webconsole import Console, Desk, staff

NOW = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
PEOPLE = {  # user name: (organization, roles)
    "wang": ("unit", ("applicant",)),
    "sun": ("operator", ("approver",)),
    "chen": ("regulator", ("regulator",)),
}
NOVEMBER = "from=2026-11-01&to=2026-11-30"


@pytest.fixture
def desk(database_url: str, tmp_path: Path) -> Iterator[Desk]:
    settings = load_settings(data_dir=tmp_path / "var", database_url=database_url)
    found = open_services(settings)
    sandboxes = found.sandboxes
    assert sandboxes is not None
    sandboxes.hub = None
    sandboxes.clock = lambda: NOW
    staffed = staff(
        found,
        [
            ("unit", OrganizationType.APPLICATION_UNIT, "海尔数据科技有限公司", 3),
            ("regulator", OrganizationType.REGULATOR, "市大数据局", 4),
        ],
        PEOPLE,
        credit_code,
    )
    (settings.data_dir / "views" / "coast").mkdir(parents=True)
    sandboxes.create_grant(
        staffed.accounts["sun"].actor(),
        grant_id="coast",
        title="海岸线数据 × 市场主体 演示授权",
        organization_id=staffed.organizations["unit"],
        members=[staffed.accounts["wang"].id],
        views="coast",
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(days=90),
    )
    with TestClient(create_app(settings, found), base_url="https://testserver") as client:
        yield Desk(Console(client, found, staffed.admin_password), staffed.accounts)
    found.close()


def figure(page: str, section: str, item: str) -> str:
    found = re.search(
        rf'data-section="{section}".*?data-item="{item}"><td>[^<]*</td><td>([^<]*)</td>',
        page,
        re.S,
    )
    assert found, (section, item)
    return found.group(1)


def read_the_report(desk: Desk) -> None:
    for who in ("chen", "sun"):
        desk.sign_in(who)
        desk.client.cookies.delete("sbx_lang")
        page = desk.client.get(f"/reports?{NOVEMBER}")
        assert page.status_code == 200, page.text
        assert 'href="/reports"' in page.text  # in the navigation
        assert "运营报告" in page.text and "数据使用申请" in page.text and "新增授权" in page.text
        assert figure(page.text, "grants", "made") == "1"
        assert figure(page.text, "applications", "submitted") == "0"
        assert figure(page.text, "feedback", "average_quality") == "—"
        desk.client.cookies.set("sbx_lang", "en")
        english = desk.client.get(f"/reports?{NOVEMBER}")
        assert "Operation report" in english.text and "Applications" in english.text
        assert "Download CSV" in english.text and "2026-11-01" in english.text
        links = re.findall(r'href="(/reports/operations\.(?:csv|pdf)\?[^"]+)"', english.text)
        assert len(links) == 2
        wrong = desk.client.get("/reports?from=2026-11-30&to=2026-11-01")
        assert wrong.status_code == 422 and "a period runs" in wrong.text
    csv, pdf = (desk.client.get(link.replace("&amp;", "&")) for link in links)  # as the approver
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.content.startswith(b"\xef\xbb\xbfsection,item,value")
    assert b"grants,made,1" in csv.content
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert "operations-2026-11-01-2026-11-30.pdf" in pdf.headers["content-disposition"]
    default = desk.client.get("/reports")
    assert 'value="2026-10-01"' in default.text and 'value="2026-10-31"' in default.text
    assert [e for e in desk.actions() if e[0] == "report.operations"] == [
        ("report.operations", "ok")
    ] * 2
    desk.client.cookies.delete("sbx_lang")

    desk.sign_in("wang")  # an applicant: no report
    assert 'href="/reports"' not in desk.client.get("/").text
    assert desk.client.get("/reports").status_code == 403
    assert desk.client.get(f"/reports/operations.csv?{NOVEMBER}").status_code == 403


def give_feedback(desk: Desk) -> None:
    token = desk.sign_in("wang")
    grants = desk.client.get("/grants")
    assert 'href="/grants/coast/feedback"' in grants.text
    page = desk.client.get("/grants/coast/feedback")
    assert page.status_code == 200 and 'id="give-feedback"' in page.text
    assert "提交反馈" in page.text and "尚无反馈" in page.text
    values = {
        "csrf_token": token,
        "quality": "4",
        "quality_note": "字段完整",
        "usage": "按区统计市场主体数量",
        "effect": "形成海岸带产业布局建议",
    }
    assert (
        desk.client.post("/grants/coast/feedback", data={**values, "csrf_token": "x"}).status_code
        == 403
    )
    refused = desk.client.post(
        "/grants/coast/feedback",
        data={**values, "quality": "", "usage": " ", "quality.nope": "3"},
    )
    assert refused.status_code == 422
    assert "rated 1 to 5" in refused.text and "how the data was used" in refused.text
    assert "nope" in refused.text and "形成海岸带产业布局建议" in refused.text  # kept
    done = desk.client.post("/grants/coast/feedback", data=values, follow_redirects=False)
    assert done.status_code == 303, done.text
    shown = desk.client.get(done.headers["location"])
    assert "感谢反馈" in shown.text and "按区统计市场主体数量" in shown.text
    assert ("feedback.create", "ok") in desk.actions()

    desk.sign_in("chen")  # reads it, gives none
    desk.client.cookies.set("sbx_lang", "en")
    page = desk.client.get("/grants/coast/feedback")
    assert "Data quality: 4 of 5" in page.text and "give-feedback" not in page.text
    assert desk.client.get("/grants/absent/feedback").status_code == 404


def chart(page: str, key: str) -> str:
    found = re.search(rf'<svg [^>]*data-chart="{key}".*?</svg>', page, re.S)
    assert found, key
    return found.group(0)


def evaluate_the_operator(desk: Desk) -> None:
    token = desk.sign_in("chen")
    desk.client.cookies.delete("sbx_lang")
    page = desk.client.get("/reports/evaluation?year=2026")
    assert page.status_code == 200, page.text
    assert "运营单位年度评估" in page.text and 'href="/reports/contributions"' in page.text
    volumes = chart(page.text, "volumes")
    assert 'role="img"' in volumes and 'aria-labelledby="volumes-title volumes-desc"' in volumes
    assert '<title id="volumes-title">2026年各月业务量</title>' in volumes
    assert "新增授权: 1月 0, 2月 0" in volumes and "10月 0, 11月 1, 12月 0" in volumes
    assert "<polyline" in volumes and ">月份</text>" in volumes  # a line, its axis named
    deadlines = chart(page.text, "deadlines")
    assert "<rect" in deadlines and "形式审查" in deadlines
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy
    assert "style=" not in volumes and "<script" not in page.text  # nothing the policy blocks
    assert re.search(r'data-month="2026-11"><td>2026-11</td><td>0</td><td>1</td>', page.text)
    assert 'data-testid="verdict-form"' in page.text and "尚无评估结论" in page.text
    assert page.text.count('name="verdict"') == 3  # pass, fail, rectify
    desk.client.cookies.set("sbx_lang", "en")
    english = desk.client.get("/reports/evaluation?year=2026")
    assert "Volumes per month, 2026" in chart(english.text, "volumes")
    assert "Grants made: Jan 0" in english.text and "Annual evaluation" in english.text

    path = "/reports/evaluation/2026/verdict"
    rectify = {"csrf_token": token, "verdict": "rectify", "reasons": "审核超期，需整改"}
    assert desk.client.post(path, data={**rectify, "csrf_token": "x"}).status_code == 403
    unclear = desk.client.post(path, data={**rectify, "verdict": "maybe"})
    assert unclear.status_code == 422 and "Choose pass, fail or rectify" in unclear.text
    blank = desk.client.post(path, data={**rectify, "reasons": "  "})
    assert blank.status_code == 422 and "a reason for the verdict is needed" in blank.text
    future = desk.client.post("/reports/evaluation/2027/verdict", data=rectify)
    assert future.status_code == 422 and "between 2000 and 2026" in future.text
    done = desk.client.post(path, data=rectify, follow_redirects=False)
    assert done.status_code == 303, done.text
    desk.client.cookies.delete("sbx_lang")
    shown = desk.client.get(done.headers["location"])
    assert "评估结论已记入审计账本" in shown.text and "审核超期，需整改" in shown.text
    assert "2026-12-02" in shown.text  # 30 days after 2 November
    assert shown.text.count('name="verdict"') == 2  # re-evaluated: pass or fail
    again = desk.client.post(path, data=rectify)
    assert again.status_code == 409 and "counts as a fail" in again.text
    assert ("evaluation.verdict", "ok") in desk.actions()
    wrong = desk.client.get("/reports/evaluation?year=20x6")
    assert wrong.status_code == 422 and "four digits" in wrong.text

    contributions = desk.client.get("/reports/contributions?from=2026-11-01&to=2026-11-30")
    assert contributions.status_code == 200 and "数据贡献" in contributions.text
    assert 'data-chart="contributions"' in contributions.text and "本期无" in contributions.text
    csv = desk.client.get("/reports/evaluation.csv?year=2026")
    assert csv.content.startswith(b"\xef\xbb\xbfsection,item,value")
    assert "verdict_1,verdict,rectify" in csv.content.decode("utf-8-sig")
    table = desk.client.get("/reports/contributions.csv?from=2026-11-01&to=2026-11-30")
    assert table.content.startswith(b"\xef\xbb\xbflevel,id,name,provider,uploads")
    recorded = [e for e in desk.actions() if e[0].startswith("report.")]
    assert ("report.evaluation", "ok") in recorded and ("report.contributions", "ok") in recorded

    desk.sign_in("sun")  # an approver reads it, gives no verdict
    page = desk.client.get("/reports/evaluation?year=2026")
    assert page.status_code == 200 and "verdict-form" not in page.text
    assert "限期整改" in page.text
    assert desk.client.post(path, data={**rectify, "verdict": "pass"}).status_code == 403
    desk.sign_in("wang")  # an applicant: none of it
    assert desk.client.get("/reports/evaluation").status_code == 403
    assert desk.client.get("/reports/contributions").status_code == 403


def test_the_report_is_read_and_downloaded_and_feedback_given_in_the_console(desk: Desk) -> None:
    read_the_report(desk)
    evaluate_the_operator(desk)
    give_feedback(desk)
