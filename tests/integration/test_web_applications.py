"""Applications and agreements in the console, on SQLite and PostgreSQL: an applicant
drafts an application through the form, attaches the commitment letter and submits it
(refused first, with every reason); the reviewer checks it, the provider's steward
consents, the reviewer gives an opinion and the approver decides; both organizations sign
the agreement and the approver makes the grant. The duties stay apart as the pages show
them, refusals come back as pages, and the pages speak Chinese and English."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from gateway.api import create_app, open_services
from gateway.applications.service import COMMITMENT, ApplicationService
from gateway.authz import Actor
from gateway.db.models import OrganizationType, VerificationStatus
from gateway.settings import load_settings
from tests import webconsole
from tests.integration.test_applications import PDF, RISK, form
from tests.integration.test_catalog import ENTRY, NOW, credit_code, visits_csv
from tests.integration.test_web_catalog import alert, section
from tests.webconsole import Console

PEOPLE = {  # user name: (organization, roles)
    "applicant": ("unit", ("applicant",)),
    "steward": ("provider", ("provider_steward",)),
    "reviewer": ("operator", ("reviewer", "approver")),  # may approve, but not their own opinion
    "approver": ("operator", ("approver",)),
    "stranger": ("other_unit", ("applicant",)),
}


@dataclass
class Desk(webconsole.Desk):
    """The console with a provider whose conditional dataset is published and has data,
    two application units and the operator's people; the services' clock stands still at
    :data:`NOW` (the Tuesday before the National Day holiday)."""

    organizations: dict[str, str]
    admin: Actor
    dataset: str

    @property
    def applications(self) -> ApplicationService:
        assert self.console.found.applications is not None
        return self.console.found.applications

    def verify_unit(self) -> None:
        self.console.found.identity.set_organization_verification(
            self.admin, self.organizations["unit"], VerificationStatus.VERIFIED, "营业执照核验通过"
        )

    def submitted(self) -> str:
        """An application drafted, with its letter, and submitted through the service."""
        actor = self.accounts["applicant"].actor()
        made = self.applications.draft(actor, form(self.dataset))
        self.applications.attach(actor, made.id, kind=COMMITMENT, name="承诺书.pdf", content=PDF)
        self.verify_unit()
        return self.applications.submit(actor, made.id).id


@pytest.fixture
def desk(database_url: str, tmp_path: Path) -> Iterator[Desk]:
    settings = load_settings(data_dir=tmp_path / "var", database_url=database_url)
    found = open_services(settings)
    catalog = found.catalog
    assert catalog is not None
    catalog.clock = lambda: NOW
    staffed = webconsole.staff(
        found,
        [
            ("provider", OrganizationType.PROVIDER, "青岛市卫生健康委员会", 2),
            ("unit", OrganizationType.APPLICATION_UNIT, "海尔数据科技有限公司", 3),
            ("other_unit", OrganizationType.APPLICATION_UNIT, "青岛某科技有限公司", 4),
        ],
        PEOPLE,
        credit_code,
    )
    accounts, organizations, admin = staffed.accounts, staffed.organizations, staffed.admin
    steward = accounts["steward"].actor()
    dataset = catalog.register(steward, ENTRY, "首次登记").id
    catalog.review(accounts["reviewer"].actor(), dataset, 1, recommends=True, opinion="合理")
    catalog.decide(accounts["approver"].actor(), dataset, 1, approve=True, reason="同意")
    catalog.upload(steward, dataset, [visits_csv(200)], filename="visits.csv")
    with TestClient(create_app(settings, found), base_url="https://testserver") as client:
        yield Desk(
            Console(client, found, staffed.admin_password), accounts, organizations, admin, dataset
        )
    found.close()


def filled(dataset: str, csrf: str, **changes: Any) -> dict[str, Any]:
    """The new-application form filled in for the clinic study."""
    values: dict[str, Any] = {
        "csrf_token": csrf,
        "dataset": dataset,
        "title": "门诊资源配置研究",
        "purpose": "分析各区门诊就诊量与费用，支持医疗资源配置",
        "scenario": "在沙箱内建立区县层面的就诊量模型，只导出聚合结果",
        "starts_on": "2026-10-15",
        "ends_on": "2027-10-14",
        "security_measures": "专人专岗，仅在平台沙箱内处理，结果经审核后导出",
        "conditions": "本研究属医疗健康研究，已取得伦理审查批件",
        "field": ["district", "visit_date", "cost"],
        "justification.district": "按区统计就诊量",
        "justification.visit_date": "按月观察变化",
        "justification.cost": "估计费用负担",
        "justification.remark": "",
    }
    return {**values, **changes}


def row(html: str, field: str) -> str:
    found = re.search(rf'data-field="{field}">(.*?)</tr>', html, re.S)
    assert found, f"no row of {field}"
    return found.group(1)


def status_of(page: Response) -> str:
    found = re.search(r'data-testid="status">([^<]+)<', page.text)
    assert found, page.text
    return found.group(1)


def test_an_application_from_the_form_to_a_grant(desk: Desk) -> None:
    client = desk.client
    csrf = desk.sign_in("applicant")
    listing = client.get("/applications")
    assert listing.status_code == 200 and 'data-testid="new-application"' in listing.text
    assert ">申请</a>" in listing.text  # in the navigation
    assert 'data-testid="queue"' not in listing.text and 'data-testid="late"' not in listing.text

    blank = client.get("/applications/new")
    assert f'value="{desk.dataset}"' in blank.text and "门诊就诊记录" in blank.text
    assert "一份申请涉及多个数据资源的，请通过 API 提交" in blank.text
    assert 'data-testid="application-form"' not in blank.text
    chosen = client.get("/applications/new", params={"dataset": desk.dataset})
    fields = section(chosen, "fields")
    assert "仅聚合视图" in row(fields, "cost") and "仅用于聚合" in row(fields, "cost")
    assert "记录级视图" in row(fields, "district") and "泛化" in row(fields, "district")
    assert "假名化" in row(fields, "id_number")
    assert "仅限经批准的医疗健康研究使用" in chosen.text  # the usage conditions to meet

    wrong = client.post("/applications", data=filled(desk.dataset, csrf, ends_on="2026-10-01"))
    assert wrong.status_code == 422 and "the period ends after it starts" in alert(wrong)
    assert 'value="门诊资源配置研究"' in wrong.text and 'value="按区统计就诊量"' in wrong.text
    made = client.post("/applications", data=filled(desk.dataset, csrf))
    assert made.status_code == 200 and made.history[0].status_code == 303
    assert "申请草稿已保存" in made.text and status_of(made) == "草稿"
    application = made.url.path.rsplit("/", 1)[1]
    assert "按区统计就诊量" in row(section(made, "fields"), "district")
    submit = f"/applications/{application}/submit"

    # Submitting without the letter, for a unit not verified yet: every reason is shown.
    refused = client.post(submit, data={"csrf_token": csrf})
    assert refused.status_code == 422
    reasons = alert(refused)
    assert reasons.startswith("申请暂不能提交：")
    assert "real-name verification is not complete" in reasons
    assert "the security commitment letter is not attached" in reasons
    assert ("application.submit", "refused") in desk.actions()

    upload = f"/applications/{application}/attachments"
    exe = client.post(upload, data={"csrf_token": csrf}, files={"file": ("承诺书.exe", b"MZ\x90")})
    assert exe.status_code == 422 and "PDF, PNG or JPEG" in alert(exe)
    letter = {"file": ("承诺书.pdf", PDF, "application/pdf")}
    attached = client.post(upload, data={"csrf_token": csrf}, files=letter)
    assert "材料已上传" in attached.text and "安全承诺书" in section(attached, "documents")
    link = re.search(r'href="(/applications/\w+/attachments/\w+)"', attached.text)
    assert link is not None
    document = client.get(link.group(1))
    assert document.content == PDF and document.headers["content-type"] == "application/pdf"
    desk.verify_unit()
    sent = client.post(submit, data={"csrf_token": csrf})
    assert "申请已提交" in sent.text and status_of(sent) == "待形式审查"
    assert "2026-10-12" in section(sent, "summary")  # five working days past the holiday
    assert 'data-testid="upload"' not in sent.text  # documents go with drafts

    # The formal check: a refusal needs its reasons.
    csrf = desk.sign_in("reviewer")
    assert application in section(client.get("/applications"), "queue")
    page = client.get(f"/applications/{application}")
    assert 'data-testid="check-form"' in page.text and 'data-testid="review-form"' not in page.text
    check = f"/applications/{application}/check"
    silent = client.post(check, data={"complete": "no", "reasons": " \r\n", "csrf_token": csrf})
    assert silent.status_code == 422 and "a refusal gives its reasons" in alert(silent)
    checked = client.post(check, data={"complete": "yes", "reasons": "", "csrf_token": csrf})
    assert "形式审查结果已记录" in checked.text and status_of(checked) == "待提供单位同意"

    csrf = desk.sign_in("steward")
    assert application in section(client.get("/applications"), "queue")
    consent = f"/applications/{application}/consents/{desk.dataset}"
    consented = client.post(consent, data={"consents": "yes", "reasons": "", "csrf_token": csrf})
    assert "本单位意见已记录" in consented.text and status_of(consented) == "实质审查中"
    assert 'data-testid="consent-form"' not in consented.text

    # The opinion's author holds the approver role too, and still may not decide.
    csrf = desk.sign_in("reviewer")
    opinion = {
        "recommends": "yes",
        "opinion": "用途明确，字段最小必要",
        **RISK,
        "csrf_token": csrf,
    }
    reviewed = client.post(f"/applications/{application}/review", data=opinion)
    assert "审核意见已记录" in reviewed.text and status_of(reviewed) == "待审批"
    assert 'data-testid="decision-form"' not in reviewed.text
    assert "本申请须由审查意见出具人以外的审批人作出决定" in reviewed.text
    decision = f"/applications/{application}/decision"
    own = client.post(decision, data={"decision": "approve", "note": "同意", "csrf_token": csrf})
    assert own.status_code == 403
    assert alert(own) == "nobody decides on what they drafted an opinion on"
    assert ("application.approve", "denied") in desk.actions()

    csrf = desk.sign_in("approver")
    assert application in section(client.get("/applications"), "queue")
    page = client.get(f"/applications/{application}")
    assert 'data-testid="decision-form"' in page.text and "区县与就诊日期组合" in page.text
    decided = client.post(
        decision, data={"decision": "approve", "note": "同意", "csrf_token": csrf}
    )
    assert "申请已批准" in decided.text and status_of(decided) == "已批准"
    history = section(decided, "history")
    for step in ("提交申请", "形式审查通过", "提供单位同意", "出具实质审查意见", "已批准"):
        assert step in history, step
    assert "区县与就诊日期组合可能缩小人群" in history and "按期" in history
    assert 'data-testid="late"' not in history

    # The agreement: made on request, signed by both organizations.
    csrf = desk.sign_in("applicant")
    page = client.get(f"/applications/{application}")
    assert 'id="show-agreement"' in page.text and 'data-testid="agreement-number"' not in page.text
    shown = client.post(f"/applications/{application}/agreement", data={"csrf_token": csrf})
    agreement = shown.url.params["agreement"]
    assert 'data-testid="agreement-number">SBX-2026-00001<' in shown.text
    assert 'data-testid="agreement-status">待签署<' in shown.text
    assert "the applicant has not signed" in shown.text
    sign = f"/agreements/{agreement}/signature"
    signed = client.post(sign, data={"csrf_token": csrf})
    assert "已代表本单位签署协议" in signed.text and 'data-testid="sign-form"' not in signed.text
    assert "the applicant has not signed" not in signed.text
    twice = client.post(sign, data={"csrf_token": csrf})
    assert twice.status_code == 409 and "signed this agreement already" in alert(twice)
    assert 'data-testid="grant-form"' not in signed.text  # grants are the approver's

    csrf = desk.sign_in("approver")
    again = client.post(f"/applications/{application}/agreement", data={"csrf_token": csrf})
    assert again.url.params["agreement"] == agreement  # one agreement per application
    both = client.post(sign, data={"csrf_token": csrf})
    assert 'data-testid="agreement-status">双方已签署<' in both.text
    assert 'data-testid="agreement-valid"' in both.text
    text = client.get(f"/agreements/{agreement}/document")
    assert hashlib.sha256(text.content).hexdigest() in section(both, "agreement")
    pdf = client.get(f"/agreements/{agreement}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")

    # The grant: one record-level view with the agreed treatments.
    grant_form = section(both, "grant-form")
    member = desk.accounts["applicant"].id
    assert f'name="member" value="{member}"' in grant_form
    assert "cost" not in grant_form  # aggregated only: no record-level view holds it
    key = f"{desk.dataset}."
    grant = {
        "csrf_token": csrf,
        "grant_id": "clinic-2026",
        "member": [member],
        "view_name": "visits",
        "k": "5",
        "dataset": desk.dataset,
        "field": [key + "district", key + "visit_date"],
        f"treatment.{key}district": "generalize",
        f"to.{key}district": "district",
        f"treatment.{key}visit_date": "generalize",
        f"to.{key}visit_date": "month",
    }
    loose = client.post(
        f"/agreements/{agreement}/grant", data={**grant, f"treatment.{key}district": "keep"}
    )
    assert loose.status_code == 422 and "district" in alert(loose)
    assert 'value="clinic-2026"' in loose.text
    made_grant = client.post(f"/agreements/{agreement}/grant", data=grant, follow_redirects=False)
    assert made_grant.status_code == 303, made_grant.text
    assert made_grant.headers["location"].startswith("/grants")
    grants = client.get(made_grant.headers["location"])
    assert 'data-grant="clinic-2026"' in grants.text and "门诊资源配置研究" in grants.text
    for action in ("agreement.create", "agreement.sign", "view.build", "grant.create"):
        assert (action, "ok") in desk.actions(), action


def test_a_refusal_gives_its_reasons_and_the_applicant_amends_or_withdraws(desk: Desk) -> None:
    application = desk.submitted()
    client = desk.client
    csrf = desk.sign_in("reviewer")
    check = f"/applications/{application}/check"
    reasons = "安全措施未说明数据销毁方式\r\n期限超出研究需要\r\n"
    refused = client.post(check, data={"complete": "no", "reasons": reasons, "csrf_token": csrf})
    assert status_of(refused) == "未通过"
    history = section(refused, "history")
    assert (
        "<li>安全措施未说明数据销毁方式</li>" in history and "<li>期限超出研究需要</li>" in history
    )
    late = client.post(check, data={"complete": "yes", "csrf_token": csrf})
    assert late.status_code == 409 and "check is taken only when it is formal" in alert(late)

    csrf = desk.sign_in("applicant")
    page = client.get(f"/applications/{application}")
    assert 'data-testid="amend-form"' in page.text and 'data-testid="submit-form"' not in page.text
    amended = client.post(f"/applications/{application}/amend", data={"csrf_token": csrf})
    assert "申请已退回为草稿" in amended.text and status_of(amended) == "草稿"
    assert "退回草稿，进入新一轮" in section(amended, "history")
    assert re.search(r"<th>轮次</th><td>2</td>", amended.text)
    assert 'data-testid="upload"' in amended.text and 'data-testid="submit-form"' in amended.text
    withdraw = f"/applications/{application}/withdraw"
    empty = client.post(withdraw, data={"reason": "", "csrf_token": csrf})
    assert empty.status_code == 422 and "reason" in alert(empty)
    withdrawn = client.post(withdraw, data={"reason": "项目调整", "csrf_token": csrf})
    assert "申请已撤回" in withdrawn.text and status_of(withdrawn) == "已撤回"
    assert "项目调整" in section(withdrawn, "history")
    assert 'data-testid="actions"' not in withdrawn.text


def test_others_get_refusals_and_the_operator_sees_what_is_overdue(desk: Desk) -> None:
    application = desk.submitted()
    client = desk.client
    page = f"/applications/{application}"
    csrf = desk.sign_in("applicant")
    missing = client.post(f"{page}/withdraw", data={"reason": "项目调整"})
    assert missing.status_code == 403 and "CSRF" in missing.text
    wrong = client.post(f"{page}/withdraw", data={"reason": "项目调整", "csrf_token": "x"})
    assert wrong.status_code == 403
    assert ("application.withdraw", "ok") not in desk.actions()
    early = client.post(f"{page}/agreement", data={"csrf_token": csrf})
    assert early.status_code == 409 and "not approved" in alert(early)
    assert client.post(f"{page}/check", data={"csrf_token": csrf}).status_code == 403

    csrf = desk.sign_in("stranger")  # another unit's applicant: the application is not there
    assert client.get(page).status_code == 404
    assert application not in client.get("/applications").text
    hidden = client.post(f"{page}/withdraw", data={"reason": "试探", "csrf_token": csrf})
    assert hidden.status_code == 404 and "no application" in hidden.text
    assert client.get(f"{page}/attachments/{'0' * 32}").status_code == 404

    late = NOW + timedelta(days=30)
    assert desk.console.found.catalog is not None
    desk.console.found.catalog.clock = lambda: late
    desk.sign_in("approver")
    listing = client.get("/applications")
    overdue = section(listing, "late")
    assert application in overdue and "已逾期" in overdue
    assert application not in section(listing, "queue")  # the check is a reviewer's


def test_the_pages_speak_chinese_and_english(desk: Desk) -> None:
    application = desk.submitted()
    desk.sign_in("reviewer")
    chinese = desk.client.get(f"/applications/{application}")
    assert '<html lang="zh-CN">' in chinese.text
    for text in (
        "<h2>申请内容</h2>",
        "<h2>办理记录</h2>",
        "<h2>申请材料</h2>",
        "<h3>形式审查</h3>",
    ):
        assert text in chinese.text, text
    assert "待形式审查" in chinese.text and "记录级视图" in chinese.text
    desk.client.cookies.set("sbx_lang", "en")
    english = desk.client.get(f"/applications/{application}")
    for text in ("<h2>The application</h2>", "<h2>History</h2>", "<h2>Documents</h2>"):
        assert text in english.text, text
    assert "Waiting for the formal check" in english.text and "Record-level view" in english.text
    assert "办理记录" not in english.text and "形式审查" not in english.text
    listing = desk.client.get("/applications")
    assert "<h1>Applications</h1>" in listing.text and "Waiting for you" in listing.text
