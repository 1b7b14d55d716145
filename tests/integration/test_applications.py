"""Applications through the API: an applicant drafts, attaches the commitment letter and
submits; a reviewer checks it, the provider of the conditional data consents, a reviewer
drafts an opinion with a risk assessment and an approver decides; deadlines are counted
on the Chinese working-day calendar, refusals carry reasons, and the duties stay apart."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from gateway.db.models import OrganizationType, VerificationStatus
from tests.integration import test_catalog
from tests.integration.test_catalog import NOW, Platform, credit_code, published

platform = test_catalog.platform  # the catalog's platform, with a published dataset on demand

PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
RISK = {
    "level": "medium",
    "reidentification": "区县与就诊日期组合可能缩小人群，已泛化到月份",
    "misuse": "仅用于医疗资源规划，协议限定用途",
    "measures": "身份证号假名化，费用仅聚合",
}


def form(dataset_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "门诊资源配置研究",
        "purpose": "分析各区门诊就诊量与费用，支持医疗资源配置",
        "scenario": "在沙箱内建立区县层面的就诊量模型，只导出聚合结果",
        "starts_on": "2026-10-15",
        "ends_on": "2027-10-14",
        "security_measures": "专人专岗，仅在平台沙箱内处理，结果经审核后导出",
        "datasets": [
            {
                "dataset_id": dataset_id,
                "fields": [
                    {"name": "district", "justification": "按区统计就诊量"},
                    {"name": "visit_date", "justification": "按月观察变化"},
                    {"name": "cost", "justification": "估计费用负担"},
                ],
                "conditions": "本研究属医疗健康研究，已取得伦理审查批件",
            }
        ],
    }
    body.update(changes)
    return body


def verify(platform: Platform, organization: str = "application_unit") -> None:
    platform.services.identity.set_organization_verification(
        platform.admin,
        platform.organizations[organization],
        VerificationStatus.VERIFIED,
        "营业执照与法人身份核验通过",
    )


def submitted(platform: Platform, dataset_id: str) -> str:
    """A draft with its letter, submitted by a verified unit; its id."""
    made = platform.call("applicant", "POST", "/applications", json=form(dataset_id))
    assert made.status_code == 201, made.text
    application = made.json()["id"]
    attached = platform.call(
        "applicant",
        "POST",
        f"/applications/{application}/attachments?kind=commitment&name=承诺书.pdf",
        content=PDF,
    )
    assert attached.status_code == 201, attached.text
    verify(platform)
    sent = platform.call("applicant", "POST", f"/applications/{application}/submit")
    assert sent.status_code == 200, sent.text
    return str(application)


def actions(platform: Platform, application: str) -> list[tuple[str, str]]:
    return [
        (e["action"], e["outcome"])
        for e in platform.entries()
        if e.get("object") == f"application:{application}"
    ]


def test_an_application_goes_from_draft_to_approval(platform: Platform) -> None:
    dataset = published(platform)
    planned = platform.call("applicant", "POST", "/applications/plan", json=form(dataset))
    assert planned.status_code == 200, planned.text
    [plan] = planned.json()
    assert plan["conditional"] and plan["problems"] == []
    views = {f["name"]: (f["view"], f["treatments"]) for f in plan["fields"]}
    assert views["cost"] == ("aggregate", ["aggregate_only"])  # sensitive at L3
    assert views["district"][0] == "record"
    unanswered = form(dataset)
    unanswered["datasets"][0]["conditions"] = ""
    [missing] = platform.call("applicant", "POST", "/applications/plan", json=unanswered).json()
    assert any("conditions" in problem for problem in missing["problems"])

    made = platform.call("applicant", "POST", "/applications", json=form(dataset))
    assert made.status_code == 201, made.text
    application = made.json()["id"]
    assert made.json()["status"] == "draft"

    refused = platform.call("applicant", "POST", f"/applications/{application}/submit")
    assert refused.status_code == 422
    reasons = refused.json()["reasons"]
    assert any("real-name verification" in reason for reason in reasons)
    assert any("commitment letter" in reason for reason in reasons)
    assert ("application.submit", "refused") in actions(platform, application)

    not_a_pdf = platform.call(
        "applicant", "POST", f"/applications/{application}/attachments", content=b"MZ\x90\x00"
    )
    assert not_a_pdf.status_code == 422 and "PDF" in not_a_pdf.json()["detail"]
    attached = platform.call(
        "applicant", "POST", f"/applications/{application}/attachments", content=PDF
    )
    assert attached.status_code == 201, attached.text
    verify(platform)
    sent = platform.call("applicant", "POST", f"/applications/{application}/submit")
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "formal"
    calendar = platform.services.catalog.calendar  # type: ignore[union-attr]
    today = NOW.date()
    assert sent.json()["due_on"] == calendar.add_workdays(today, 5).day.isoformat()
    # The National Day holiday falls in the five days: the deadline moves past it.
    assert date.fromisoformat(sent.json()["due_on"]) > today + timedelta(days=7)

    queue = platform.call("reviewer", "GET", "/applications/queue").json()
    assert [item["id"] for item in queue] == [application]
    checked = platform.call(
        "reviewer", "POST", f"/applications/{application}/check", json={"complete": True}
    )
    assert checked.json()["status"] == "consent", checked.text
    [waiting] = platform.call("provider_steward", "GET", "/applications/queue").json()
    assert waiting["id"] == application
    consented = platform.call(
        "provider_steward",
        "POST",
        f"/applications/{application}/consents/{dataset}",
        json={"consents": True},
    )
    assert consented.json()["status"] == "review", consented.text
    reviewed = platform.call(
        "reviewer",
        "POST",
        f"/applications/{application}/review",
        json={"recommends": True, "opinion": "用途明确，字段最小必要", "risk": RISK},
    )
    assert reviewed.json()["status"] == "approval", reviewed.text
    assert reviewed.json()["due_on"] == calendar.add_workdays(today, 5).day.isoformat()
    decided = platform.call(
        "approver", "POST", f"/applications/{application}/decision", json={"approve": True}
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"
    assert decided.json()["due_on"] is None

    detail = platform.call("applicant", "GET", f"/applications/{application}").json()
    assert [e["step"] for e in detail["events"]] == [
        "submit",
        "check",
        "consent",
        "review",
        "approve",
    ]
    assert detail["events"][3]["risk"]["level"] == "medium"
    assert all(e["on_time"] in (True, None) for e in detail["events"])
    [letter] = detail["attachments"]
    assert letter["media_type"] == "application/pdf"
    read = platform.call(
        "reviewer", "GET", f"/applications/{application}/attachments/{letter['id']}"
    )
    assert read.status_code == 200 and read.content == PDF
    assert [a for a, outcome in actions(platform, application) if outcome == "ok"] == [
        "application.create",
        "application.attach",
        "application.submit",
        "application.check",
        "application.consent",
        "application.review",
        "application.approve",
    ]


def test_the_duties_stay_apart(platform: Platform) -> None:
    dataset = published(platform)
    application = submitted(platform, dataset)
    platform.user("both", "operator", "reviewer", "approver")
    assert (
        platform.call(
            "applicant", "POST", f"/applications/{application}/check", json={"complete": True}
        ).status_code
        == 403
    )
    platform.call("both", "POST", f"/applications/{application}/check", json={"complete": True})
    identity = platform.services.identity
    other = identity.create_organization(
        platform.admin,
        kind=OrganizationType.PROVIDER,
        name="青岛市自然资源和规划局",
        credit_code=credit_code(9),
    ).id
    platform.organizations["other_provider"] = other
    platform.user("other.steward", "other_provider", "provider_steward")
    stranger = platform.call(
        "other.steward",
        "POST",
        f"/applications/{application}/consents/{dataset}",
        json={"consents": True},
    )
    assert stranger.status_code == 404  # it asks nothing of theirs: they do not see it
    platform.call(
        "provider_steward",
        "POST",
        f"/applications/{application}/consents/{dataset}",
        json={"consents": True},
    )
    again = platform.call(
        "provider_steward",
        "POST",
        f"/applications/{application}/consents/{dataset}",
        json={"consents": True},
    )
    assert again.status_code == 409  # on to the review: no consent is waited for
    reviewed = platform.call(
        "both",
        "POST",
        f"/applications/{application}/review",
        json={"recommends": True, "opinion": "同意", "risk": RISK},
    )
    assert reviewed.status_code == 200, reviewed.text
    own = platform.call(
        "both", "POST", f"/applications/{application}/decision", json={"approve": True}
    )
    assert own.status_code == 403
    assert "drafted" in own.json()["detail"]
    assert ("application.approve", "denied") in actions(platform, application)
    admin_token = identity.issue_token(platform.admin, name="tests")[1]
    platform.tokens["admin"] = admin_token
    assert platform.call("admin", "GET", f"/applications/{application}").status_code == 403
    decided = platform.call(
        "approver", "POST", f"/applications/{application}/decision", json={"approve": True}
    )
    assert decided.json()["status"] == "approved", decided.text


def test_a_refusal_gives_reasons_and_the_applicant_amends_and_resubmits(
    platform: Platform,
) -> None:
    dataset = published(platform)
    application = submitted(platform, dataset)
    silent = platform.call(
        "reviewer", "POST", f"/applications/{application}/check", json={"complete": False}
    )
    assert silent.status_code == 422 and "reasons" in silent.json()["detail"]
    refused = platform.call(
        "reviewer",
        "POST",
        f"/applications/{application}/check",
        json={"complete": False, "reasons": ["安全措施未说明数据销毁方式"]},
    )
    assert refused.json()["status"] == "refused", refused.text
    detail = platform.call("applicant", "GET", f"/applications/{application}").json()
    assert detail["events"][-1]["reasons"] == ["安全措施未说明数据销毁方式"]
    changed = form(dataset, security_measures="专人专岗；协议期满后30日内销毁全部中间结果")
    frozen = platform.call("applicant", "PUT", f"/applications/{application}", json=changed)
    assert frozen.status_code == 409 and "only drafts change" in frozen.json()["detail"]
    amended = platform.call("applicant", "POST", f"/applications/{application}/amend")
    assert amended.json()["status"] == "draft" and amended.json()["round"] == 2
    updated = platform.call("applicant", "PUT", f"/applications/{application}", json=changed)
    assert updated.status_code == 200, updated.text
    again = platform.call("applicant", "POST", f"/applications/{application}/submit")
    assert again.json()["status"] == "formal" and again.json()["round"] == 2


def test_an_overdue_application_is_flagged_and_its_late_step_recorded(
    platform: Platform,
) -> None:
    dataset = published(platform)
    application = submitted(platform, dataset)
    assert platform.call("reviewer", "GET", "/applications/overdue").json() == []
    due = date.fromisoformat(
        platform.call("reviewer", "GET", f"/applications/{application}").json()["application"][
            "due_on"
        ]
    )
    late = NOW + (due - NOW.date()) + timedelta(days=1)
    services = platform.services
    services.catalog.clock = lambda: late  # type: ignore[union-attr]
    services.identity.clock = lambda: late
    [overdue] = platform.call("approver", "GET", "/applications/overdue").json()
    assert overdue["id"] == application and overdue["overdue"] is True
    assert platform.call("applicant", "GET", "/applications/overdue").status_code == 403
    platform.call("reviewer", "POST", f"/applications/{application}/check", json={"complete": True})
    detail = platform.call("reviewer", "GET", f"/applications/{application}").json()
    assert detail["events"][-1]["on_time"] is False


def test_others_do_not_see_an_application_and_steps_wait_their_turn(
    platform: Platform,
) -> None:
    dataset = published(platform)
    made = platform.call("applicant", "POST", "/applications", json=form(dataset))
    application = made.json()["id"]
    assert platform.call("reviewer", "GET", f"/applications/{application}").status_code == 404
    early = platform.call(
        "reviewer", "POST", f"/applications/{application}/check", json={"complete": True}
    )
    assert early.status_code == 404  # a draft is its unit's alone
    identity = platform.services.identity
    unit = identity.create_organization(
        platform.admin,
        kind=OrganizationType.APPLICATION_UNIT,
        name="青岛某科技有限公司",
        credit_code=credit_code(8),
    ).id
    platform.organizations["other_unit"] = unit
    platform.user("other.applicant", "other_unit", "applicant")
    assert (
        platform.call("other.applicant", "GET", f"/applications/{application}").status_code == 404
    )
    listed = platform.call("other.applicant", "GET", "/applications").json()
    assert listed["total"] == 0
    application = submitted(platform, dataset)
    decision = platform.call(
        "approver", "POST", f"/applications/{application}/decision", json={"approve": True}
    )
    assert decision.status_code == 403  # nothing to decide on without an opinion
    assert "opinion" in decision.json()["detail"]
    withdrawn = platform.call(
        "applicant",
        "POST",
        f"/applications/{application}/withdraw",
        json={"reason": "项目调整"},
    )
    assert withdrawn.json()["status"] == "withdrawn", withdrawn.text
    late = platform.call(
        "reviewer", "POST", f"/applications/{application}/check", json={"complete": True}
    )
    assert late.status_code == 409
    bad = platform.call(
        "applicant", "POST", "/applications", json=form(dataset, ends_on="2026-10-01")
    )
    assert bad.status_code == 422


def approved(platform: Platform, dataset_id: str) -> str:
    """An application taken through every queue to its approval; its id."""
    application = submitted(platform, dataset_id)
    steps = (
        ("reviewer", "check", {"complete": True}),
        ("provider_steward", f"consents/{dataset_id}", {"consents": True}),
        ("reviewer", "review", {"recommends": True, "opinion": "同意", "risk": RISK}),
        ("approver", "decision", {"approve": True}),
    )
    for who, step, body in steps:
        done = platform.call(who, "POST", f"/applications/{application}/{step}", json=body)
        assert done.status_code == 200, done.text
    return application
