"""The catalog through the API: a provider registers a dataset, a reviewer and an
approver publish it, the provider uploads data checked against the entry and stored
encrypted, a data user objects and the provider answers on the working-day calendar."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from audit.entry import parse
from gateway.api import create_app, open_services
from gateway.api.deps import Services
from gateway.authz import Actor
from gateway.db.models import OrganizationType
from gateway.settings import Settings, load_settings
from sandbox.identifiers.credit_code import check_character as code_check
from sandbox.identifiers.resident_id import check_character as id_check
from tests.xlsx import write_xlsx

NOW = datetime(2026, 9, 29, 3, 0, tzinfo=UTC)  # a Tuesday; the National Day holiday follows


def credit_code(serial: int) -> str:
    head = f"91370200MA{serial:07d}"
    return head + code_check(head)


def resident_id(serial: int) -> str:
    head = f"37020219800101{serial % 1000:03d}"
    return head + id_check(head)


@dataclass
class Platform:
    client: TestClient
    services: Services
    tokens: dict[str, str]  # role -> bearer token
    organizations: dict[str, str]
    admin: Actor

    def user(self, name: str, organization: str, *roles: str) -> None:
        """One more user, whose token is ``tokens[name]``."""
        account, _ = self.services.identity.create_user(
            self.admin,
            organization_id=self.organizations[organization],
            username=name,
            display_name=name,
            roles=roles,
        )
        self.tokens[name] = self.services.identity.issue_token(account.actor(), name="tests")[1]

    def call(self, role: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}", **kwargs.pop("headers", {})}
        return self.client.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    def entries(self) -> list[dict[str, Any]]:
        return [parse(line) for _, line in self.services.ledger.entries(1)]


def build_platform(settings: Settings) -> Platform:
    """An operator with a reviewer and an approver, a provider with a steward and an
    application unit with an applicant, each with a token; the client not started yet."""
    services = open_services(settings)
    identity = services.identity
    identity.clock = lambda: NOW
    assert services.catalog is not None
    services.catalog.clock = lambda: NOW
    made = identity.bootstrap_admin(operator_name="运营", credit_code=credit_code(1))
    assert made is not None
    admin = made[0].actor()
    operator = made[0].organization_id
    organizations = {"operator": operator}
    for kind, name, serial in (
        (OrganizationType.PROVIDER, "青岛市卫生健康委员会", 2),
        (OrganizationType.APPLICATION_UNIT, "海尔数据科技有限公司", 3),
    ):
        organizations[kind.value] = identity.create_organization(
            admin, kind=kind, name=name, credit_code=credit_code(serial)
        ).id
    tokens = {}
    for role, organization in (
        ("provider_steward", organizations["provider"]),
        ("applicant", organizations["application_unit"]),
        ("reviewer", operator),
        ("approver", operator),
    ):
        account, _ = identity.create_user(
            admin,
            organization_id=organization,
            username=role.replace("_", "."),
            display_name=role,
            roles=(role,),
        )
        tokens[role] = identity.issue_token(account.actor(), name="tests")[1]
    client = TestClient(create_app(settings, services))
    return Platform(client, services, tokens, organizations, admin)


@pytest.fixture
def platform(database_url: str, tmp_path: Path) -> Iterator[Platform]:
    made = build_platform(load_settings(data_dir=tmp_path / "var", database_url=database_url))
    with made.client:
        yield made
    made.services.close()


ENTRY: dict[str, Any] = {
    "name": "门诊就诊记录",
    "description": "全市二级以上医院门诊就诊记录（脱敏前）",
    "fields": [
        {
            "name": "id_number",
            "type": "string",
            "description": "身份证号",
            "sensitivity": "direct_identifier",
            "identifier": "resident_id",
        },
        {
            "name": "district",
            "type": "string",
            "description": "所在区",
            "sensitivity": "quasi_identifier",
        },
        {
            "name": "visit_date",
            "type": "date",
            "description": "就诊日期",
            "sensitivity": "quasi_identifier",
        },
        {
            "name": "diagnosis",
            "type": "string",
            "description": "诊断",
            "sensitivity": "sensitive_attribute",
        },
        {
            "name": "cost",
            "type": "decimal",
            "description": "费用（元）",
            "sensitivity": "sensitive_attribute",
        },
        {"name": "remark", "type": "string", "description": "备注", "sensitivity": "ordinary"},
    ],
    "update_cycle": "monthly",
    "format": "csv",
    "share": "conditional",
    "open": "not_open",
    "level": "L3",
    "usage_conditions": "仅限经批准的医疗健康研究使用",
    "legal_basis": {
        "share": "《青岛市公共数据管理办法》第二十一条",
        "open": "个人信息保护法第二十八条",
    },
}


def visits_csv(rows: int = 200, *, bad_ids: int = 0, phones_in_remark: int = 0) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id_number", "district", "visit_date", "diagnosis", "cost", "remark"])
    for n in range(rows):
        number = resident_id(n)
        if n < bad_ids:
            number = number[:-1] + ("0" if number[-1] != "0" else "1")
        remark = f"联系电话 1380013{n:04d}" if n < phones_in_remark else ""
        writer.writerow(
            [number, "市南区", f"2026-0{1 + n % 8}-15", "高血压", f"{100 + n}.5", remark]
        )
    return out.getvalue().encode()


def published(platform: Platform, entry: dict[str, Any] | None = None) -> str:
    """Register a dataset and take it through review and approval; its id."""
    made = platform.call(
        "provider_steward",
        "POST",
        "/datasets",
        json={"entry": entry or ENTRY, "reason": "首次登记"},
    )
    assert made.status_code == 201, made.text
    dataset = made.json()
    assert dataset["status"] == "draft" and dataset["pending"]["number"] == 1
    opinion = platform.call(
        "reviewer",
        "POST",
        f"/datasets/{dataset['id']}/revisions/1/opinion",
        json={"recommends": True, "opinion": "字段分级合理，限制有法律依据"},
    )
    assert opinion.status_code == 200, opinion.text
    decided = platform.call(
        "approver",
        "POST",
        f"/datasets/{dataset['id']}/revisions/1/decision",
        json={"approve": True, "reason": "同意发布"},
    )
    assert decided.status_code == 200, decided.text
    return str(dataset["id"])


def test_a_dataset_is_registered_reviewed_approved_and_visible(platform: Platform) -> None:
    dataset_id = published(platform)
    shown = platform.call("applicant", "GET", f"/datasets/{dataset_id}").json()
    assert shown["status"] == "published" and shown["entry"]["name"] == "门诊就诊记录"
    assert shown["entry"]["fields"][0]["identifier"] == "resident_id"
    # the first revision was due five working days after the request: 29 September 2026
    # is followed by the National Day holiday (1-7 October) and Saturday 10 October is
    # worked in lieu, so the days are 30 Sep, 8, 9, 10 and 12 October
    revision = platform.call("applicant", "GET", f"/datasets/{dataset_id}/revisions").json()[0]
    assert revision["due_on"] == "2026-10-12"
    actions = [(e["action"], e["outcome"]) for e in platform.entries()]
    assert ("catalog.register", "ok") in actions and ("catalog.approve", "ok") in actions
    listed = platform.call("applicant", "GET", "/datasets").json()
    assert [item["id"] for item in listed["items"]] == [dataset_id]


def test_review_and_decision_keep_three_people_apart(platform: Platform) -> None:
    made = platform.call(
        "provider_steward", "POST", "/datasets", json={"entry": ENTRY, "reason": "登记"}
    ).json()
    path = f"/datasets/{made['id']}/revisions/1"
    # a draft is not visible to an applicant
    assert platform.call("applicant", "GET", f"/datasets/{made['id']}").status_code == 404
    # no decision without an opinion first
    early = platform.call(
        "approver", "POST", f"{path}/decision", json={"approve": True, "reason": "好"}
    )
    assert early.status_code == 403 and "opinion" in early.json()["detail"]
    # the provider may not review or approve its own entry
    assert (
        platform.call(
            "provider_steward",
            "POST",
            f"{path}/opinion",
            json={"recommends": True, "opinion": "好"},
        ).status_code
        == 403
    )
    platform.call(
        "reviewer", "POST", f"{path}/opinion", json={"recommends": False, "opinion": "法律依据不足"}
    )
    rejected = platform.call(
        "approver", "POST", f"{path}/decision", json={"approve": False, "reason": "依据不足"}
    )
    assert rejected.json()["state"] == "rejected"
    again = platform.call(
        "approver", "POST", f"{path}/decision", json={"approve": True, "reason": "改判"}
    )
    assert again.status_code == 409
    denied = [e["action"] for e in platform.entries() if e["outcome"] == "denied"]
    assert "catalog.approve" in denied and len(denied) >= 2


def test_an_entry_is_checked_and_a_less_open_change_is_marked(platform: Platform) -> None:
    for broken, reason in (
        ({**ENTRY, "legal_basis": {}}, "legal basis"),
        ({**ENTRY, "level": "L9"}, "security level"),
        ({**ENTRY, "fields": ENTRY["fields"] + [ENTRY["fields"][0]]}, "named twice"),
        (
            {**ENTRY, "fields": [{**ENTRY["fields"][1], "identifier": "mobile"}]},
            "direct identifier",
        ),
        ({**ENTRY, "share": "sometimes"}, "share"),
    ):
        answer = platform.call(
            "provider_steward", "POST", "/datasets", json={"entry": broken, "reason": "x"}
        )
        assert answer.status_code == 422, broken
        assert reason in json.dumps(answer.json(), ensure_ascii=False)
    opener = {
        **ENTRY,
        "share": "unconditional",
        "open": "conditional",
        "legal_basis": {"open": "依据"},
    }
    dataset_id = published(platform, opener)
    tighter = {**opener, "share": "not_shared", "legal_basis": {"share": "新依据", "open": "依据"}}
    revision = platform.call(
        "provider_steward",
        "POST",
        f"/datasets/{dataset_id}/revisions",
        json={"entry": tighter, "reason": "收紧共享"},
    )
    assert revision.status_code == 201, revision.text
    assert revision.json()["less_open"] == ["share"] and revision.json()["number"] == 2
    twice = platform.call(
        "provider_steward",
        "POST",
        f"/datasets/{dataset_id}/revisions",
        json={"entry": tighter, "reason": "再改"},
    )
    assert twice.status_code == 409
    # the entry in force stays the approved one until the change is decided
    assert (
        platform.call("applicant", "GET", f"/datasets/{dataset_id}").json()["entry"]["share"]
        == "unconditional"
    )
    entry = next(e for e in platform.entries() if e["action"] == "catalog.revise")
    assert entry["detail"]["less_open"] == ["share"]


def test_an_upload_is_checked_reported_and_sealed_in_the_vault(platform: Platform) -> None:
    dataset_id = published(platform)
    data = visits_csv(200, bad_ids=3, phones_in_remark=40)
    answer = platform.call(
        "provider_steward",
        "POST",
        f"/datasets/{dataset_id}/versions?filename=visits.csv",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert answer.status_code == 201, answer.text
    version = answer.json()
    quality = version["quality"]
    assert version["rows"] == quality["rows"] == 200 and version["number"] == 1
    by_name = {f["name"]: f for f in quality["fields"]}
    assert by_name["id_number"]["checksum_valid"] == pytest.approx(197 / 200)
    assert by_name["remark"]["present"] == pytest.approx(40 / 200)
    assert by_name["remark"]["pii"] == {"mobile": 1.0}  # every remark holds a phone number
    assert any("not declared a direct identifier" in w for w in quality["warnings"])
    assert by_name["cost"]["valid"] == 1.0
    # stored encrypted: the plaintext is nowhere under the data directory
    data_dir = platform.services.catalog.scratch.parent  # type: ignore[union-attr]
    for path in data_dir.rglob("*"):
        if path.is_file():
            assert resident_id(5).encode() not in path.read_bytes(), path
    stored = [e for e in platform.entries() if e["action"] == "vault.store"]
    assert stored[-1]["detail"]["version"] == version["id"]
    upload = next(e for e in platform.entries() if e["action"] == "dataset.upload")
    assert upload["detail"]["sha256"] == version["sha256"]
    listed = platform.call("applicant", "GET", f"/datasets/{dataset_id}/versions").json()
    assert [v["id"] for v in listed] == [version["id"]]


def test_an_upload_that_does_not_match_its_entry_stores_nothing(platform: Platform) -> None:
    dataset_id = published(platform)
    path = f"/datasets/{dataset_id}/versions"
    wrong_columns = b"id_number,district\n1,2\n"
    refused = platform.call("provider_steward", "POST", path, content=wrong_columns)
    assert refused.status_code == 422
    assert "fields missing from the file: visit_date" in refused.json()["detail"][0]
    not_dates = visits_csv(20).replace(b"2026-0", b"not-a-date-")
    assert (
        "visit_date"
        in platform.call("provider_steward", "POST", path, content=not_dates).json()["detail"][0]
    )
    parquet = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}), parquet)
    wrong_format = platform.call("provider_steward", "POST", path, content=parquet.getvalue())
    assert "the catalog entry says csv" in wrong_format.json()["detail"][0]
    assert platform.call("provider_steward", "POST", path, content=b"").status_code == 422
    assert platform.call("applicant", "POST", path, content=visits_csv(5)).status_code == 403
    assert platform.call("provider_steward", "GET", path).json() == []
    refusals = [e for e in platform.entries() if e["action"] == "dataset.upload"]
    assert {e["outcome"] for e in refusals} == {"refused"} and len(refusals) == 4
    vault = platform.services.catalog.vault  # type: ignore[union-attr]
    assert vault.versions() == []
    leftovers = list(platform.services.catalog.scratch.iterdir())  # type: ignore[union-attr]
    assert leftovers == []


def test_excel_and_parquet_uploads(platform: Platform, tmp_path: Path) -> None:
    parquet_entry = {**ENTRY, "format": "parquet"}
    dataset_id = published(platform, parquet_entry)
    rows = list(csv.reader(io.StringIO(visits_csv(30).decode())))
    table = pa.table({name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    answer = platform.call(
        "provider_steward", "POST", f"/datasets/{dataset_id}/versions", content=buffer.getvalue()
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["format"] == "parquet" and answer.json()["rows"] == 30
    workbook = write_xlsx(tmp_path / "visits.xlsx", rows[:13])
    excel_id = published(platform, {**ENTRY, "format": "excel", "name": "门诊就诊记录（表格）"})
    answer = platform.call(
        "provider_steward", "POST", f"/datasets/{excel_id}/versions", content=workbook.read_bytes()
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["rows"] == 12
    assert answer.json()["quality"]["fields"][0]["checksum_valid"] == 1.0


def test_an_objection_is_answered_on_the_working_day_calendar(platform: Platform) -> None:
    dataset_id = published(platform)
    raised = platform.call(
        "applicant",
        "POST",
        f"/datasets/{dataset_id}/objections",
        json={"text": "部分身份证号校验位错误"},
    )
    assert raised.status_code == 201, raised.text
    objection = raised.json()
    assert objection["due_on"] == "2026-10-12" and not objection["overdue"]
    # only the provider answers, and only once; the deadline extends once, to fifteen days
    assert (
        platform.call(
            "reviewer", "POST", f"/objections/{objection['id']}/answer", json={"text": "x"}
        ).status_code
        == 403
    )
    extended = platform.call(
        "provider_steward",
        "POST",
        f"/objections/{objection['id']}/extension",
        json={"reason": "需核对源系统"},
    )
    assert extended.json()["due_on"] == "2026-10-26" and extended.json()["extended"]
    assert (
        platform.call(
            "provider_steward",
            "POST",
            f"/objections/{objection['id']}/extension",
            json={"reason": "再延"},
        ).status_code
        == 409
    )
    later = datetime(2026, 10, 28, 3, 0, tzinfo=UTC)
    platform.services.catalog.clock = lambda: later  # type: ignore[union-attr]
    assert platform.call("applicant", "GET", f"/datasets/{dataset_id}/objections").json()[0][
        "overdue"
    ]
    answered = platform.call(
        "provider_steward",
        "POST",
        f"/objections/{objection['id']}/answer",
        json={"text": "已更正三条记录"},
    )
    assert answered.json()["state"] == "answered" and answered.json()["overdue"]
    assert (
        platform.call(
            "provider_steward", "POST", f"/objections/{objection['id']}/close"
        ).status_code
        == 403
    )
    closed = platform.call("applicant", "POST", f"/objections/{objection['id']}/close")
    assert closed.json()["state"] == "closed"
    answer_entry = next(e for e in platform.entries() if e["action"] == "objection.answer")
    assert answer_entry["detail"]["on_time"] is False


def test_a_bad_row_deep_in_a_file_is_refused_without_showing_it(platform: Platform) -> None:
    dataset_id = published(platform)
    broken = visits_csv(3000) + b"370202198001019999,only,three\n"
    answer = platform.call(
        "provider_steward", "POST", f"/datasets/{dataset_id}/versions", content=broken
    )
    assert answer.status_code == 422, answer.text
    assert "cannot be read as csv" in answer.json()["detail"][0]
    assert "370202198001019999" not in answer.text  # the offending line is raw data
    refusal = [e for e in platform.entries() if e["action"] == "dataset.upload"][-1]
    assert refusal["outcome"] == "refused" and "370202198001019999" not in json.dumps(refusal)


def test_a_revision_has_one_opinion(platform: Platform) -> None:
    made = platform.call(
        "provider_steward", "POST", "/datasets", json={"entry": ENTRY, "reason": "登记"}
    ).json()
    path = f"/datasets/{made['id']}/revisions/1/opinion"
    first = platform.call("reviewer", "POST", path, json={"recommends": True, "opinion": "同意"})
    assert first.status_code == 200
    second = platform.call(
        "reviewer", "POST", path, json={"recommends": False, "opinion": "改主意"}
    )
    assert second.status_code == 409 and "opinion already" in second.json()["detail"]


def test_an_upload_whose_version_cannot_be_recorded_leaves_nothing_in_the_vault(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset_id = published(platform)
    catalog = platform.services.catalog
    assert catalog is not None

    def broken(*_: object) -> None:
        raise RuntimeError("the database is gone")

    monkeypatch.setattr(catalog, "_add_version", broken)
    with pytest.raises(RuntimeError, match="database"):
        catalog.upload(
            platform.services.identity.authenticate_token(
                platform.tokens["provider_steward"]
            ).actor(),
            dataset_id,
            iter([visits_csv(20)]),
        )
    assert catalog.vault.versions() == []
    actions = [e["action"] for e in platform.entries()]
    assert actions.index("vault.discard") > actions.index("vault.store")
