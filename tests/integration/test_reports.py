"""Feedback after use and the operation report through the API (R14): a small history
(applications approved, refused and waiting, objections, a grant with a released and a
blocked export, feedback, a suspension) counted exactly for a period and not outside it;
the report as JSON, CSV and PDF with each file recorded; who may read what; feedback
checked, given only by the grant's members once it has started, read by those concerned.

One test on each database: the history takes a grant with built views (most of the
test's time), and every part below reads the same history."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

from gateway.db.models import OrganizationType
from tests.integration import test_catalog
from tests.integration.test_applications import submitted
from tests.integration.test_catalog import Platform, credit_code
from tests.integration.test_exports import DURING, decide, export, granted, table

platform = test_catalog.platform
GRANT = "clinic-2026"  # the grant test_exports.granted makes
ALL = {"from": "2026-09-01", "to": "2026-11-30"}
TITLE = "数据运营情况报告 / Operation report"
REASONS = ["安全措施未说明数据销毁方式", "承诺书未盖章"]


def feedback(quality: int, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "quality": quality,
        "quality_note": "字段完整，就诊日期有少量缺失",
        "usage": "按区县统计门诊量，建立资源配置模型",
        "effect": "形成三个区的门诊资源配置建议，已报卫健部门",
    }
    return {**body, **changes}


def add_organization(platform: Platform, key: str, kind: OrganizationType, serial: int) -> None:
    platform.organizations[key] = platform.services.identity.create_organization(
        platform.admin, kind=kind, name=f"{key} 单位", credit_code=credit_code(serial)
    ).id


def make_history(platform: Platform) -> tuple[str, dict[str, Any]]:
    """On 29 September 2026 (China time): three applications (approved, refused with two
    reasons, waiting for its formal check) and two objections (one answered); on
    2 November: the approved one's grant, a session in it running two cells and a
    command, a blocked and a released export, two pieces of feedback, and the grant's
    suspension. The dataset's id and the blocked export."""
    token = granted(platform)
    [dataset] = [d["id"] for d in platform.call("applicant", "GET", "/datasets").json()["items"]]
    refused = submitted(platform, dataset)
    check = {"complete": False, "reasons": REASONS}
    done = platform.call("reviewer", "POST", f"/applications/{refused}/check", json=check)
    assert done.json()["status"] == "refused", done.text
    submitted(platform, dataset)
    objections = [
        platform.call("applicant", "POST", f"/datasets/{dataset}/objections", json={"text": text})
        for text in ("就诊日期有缺失", "费用字段单位不明")
    ]
    answer = {"text": "已补充缺失日期"}
    path = f"/objections/{objections[0].json()['id']}/answer"
    assert platform.call("provider_steward", "POST", path, json=answer).status_code == 200

    for n, kind in enumerate(("execute", "execute", "command")):  # two cells, one command
        code = {"kernel": "k1", "message": f"m{n}", "kind": kind, "code": "df.groupby('district')"}
        ran = platform.client.post(
            "/api/v1/sandbox/executions", json=code, headers={"Authorization": f"Bearer {token}"}
        )
        assert ran.status_code == 201, ran.text
    blocked = export(platform, token, {"copy.csv": test_catalog.visits_csv(20)})
    assert blocked["status"] == "blocked"
    released = export(platform, token, {"visits.csv": table([("市南区", 200)])})
    for who in ("reviewer", "approver"):
        assert decide(platform, who, released["id"], True).status_code == 200
    notes = [{"dataset_id": dataset, "quality": 3, "note": "日期字段缺失较多"}]
    for quality in (4, 5):
        body = feedback(quality, datasets=notes)
        given = platform.call("applicant", "POST", f"/grants/{GRANT}/feedback", json=body)
        assert given.status_code == 201, given.text
    reason = {"reason": "核查"}
    assert platform.call("approver", "POST", f"/grants/{GRANT}/suspend", json=reason).is_success
    return dataset, blocked


def check_the_figures(platform: Platform, blocked: dict[str, Any]) -> dict[str, Any]:
    """The report of the whole history, exactly; its edges; who may read it."""
    add_organization(platform, "regulator", OrganizationType.REGULATOR, 5)
    platform.user("regulator", "regulator", "regulator")
    shown = platform.call("regulator", "GET", "/reports/operations", params=ALL)
    assert shown.status_code == 200, shown.text
    report = dict(shown.json())
    checks = {f["check"] for f in blocked["report"]["findings"] if f["severity"] == "block"}
    assert "identifiers" in checks
    assert {key: value for key, value in report.items() if key != "sha256"} == {
        "period": ALL,
        "applications": {
            "submitted": 3,
            "approved": 1,
            "refused": 1,
            "withdrawn": 0,
            "in_progress": 1,
        },
        "refusal_reasons": dict.fromkeys(REASONS, 1),
        "deadlines": {
            "formal_met": 2,
            "formal_missed": 0,
            "consent_met": 1,
            "consent_missed": 0,
            "review_met": 1,
            "review_missed": 0,
            "approval_met": 1,
            "approval_missed": 0,
        },
        "agreements": {"signed": 1},
        "grants": {"made": 1, "suspended": 1, "active_at_end": 0},
        "suspension_reasons": {"核查": 1},
        "exports": {"requested": 2, "blocked": 1, "released": 1, "rejected": 0},
        "exports_blocked_by_check": dict.fromkeys(sorted(checks), 1),
        "exports_by_risk": {"normal": 2, "high": 0},
        "objections": {"raised": 2, "answered_on_time": 1, "answered_late": 0, "overdue": 1},
        "feedback": {"received": 2, "average_quality": "4.50"},
    }

    def figures(first: str, last: str) -> dict[str, Any]:
        found = platform.call("approver", "GET", f"/reports/operations?from={first}&to={last}")
        assert found.status_code == 200, found.text
        return dict(found.json())

    before = figures("2026-09-01", "2026-09-28")  # the history starts on 29 September
    assert before["applications"]["submitted"] == before["agreements"]["signed"] == 0
    assert before["applications"]["in_progress"] == 0
    assert before["objections"] == dict.fromkeys(report["objections"], 0)
    day = figures("2026-09-29", "2026-09-29")
    assert day["applications"] == report["applications"] and day["exports"]["requested"] == 0
    assert day["objections"]["overdue"] == 0  # due on 12 October
    later = figures("2026-10-01", "2026-11-30")
    assert later["applications"]["submitted"] == 0 and later["applications"]["in_progress"] == 1
    assert later["exports"] == report["exports"] and later["grants"]["made"] == 1
    assert later["objections"] == {
        "raised": 0,
        "answered_on_time": 0,
        "answered_late": 0,
        "overdue": 1,
    }
    for who in ("applicant", "provider_steward"):
        assert platform.call(who, "GET", "/reports/operations").status_code == 403
        assert platform.call(who, "GET", "/reports/operations.pdf").status_code == 403
    for query in ("from=2026-11-30&to=2026-11-01", "from=2026-11&to=2026-11-30", "from=1900-01-01"):
        wrong = platform.call("approver", "GET", f"/reports/operations?{query}")
        assert wrong.status_code == 422, (query, wrong.text)
    default = platform.call("approver", "GET", "/reports/operations").json()
    assert default["period"] == {"from": "2026-10-01", "to": "2026-10-31"}  # now: 2 November
    return report


def check_the_files(platform: Platform, report: dict[str, Any]) -> None:
    """The CSV reads back as the figures; the PDF is the same for the same report and
    time; each file is recorded with the figures' digest."""
    got = platform.call("regulator", "GET", "/reports/operations.csv", params=ALL)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert got.content.startswith(b"\xef\xbb\xbf")  # the byte-order mark, for Excel
    rows = list(csv.reader(io.StringIO(got.content.decode("utf-8-sig"))))
    assert rows[0] == ["section", "item", "value"]
    parsed: dict[str, dict[str, str]] = {}
    for section, item, value in rows[1:]:
        parsed.setdefault(section, {})[item] = value
    expected = {key: value for key, value in report.items() if key != "sha256"}
    assert parsed == {s: {i: str(v) for i, v in items.items()} for s, items in expected.items()}
    pdfs = [platform.call("regulator", "GET", "/reports/operations.pdf", params=ALL) for _ in "12"]
    assert pdfs[0].headers["content-type"] == "application/pdf"
    assert pdfs[0].content.startswith(b"%PDF") and len(pdfs[0].content) > 10_000
    assert pdfs[0].content == pdfs[1].content
    assert ("feff" + TITLE.encode("utf-16-be").hex()).encode() in pdfs[0].content  # its title
    recorded = [e["detail"] for e in platform.entries() if e["action"] == "report.operations"]
    assert [(d["format"], d["from"], d["to"]) for d in recorded] == [
        ("csv", "2026-09-01", "2026-11-30"),
        ("pdf", "2026-09-01", "2026-11-30"),
        ("pdf", "2026-09-01", "2026-11-30"),
    ]
    assert {d["sha256"] for d in recorded} == {report["sha256"]}


def check_the_feedback(platform: Platform, dataset: str) -> None:
    """Read by the grant's organization, the operator, the regulator and the provider of
    its data, nobody else; given by members only, once the grant has started (suspended
    or over as it may be since); checked with every reason; recorded without its text."""
    path = f"/grants/{GRANT}/feedback"
    listed = platform.call("provider_steward", "GET", path)
    assert listed.status_code == 200, listed.text
    assert sorted(item["quality"] for item in listed.json()) == [4, 5]  # given at one time
    note = {"dataset_id": dataset, "quality": 3, "note": "日期字段缺失较多"}
    assert listed.json()[0]["datasets"] == [note]
    for who in ("applicant", "reviewer", "approver", "regulator"):
        assert len(platform.call(who, "GET", path).json()) == 2
    add_organization(platform, "water", OrganizationType.PROVIDER, 6)
    add_organization(platform, "other_unit", OrganizationType.APPLICATION_UNIT, 7)
    platform.user("water.steward", "water", "provider_steward")
    platform.user("stranger", "other_unit", "applicant")
    platform.user("colleague", "application_unit", "applicant")
    for who in ("water.steward", "stranger"):
        assert platform.call(who, "GET", path).status_code == 404
    assert platform.call("stranger", "POST", path, json=feedback(4)).status_code == 404
    assert platform.call("colleague", "GET", path).status_code == 200
    refused = platform.call("colleague", "POST", path, json=feedback(4))
    assert refused.status_code == 403 and "not a member" in refused.json()["detail"]
    assert platform.call("reviewer", "POST", path, json=feedback(4)).status_code == 403
    assert platform.call("applicant", "GET", "/grants/absent/feedback").status_code == 404

    assert platform.call("applicant", "POST", path, json=feedback(6)).status_code == 422
    blank = feedback(3, usage="  ", effect=" ", datasets=[{"dataset_id": "nope", "note": "x"}])
    unclear = platform.call("applicant", "POST", path, json=blank)
    assert unclear.status_code == 422, unclear.text
    reasons = unclear.json()["reasons"]
    assert len(reasons) == 3 and any("nope" in reason for reason in reasons)

    sandboxes = platform.services.sandboxes
    assert sandboxes is not None
    sandboxes.clock = lambda: DURING - timedelta(hours=1)  # before the grant started
    early = platform.call("applicant", "POST", path, json=feedback(4))
    assert early.status_code == 409 and "started" in early.json()["detail"]
    sandboxes.clock = lambda: DURING + timedelta(days=400)  # after it ended
    late = platform.call("applicant", "POST", path, json=feedback(2))
    assert late.status_code == 201, late.text
    assert late.json()["author"] == "applicant" and late.json()["datasets"] == []

    created = [e for e in platform.entries() if e["action"] == "feedback.create"]
    assert [(e["outcome"], e["detail"].get("quality")) for e in created] == [
        ("ok", 4),
        ("ok", 5),
        ("denied", None),
        ("ok", 2),
    ]
    assert created[0]["detail"]["lengths"]["usage"] == len(feedback(4)["usage"])
    assert created[0]["detail"]["datasets"] == [
        {"dataset": dataset, "quality": 3, "note_length": 8}
    ]
    assert "资源配置模型" not in json.dumps(created, ensure_ascii=False)


def test_the_report_counts_the_history_of_a_period_and_feedback_keeps_its_rules(
    platform: Platform,
) -> None:
    dataset, blocked = make_history(platform)
    report = check_the_figures(platform, blocked)
    check_the_files(platform, report)
    check_the_feedback(platform, dataset)
