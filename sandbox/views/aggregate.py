"""Aggregated views: group-by tables in which no published cell discloses a contributor.

A spec names up to four dimensions (each kept, generalized or top/bottom-coded, as the
treatments policy allows for aggregated use) and the numeric columns whose sums and means
are published beside every cell's count. The view is the whole cube: every combination of
dimension values and every margin (a dimension's value ``NULL`` means "all"), so what an
applicant could add up from the view is itself in the view and covered by the rules.

The rules are the level's in ``policies/disclosure.yaml`` (a spec may be stricter):

1. *primary suppression* — a cell with fewer contributors than ``min_cell``, or whose
   sums fail the (n, k) dominance or p% rule, is withheld;
2. *secondary suppression* — cells are withheld beside them until no withheld cell can be
   worked out from the published ones. The cube's additive relations (every margin is
   the sum of the cells below it) are a linear system in the withheld cells; a withheld
   cell is recoverable exactly when its unit vector lies in the row space of that system,
   i.e. when the system's null space is zero in its coordinate. Relations with a single
   withheld cell are closed first (cheap), then the null space is checked and, while a
   cell is still recoverable, the cheapest published cell of one of its relations is
   withheld too — cheapest meaning innermost first, then fewest records.

A contributor is a record unless the spec names a contributor column (an enterprise's
credit code, say): then the threshold counts distinct contributors and dominance weighs
each contributor's total in the cell.

What this does not defend against is written in ``docs/explanation/views.md``: bounds
from non-negativity (a withheld count lies between 0 and its margin) and releases of other
tables over the same data (the export airlock checks those).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.views.disclosure import DisclosurePolicy, DisclosureRules
from sandbox.views.fields import (
    FieldRule,
    ViewSpecError,
    expression,
    quoted,
    source_connection,
)
from sandbox.views.treatments import SensitivityClass, Treatment, TreatmentPolicy

MAX_DIMENSIONS = 4
MAX_CELLS = 20_000  # finer tables are refused: generalize the dimensions further
MISSING = "(missing)"
DIMENSION_TREATMENTS = frozenset({Treatment.KEEP, Treatment.GENERALIZE, Treatment.TOP_BOTTOM_CODE})
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL")
NUMERIC_PREFIXES = (*NUMERIC, "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
TOLERANCE = 1e-9

Key = tuple[str | None, ...]
Population = frozenset[tuple[str, str]]  # the columns a cell fixes, with their values


@dataclass(frozen=True)
class AggregateViewSpec:
    level: str
    classes: Mapping[str, SensitivityClass]
    dimensions: tuple[FieldRule, ...]
    measures: tuple[str, ...] = ()  # numeric columns: their sum and mean per cell
    contributor: str | None = None
    rules: DisclosureRules | None = None  # None: the level's


@dataclass(frozen=True)
class AggregateViewReport:
    """No figure that the view withholds is reported (the manifest travels with it)."""

    cells: int
    primary_suppressed: int
    secondary_suppressed: int
    rules: DisclosureRules
    dimensions: tuple[str, ...]
    measures: tuple[str, ...]
    reasons: Mapping[str, int] = field(default_factory=dict)  # primary reason -> cells

    @property
    def cells_suppressed(self) -> int:
        return self.primary_suppressed + self.secondary_suppressed


@dataclass
class Cell:
    key: Key  # one value per dimension; None: all of them
    count: int
    contributors: int
    sums: list[float]
    magnitudes: list[tuple[float, list[float]]]  # per measure: sum of |x|, largest |x|
    present: list[int] = field(default_factory=list)  # per measure: values not NULL

    @property
    def depth(self) -> int:
        """How many dimensions the cell sums over: 0 for the innermost cells."""
        return sum(value is None for value in self.key)


@dataclass
class Released:
    """What the earlier aggregated views of one grant over one dataset version published:
    each dimension's treatment, and whether each cell (named by its population) was
    withheld. A later view keeps every decision: a cell withheld before stays withheld,
    a cell published before counts as known, and the suppression is checked against the
    relations of all views together, so that no two views can be differenced to reveal
    what either withholds. What was published is known per measure: a cell whose count
    was published is still protected for a sum published later. A column keeps its first
    treatment for the grant (age bands of 10 years in one view and of 5 in another would
    difference to the halves)."""

    treatments: dict[str, str] = field(default_factory=dict)
    cells: dict[Population, bool] = field(default_factory=dict)
    measures: dict[Population, frozenset[str]] = field(default_factory=dict)  # published

    def to_json(self) -> bytes:
        cells = [
            {
                "cell": sorted([list(pair) for pair in population]),
                "withheld": withheld,
                "measures": sorted(self.measures.get(population, ())),
            }
            for population, withheld in self.cells.items()
        ]
        return json.dumps(
            {"treatments": self.treatments, "cells": cells}, ensure_ascii=False
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Released:
        raw = json.loads(data)
        cells: dict[Population, bool] = {}
        measures: dict[Population, frozenset[str]] = {}
        for item in raw["cells"]:
            population = frozenset((str(column), str(value)) for column, value in item["cell"])
            cells[population] = bool(item["withheld"])
            if item.get("measures"):
                measures[population] = frozenset(map(str, item["measures"]))
        return cls(dict(raw["treatments"]), cells, measures)


def treatment_id(rule: FieldRule) -> str:
    return json.dumps([str(rule.treatment), dict(rule.params)], sort_keys=True)


def check_aggregate_spec(
    spec: AggregateViewSpec,
    types: Mapping[str, str],
    policy: TreatmentPolicy,
    disclosure: DisclosurePolicy,
    released: Released | None = None,
) -> DisclosureRules:
    """The rules the view will apply; :class:`ViewSpecError` unless the policies allow
    every dimension and measure of the spec."""
    unclassified = sorted(set(types) - set(spec.classes))
    if unclassified:
        raise ViewSpecError(f"columns without a sensitivity class: {unclassified}")
    if not 1 <= len(spec.dimensions) <= MAX_DIMENSIONS:
        raise ViewSpecError(f"an aggregated view has 1 to {MAX_DIMENSIONS} dimensions")
    named = [rule.column for rule in spec.dimensions] + list(spec.measures)
    for column in named:
        if column not in types:
            raise ViewSpecError(f"{column!r} is not a column of the data")
        if named.count(column) > 1:
            raise ViewSpecError(f"{column!r} is named twice")
        reason = policy.aggregate_refusal(spec.classes[column], spec.level)
        if reason is not None:
            raise ViewSpecError(f"{column}: {reason}")
    generated = {"count", "suppressed"} | {
        f"{kind}_{m}" for m in spec.measures for kind in ("sum", "mean")
    }
    for rule in spec.dimensions:
        if rule.column in generated:
            raise ViewSpecError(f"{rule.column}: the name of a column the view adds itself")
        if rule.treatment not in DIMENSION_TREATMENTS:
            raise ViewSpecError(
                f"{rule.column}: a dimension is kept, generalized or top/bottom-coded, "
                f"not {rule.treatment}"
            )
        expression(rule, "x")
        earlier = (released or Released()).treatments.get(rule.column)
        if earlier is not None and earlier != treatment_id(rule):
            raise ViewSpecError(
                f"{rule.column}: an earlier view of this grant grouped it as {earlier}; "
                "a column keeps one treatment across a grant's aggregated views"
            )
    for column in spec.measures:
        if not types[column].upper().startswith(NUMERIC_PREFIXES):
            raise ViewSpecError(f"{column}: a measure is numeric, not {types[column]}")
    if spec.contributor is not None and spec.contributor not in types:
        raise ViewSpecError(f"contributor {spec.contributor!r} is not a column of the data")
    floor = disclosure.rules(spec.level)
    if spec.rules is None:
        return floor
    looser = spec.rules.looser_than(floor)
    if looser:
        raise ViewSpecError(f"rules looser than level {spec.level}'s: {', '.join(looser)}")
    return spec.rules


def build_aggregate_view(
    source: Path,
    spec: AggregateViewSpec,
    policy: TreatmentPolicy,
    disclosure: DisclosurePolicy,
    *,
    destination: Path,
    released: Released | None = None,
    memory_limit: str = "512MB",
) -> AggregateViewReport:
    """Build the view of ``source`` (Parquet or CSV) into ``destination`` (Parquet).
    ``released``: what the grant's earlier aggregated views of the same source published;
    it is updated with this view's decisions (the caller keeps it)."""
    released = released if released is not None else Released()
    with source_connection(source, destination, memory_limit) as (connection, _, types):
        rules = check_aggregate_spec(spec, types, policy, disclosure, released)
        dims = [f"d{i}" for i in range(len(spec.dimensions))]
        measures = [f"m{i}" for i in range(len(spec.measures))]
        selected = [
            f"coalesce(CAST({expression(rule, quoted(rule.column))} AS VARCHAR), '{MISSING}') "
            f"AS {name}"
            for rule, name in zip(spec.dimensions, dims, strict=True)
        ] + [
            f"CAST({quoted(column)} AS DOUBLE) AS {name}"
            for column, name in zip(spec.measures, measures, strict=True)
        ]
        if spec.contributor is not None:
            selected.append(f"{quoted(spec.contributor)} AS c")
        connection.execute(
            f"CREATE TEMP TABLE treated AS SELECT {', '.join(selected)} FROM source"  # noqa: S608 - see fields
        )
        top = max(rules.dominance_n, 2)
        cells: list[Cell] = []
        for size in range(len(dims) + 1):
            for subset in itertools.combinations(range(len(dims)), size):
                cells.extend(_cells(connection, dims, measures, subset, spec.contributor, top))
                if len(cells) > MAX_CELLS:
                    raise ViewSpecError(
                        f"the table would have more than {MAX_CELLS} cells: "
                        "generalize its dimensions further"
                    )
    reasons: dict[str, int] = {}
    primary: set[int] = set()
    for index, cell in enumerate(cells):
        reason = rules.primary(cell.contributors, cell.magnitudes)
        if reason is not None:
            primary.add(index)
            reasons[reason] = reasons.get(reason, 0) + 1
    withheld = _protect_beside(cells, primary, reasons, spec, released)
    _write(cells, withheld, spec, destination)
    return AggregateViewReport(
        cells=len(cells),
        primary_suppressed=len(primary),
        secondary_suppressed=len(withheld - primary),
        rules=rules,
        dimensions=tuple(rule.column for rule in spec.dimensions),
        measures=spec.measures,
        reasons=reasons,
    )


def relations(keys: Sequence[Key]) -> list[list[int]]:
    """The cube's additive relations, each as ``[margin, *cells below it]``: a cell that
    sums over dimension ``j`` is the sum of the cells that give ``j`` a value and agree
    with it elsewhere."""
    index = {key: i for i, key in enumerate(keys)}
    below: dict[tuple[int, Key], list[int]] = {}
    for i, key in enumerate(keys):
        for j, value in enumerate(key):
            if value is not None:
                below.setdefault((j, (*key[:j], None, *key[j + 1 :])), []).append(i)
    return [[index[parent], *children] for (_, parent), children in below.items()]


def recoverable(relations_: Sequence[Sequence[int]], withheld: set[int]) -> list[int]:
    """The withheld cells that the published cells determine exactly through
    ``relations_``, in ascending order."""
    if not withheld:
        return []
    columns = {cell: n for n, cell in enumerate(sorted(withheld))}
    rows = []
    for relation in relations_:
        row = np.zeros(len(columns))
        for position, cell in enumerate(relation):
            if cell in columns:
                row[columns[cell]] = 1.0 if position == 0 else -1.0
        if row.any():
            rows.append(row)
    if not rows:
        return []
    matrix = np.array(rows)
    if matrix.shape[0] < matrix.shape[1]:  # square it: the reduced SVD then has every row
        matrix = np.vstack([matrix, np.zeros((matrix.shape[1] - matrix.shape[0], matrix.shape[1]))])
    _, singular, vt = np.linalg.svd(matrix, full_matrices=False)
    rank = int((singular > TOLERANCE * max(matrix.shape)).sum())
    null = vt[rank:]  # rows span the null space
    norms = np.linalg.norm(null, axis=0) if len(null) else np.zeros(len(columns))
    return [cell for cell, n in columns.items() if norms[n] < 1e-6]


def protect(
    cells: Sequence[Cell], primary: set[int], fixed: AbstractSet[int] = frozenset()
) -> set[int]:
    """The cells to withhold: ``primary`` and as many more as it takes for none of them
    to be recoverable from the published ones. Cells in ``fixed`` are published already
    (by an earlier view) and are never chosen."""
    found = relations([cell.key for cell in cells])
    withheld = set(primary)

    def free(relation: Sequence[int]) -> list[int]:
        return [i for i in relation if i not in withheld and i not in fixed]

    def cost(i: int) -> tuple[int, int]:
        return (cells[i].depth, cells[i].count)

    def widen(relation: Sequence[int]) -> bool:
        choices = free(relation)
        if choices:
            withheld.add(min(choices, key=cost))
        return bool(choices)

    while True:
        changed = True
        while changed:  # no relation may have exactly one withheld cell
            changed = False
            for relation in found:
                if sum(i in withheld for i in relation) == 1:
                    changed = widen(relation) or changed
        exposed = recoverable(found, withheld)
        if not exposed:
            return withheld
        around = [r for r in found if exposed[0] in r and free(r)]
        if not around:  # widen any relation of a withheld cell that still has a choice
            around = [r for r in found if free(r) and any(i in withheld for i in r)]
        if not around:
            raise ViewSpecError(
                "no suppression pattern protects this table beside what is published already"
            )
        widen(min(around, key=lambda r: min(cost(i) for i in free(r))))


def _protect_beside(
    cells: list[Cell],
    primary: set[int],
    reasons: dict[str, int],
    spec: AggregateViewSpec,
    released: Released,
) -> set[int]:
    """:func:`protect` over this view's cells and every cell released before, then
    ``released`` updated; this view's withheld cells."""
    names = [rule.column for rule in spec.dimensions]
    populations: list[Population] = [
        frozenset((names[i], value) for i, value in enumerate(cell.key) if value is not None)
        for cell in cells
    ]
    fixed: set[int] = set()
    wanted = frozenset(spec.measures)
    for i, population in enumerate(populations):
        earlier = released.cells.get(population)
        if earlier is True and i not in primary:
            primary.add(i)
            reasons["earlier_release"] = reasons.get("earlier_release", 0) + 1
        elif (
            earlier is False
            and i not in primary
            and released.measures.get(population, frozenset()) >= wanted
        ):
            # published before with every measure of this view: known. A cell with a
            # measure new to it is not: its new figures are protected like any other's.
            fixed.add(i)
    seen = set(populations)
    extra = [(population, w) for population, w in released.cells.items() if population not in seen]
    columns = sorted(set(names) | {column for population, _ in extra for column, _ in population})

    def place(population: Population) -> Key:
        values = dict(population)
        return tuple(values.get(column) for column in columns)

    union = [
        Cell(place(population), cell.count, cell.contributors, cell.sums, cell.magnitudes)
        for population, cell in zip(populations, cells, strict=True)
    ] + [Cell(place(population), 0, 0, [], []) for population, _ in extra]
    before = len(cells)
    chosen = protect(
        union,
        (primary - fixed) | {before + k for k, (_, w) in enumerate(extra) if w},
        fixed | {before + k for k, (_, w) in enumerate(extra) if not w},
    )
    withheld = {i for i in chosen if i < before} | primary
    for i, population in enumerate(populations):
        if i not in fixed:
            released.cells[population] = i in withheld
        if i not in withheld:
            released.measures[population] = released.measures.get(population, frozenset()) | wanted
    released.treatments.update({rule.column: treatment_id(rule) for rule in spec.dimensions})
    return withheld


def _cells(
    connection: Any,
    dims: Sequence[str],
    measures: Sequence[str],
    subset: tuple[int, ...],
    contributor: str | None,
    top: int,
) -> list[Cell]:
    group = [dims[i] for i in subset]
    by = ", ".join(group)
    inner, count = "treated", "count(*)"
    if contributor is not None:  # first each contributor's total in the cell
        per = ", ".join([*group, "c"])
        sums = "".join(f", sum({m}) AS {m}, count({m}) AS k{m}" for m in measures)
        inner = f"(SELECT {per}, count(*) AS n{sums} FROM treated GROUP BY {per})"  # noqa: S608
        count = "sum(n)"
    aggregates = [count, "count(*)"]
    for m in measures:
        present = f"sum(k{m})" if contributor is not None else f"count({m})"
        aggregates += [f"sum({m})", f"sum(abs({m}))", f"max(abs({m}), {top})", present]
    query = f"SELECT {', '.join([*group, *aggregates])} FROM {inner}"  # noqa: S608
    if group:
        query += f" GROUP BY {by} ORDER BY {by}"
    cells = []
    for row in connection.execute(query).fetchall():
        values_of = dict(zip(subset, row[: len(group)], strict=True))
        key: Key = tuple(values_of.get(i) for i in range(len(dims)))
        rest = row[len(group) :]
        n, people = int(rest[0] or 0), int(rest[1] or 0)
        sums_, magnitudes, present_ = [], [], []
        for position in range(len(measures)):
            total, absolute, largest, known = rest[2 + 4 * position : 6 + 4 * position]
            sums_.append(float(total or 0.0))
            magnitudes.append((float(absolute or 0.0), [float(x) for x in (largest or [])]))
            present_.append(int(known or 0))
        if n or group:
            cells.append(Cell(key, n, people, sums_, magnitudes, present_))
    return cells


def _write(
    cells: Sequence[Cell], withheld: set[int], spec: AggregateViewSpec, destination: Path
) -> None:
    columns: dict[str, list[Any]] = {rule.column: [] for rule in spec.dimensions}
    columns["count"] = []
    for measure in spec.measures:
        columns[f"sum_{measure}"] = []
        columns[f"mean_{measure}"] = []
    columns["suppressed"] = []
    for index, cell in enumerate(cells):
        hidden = index in withheld
        for rule, value in zip(spec.dimensions, cell.key, strict=True):
            columns[rule.column].append(value)
        columns["count"].append(None if hidden else cell.count)
        for position, measure in enumerate(spec.measures):
            total = cell.sums[position]
            columns[f"sum_{measure}"].append(None if hidden else total)
            known = cell.present[position] if cell.present else cell.count
            columns[f"mean_{measure}"].append(None if hidden or not known else total / known)
        columns["suppressed"].append(hidden)
    schema = pa.schema(
        [pa.field(rule.column, pa.string()) for rule in spec.dimensions]
        + [pa.field("count", pa.int64())]
        + [
            pa.field(f"{kind}_{measure}", pa.float64())
            for measure in spec.measures
            for kind in ("sum", "mean")
        ]
        + [pa.field("suppressed", pa.bool_())]
    )
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, destination)
