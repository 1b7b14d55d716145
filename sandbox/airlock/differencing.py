"""Differencing: an export's frequency tables against the tables released before.

Two releases that count nearly the same people reveal the few in which they differ.
People per district aged 18 and over, then aged 17 and over, give the 17-year-olds of
each district by subtraction; district totals published after a table by district and
age band, whose cells under the minimum were left out, give the cells left out. Each
table may pass the threshold rule alone.

- :class:`ReleasedTable`: a frequency table as the gateway keeps it once released, with
  ``to_dict``/``from_dict`` (integers and strings only: the gateway stores it as
  canonical JSON). Its cells are keyed by canonical values (:mod:`sandbox.airlock.normalise`:
  ``Shinan`` and `` shinan `` are one value, so are ``2024/01/05`` and ``2024-01-05``),
  and its dimensions by canonical column names.
- :func:`released_tables`: the frequency tables of an approved export, read exactly as
  :func:`sandbox.airlock.export.check_export` reads them (the same files, archive
  members, notebook outputs and tables in text; the same decision of which columns are
  keys and which is the count, :func:`sandbox.airlock.cells.read_aggregate`).
- :func:`differencing_findings`: every table of an export against every earlier one
  that shares a dimension, on the dimensions they share. A table on more dimensions is
  summed to the shared ones; a margin written in a table (a key that is empty or says
  "total") stands for such a sum. Two counts of the same group that differ by 1 to
  ``min_cell`` - 1 fire :attr:`CheckName.DIFFERENCING`: the difference counts a group
  smaller than the threshold rule allows. Suppressed cells count as absent, so a
  total that recovers a suppressed cell fires too.

A finding names the earlier table's ``source`` label (the gateway chooses it, and it is
shown to the applicant: "release 3: counts.csv") and the dimensions compared, never a
value or a count. Tables whose dimension names share nothing are not compared; cells
found in one table only are not a finding.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from sandbox.airlock.cells import MARGINS, Aggregate
from sandbox.airlock.contracts import CheckName, Finding
from sandbox.airlock.normalise import canonical, canonical_texts, text_of
from sandbox.airlock.policy import AirlockRules

MAX_CELLS = 100_000  # a larger table is not a frequency table a release should hold
MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer canonical JSON holds
CROSS_COUNT = "(cells)"  # the count of a cross-table: its cells are the counts
_SEPARATORS = re.compile(r"[\s_\-]+")

Key = tuple[str, ...]


class TableTooLarge(ValueError):
    """A table has more than :data:`MAX_CELLS` cells."""


@dataclass(frozen=True)
class ReleasedCell:
    key: Key  # canonical values, in the order of the table's dimensions
    count: int
    sums: tuple[float | None, ...] = ()  # each magnitude's total in the cell (None: not given)


@dataclass(frozen=True)
class ReleasedTable:
    """A frequency table of a release: counts (and optionally the totals of magnitudes)
    by canonical values of canonically named dimensions. Suppressed cells are not kept."""

    source: str  # how findings name it: "release 3: counts.csv"
    location: str  # within the file: "", "sheet 'Sheet1'", "cell 3, output 1, table 1"
    dimensions: tuple[str, ...]  # canonical names, e.g. ("district", "age_band")
    count: str  # the count column's canonical name; "(cells)" for a cross-table
    magnitudes: tuple[str, ...]  # the measures whose totals the cells give, e.g. ("income",)
    cells: tuple[ReleasedCell, ...]

    def __post_init__(self) -> None:
        if len(self.cells) > MAX_CELLS:
            raise TableTooLarge(f"{len(self.cells):,} cells, more than {MAX_CELLS:,}")
        if not self.dimensions or len(set(self.dimensions)) < len(self.dimensions):
            raise ValueError("a released table has dimensions, each named once")
        width, measures = len(self.dimensions), len(self.magnitudes)
        keys = set()
        for cell in self.cells:
            if len(cell.key) != width or not all(isinstance(v, str) for v in cell.key):
                raise ValueError("every key of a released table has a value per dimension")
            if not _whole(cell.count):
                raise ValueError("every cell of a released table has a count of at least 0")
            if len(cell.sums) != measures:
                raise ValueError("every cell of a released table has a total per magnitude")
            keys.add(cell.key)
        if len(keys) < len(self.cells):
            raise ValueError("a released table has one cell per key")

    def to_dict(self) -> dict[str, Any]:
        """Strings, integers and lists only: a magnitude that is not a whole number (or
        that is too large for canonical JSON) is written as a decimal string."""
        cells: list[list[Any]] = []
        for cell in self.cells:
            entry: list[Any] = [list(cell.key), cell.count]
            if self.magnitudes:
                entry.append([_encode(value) for value in cell.sums])
            cells.append(entry)
        return {
            "source": self.source,
            "location": self.location,
            "dimensions": list(self.dimensions),
            "count": self.count,
            "magnitudes": list(self.magnitudes),
            "cells": cells,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReleasedTable:
        entries = data["cells"]
        if not isinstance(entries, list):
            raise ValueError("a released table's cells are a list")
        if len(entries) > MAX_CELLS:
            raise TableTooLarge(f"{len(entries):,} cells, more than {MAX_CELLS:,}")
        cells = []
        for entry in entries:
            if (
                not isinstance(entry, list)
                or len(entry) not in (2, 3)
                or not isinstance(entry[0], list)
                or (len(entry) == 3 and not isinstance(entry[2], list))
            ):
                raise ValueError("a released cell is [key, count] or [key, count, sums]")
            sums = tuple(_decode(value) for value in entry[2]) if len(entry) == 3 else ()
            cells.append(ReleasedCell(tuple(entry[0]), entry[1], sums))
        return cls(
            str(data["source"]),
            str(data.get("location", "")),
            tuple(str(name) for name in data["dimensions"]),
            str(data["count"]),
            tuple(str(name) for name in data.get("magnitudes", ())),
            tuple(cells),
        )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SAFE_INTEGER


def _encode(value: float | None) -> int | str | None:
    if value is None:
        return None
    if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    return repr(value)  # the shortest decimal that reads back as the same double


def _decode(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a released magnitude is a whole number, a decimal string or null")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError("a released magnitude is a finite number")
    return number


# ---------------------------------------------------------------------- extraction
def canonical_names(names: Sequence[str]) -> tuple[str, ...]:
    """Column names as tables are matched by them: canonical text (lower case, NFKC,
    trimmed), runs of spaces, underscores and dashes as one ``_``; unique."""
    found: list[str] = []
    for name, text in zip(names, canonical_texts(names), strict=True):
        base = _SEPARATORS.sub("_", text).strip("_") or name.strip().lower() or "column"
        unique, suffix = base, 1
        while unique in found:
            suffix += 1
            unique = f"{base}.{suffix}"
        found.append(unique)
    return tuple(found)


def released_table(source: str, location: str, aggregate: Aggregate) -> ReleasedTable | None:
    """The :class:`ReleasedTable` of a table read by
    :func:`sandbox.airlock.cells.read_aggregate`: None if it is not an aggregate or has no
    count; :class:`TableTooLarge` past :data:`MAX_CELLS` cells. Keys that become one
    canonically (``Shinan``, `` shinan ``) are one cell, their counts added."""
    found = aggregate.cells
    if not found:
        return None
    if len(found) > MAX_CELLS:
        raise TableTooLarge(f"{len(found):,} cells, more than {MAX_CELLS:,}")
    dimensions = canonical_names(aggregate.keys)
    by_position = [
        canonical(text_of(pa.array([cell.keys[i] for cell in found], pa.string()))).to_pylist()
        for i in range(len(dimensions))
    ]
    bases = sorted({name for cell in found for name in cell.sums})
    measures = {
        base: name if base else "total"
        for base, name in zip(bases, canonical_names(bases), strict=True)
    }
    magnitudes = tuple(sorted(set(measures.values())))
    counts: dict[Key, int] = {}
    sums: dict[Key, list[float | None]] = {}
    for row, cell in enumerate(found):
        if cell.count is None or not 0 <= cell.count <= MAX_SAFE_INTEGER:
            continue  # suppressed
        key = tuple(str(values[row]) for values in by_position)
        given = {measures[n]: total for n, total in cell.sums.items() if math.isfinite(total)}
        totals = [given.get(name) for name in magnitudes]
        if key in counts:  # two spellings of one key
            counts[key] += int(cell.count)
            sums[key] = [_add(a, b) for a, b in zip(sums[key], totals, strict=True)]
        else:
            counts[key], sums[key] = int(cell.count), totals
    if not counts:
        return None
    cells = tuple(
        ReleasedCell(key, counts[key], tuple(sums[key]) if magnitudes else ())
        for key in sorted(counts)
    )
    count = CROSS_COUNT if aggregate.count is None else canonical_names([aggregate.count])[0]
    return ReleasedTable(source, location, dimensions, count, magnitudes, cells)


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def released_tables(
    paths: Sequence[Path], *, root: Path | None, rules: AirlockRules
) -> tuple[ReleasedTable, ...]:
    """The frequency tables of the files of an approved export, to keep for the
    differencing of later exports. The files are read as :func:`check_export` reads
    them, archives and notebooks included (so at the cost of checking them again; the
    findings are dropped: the export was checked before it was approved). Tables of
    more than :data:`MAX_CELLS` cells, or of more than ``aggregate_rows`` rows, are
    left out. ``source`` is the file's name (relative to ``root``); the gateway may
    prefix its own label: ``replace(table, source=f"release 3: {table.source}")``."""
    # export.py imports this module for ReleasedTable and differencing_findings
    from sandbox.airlock.export import collect_released

    return collect_released(paths, rules, root=root)


# ---------------------------------------------------------------------- comparison
def differencing_findings(
    current: Sequence[ReleasedTable], earlier: Sequence[ReleasedTable], rules: AirlockRules
) -> list[Finding]:
    """Every table of ``current`` against every table of ``earlier`` that shares a
    dimension name with it: at most one finding per pair, for the finest set of shared
    dimensions on which some group's counts differ by 1 to ``min_cell`` - 1."""
    minimum = rules.disclosure.min_cell
    totals: dict[int, _Totals] = {}

    def of(table: ReleasedTable) -> _Totals:
        if id(table) not in totals:
            totals[id(table)] = _Totals(table)
        return totals[id(table)]

    findings = []
    for new in current:
        for old in earlier:
            shared = set(new.dimensions) & set(old.dimensions)
            if not shared:
                continue
            ours, theirs = of(new), of(old)
            levels = [tuple(sorted(shared))] + sorted(
                {n for n in (*ours.margins, *theirs.margins) if set(n) < shared},
                key=lambda n: (-len(n), n),
            )
            for level in levels:
                count = _differing(ours.at(level), theirs.at(level), minimum)
                if count:
                    findings.append(
                        Finding(
                            CheckName.DIFFERENCING,
                            new.source,
                            new.location or "table",
                            _reason(count, level, new, old, minimum),
                        )
                    )
                    break
    return findings


def _is_margin(value: str) -> bool:
    return not value or value in MARGINS


def _picker(positions: Sequence[int]) -> Callable[[Key], Key]:
    if len(positions) == 1:
        only = positions[0]
        return lambda key: (key[only],)
    return lambda key: tuple(key[p] for p in positions)


class _Totals:
    """One table's counts by any set of its dimensions: its cells summed to them (once
    per set), and the margins it gives for them."""

    def __init__(self, table: ReleasedTable) -> None:
        self.table = table
        dimensions = table.dimensions
        self.full: list[ReleasedCell] = []
        self.margins: dict[Key, dict[Key, list[int]]] = {}
        for cell in table.cells:
            kept = [i for i, value in enumerate(cell.key) if not _is_margin(value)]
            if len(kept) == len(dimensions):
                self.full.append(cell)
                continue
            kept.sort(key=dimensions.__getitem__)
            level = tuple(dimensions[i] for i in kept)
            key = tuple(cell.key[i] for i in kept)
            self.margins.setdefault(level, {}).setdefault(key, []).append(cell.count)
        self.cache: dict[Key, dict[Key, list[int]]] = {}

    def at(self, level: Key) -> dict[Key, list[int]]:
        """The counts of each group of ``level`` (sorted dimension names): the margin the
        table gives for it, or else the sum of the cells in it. (A margin that disagrees
        with the table's own cells is a matter for that table, not for differencing: the
        same table released twice does not fire.)"""
        if level in self.cache:
            return self.cache[level]
        positions = [self.table.dimensions.index(name) for name in level]
        summed: dict[Key, int] = defaultdict(int)
        if positions == list(range(len(self.table.dimensions))):
            for cell in self.full:
                summed[cell.key] += cell.count
        else:
            pick = _picker(positions)
            for cell in self.full:
                summed[pick(cell.key)] += cell.count
        found = {key: [count] for key, count in summed.items()}
        found.update(self.margins.get(level, {}))
        self.cache[level] = found
        return found


def _differing(ours: dict[Key, list[int]], theirs: dict[Key, list[int]], minimum: int) -> int:
    """How many groups in both have counts that differ by 1 to ``minimum`` - 1."""
    small, large = (ours, theirs) if len(ours) <= len(theirs) else (theirs, ours)
    differing = 0
    for key, counts in small.items():
        others = large.get(key)
        if others and any(0 < abs(a - b) < minimum for a in counts for b in others):
            differing += 1
    return differing


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _reason(count: int, level: Key, new: ReleasedTable, old: ReleasedTable, minimum: int) -> str:
    what = "cells" if set(level) == set(new.dimensions) else "totals"
    by = f"by {_names(level)}" if level else "of the whole table"
    earlier = old.source + (f", {old.location}" if old.location else "")
    how = [
        f"{whose} totals over {_names([d for d in table.dimensions if d not in level])}"
        for whose, table in (("this table's", new), ("the earlier table's", old))
        if set(level) != set(table.dimensions)
    ]
    reason = f"{count} {what} {by} differ by 1 to {minimum - 1} from those of {earlier}"
    if how:
        reason += f" ({'; '.join(how)})"
    reason += f": each difference counts a group smaller than the minimum cell of {minimum}"
    both = sorted(set(new.magnitudes) & set(old.magnitudes))
    if both:
        reason += f", and the sums of {_names(both)} give that group's total"
    return reason
