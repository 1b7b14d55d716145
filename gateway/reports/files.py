"""The reports as files for the authority: CSV for spreadsheets and PDF for reading and
filing. Each is made from the report's figures alone, so the same figures always make
the same CSV, and with the same generation time the same PDF.

- CSV: UTF-8 with a byte-order mark (so that Excel reads the Chinese right) and a header
  row. The operation report and the annual evaluation: one row per figure,
  ``section,item,value``, section after section. The contribution evaluation: one row
  per provider, then per dataset, with every count and score (:data:`COLUMNS`).
- PDF: A4, in the system's Chinese font (fonts-wqy-microhei, as the agreements), the
  headings in Chinese with the English beside, tables, and the charts of
  :mod:`gateway.reports.charts` drawn as on the console's pages.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from fpdf import FPDF

from gateway.catalog.service import CHINA
from gateway.reports import contributions as contrib
from gateway.reports import evaluation as annual
from gateway.reports.charts import Chart, contribution_charts, draw, evaluation_charts
from gateway.reports.fonts import FAMILY, chinese_pdf, pdf_bytes
from gateway.reports.operations import ITEM_LABELS, SECTION_LABELS, OperationReport, Section, label

TITLE = "数据运营情况报告 / Operation report"
EVALUATION_TITLE = "运营单位年度评估 / Operator's annual evaluation"
CONTRIBUTION_TITLE = "数据贡献评价 / Data contribution evaluation"
NUMERALS = "一二三四五六七八九十"
LINE, PADDING = 5.5, 1.0  # a table's line height and its cells' margin, mm
Cell = str | int | None
Labeller = Callable[[str, str | None], tuple[str, str]]


def _glyphs(*texts: Iterable[tuple[str, str]] | str) -> str:
    found: set[str] = set()
    for text in texts:
        found.update(text if isinstance(text, str) else "".join("".join(t) for t in text))
    return "".join(sorted(found))


# The fixed text of the reports, whose glyphs every copy embeds (see gateway.reports.fonts).
COMMON = _glyphs(
    SECTION_LABELS.values(),
    ITEM_LABELS.values(),
    annual.SECTION_LABELS.values(),
    annual.VERDICT_LABELS.values(),
    contrib.COLUMN_LABELS.values(),
    contrib.LEVEL_LABELS.values(),
    TITLE + EVALUATION_TITLE + CONTRIBUTION_TITLE + NUMERALS,
    "报告期生成时间数据摘要至北京项目数值无（）、：—·第轮年月日评估结论整改期限理由记录人尚",
)


# ------------------------------------------------------------------ CSV
def _csv(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def sections_csv(sections: Iterable[Section]) -> bytes:
    return _csv(
        ["section", "item", "value"],
        ([section.name, item, value] for section in sections for item, value in section.rows),
    )


def report_csv(report: OperationReport) -> bytes:
    return sections_csv(report.sections())


def evaluation_csv(evaluation: annual.AnnualEvaluation) -> bytes:
    """The figures, then one ``verdict`` section per round: its verdict, day, reasons."""
    verdicts = tuple(
        Section(
            f"verdict_{given.round}",
            (
                ("verdict", str(given.verdict)),
                ("decided_at", given.decided_at.astimezone(CHINA).isoformat(timespec="minutes")),
                ("decided_by", given.decider),
                ("rectify_by", given.rectify_by.isoformat() if given.rectify_by else None),
                ("reasons", given.reasons),
            ),
        )
        for given in evaluation.verdicts
    )
    return sections_csv((*evaluation.sections(), *verdicts))


def contributions_csv(report: contrib.ContributionReport) -> bytes:
    return _csv(contrib.COLUMNS, contrib.rows(report))


# ------------------------------------------------------------------ PDF
def _numbered(n: int) -> str:
    """一 to 九十九, for the sections' headings."""
    tens, ones = divmod(n, 10)
    head = ("" if tens == 1 else NUMERALS[tens - 1]) + "十" if tens else ""
    return head + (NUMERALS[ones - 1] if ones else "")


def _both(pair: tuple[str, str]) -> str:
    zh, en = pair
    return zh if zh == en else f"{zh} {en}"


class _Document:
    """A report's PDF: its title, lines, numbered headings, tables and charts."""

    def __init__(self, title: str, generated_at: datetime) -> None:
        self.pdf: FPDF = chinese_pdf(title=title, created=generated_at)
        self.pdf.add_page()
        self.width = self.pdf.w - self.pdf.l_margin - self.pdf.r_margin
        self.headings = 0
        self.pdf.set_font(FAMILY, size=16)
        self.pdf.multi_cell(self.width, 9, title, align="C", new_x="LMARGIN", new_y="NEXT")
        local = generated_at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")
        self.line(f"生成时间 Generated at: {local}（北京时间 China time）")

    def line(self, text: str, size: int = 10, height: float = 5.5) -> None:
        self.pdf.set_font(FAMILY, size=size)
        self.pdf.multi_cell(self.width, height, text, align="L", new_x="LMARGIN", new_y="NEXT")

    def heading(self, text: str) -> None:
        self.headings += 1
        self.pdf.ln(2)
        self.line(f"{_numbered(self.headings)}、{text}", 12, 7)

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[Cell]],
        widths: Sequence[int],
        *,
        size: int = 9,
    ) -> None:
        """A table with ruled cells, the first column to the left and the others to the
        right, ``widths`` in parts of the page's width; a row that does not fit on the
        page starts the next one. Drawn cell by cell (fpdf2's ``table()`` lays out each
        cell with its general line breaking, which costs most of a report's time)."""
        pdf = self.pdf
        pdf.set_font(FAMILY, size=size)
        columns = [self.width * part / sum(widths) for part in widths]
        for values in [header, *(rows or [["无 None", *["—"] * (len(widths) - 1)]])]:
            texts = ["—" if value is None else str(value) for value in values]
            lines = [
                self._wrap(text, room - 2 * PADDING)
                for text, room in zip(texts, columns, strict=True)
            ]
            height = LINE * max(len(cell) for cell in lines)
            if pdf.get_y() + height > pdf.page_break_trigger:
                pdf.add_page()
            x, y = pdf.l_margin, pdf.get_y()
            for n, (room, cell) in enumerate(zip(columns, lines, strict=True)):
                pdf.rect(x, y, room, height)
                for i, text in enumerate(cell):
                    pdf.set_xy(x, y + i * LINE)
                    pdf.cell(room, LINE, text, align="R" if n else "L")
                x += room
            pdf.set_xy(pdf.l_margin, y + height)

    def _wrap(self, text: str, room: float) -> list[str]:
        """``text`` in lines no wider than ``room``: broken anywhere in Chinese, at a
        space in a run of Latin letters where there is one."""
        lines: list[str] = []
        line, width = "", 0.0
        for char in text:
            step = self.pdf.get_string_width(char)
            if line and width + step > room:
                space = line.rfind(" ")
                if char.isascii() and char.isalnum() and space > 0 and line[-1].isascii():
                    lines.append(line[:space])
                    line = line[space + 1 :]
                else:
                    lines.append(line)
                    line = ""
                width = self.pdf.get_string_width(line)
            line += char
            width += step
        return [*lines, line]

    def sections(self, sections: Iterable[Section], labeller: Labeller) -> None:
        for section in sections:
            self.heading(_both(labeller(section.name, None)))
            self.table(
                ("项目 Item", "数值 Value"),
                [(_both(labeller(section.name, item)), value) for item, value in section.rows],
                (4, 1),
            )

    def charts(self, charts: Iterable[Chart]) -> None:
        for chart in charts:
            height = self.width * 300 / 640
            if self.pdf.get_y() + height > self.pdf.page_break_trigger:
                self.pdf.add_page()
            top = self.pdf.get_y() + 2
            taken = draw(self.pdf, chart, x=self.pdf.l_margin, y=top, width=self.width, font=FAMILY)
            self.pdf.set_y(top + taken + 2)

    def output(self) -> bytes:
        return pdf_bytes(self.pdf, COMMON)


def report_pdf(report: OperationReport, *, generated_at: datetime) -> bytes:
    """The report as a PDF naming ``generated_at`` (shown China time) and the figures'
    SHA-256; the same report and time always make the same bytes."""
    document = _Document(TITLE, generated_at)
    period = report.period
    document.line(f"报告期 Period: {period.starts_on} 至 {period.ends_on}（北京时间 China time）")
    document.line(f"数据摘要 Figures SHA-256: {report.sha256()}", 8)
    document.sections(report.sections()[1:], label)
    return document.output()


def evaluation_pdf(evaluation: annual.AnnualEvaluation, *, generated_at: datetime) -> bytes:
    """The year's evaluation: the verdicts so far, the charts, the volumes per month and
    the year's figures."""
    document = _Document(EVALUATION_TITLE, generated_at)
    document.line(f"评估年度 Year: {evaluation.year}（北京时间 China time）")
    document.line(f"数据摘要 Figures SHA-256: {evaluation.sha256()}", 8)
    document.heading("评估结论 Verdict")
    if not evaluation.verdicts:
        document.line("尚无结论 No verdict yet")
    for given in evaluation.verdicts:
        day = given.decided_at.astimezone(CHINA).strftime("%Y-%m-%d")
        verdict = _both(annual.VERDICT_LABELS[str(given.verdict)])
        document.line(f"第{given.round}轮 Round {given.round}：{verdict}（{day}，{given.decider}）")
        if given.rectify_by:
            document.line(f"整改期限 Rectify by: {given.rectify_by}")
        document.line(f"理由 Reasons: {given.reasons}", 9)
    document.heading("图表 Charts")
    document.charts(evaluation_charts(evaluation))
    document.heading("各月业务量 Volumes per month")
    document.table(
        ("月份 Month", "提交申请 Applications", "新增授权 Grants", "申请导出 Exports"),
        [(m.month, m.applications, m.grants, m.exports) for m in evaluation.months],
        (1, 1, 1, 1),
    )
    document.sections(evaluation.report.sections()[1:], annual.label)
    return document.output()


def contributions_pdf(report: contrib.ContributionReport, *, generated_at: datetime) -> bytes:
    """The providers' and datasets' scores, the chart, and every count behind them."""
    document = _Document(CONTRIBUTION_TITLE, generated_at)
    period = report.period
    document.line(f"评价期 Period: {period.starts_on} 至 {period.ends_on}（北京时间 China time）")
    document.line(f"数据摘要 Figures SHA-256: {report.sha256()}", 8)
    document.line(
        "评分 Scores (0–100): 数据质量 quality = 上传无警告、异议按期答复、评分的平均；"
        "应用情况 use、价值实现 value = 各项与本期最高者之比的平均；贡献 contribution = "
        "三者平均。Quality: the mean of clean uploads, objections answered on time and "
        "ratings; use and value: the mean of each count against the period's highest; "
        "contribution: the mean of the three.",
        8,
        4.5,
    )
    document.charts(contribution_charts(report))
    scores = ("quality", "use", "value", "contribution")
    for level in contrib.LEVELS:
        document.heading(_both(contrib.LEVEL_LABELS[level]))
        document.table(
            ("名称 Name", *(_both(contrib.COLUMN_LABELS[name]) for name in scores)),
            [
                (row.name, *(getattr(row.scores, name) for name in scores))
                for row in report.level(level)
            ],
            (3, 1, 1, 1, 1),
        )
    highest = report.highest
    document.heading("本期最高 The period's highest")
    document.table(
        ("项目 Item", *(_both(contrib.LEVEL_LABELS[level]) for level in contrib.LEVELS)),
        [
            (
                _both(contrib.COLUMN_LABELS[name]),
                *(getattr(highest[level], name) for level in contrib.LEVELS),
            )
            for name in (*contrib.USE, *contrib.VALUE)
        ],
        (2, 1, 1),
    )
    for level in contrib.LEVELS:
        for row in report.level(level):
            named = f"{row.name}（{row.provider}）" if level == "datasets" else row.name
            document.heading(f"{_both(contrib.LEVEL_LABELS[level])}：{named}")
            values = {**row.counts.to_dict(), **row.scores.to_dict()}
            document.table(
                ("项目 Item", "数值 Value"),
                [
                    (_both(contrib.COLUMN_LABELS[name]), values[name])
                    for name in (*contrib.NAMES, *contrib.PART_NAMES, *contrib.SCORES)
                ],
                (4, 1),
            )
    return document.output()
