"""The demo's application, taken through the platform's whole path by its people:

1. the applicant drafts an application for the demo dataset (each field justified),
   attaches the security commitment letter and submits it;
2. the reviewer checks it is complete, the provider's steward consents (the dataset is
   shared on conditions), the reviewer drafts an opinion with a risk assessment and the
   approver approves it, each queue with its working-day deadline;
3. the agreement is made from it and signed by the application unit and the operator
   with their organizations' keys;
4. the approver grants the applicant a sandbox on the views the agreement allows, built
   from the dataset in the vault;
5. in a session of that sandbox the applicant's cell (recorded before it runs) makes a
   district table from the aggregated view and asks to export it, as the sandbox's
   server does; the airlock checks it, the reviewer and the approver release it, and the
   signed bundle is verified with the standalone verifier.

It prints where to look at each result.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import timedelta
from pathlib import Path

import duckdb
from fpdf import FPDF

from audit.bundle import verify_bundle
from audit.evidencecheck import verify_evidence
from gateway.agreements.grants import ViewRequest
from gateway.agreements.pdf import FONT
from gateway.api.deps import Services
from gateway.authz import Actor
from gateway.catalog.service import CHINA
from gateway.cli.common import console, short
from gateway.exports.snapshots import Announced
from gateway.trail.evidence import EvidenceScope
from sandbox.views.fields import FieldRule
from sandbox.views.treatments import Treatment as T

PATH_GRANT = "demo-agreement"
APPLICANT = "applicant.wang"
CELL = """import pandas as pd
view = pd.read_parquet("/data/diagnoses_by_district.parquet")
districts = view[view["address"].notna() & view["diagnosis"].isna()]
table = districts[["address", "count", "sum_visits"]].astype({"sum_visits": "int64"})
table.columns = ["区县", "就诊人数", "就诊次数"]
table.to_csv("results/visits_by_district.csv", index=False)
"""
FIELDS = {
    "sex": "按性别比较就诊频次",
    "age": "按年龄段分析慢病负担",
    "address": "按区县配置社区医疗资源",
    "visits": "度量门诊需求",
    "diagnosis": "统计主要诊断的构成（仅聚合）",
}
RISK = {
    "level": "medium",
    "reidentification": "年龄、住址与性别组合可能缩小人群：年龄按10岁分段、住址只到区县，k=5。",
    "misuse": "仅用于社区医疗资源配置研究，协议限定用途、禁止向第三方提供。",
    "measures": "记录级视图不含直接标识符，诊断仅以聚合形式提供，成果经导出审核。",
}


def commitment_letter(organization: str) -> bytes:
    """The unit's security commitment letter, as the demo's signed scan would be."""
    pdf = FPDF(format="A4")
    pdf.add_font("wqy", fname=str(FONT))
    pdf.add_page()
    pdf.set_font("wqy", size=14)
    pdf.multi_cell(0, 10, "数据安全承诺书", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("wqy", size=11)
    pdf.multi_cell(
        0,
        7,
        f"{organization}承诺：仅在平台数据沙箱内、为申请载明的目的使用数据；"
        "不复制、不留存、不向第三方提供；结果经平台审核后方可导出。",
    )
    return bytes(pdf.output())


def take_the_path(services: Services, actors: dict[str, Actor], dataset_id: str) -> None:
    applications, agreements = services.applications, services.agreements
    grants = services.agreement_grants
    if applications is None or agreements is None or grants is None:
        return
    applicant, reviewer = actors["applicant"], actors["reviewer"]
    steward, approver = actors["provider_steward"], actors["approver"]
    console.print("\n[bold]an application through review, agreement and grant[/]:")
    today = applications.clock().astimezone(CHINA).date()
    form = {
        "title": "社区医疗资源配置研究（演示）",
        "purpose": "分析各区县不同年龄段居民的就诊需求，支持社区卫生服务中心的资源配置。",
        "scenario": "在数据沙箱内对脱敏记录和聚合表建模，只导出区县层面的汇总结果。",
        "starts_on": today.isoformat(),
        "ends_on": (today + timedelta(days=180)).isoformat(),
        "security_measures": "专人专岗；仅在平台沙箱内处理；协议期满后30日内销毁全部中间结果。",
        "datasets": [
            {
                "dataset_id": dataset_id,
                "fields": [{"name": n, "justification": j} for n, j in FIELDS.items()],
                "conditions": "本研究为经伦理审查批准的健康研究，成果仅以汇总形式发布。",
            }
        ],
    }
    draft = applications.draft(applicant, form)
    applications.attach(
        applicant,
        draft.id,
        kind="commitment",
        name="数据安全承诺书.pdf",
        content=commitment_letter("演示申请单位"),
    )
    submitted = applications.submit(applicant, draft.id)
    console.print(f"  application {draft.id} submitted; formal check due {submitted.due_on}")
    applications.check(reviewer, draft.id, complete=True)
    applications.consent(steward, draft.id, dataset_id, consents=True)
    applications.review(
        reviewer, draft.id, recommends=True, opinion="用途明确，字段最小必要，风险可控。", risk=RISK
    )
    decided = applications.decide(approver, draft.id, approve=True, note="同意")
    console.print(f"  checked, consented, reviewed and {decided.status} (each step on time)")
    made = agreements.for_application(applicant, draft.id)
    agreements.sign(applicant, made.id)
    signed = agreements.sign(approver, made.id)
    console.print(
        f"  agreement {signed.number} {signed.status} by both organizations, "
        f"sha256 {short(signed.sha256)}"
    )
    district = FieldRule("address", T.GENERALIZE, {"to": "district"})
    views = [
        ViewRequest(
            dataset_id,
            "health_records",
            "record",
            (
                FieldRule("sex", T.KEEP),
                FieldRule("age", T.GENERALIZE, {"to": "band", "width": 10}),
                district,
                FieldRule("visits", T.KEEP),
            ),
        ),
        ViewRequest(
            dataset_id,
            "diagnoses_by_district",
            "aggregate",
            (district, FieldRule("diagnosis", T.KEEP)),
            ("visits",),
        ),
    ]
    grant = grants.grant(
        approver,
        made.id,
        grant_id=PATH_GRANT,
        members=[applicant.user.removeprefix("user:")],
        views=views,
    )
    console.print(
        f"  grant {grant.id} on {len(views)} views until {grant.ends_at.astimezone(CHINA):%Y-%m-%d}"
    )
    console.print(
        "  look: /api/v1/applications/"
        + draft.id
        + " (history), /api/v1/agreements/"
        + made.id
        + "/pdf (the agreement), the console's grants page (the sandbox)"
    )
    release_a_result(services, actors, grant.views)
    inspect_the_grant(services, actors["regulator"])


def district_table(views: Path) -> bytes:
    """What :data:`CELL` writes, computed from the same view."""
    rows = duckdb.execute(
        "SELECT address, count, CAST(sum_visits AS BIGINT) FROM read_parquet(?) "
        "WHERE address IS NOT NULL AND diagnosis IS NULL",
        [str(views / "diagnoses_by_district.parquet")],
    ).fetchall()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["区县", "就诊人数", "就诊次数"])
    writer.writerows(rows)
    return out.getvalue().encode()


def release_a_result(services: Services, actors: dict[str, Actor], views: str) -> None:
    sandboxes, exports = services.sandboxes, services.exports
    if sandboxes is None or exports is None:
        return
    console.print("\n[bold]a result out of the sandbox, through the airlock[/]:")
    started = sandboxes.start_session(APPLICANT, PATH_GRANT)
    receipt = sandboxes.record_execution(
        started.token, kernel="demo", message="cell-1", kind="execute", code=CELL
    )
    data = district_table(sandboxes.views_root / views)
    name = "results/visits_by_district.csv"
    request = exports.request(
        started.token,
        "各区县门诊就诊人数与次数汇总表（由聚合视图计算，各单元格均为数千人）。",
        [Announced(name, len(data), hashlib.sha256(data).hexdigest())],
    )
    exports.receive(started.token, request.id, 0, [data])
    checked = exports.submit(started.token, request.id)
    sandboxes.end_session(started.session, "the demo's session is over")
    console.print(
        f"  cell recorded at ledger entry {receipt.seq}; export {checked.id} {checked.status} "
        f"({checked.findings} findings, security level {checked.level})"
    )
    exports.decide(
        actors["reviewer"],
        checked.id,
        approve=True,
        reasons="区县层面汇总，单元格远大于最小单元格，无标识符。",
    )
    released = exports.decide(actors["approver"], checked.id, approve=True, reasons="同意导出")
    bundle = exports.bundle(actors["applicant"], checked.id)
    report = verify_bundle(bundle)
    console.print(
        f"  {released.status} by the reviewer and the approver; bundle {bundle} "
        f"({'verifies' if report.ok else 'DOES NOT VERIFY'}, manifest "
        f"sha256 {short(released.manifest_sha256 or '')})"
    )
    console.print(
        f"  look: /exports/{checked.id} in the console, and check the bundle offline with "
        f"`sbx verify-bundle {bundle} --ledger <data dir>/ledger`"
    )


def inspect_the_grant(services: Services, regulator: Actor) -> None:
    """The regulator's side: the grant's whole history in the audit trail, and evidence of
    it that verifies offline against the ledger's first key."""
    trail, evidence = services.trail, services.evidence
    if trail is None or evidence is None:
        return
    console.print("\n[bold]the regulator's workbench[/]:")
    history = trail.history(f"grant:{PATH_GRANT}")
    console.print(
        f"  the grant's history: {len(history)} ledger entries, from {history[0].action} "
        f"(entry {history[0].seq}) to {history[-1].action} (entry {history[-1].seq}); "
        f"look: /trail/history/grant/{PATH_GRANT} in the console, where each entry's proof "
        "is verified in the browser"
    )
    taken = evidence.create(regulator, EvidenceScope(grant=PATH_GRANT))
    bundle = evidence.bundle(regulator, taken.id)
    first_key = services.ledger.keychain().records[0].key_id
    report = verify_evidence(bundle, trusted_keys=[first_key])
    console.print(
        f"  evidence {bundle}: {taken.entries} entries and {taken.documents} documents "
        f"({'verifies' if report.ok else 'DOES NOT VERIFY'} against the ledger's first key)"
    )
    console.print(
        f"  check it offline with `python -m audit.evidence {bundle} --trusted-key {first_key}`; "
        "keep the ledger's checkpoints with `sbx audit witness <file>`; alerts: /alerts"
    )
