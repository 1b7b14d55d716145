"""The data catalog in the console, on SQLite and PostgreSQL: a provider's steward
registers a dataset, the operator's reviewer and approver publish it, the steward uploads
data and sees its quality report, a data user objects and the steward answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from gateway.api import create_app, open_services
from gateway.db.models import OrganizationType
from gateway.settings import load_settings
from tests import webconsole
from tests.integration.test_catalog import ENTRY, NOW, credit_code, visits_csv
from tests.webconsole import Console

PEOPLE = {  # user name: (organization, roles)
    "steward": ("provider", ("provider_steward",)),
    "applicant": ("application_unit", ("applicant",)),
    "reviewer": ("operator", ("reviewer", "approver")),
    "approver": ("operator", ("approver",)),
}


@dataclass
class Desk(webconsole.Desk):
    """The console with a provider, an application unit and the operator's people, each
    with a password of their own; the catalog's clock stands still at :data:`NOW`."""

    def publish(self, entry: dict[str, Any] | None = None) -> str:
        """A dataset registered, reviewed and approved through the service; its id."""
        catalog = self.console.found.catalog
        assert catalog is not None
        made = catalog.register(self.accounts["steward"].actor(), entry or ENTRY, "首次登记")
        catalog.review(
            self.accounts["reviewer"].actor(), made.id, 1, recommends=True, opinion="合理"
        )
        catalog.decide(self.accounts["approver"].actor(), made.id, 1, approve=True, reason="同意")
        return made.id


@pytest.fixture
def desk(database_url: str, tmp_path: Path) -> Iterator[Desk]:
    settings = load_settings(data_dir=tmp_path / "var", database_url=database_url)
    found = open_services(settings)
    assert found.catalog is not None
    found.catalog.clock = lambda: NOW
    staffed = webconsole.staff(
        found,
        [
            ("provider", OrganizationType.PROVIDER, "青岛市卫生健康委员会", 2),
            ("application_unit", OrganizationType.APPLICATION_UNIT, "海尔数据科技有限公司", 3),
        ],
        PEOPLE,
        credit_code,
    )
    with TestClient(create_app(settings, found), base_url="https://testserver") as client:
        yield Desk(Console(client, found, staffed.admin_password), staffed.accounts)
    found.close()


def registration(entry: dict[str, Any], reason: str = "首次登记") -> dict[str, str]:
    """The registration form filled in for ``entry``."""
    lines = [
        " | ".join(
            [f["name"], f["type"], f["sensitivity"], f.get("identifier") or "", f["description"]]
        )
        for f in entry["fields"]
    ]
    return {
        "name": entry["name"],
        "description": entry["description"],
        "update_cycle": entry["update_cycle"],
        "format": entry["format"],
        "share": entry["share"],
        "open": entry["open"],
        "level": entry["level"],
        "usage_conditions": entry["usage_conditions"],
        "basis_share": entry["legal_basis"].get("share", ""),
        "basis_open": entry["legal_basis"].get("open", ""),
        "fields": "\r\n".join(lines),
        "reason": reason,
    }


def alert(page: Response) -> str:
    found = re.search(r'<div class="error" role="alert"[^>]*>(.*?)</div>', page.text, re.S)
    assert found, page.text
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def section(page: Response, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}".*?</(section|table)>', page.text, re.S)
    assert found, f"no {testid} on the page"
    return found.group(0)


def test_a_dataset_from_registration_to_a_closed_objection(desk: Desk) -> None:
    client = desk.client
    csrf = desk.sign_in("steward")
    listing = client.get("/catalog")
    assert 'href="/catalog/new"' in listing.text and "登记数据资源" in listing.text
    assert client.get("/").text.count('href="/catalog"') == 1  # in the navigation

    # A line that does not parse: the errors name the lines, and what was typed stays.
    form = registration(ENTRY)
    typed = form["fields"] + "\r\nvisit_time | when | quasi_identifier | | 就诊时间\r\ncost decimal"
    wrong = client.post("/catalog", data={**form, "fields": typed, "csrf_token": csrf})
    assert wrong.status_code == 422
    assert "第 7 行：when 不是字段类型" in alert(wrong)
    assert "第 8 行：" in alert(wrong) and "|" in alert(wrong)
    assert 'value="门诊就诊记录"' in wrong.text and "visit_time | when" in wrong.text
    refused = client.post(
        "/catalog", data={**form, "basis_share": "", "csrf_token": csrf}
    )  # the service's own check: a restriction needs its legal basis
    assert refused.status_code == 422 and "legal basis" in alert(refused)
    assert ("catalog.register", "ok") not in desk.actions()

    registered = client.post("/catalog", data={**form, "csrf_token": csrf})
    assert registered.status_code == 200 and registered.history[0].status_code == 303
    assert "数据资源已登记" in registered.text
    dataset = registered.url.path.rsplit("/", 1)[1]
    pending = section(registered, "pending")
    assert "修订 1 待决定" in pending and "2026-10-12" in pending
    assert 'data-testid="opinion-form"' not in registered.text  # not the steward's to give
    assert 'data-testid="upload"' not in registered.text  # not published yet

    # The reviewer's opinion; the same person may not then decide (separation of duties).
    csrf = desk.sign_in("reviewer")
    page = client.get(f"/catalog/{dataset}")
    assert "审核人出具意见后，由审批人决定。" in page.text
    reviewed = client.post(
        f"/catalog/{dataset}/revisions/1/opinion",
        data={"recommends": "yes", "opinion": "字段分级合理，限制有法律依据", "csrf_token": csrf},
    )
    assert "审核意见已记录" in reviewed.text
    assert "建议批准" in section(reviewed, "opinion")
    own = client.post(
        f"/catalog/{dataset}/revisions/1/decision",
        data={"decision": "approve", "reason": "同意", "csrf_token": csrf},
    )
    assert own.status_code == 403
    assert alert(own) == "nobody decides on what they drafted an opinion on"
    assert "<h1>门诊就诊记录" in own.text and 'value="同意"' in own.text  # the page, kept
    assert ("catalog.approve", "denied") in desk.actions()

    csrf = desk.sign_in("approver")
    approved = client.post(
        f"/catalog/{dataset}/revisions/1/decision",
        data={"decision": "approve", "reason": "同意发布", "csrf_token": csrf},
    )
    assert "修订已批准，现行有效" in approved.text
    assert 'data-testid="status">已发布<' in approved.text
    assert 'data-testid="pending"' not in approved.text
    history = section(approved, "revisions")
    assert "已批准" in history and "同意发布" in history and "建议批准" in history

    # A file that does not match the entry is refused with its problems, and nothing kept.
    csrf = desk.sign_in("steward")
    upload = f"/catalog/{dataset}/versions"
    bad = client.post(
        upload,
        data={"csrf_token": csrf},
        files={"file": ("visits.csv", b"id_number,district\n1,2\n", "text/csv")},
    )
    assert bad.status_code == 422
    assert "文件未通过检查，未作存储：" in alert(bad)
    assert "fields missing from the file: visit_date, diagnosis, cost, remark" in alert(bad)
    assert "尚未上传版本" in bad.text
    assert desk.console.found.catalog.vault.versions() == []  # type: ignore[union-attr]

    data = visits_csv(200, bad_ids=3, phones_in_remark=40)
    uploaded = client.post(
        upload, data={"csrf_token": csrf}, files={"file": ("visits.csv", data, "text/csv")}
    )
    assert uploaded.status_code == 200 and "文件已通过检查并存储" in uploaded.text
    assert "200 行，其中 0 行完全重复" in section(uploaded, "quality-summary")
    quality = section(uploaded, "quality")
    id_number = re.search(r'data-field="id_number">(.*?)</tr>', quality, re.S)
    assert id_number and "98.5%" in id_number.group(1)  # 3 of 200 fail their checksum
    remark = re.search(r'data-field="remark">(.*?)</tr>', quality, re.S)
    assert remark and "20.0%" in remark.group(1) and "手机号码 100.0%" in remark.group(1)
    warnings = section(uploaded, "warnings")
    assert "remark: 100.0% of sampled values hold mobile identifiers" in warnings
    assert "id_number: 1.5% of identifiers fail their checksum" in warnings

    # A data user objects; the steward extends the deadline once and answers.
    csrf = desk.sign_in("applicant")
    page = client.get(f"/catalog/{dataset}")
    assert 'data-testid="upload"' not in page.text and "/revise" not in page.text
    version = re.search(r'<option value="([0-9a-f]{32})"', page.text)
    assert version is not None
    raised = client.post(
        f"/catalog/{dataset}/objections",
        data={"text": "部分身份证号校验位错误", "version": version.group(1), "csrf_token": csrf},
    )
    assert "异议已提出" in raised.text
    objection = section(raised, "objection")
    assert "待答复" in objection and "2026-10-12" in objection and "针对版本 1" in objection
    objection_id = re.search(r'data-objection="([0-9a-f]{32})"', objection)
    assert objection_id is not None
    path = f"/catalog/objections/{objection_id.group(1)}"

    csrf = desk.sign_in("steward")
    extended = client.post(
        f"{path}/extension", data={"reason": "需核对源系统", "dataset": dataset, "csrf_token": csrf}
    )
    objection = section(extended, "objection")
    assert "答复期限已延长至十五个工作日" in extended.text
    assert "2026-10-26" in objection and "已延期" in objection and "需核对源系统" in objection
    again = client.post(
        f"{path}/extension", data={"reason": "再延", "dataset": dataset, "csrf_token": csrf}
    )
    assert again.status_code == 409 and "extended once already" in alert(again)
    answered = client.post(
        f"{path}/answer", data={"text": "已更正三条记录", "dataset": dataset, "csrf_token": csrf}
    )
    assert "答复已记录" in answered.text and "已更正三条记录" in section(answered, "answer")
    assert f"{path}/close" not in answered.text  # closing is the objector's

    csrf = desk.sign_in("applicant")
    closed = client.post(f"{path}/close", data={"dataset": dataset, "csrf_token": csrf})
    assert "异议已关闭" in closed.text and "已关闭" in section(closed, "objection")
    assert 'data-testid="overdue"' not in closed.text
    for action in ("catalog.register", "catalog.review", "catalog.approve", "dataset.upload"):
        assert (action, "ok") in desk.actions()
    assert ("dataset.upload", "refused") in desk.actions()
    assert ("objection.close", "ok") in desk.actions()


def test_the_dataset_page_speaks_chinese_and_english(desk: Desk) -> None:
    dataset = desk.publish()
    desk.sign_in("applicant")
    chinese = desk.client.get(f"/catalog/{dataset}")
    entry = section(chinese, "entry")
    for text in ("共享属性", "有条件共享", "不予开放", "三级（敏感）", "每月", "法律依据"):
        assert text in entry, text
    fields = section(chinese, "fields")
    assert "直接标识符" in fields and "居民身份证号码" in fields and "敏感属性" in fields
    assert '<html lang="zh-CN">' in chinese.text and ">数据目录</a>" in chinese.text
    desk.client.cookies.set("sbx_lang", "en")
    english = desk.client.get(f"/catalog/{dataset}")
    entry = section(english, "entry")
    for text in ("Share attribute", "Shared on conditions", "Not open", "level 3 (sensitive)"):
        assert text in entry, text
    fields = section(english, "fields")
    assert "direct identifier" in fields and "Resident ID number" in fields
    assert "直接标识符" not in english.text
    listing = desk.client.get("/catalog")
    assert "Data catalog" in listing.text and "Published" in section(listing, "datasets")


def test_drafts_search_paging_and_forms_follow_who_may(desk: Desk) -> None:
    catalog = desk.console.found.catalog
    assert catalog is not None
    steward = desk.accounts["steward"].actor()
    published = desk.publish()
    for n in range(20):
        catalog.register(steward, {**ENTRY, "name": f"草稿数据 {n:02d}"}, "登记")
    desk.sign_in("steward")
    first = desk.client.get("/catalog")
    assert "共 21 个；第 1 页，共 2 页。" in first.text and "草稿" in first.text
    second = desk.client.get("/catalog", params={"page": 2})
    assert second.text.count("data-dataset=") == 1 and "下一页" not in second.text
    found = desk.client.get("/catalog", params={"q": "草稿数据 07"})
    assert found.text.count("data-dataset=") == 1
    none = desk.client.get("/catalog", params={"q": "不存在"})
    assert "没有符合条件的数据资源" in none.text

    desk.sign_in("applicant")  # drafts are the provider's until published
    listing = desk.client.get("/catalog")
    assert listing.text.count("data-dataset=") == 1 and "/catalog/new" not in listing.text
    # one of the steward's drafts (all were registered at the same fixed moment, so their
    # order among themselves and the published one is the ids')
    drafts = [d for d in re.findall(r'data-dataset="([0-9a-f]{32})"', first.text) if d != published]
    assert drafts
    assert desk.client.get(f"/catalog/{drafts[0]}").status_code == 404
    assert desk.client.get("/catalog/new").status_code == 403
    page = desk.client.get(f"/catalog/{published}")
    assert 'data-testid="objection-form"' in page.text
    assert 'data-testid="opinion-form"' not in page.text

    desk.sign_in("approver")  # no objections for the approver to read
    page = desk.client.get(f"/catalog/{published}")
    assert page.status_code == 200 and 'data-testid="objection-form"' not in page.text
    assert "<h2>异议</h2>" not in page.text


def test_a_change_that_restricts_is_marked_and_unknown_years_are_provisional(
    desk: Desk,
) -> None:
    catalog = desk.console.found.catalog
    assert catalog is not None
    dataset = desk.publish({**ENTRY, "share": "unconditional", "legal_basis": {"open": "依据"}})
    catalog.clock = lambda: datetime(2026, 12, 28, 3, 0, tzinfo=UTC)  # deadlines in 2027
    csrf = desk.sign_in("steward")
    form = desk.client.get(f"/catalog/{dataset}/revise")
    assert form.status_code == 200 and 'value="门诊就诊记录"' in form.text
    assert "id_number | string | direct_identifier | resident_id | 身份证号" in form.text
    changed = registration(
        {**ENTRY, "share": "not_shared", "legal_basis": {"share": "新依据", "open": "依据"}},
        reason="收紧共享",
    )
    requested = desk.client.post(
        f"/catalog/{dataset}/revisions", data={**changed, "csrf_token": csrf}
    )
    assert "变更申请已提交" in requested.text
    changes = section(requested, "changes")
    assert re.search(
        r'class="less-open">\s*<th>共享属性 <span class="tag danger">开放程度降低', changes
    )
    assert "无条件共享" in changes and "不予共享" in changes
    assert "2027 年节假日安排尚未公布" in section(requested, "pending")
    twice = desk.client.post(f"/catalog/{dataset}/revisions", data={**changed, "csrf_token": csrf})
    assert twice.status_code == 409 and "waiting for a decision already" in alert(twice)
    assert 'value="收紧共享"' in twice.text

    csrf = desk.sign_in("applicant")
    raised = desk.client.post(
        f"/catalog/{dataset}/objections", data={"text": "缺少十二月数据", "csrf_token": csrf}
    )
    objection = section(raised, "objection")
    assert "2027 年节假日安排尚未公布" in objection
    catalog.clock = lambda: datetime(2027, 2, 1, 3, 0, tzinfo=UTC)
    late = section(desk.client.get(f"/catalog/{dataset}"), "objection")
    assert 'data-testid="overdue">已逾期<' in late
