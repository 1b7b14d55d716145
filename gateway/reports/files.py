"""The operation report as files for the authority: CSV for spreadsheets and PDF for
reading and filing. Both are made from :meth:`OperationReport.sections` alone, so the same
report always makes the same bytes (the PDF also from the time it names as generated).

- CSV: UTF-8 with a byte-order mark (so that Excel reads the Chinese right), a header
  row, then one row per figure, ``section,item,value``, section after section.
- PDF: A4, in the system's Chinese font (fonts-wqy-microhei, as the agreements), the
  headings in Chinese with the English beside, one table per section.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from fpdf import FPDF
from fpdf.fonts import FontFace

from gateway.agreements.pdf import FONT, PdfError
from gateway.catalog.service import CHINA
from gateway.reports.operations import OperationReport, label

TITLE = "数据运营情况报告 / Operation report"
NUMERALS = "一二三四五六七八九十"


def report_csv(report: OperationReport) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["section", "item", "value"])
    for section in report.sections():
        for item, value in section.rows:
            writer.writerow([section.name, item, "" if value is None else value])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _numbered(n: int) -> str:
    """一 to 九十九, for the sections' headings."""
    tens, ones = divmod(n, 10)
    head = ("" if tens == 1 else NUMERALS[tens - 1]) + "十" if tens else ""
    return head + (NUMERALS[ones - 1] if ones else "")


def report_pdf(report: OperationReport, *, generated_at: datetime) -> bytes:
    """The report as a PDF naming ``generated_at`` (shown China time) and the figures'
    SHA-256; the same report and time always make the same bytes."""
    if not FONT.exists():
        raise PdfError(f"the Chinese font {FONT} is missing: install fonts-wqy-microhei")
    pdf = FPDF(format="A4")
    pdf.set_creation_date(generated_at)
    pdf.set_title(TITLE)
    pdf.add_font("wqy", fname=str(FONT))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    plain = FontFace(family="wqy", emphasis="")

    def line(text: str, size: int = 10, height: float = 5.5) -> None:
        pdf.set_font("wqy", size=size)
        pdf.multi_cell(width, height, text, new_x="LMARGIN", new_y="NEXT")

    pdf.set_font("wqy", size=16)
    pdf.multi_cell(width, 9, TITLE, align="C", new_x="LMARGIN", new_y="NEXT")
    period = report.period
    line(f"报告期 Period: {period.starts_on} 至 {period.ends_on}（北京时间 China time）")
    local = generated_at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")
    line(f"生成时间 Generated at: {local}（北京时间 China time）")
    line(f"数据摘要 Figures SHA-256: {report.sha256()}", 8)
    for n, section in enumerate(report.sections()[1:], 1):
        zh, en = label(section.name)
        pdf.ln(2)
        line(f"{_numbered(n)}、{zh} {en}", 12, 7)
        pdf.set_font("wqy", size=9)
        with pdf.table(
            col_widths=(4, 1),
            text_align=("LEFT", "RIGHT"),
            headings_style=plain,
            line_height=5.5,
        ) as table:
            heading = table.row()
            heading.cell("项目 Item")
            heading.cell("数值 Value")
            for item, value in section.rows or (("无 None", "—"),):
                item_zh, item_en = label(section.name, item)
                row = table.row()
                row.cell(item_zh if item_zh == item_en else f"{item_zh} {item_en}")
                row.cell("—" if value is None else str(value))
    return bytes(pdf.output())
