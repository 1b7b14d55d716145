"""The rules of the aggregated views, applied to tables that leave: small cells, the
(n, k) dominance and p% rules, zero and full cells, and degrees of freedom of models.

A table is taken for an aggregate when it has group keys (text columns) and counts: a
column named as a count (``count``, ``n``, ``freq``, ``人数``, …), or, in a cross-table,
numeric columns that are all whole numbers of at least zero (they are melted into one
more key). Suppressed cells (empty, ``*``, ``<10``, …) are left alone. Rows whose key is
empty or says "total" are margins: they are cells for the threshold, not for the group
rules.

- *small cells*: a count from 1 to ``min_cell - 1`` (the threshold rule);
- *dominance*: a sum whose largest contributions are shown beside it (``max_x``,
  ``second_x``, or ``min_x`` as a lower bound of the second largest) is checked with
  :meth:`sandbox.views.disclosure.DisclosureRules.primary`; a sum or mean without them
  cannot be checked from the table and is left to the reviewer;
- *group disclosure*: a count of zero (nobody in the group has the attribute), and a
  group in which one category holds every contributor (everybody has it);
- *degrees of freedom*: a model's residual degrees of freedom, in a table column or in
  printed model summaries (statsmodels, R), below the level's minimum.

A table is read once, by :func:`read_aggregate`; differencing
(:mod:`sandbox.airlock.differencing`) keeps the keys and counts of the same reading.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from sandbox.airlock.contracts import CheckName, Finding, Severity
from sandbox.airlock.policy import AirlockRules

MAX_KEYS = 5  # aggregated views have at most 4 dimensions; one more for a cross-table
MAX_CROSS_KEYS = 2  # a cross-table's rows are one or two variables, its columns another
SUPPRESSED = re.compile(r"^(?:|\*+|-|–|x|c|\.\.|n/?a|suppressed|withheld|<\s*\d+|≤\s*\d+)$", re.I)
MARGINS = frozenset({"total", "all", "(all)", "overall", "合计", "总计", "全部", "总体", "小计"})
COUNT_NAME = re.compile(
    r"^(?:n|count|counts|freq|frequency|cases|records|persons|people|size|number|num"
    r"|n_\w+|\w+_n|count_\w+|\w+_count|人数|数量|计数|频数|人次|户数|例数|个数|记录数)$",
    re.I,
)
KEY_NAME = re.compile(r"(?:year|month|age|band|code|年|月|岁|代码)", re.I)
MEASURE = re.compile(
    r"^(?:(?P<pre>sum|total|mean|avg|average|max|maximum|largest|top1|min|minimum|second|top2)"
    r"[_ ]?(?P<a>.*)|(?P<b>.+?)[_ ](?P<post>sum|total|mean|avg|average|max|maximum|largest"
    r"|min|minimum|second))$",
    re.I,
)
ROLES = {
    "sum": "sum",
    "total": "sum",
    "mean": "mean",
    "avg": "mean",
    "average": "mean",
    "max": "max",
    "maximum": "max",
    "largest": "max",
    "top1": "max",
    "second": "second",
    "top2": "second",
    "min": "min",
    "minimum": "min",
}
DF_COLUMNS = re.compile(r"^(?:df[_ .]?resid\w*|resid\w*[_ .]?df|res\.df|residual degrees.*)$", re.I)
DF_TEXT = (
    re.compile(r"Df Residuals:\s+(\d+)"),
    re.compile(r"on (\d+) degrees of freedom"),
    re.compile(r"\bdf[_ ]?resid(?:ual)?s?\s*[=:]\s*(\d+(?:\.\d+)?)", re.I),
)


@dataclass
class _Column:
    name: str
    values: list[str | None]
    numbers: list[float | None]  # None: not a number (or suppressed)
    numeric: bool
    counts: bool  # every number a whole number of at least zero
    boolean: bool


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _column(name: str, values: list[str | None]) -> _Column:
    numbers = [_number(v) for v in values]
    present = [v for v in values if v is not None and not SUPPRESSED.match(v.strip())]
    parsed = [n for n in numbers if n is not None]
    numeric = bool(present) and len(parsed) * 10 >= len(present) * 9
    counts = numeric and all(n >= 0 and n.is_integer() for n in parsed)
    boolean = bool(present) and all(v.lower() in ("true", "false") for v in present)
    return _Column(name, values, numbers, numeric, counts, boolean)


def _is_margin(value: str | None) -> bool:
    return value is None or not value.strip() or value.strip().lower() in MARGINS


@dataclass
class Cell:
    row: int  # 1-based, in the table as read
    keys: tuple[str | None, ...]
    count: float | None  # None: suppressed
    magnitudes: list[tuple[float, list[float]]]
    sums: dict[str, float] = field(default_factory=dict)  # each measure's total (sum, mean × n)


@dataclass
class Aggregate:
    """A table of display text as the cell rules read it; :mod:`sandbox.airlock.differencing`
    reads its keys and counts the same way."""

    columns: list[_Column]
    keys: list[str]  # the key columns' names, and "(columns)" for a cross-table's columns
    count: str | None  # the count column's name (None: a cross-table, or not an aggregate)
    cells: list[Cell] | None  # None: the table does not look like an aggregate
    measured: str  # whether its magnitudes could be checked: "none", "checked", "unchecked"


def read_aggregate(table: pa.Table) -> Aggregate:
    """The columns of a table of display text, and its cells if it looks like an aggregate."""
    columns = [_column(name, table.column(name).to_pylist()) for name in table.column_names]
    shape = _shape(columns)
    cells, keys, measured = _cells(shape)
    count = shape.count.name if shape is not None and shape.count is not None else None
    return Aggregate(columns, keys, count, cells, measured)


def cell_findings(
    file: str, location: str, aggregate: Aggregate, rules: AirlockRules
) -> list[Finding]:
    """The cell rules' findings for a table read by :func:`read_aggregate` (no finding
    but degrees of freedom if the table does not look like an aggregate)."""
    findings = _degrees_in_table(file, location, aggregate.columns, rules)
    cells, keys, measured = aggregate.cells, aggregate.keys, aggregate.measured
    if cells is None:
        return findings
    where = location or "table"
    rule = rules.disclosure
    small = [c for c in cells if c.count is not None and 0 < c.count < rule.min_cell]
    if small:
        findings.append(
            Finding(
                CheckName.SMALL_CELLS,
                file,
                f"{where}, row {small[0].row}",
                f"{len(small)} cells count fewer than {rule.min_cell} contributors "
                "(the threshold rule)",
            )
        )
    dominated = [c for c in cells if _dominance(c, rules) is not None]
    if dominated:
        reasons = sorted({str(_dominance(c, rules)) for c in dominated})
        findings.append(
            Finding(
                CheckName.DOMINANCE,
                file,
                f"{where}, row {dominated[0].row}",
                f"{len(dominated)} cells fail the {' and '.join(reasons)} rule "
                f"(n={rule.dominance_n}, k={rule.dominance_k:.0%}, p={rule.p_percent:.0%}): "
                "a few contributors make up most of the total",
            )
        )
    if measured == "unchecked":
        findings.append(
            Finding(
                CheckName.DOMINANCE,
                file,
                where,
                "sums or means without their largest contributions: dominance cannot be "
                "checked from the table",
                Severity.REVIEW,
            )
        )
    findings.extend(_group_findings(file, where, cells, keys, rules))
    return findings


@dataclass
class _Shape:
    keys: list[_Column]
    count: _Column | None  # None: a cross-table, whose figures are all counts
    figures: list[_Column]  # the count and the magnitudes, or the cross-table's columns


def _shape(columns: list[_Column]) -> _Shape | None:
    """The keys and figures of an aggregate table, or None if it is not one."""
    keys = [
        c
        for c in columns
        if not c.boolean
        and (not c.numeric or (KEY_NAME.search(c.name) and c.counts))
        and not COUNT_NAME.match(c.name.strip())
    ]
    numeric = [c for c in columns if c not in keys and c.numeric]
    count = next((c for c in numeric if COUNT_NAME.match(c.name.strip()) and c.counts), None)
    if not keys or len(keys) > MAX_KEYS or not columns[0].values:
        return None
    tuples = list(zip(*(k.values for k in keys), strict=True))
    if len(set(tuples)) < len(tuples):  # one row per cell, or it is not a table of cells
        return None
    if count is not None:
        return _Shape(keys, count, numeric)
    wide = [
        c
        for c in numeric
        if c.counts and (not MEASURE.match(c.name.strip()) or c.name.strip().lower() in MARGINS)
    ]
    if len(wide) < 2 or len(wide) != len(numeric) or len(keys) > MAX_CROSS_KEYS:
        return None
    return _Shape(keys, None, wide)


def _cells(shape: _Shape | None) -> tuple[list[Cell] | None, list[str], str]:
    """The cells of an aggregate table (None if it is not one), its key names, and
    whether its magnitudes could be checked ("none", "checked", "unchecked")."""
    if shape is None:
        return None, [], "none"
    keys, count = shape.keys, shape.count
    if count is None:
        cells = [
            Cell(row + 1, (*(k.values[row] for k in keys), c.name), c.numbers[row], [])
            for c in shape.figures
            for row in range(len(c.values))
        ]
        return cells, [k.name for k in keys] + ["(columns)"], "none"
    numeric = shape.figures
    measures = _measures([c for c in numeric if c is not count])
    status = "none"
    cells = []
    for row in range(len(count.values)):
        magnitudes = []
        sums = {}
        n = count.numbers[row]
        for measure, roles in measures.items():
            total = _at(roles.get("sum"), row)
            mean = _at(roles.get("mean"), row)
            if total is None and mean is not None and n is not None:
                total = mean * n
            if total is None:
                continue
            sums[measure] = total
            largest = _at(roles.get("max"), row)
            if largest is None:
                status = "unchecked" if status == "none" else status
                continue
            second = _at(roles.get("second"), row)
            if second is None and n is not None and n >= 2:
                second = _at(roles.get("min"), row)
            ranked = [abs(largest)] + ([abs(second)] if second is not None else [])
            magnitudes.append((abs(total), ranked))
            status = "checked" if status != "unchecked" else status
        cells.append(Cell(row + 1, tuple(k.values[row] for k in keys), n, magnitudes, sums))
    return cells, [k.name for k in keys], status


def _measures(columns: list[_Column]) -> dict[str, dict[str, _Column]]:
    """Numeric columns by the measure they describe and their role (sum, mean, max…)."""
    found: dict[str, dict[str, _Column]] = defaultdict(dict)
    for column in columns:
        match = MEASURE.match(column.name.strip())
        if match is None:
            continue
        role = ROLES[(match.group("pre") or match.group("post")).lower()]
        base = (match.group("a") if match.group("pre") else match.group("b")) or ""
        found[base.strip("_ ").lower()][role] = column
    return found


def _at(column: _Column | None, row: int) -> float | None:
    return None if column is None else column.numbers[row]


def _dominance(cell: Cell, rules: AirlockRules) -> str | None:
    if not cell.magnitudes:
        return None
    contributors = max(int(cell.count or 0), rules.disclosure.min_cell)
    reason = rules.disclosure.primary(contributors, cell.magnitudes)
    return reason if reason in ("dominance", "p_percent") else None


def _group_findings(
    file: str, where: str, cells: list[Cell], keys: Sequence[str], rules: AirlockRules
) -> list[Finding]:
    findings = []
    zeros = [c for c in cells if c.count == 0]
    if rules.zero_cells and zeros:
        findings.append(
            Finding(
                CheckName.GROUP_DISCLOSURE,
                file,
                f"{where}, row {zeros[0].row}",
                f"{len(zeros)} cells count zero: they reveal that nobody in the group has "
                "the attribute",
            )
        )
    if not rules.full_cells or len(keys) < 2:
        return findings
    inner = [c for c in cells if not any(map(_is_margin, c.keys))]
    full: list[tuple[int, str]] = []
    for position, attribute in enumerate(keys):
        categories = {c.keys[position] for c in inner if c.count is not None}
        if len(categories) < 2:
            continue
        groups: dict[tuple[str | None, ...], list[Cell]] = defaultdict(list)
        for cell in inner:
            groups[cell.keys[:position] + cell.keys[position + 1 :]].append(cell)
        for members in groups.values():
            if any(c.count is None for c in members):
                continue  # a withheld cell: whether the group is full is not shown
            positive = [c for c in members if (c.count or 0) > 0]
            if len(positive) == 1:
                full.append((positive[0].row, attribute))
    if full:
        row, attribute = min(full)
        findings.append(
            Finding(
                CheckName.GROUP_DISCLOSURE,
                file,
                f"{where}, row {row}",
                f"{len(full)} groups have all their contributors in one category (of "
                f"{attribute!r} first): everybody in the group has that attribute",
            )
        )
    return findings


def _degrees_in_table(
    file: str, location: str, columns: list[_Column], rules: AirlockRules
) -> list[Finding]:
    for column in columns:
        if not DF_COLUMNS.match(column.name.strip()):
            continue
        low = [
            (row, n)
            for row, n in enumerate(column.numbers, start=1)
            if n is not None and n < rules.min_degrees_of_freedom
        ]
        if low:
            return [
                _degrees_finding(file, f"{location or 'table'}, row {low[0][0]}", low[0][1], rules)
            ]
    return []


def degrees_in_text(file: str, location: str, text: str, rules: AirlockRules) -> list[Finding]:
    for pattern in DF_TEXT:
        for match in pattern.finditer(text):
            value = float(match.group(1))
            if value < rules.min_degrees_of_freedom:
                line = text.count("\n", 0, match.start()) + 1
                where = f"{location + ', ' if location else ''}line {line}"
                return [_degrees_finding(file, where, value, rules)]
    return []


def _degrees_finding(file: str, where: str, value: float, rules: AirlockRules) -> Finding:
    return Finding(
        CheckName.DEGREES_OF_FREEDOM,
        file,
        where,
        f"a model with {value:g} residual degrees of freedom, fewer than "
        f"{rules.min_degrees_of_freedom}: its estimates come too close to single records",
    )
