"""Differencing across releases: released tables, their canonical JSON, and the
comparisons that fire (or do not)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit.canonical import encode
from sandbox.airlock import (
    CheckName,
    ExportContext,
    ReleasedTable,
    check_export,
    differencing_findings,
    load_airlock,
    released_tables,
)
from sandbox.airlock.differencing import MAX_CELLS, ReleasedCell, TableTooLarge
from sandbox.views.disclosure import load_disclosure
from tests.conftest import REPO_ROOT

DISCLOSURE = load_disclosure(REPO_ROOT / "policies" / "disclosure.yaml")
RULES = load_airlock(REPO_ROOT / "policies" / "airlock.yaml", DISCLOSURE).rules("L2")  # min 10


def table(
    source: str, dimensions: tuple[str, ...], counts: dict[tuple[str, ...], int]
) -> ReleasedTable:
    cells = tuple(ReleasedCell(key, count) for key, count in sorted(counts.items()))
    return ReleasedTable(source, "", dimensions, "count", (), cells)


def read(tmp_path: Path, name: str, data: str | pa.Table) -> tuple[ReleasedTable, ...]:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data)
    else:
        pq.write_table(data, path)
    return released_tables([path], root=tmp_path, rules=RULES)


ADULTS = {("shinan",): 1200, ("laoshan",): 980, ("huangdao",): 1500}  # aged 18 and over


# ---------------------------------------------------------------------- released tables
def test_a_released_table_round_trips_through_canonical_json(tmp_path: Path) -> None:
    csv = "district,count,sum_income,mean_visits\n市南区,20,1234.5,2.25\n崂山区,30,1e300,2\n"
    (released,) = read(tmp_path, "money.csv", csv)
    assert released.magnitudes == ("income", "visits") and released.count == "count"
    data = released.to_dict()
    assert data["cells"][1] == [["市南区"], 20, ["1234.5", 45]]  # 2.25 × 20 visits in all
    assert data["cells"][0][2][0] == "1e+300"  # too large for a JSON integer
    assert ReleasedTable.from_dict(json.loads(encode(data))) == released  # encode takes no float
    with pytest.raises(ValueError, match="count of at least 0"):
        ReleasedTable.from_dict({**data, "cells": [[["市南区"], 20.0]]})
    with pytest.raises(ValueError, match="one cell per key"):
        ReleasedTable.from_dict({**data, "cells": [[["a"], 1, [1, 2]], [["a"], 2, [3, 4]]]})


def test_csv_and_parquet_give_the_same_cells(tmp_path: Path) -> None:
    (from_csv,) = read(
        tmp_path, "a.csv", "District,Year,count\n Shinan ,2024.0,120\nLaoshan,2024,98\n"
    )
    parquet = pa.table(
        {
            "district": ["shinan", "LAOSHAN"],
            "year": pa.array([2024, 2024], pa.int64()),
            "count": pa.array([120, 98], pa.int64()),
        }
    )
    (from_parquet,) = read(tmp_path, "b.parquet", parquet)
    assert from_csv.dimensions == from_parquet.dimensions == ("district", "year")
    assert from_csv.cells == from_parquet.cells
    assert {cell.key for cell in from_csv.cells} == {("shinan", "2024"), ("laoshan", "2024")}
    assert differencing_findings((from_csv,), (from_parquet,), RULES) == []


def test_a_table_has_at_most_max_cells() -> None:
    cells = (ReleasedCell(("a",), 10),) * (MAX_CELLS + 1)  # the size is checked first
    with pytest.raises(TableTooLarge):
        ReleasedTable("big", "", ("id",), "count", (), cells)
    with pytest.raises(TableTooLarge):
        ReleasedTable.from_dict(
            {
                "source": "big",
                "location": "",
                "dimensions": ["id"],
                "count": "n",
                "cells": [[]] * (MAX_CELLS + 1),
            }
        )


# ---------------------------------------------------------------------- comparisons
def test_counts_of_a_slightly_wider_population() -> None:
    earlier = table("release 1: adults.csv", ("district",), ADULTS)
    wider = dict(ADULTS)
    wider[("shinan",)] += 7  # the 17-year-olds of one district
    wider[("huangdao",)] += 12  # enough of them in another
    (finding,) = differencing_findings(
        [table("counts.csv", ("district",), wider)], [earlier], RULES
    )
    assert finding.check is CheckName.DIFFERENCING and finding.file == "counts.csv"
    assert finding.reason.startswith(
        "1 cells by 'district' differ by 1 to 9 from those of release 1"
    )
    assert_silent(finding.reason)


def test_a_margin_of_an_earlier_table() -> None:
    by_band = {
        ("shinan", "18-39"): 500,
        ("shinan", "40-64"): 600,  # its 65+ cell, 4 people, was left out as small
        ("laoshan", "18-39"): 480,
        ("laoshan", "40-64"): 400,
        ("laoshan", "65+"): 100,
    }
    earlier = table("release 2: bands.csv", ("district", "age_band"), by_band)
    totals = {("shinan",): 1104, ("laoshan",): 980}
    (finding,) = differencing_findings(
        [table("totals.csv", ("district",), totals)], [earlier], RULES
    )
    assert "the earlier table's totals over 'age_band'" in finding.reason
    assert_silent(finding.reason)
    # the other way round: the finer table after the totals
    later = differencing_findings([earlier], [table("release 1", ("district",), totals)], RULES)
    assert "this table's totals over 'age_band'" in later[0].reason
    # a grand total written in a table is a margin too
    shown = {("shinan",): 1100, ("laoshan",): 980, ("total",): 2086}
    (grand,) = differencing_findings([table("t.csv", ("district",), shown)], [earlier], RULES)
    assert grand.reason.startswith("1 totals of the whole table")
    exact = {("shinan",): 1100, ("laoshan",): 980, ("total",): 2080}
    assert differencing_findings([table("t.csv", ("district",), exact)], [earlier], RULES) == []


def test_tables_sharing_some_dimensions_are_summed_to_them() -> None:
    by_sex = {
        ("shinan", "f"): 600,
        ("shinan", "m"): 600,
        ("laoshan", "f"): 490,
        ("laoshan", "m"): 490,
    }
    earlier = table("release 1", ("district", "sex"), by_sex)
    by_band = {("shinan", "young"): 603, ("shinan", "old"): 600, ("laoshan", "all"): 980}
    (finding,) = differencing_findings(
        [table("b.csv", ("district", "age"), by_band)], [earlier], RULES
    )
    assert finding.reason.startswith("1 totals by 'district'")


def test_what_is_not_a_finding() -> None:
    earlier = table("release 1", ("district",), ADULTS)
    same = table("same.csv", ("district",), ADULTS)
    far = table("far.csv", ("district",), {key: count + 10 for key, count in ADULTS.items()})
    other = table("other.csv", ("district",), {("jiaozhou",): 1203})  # no cell in common
    renamed = table("renamed.csv", ("area",), {key: count + 3 for key, count in ADULTS.items()})
    current = [same, far, other, renamed]
    assert differencing_findings(current, [earlier], RULES) == []
    # a table whose total row holds a suppressed cell, released again as it was
    suppressed = {("shinan",): 1200, ("laoshan",): 980, ("total",): 2184}
    again = table("again.csv", ("district",), suppressed)
    assert differencing_findings([again], [replace(again, source="release 2")], RULES) == []


def test_check_export_runs_differencing_only_with_releases(tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    path.write_text("district,count\nshinan,1207\nlaoshan,980\nhuangdao,1500\n")
    earlier = table("release 1: adults.csv", ("district",), ADULTS)
    report = check_export([path], ExportContext(RULES, releases=(earlier,)), root=tmp_path)
    assert report.blocked and report.fired() == {CheckName.DIFFERENCING}
    assert CheckName.DIFFERENCING in report.checks
    assert "release 1: adults.csv" in report.blocking[0].reason
    assert_silent(report.blocking[0].reason + report.blocking[0].location)
    alone = check_export([path], ExportContext(RULES), root=tmp_path)
    assert alone.passed and CheckName.DIFFERENCING not in alone.checks
    assert "no earlier releases were given: differencing did not run" in alone.notes
    again = check_export([path], ExportContext(RULES, releases=(replace(earlier, cells=()),)))
    assert again.passed and CheckName.DIFFERENCING in again.checks


def assert_silent(text: str) -> None:
    """No value and no count of either table in ``text``."""
    for word in ("shinan", "laoshan", "huangdao", "1200", "1207", "1104", "980", "7", "4"):
        assert word not in text.lower(), word
