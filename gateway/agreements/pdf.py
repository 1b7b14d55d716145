"""The agreement as a PDF, for people: the document's content in Chinese with the English
beside the standing terms, its SHA-256 and the signatures. The canonical JSON is what is
signed; the PDF shows it and names its digest, so a printed copy can be matched to the
ledger. Rendered with the system's Chinese font (fonts-wqy-microhei)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time
from pathlib import Path
from typing import Any

from fpdf import FPDF

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
VIEWS = {"record": "记录级视图", "aggregate": "仅聚合视图", "none": "不可授予"}


class PdfError(RuntimeError):
    """The PDF cannot be made here (the font is missing)."""


def render_agreement(
    document: Mapping[str, Any], sha256: str, signatures: Mapping[str, Mapping[str, str]]
) -> bytes:
    if not FONT.exists():
        raise PdfError(f"the Chinese font {FONT} is missing: install fonts-wqy-microhei")
    pdf = FPDF(format="A4")
    issued = datetime.combine(datetime.fromisoformat(document["issued_on"]).date(), time())
    pdf.set_creation_date(issued)  # the same document always makes the same PDF
    pdf.set_title(f"数据运营协议 {document['number']}")
    pdf.add_font("wqy", fname=str(FONT))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    def heading(text: str) -> None:
        pdf.set_font("wqy", size=12)
        pdf.ln(2)
        pdf.multi_cell(width, 7, text, new_x="LMARGIN", new_y="NEXT")

    def line(text: str, size: int = 10) -> None:
        pdf.set_font("wqy", size=size)
        pdf.multi_cell(width, 5.5, text, new_x="LMARGIN", new_y="NEXT")

    pdf.set_font("wqy", size=16)
    pdf.multi_cell(
        width, 9, "公共数据授权运营协议（含安全保密条款）", align="C", new_x="LMARGIN", new_y="NEXT"
    )
    line(f"协议编号 No.: {document['number']}    签订日期 Issued: {document['issued_on']}")
    parties = document["parties"]
    heading("一、协议双方 Parties")
    for label, key in (("运营单位 Operator", "operator"), ("申请单位 Applicant", "applicant")):
        who = parties[key]
        line(f"{label}: {who['name']}（统一社会信用代码 {who['credit_code']}）")
    providers = "、".join(p["name"] for p in document["providers"]) or "—"
    line(f"数据提供单位 Providers: {providers}")
    heading("二、目的与场景 Purpose and scenario")
    line(f"项目 Title: {document['title']}")
    line(f"目的 Purpose: {document['purpose']}")
    line(f"场景 Scenario: {document['scenario']}")
    period = document["period"]
    line(f"期限 Period: {period['starts_on']} 至 {period['ends_on']}")
    heading("三、数据范围 Scope")
    for dataset in document["scope"]:
        conditional = "（有条件共享，已取得提供单位同意）" if dataset["conditional"] else ""
        line(f"{dataset['name']}（{dataset['level']}）{conditional}")
        for field in dataset["fields"]:
            treatments = "、".join(field["treatments"]) or "—"
            view = VIEWS.get(field["view"], field["view"])
            line(f"    · {field['name']}：{view}（{treatments}）— {field['justification']}", 9)
    heading("四、使用方式 Method")
    line(document["method"]["zh-CN"])
    line(document["method"]["en"], 9)
    for title, terms in (
        ("五、申请单位义务 Duties of the applicant", document["duties"]["applicant"]),
        ("六、运营单位义务 Duties of the operator", document["duties"]["operator"]),
        ("七、安全与保密 Security and confidentiality", document["security"]["confidentiality"]),
    ):
        heading(title)
        for number, term in enumerate(terms, 1):
            line(f"{number}. {term['zh-CN']}")
            line(f"    {term['en']}", 9)
    line(f"申请单位安全措施 Applicant's security measures: {document['security']['measures']}")
    heading("八、文本与签署 Text and signatures")
    line(f"协议文本（规范 JSON）SHA-256: {sha256}", 9)
    for label, key in (("申请单位 Applicant", "applicant"), ("运营单位 Operator", "operator")):
        signed = signatures.get(key)
        if signed:
            line(
                f"{label}: 已签署 signed {signed.get('signed_at', '')} 密钥 key {signed['key_id']}",
                9,
            )
            line(f"    Ed25519: {signed['signature']}", 8)
        else:
            line(f"{label}: 待签署 awaiting signature", 9)
    return bytes(pdf.output())
