"""Bar and line charts of the reports, drawn the same way on a page (SVG, inline, no
script) and in a PDF (fpdf2's drawing primitives: fpdf2 does not draw SVG text).

A :class:`Chart` is data: a title, the axes' labels, the categories and the series, each
text in Chinese and English. :func:`layout` turns it into a :class:`Drawing` of boxes,
strokes, dots and labels in a 640 × 300 frame, in a language (``zh``, ``en``, or
``both`` for the PDF); :func:`svg` and :func:`draw` only render that drawing. So a chart
is the same on screen and on paper, and the same chart always makes the same SVG text.

Accessibility: the SVG is ``role="img"`` labelled by its ``<title>`` and described by a
``<desc>`` that reads out every value; each bar and point has its own ``<title>``.
Colours are set as SVG attributes, not styles, so the console's Content-Security-Policy
(no inline styles) lets them through; series of a line chart differ in dash as well as
colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Literal

from fpdf import FPDF

from gateway.reports.contributions import COLUMN_LABELS, ContributionReport
from gateway.reports.evaluation import MONTHLY, AnnualEvaluation
from gateway.reports.operations import STAGE_LABELS
from gateway.reports.operations import label as ops_label

Text = tuple[str, str]  # (zh-CN, en)
Language = Literal["zh", "en", "both"]

WIDTH, HEIGHT = 640.0, 300.0
LEFT, RIGHT, TOP, BOTTOM = 64.0, WIDTH - 16.0, 66.0, HEIGHT - 58.0
PALETTE = ("#2f6db5", "#d9822b", "#3a9a5b", "#b03a48")
DASHES: tuple[tuple[float, float] | None, ...] = (None, (8.0, 4.0), (2.0, 3.0), (10.0, 3.0))
INK, AXIS, GRID = "#222222", "#555555", "#dddddd"
NONE: Text = ("本期无数据", "None in this period")
MAX_VALUE_LABELS = 24  # bars labelled with their value when there are at most this many
MONTHLY_NAMES: dict[str, Text] = {
    "applications": ("提交申请", "Applications submitted"),
    "grants": ("新增授权", "Grants made"),
    "exports": ("申请导出", "Exports requested"),
}


@dataclass(frozen=True)
class Series:
    name: Text
    values: tuple[int, ...]


@dataclass(frozen=True)
class Chart:
    key: str  # unique on a page: the SVG's ids derive from it
    kind: Literal["bar", "line"]
    title: Text
    x_label: Text
    y_label: Text
    categories: tuple[Text, ...]
    series: tuple[Series, ...]
    top: int | None = None  # a fixed top of the scale (scores: 100)


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float
    colour: str
    tip: str


@dataclass(frozen=True)
class Stroke:
    points: tuple[tuple[float, float], ...]
    colour: str
    width: float
    dash: tuple[float, float] | None = None


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    r: float
    colour: str
    tip: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float  # the baseline
    text: str
    size: float
    anchor: Literal["start", "middle", "end"] = "start"
    colour: str = INK
    upright: bool = False  # turned a quarter anticlockwise (the y axis's label)


Shape = Box | Stroke | Dot | Label


@dataclass(frozen=True)
class Drawing:
    key: str
    title: str
    summary: str
    shapes: tuple[Shape, ...]


# ------------------------------------------------------------------ layout (pure)
def say(text: Text, language: Language) -> str:
    zh, en = text
    if language == "zh":
        return zh
    if language == "en":
        return en
    return zh if zh == en else f"{zh} {en}"


def text_width(text: str, size: float) -> float:
    """Roughly how wide ``text`` is at ``size``: CJK characters are square, others about
    six tenths of the size."""
    return sum(size if ord(char) >= 0x2E80 else 0.6 * size for char in text)


def fit(text: str, size: float, room: float) -> str:
    """``text`` cut (with an ellipsis) to fit ``room``."""
    if text_width(text, size) <= room:
        return text
    while text and text_width(text + "…", size) > room:
        text = text[:-1]
    return text + "…"


def scale_top(highest: int) -> tuple[int, int]:
    """The top of the value axis and the step between its ticks: 1, 2 or 5 times a
    power of ten, at most five steps up to a top at or above ``highest``."""
    if highest <= 0:
        return 1, 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if highest <= step * factor * 5:
                size = step * factor
                return -(-highest // size) * size, size
        step *= 10


def layout(chart: Chart, language: Language) -> Drawing:
    """The chart as shapes in a :data:`WIDTH` × :data:`HEIGHT` frame."""
    shapes: list[Shape] = []
    title = say(chart.title, language)
    shapes.append(Label(WIDTH / 2, 22, title, 15, "middle"))
    x = LEFT
    for n, series in enumerate(chart.series):  # the legend, under the title
        name = say(series.name, language)
        shapes.append(Box(x, 36, 10, 10, PALETTE[n % len(PALETTE)], name))
        shapes.append(Label(x + 14, 45, name, 11))
        x += 14 + text_width(name, 11) + 18
    highest = max((value for s in chart.series for value in s.values), default=0)
    top, step = (chart.top, chart.top // 5 or 1) if chart.top else scale_top(highest)
    height = BOTTOM - TOP

    def level(value: float) -> float:
        return round(BOTTOM - height * value / top, 1)

    for tick in range(0, top + 1, step):
        y = level(tick)
        shapes.append(Stroke(((LEFT, y), (RIGHT, y)), GRID if tick else AXIS, 0.8 if tick else 1))
        shapes.append(Label(LEFT - 6, y + 4, str(tick), 10, "end", AXIS))
    shapes.append(Stroke(((LEFT, TOP - 4), (LEFT, BOTTOM)), AXIS, 1))
    shapes.append(
        Label(18, (TOP + BOTTOM) / 2, say(chart.y_label, language), 11, "middle", AXIS, True)
    )
    shapes.append(
        Label((LEFT + RIGHT) / 2, HEIGHT - 10, say(chart.x_label, language), 11, "middle", AXIS)
    )

    if not chart.categories:
        mid = (TOP + BOTTOM) / 2
        shapes.append(Label((LEFT + RIGHT) / 2, mid, say(NONE, language), 12, "middle", AXIS))
    count = max(len(chart.categories), 1)
    group = (RIGHT - LEFT) / count
    for i, category in enumerate(chart.categories):
        name = say(category, language)
        if language == "both" and text_width(name, 10) > group - 4:
            name = category[0]  # both languages do not fit: the Chinese
        name = fit(name, 10, group - 4)
        shapes.append(Label(round(LEFT + group * (i + 0.5), 1), BOTTOM + 16, name, 10, "middle"))
    bars = len(chart.categories) * len(chart.series)
    for n, series in enumerate(chart.series):
        colour = PALETTE[n % len(PALETTE)]
        name = say(series.name, language)
        if chart.kind == "bar":
            width = group * 0.8 / max(len(chart.series), 1)
            for i, value in enumerate(series.values):
                left = round(LEFT + group * i + group * 0.1 + width * n, 1)
                tip = f"{say(chart.categories[i], language)} · {name}: {value}"
                y = level(value)
                shapes.append(Box(left, y, round(width, 1), round(BOTTOM - y, 1), colour, tip))
                if bars <= MAX_VALUE_LABELS:
                    shapes.append(Label(round(left + width / 2, 1), y - 3, str(value), 9, "middle"))
        else:
            points = tuple(
                (round(LEFT + group * (i + 0.5), 1), level(value))
                for i, value in enumerate(series.values)
            )
            shapes.append(Stroke(points, colour, 2, DASHES[n % len(DASHES)]))
            for (px, py), category, value in zip(
                points, chart.categories, series.values, strict=True
            ):
                tip = f"{say(category, language)} · {name}: {value}"
                shapes.append(Dot(px, py, 3, colour, tip))
    summary = "; ".join(
        say(series.name, language)
        + ": "
        + ", ".join(
            f"{say(category, language)} {value}"
            for category, value in zip(chart.categories, series.values, strict=True)
        )
        for series in chart.series
    )
    return Drawing(chart.key, title, summary, tuple(shapes))


# ------------------------------------------------------------------ SVG
def _number(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def svg(chart: Chart, language: Language) -> str:
    """The chart as an inline ``<svg>`` element."""
    drawing = layout(chart, language)
    key = escape(drawing.key)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_number(WIDTH)} '
        f'{_number(HEIGHT)}" width="{_number(WIDTH)}" height="{_number(HEIGHT)}" role="img" '
        f'class="chart" data-chart="{key}" '
        f'aria-labelledby="{key}-title {key}-desc">',
        f'<title id="{key}-title">{escape(drawing.title)}</title>',
        f'<desc id="{key}-desc">{escape(drawing.summary)}</desc>',
        '<g font-family="sans-serif">',
    ]
    for shape in drawing.shapes:
        if isinstance(shape, Box):
            parts.append(
                f'<rect x="{_number(shape.x)}" y="{_number(shape.y)}" width="{_number(shape.w)}"'
                f' height="{_number(shape.h)}" fill="{shape.colour}">'
                f"<title>{escape(shape.tip)}</title></rect>"
            )
        elif isinstance(shape, Stroke):
            points = " ".join(f"{_number(x)},{_number(y)}" for x, y in shape.points)
            dash = (
                f' stroke-dasharray="{_number(shape.dash[0])} {_number(shape.dash[1])}"'
                if shape.dash
                else ""
            )
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{shape.colour}"'
                f' stroke-width="{_number(shape.width)}"{dash}/>'
            )
        elif isinstance(shape, Dot):
            parts.append(
                f'<circle cx="{_number(shape.x)}" cy="{_number(shape.y)}" r="{_number(shape.r)}"'
                f' fill="{shape.colour}"><title>{escape(shape.tip)}</title></circle>'
            )
        else:
            turn = (
                f' transform="rotate(-90 {_number(shape.x)} {_number(shape.y)})"'
                if shape.upright
                else ""
            )
            parts.append(
                f'<text x="{_number(shape.x)}" y="{_number(shape.y)}" font-size="'
                f'{_number(shape.size)}" text-anchor="{shape.anchor}" fill="{shape.colour}"'
                f"{turn}>{escape(shape.text)}</text>"
            )
    parts.append("</g></svg>")
    return "".join(parts)


# ------------------------------------------------------------------ PDF
MM_PER_POINT = 25.4 / 72


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def draw(pdf: FPDF, chart: Chart, *, x: float, y: float, width: float, font: str) -> float:
    """Draw the chart (in both languages) at ``x``, ``y`` (mm), ``width`` wide, in the
    document's font ``font``; the height it took."""
    drawing = layout(chart, "both")
    scale = width / WIDTH

    def at(px: float, py: float) -> tuple[float, float]:
        return x + px * scale, y + py * scale

    for shape in drawing.shapes:
        if isinstance(shape, Box):
            pdf.set_fill_color(*_rgb(shape.colour))
            left, top = at(shape.x, shape.y)
            pdf.rect(left, top, shape.w * scale, shape.h * scale, style="F")
        elif isinstance(shape, Stroke):
            pdf.set_draw_color(*_rgb(shape.colour))
            pdf.set_line_width(shape.width * scale)
            if shape.dash:
                pdf.set_dash_pattern(shape.dash[0] * scale, shape.dash[1] * scale)
            pdf.polyline([at(px, py) for px, py in shape.points])
            if shape.dash:
                pdf.set_dash_pattern()
        elif isinstance(shape, Dot):
            pdf.set_fill_color(*_rgb(shape.colour))
            cx, cy = at(shape.x, shape.y)
            pdf.circle(cx, cy, shape.r * scale, style="F")
        else:
            pdf.set_font(font, size=shape.size * scale / MM_PER_POINT)
            pdf.set_text_color(*_rgb(shape.colour))
            tx, ty = at(shape.x, shape.y)
            shift = {"start": 0.0, "middle": 0.5, "end": 1.0}[shape.anchor]
            offset = pdf.get_string_width(shape.text) * shift
            if shape.upright:
                with pdf.rotation(90, tx, ty):
                    pdf.text(tx - offset, ty, shape.text)
            else:
                pdf.text(tx - offset, ty, shape.text)
    pdf.set_text_color(0, 0, 0)
    pdf.set_draw_color(0, 0, 0)
    pdf.set_fill_color(255, 255, 255)
    pdf.set_line_width(0.2)
    return HEIGHT * scale


# ------------------------------------------------------------------ the reports' charts
MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MAX_CATEGORIES = 8  # reasons, providers: the most frequent (highest) ones


def evaluation_charts(evaluation: AnnualEvaluation) -> tuple[Chart, ...]:
    """The year's volumes per month, deadlines per queue, refusals by reason and
    exports by risk."""
    report = evaluation.report
    months = tuple((f"{n}月", MONTHS_EN[n - 1]) for n in range(1, 13))
    count = ("数量", "Count")
    reasons = report.refusal_reasons[:MAX_CATEGORIES]
    return (
        Chart(
            "volumes",
            "line",
            (f"{evaluation.year}年各月业务量", f"Volumes per month, {evaluation.year}"),
            ("月份", "Month"),
            count,
            months,
            tuple(
                Series(MONTHLY_NAMES[kind], tuple(getattr(m, kind) for m in evaluation.months))
                for kind in MONTHLY
            ),
        ),
        Chart(
            "deadlines",
            "bar",
            ("各环节办理时限", "Stage deadlines"),
            ("环节", "Queue"),
            count,
            tuple(STAGE_LABELS[stage.stage] for stage in report.deadlines),
            (
                Series(("按期", "Met"), tuple(stage.met for stage in report.deadlines)),
                Series(("超期", "Missed"), tuple(stage.missed for stage in report.deadlines)),
            ),
        ),
        Chart(
            "refusals",
            "bar",
            ("不予通过的理由", "Reasons for refusal"),
            ("理由", "Reason"),
            count,
            tuple((reason, reason) for reason, _ in reasons),
            (Series(("次数", "Times given"), tuple(n for _, n in reasons)),),
        ),
        Chart(
            "risks",
            "bar",
            ("导出申请（按风险等级）", "Exports requested, by risk"),
            ("风险等级", "Risk"),
            count,
            tuple(ops_label("exports_by_risk", risk) for risk, _ in report.exports_by_risk),
            (Series(("申请导出", "Requested"), tuple(n for _, n in report.exports_by_risk)),),
        ),
    )


def contribution_charts(report: ContributionReport) -> tuple[Chart, ...]:
    """The providers' quality, use and value scores (the highest contributions)."""
    shown = report.providers[:MAX_CATEGORIES]
    return (
        Chart(
            "contributions",
            "bar",
            ("提供单位数据贡献评分", "Providers' contribution scores"),
            ("提供单位", "Provider"),
            ("评分（0–100）", "Score (0–100)"),
            tuple((row.name, row.name) for row in shown),
            tuple(
                Series(COLUMN_LABELS[name], tuple(getattr(row.scores, name) or 0 for row in shown))
                for name in ("quality", "use", "value")
            ),
            top=100,
        ),
    )
