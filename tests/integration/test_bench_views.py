"""The view benchmark's own parts: the synthetic citizens and the pandas baseline."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from bench.views import aggregate_with_pandas, aggregate_with_sbx, build_with_pandas, build_with_sbx
from sandbox.identifiers.resident_id import birth_date, is_resident_id
from sandbox.synthetic import write_citizens


def test_the_citizens_are_valid_made_up_people_and_the_same_every_time(tmp_path: Path) -> None:
    first = write_citizens(tmp_path / "a.parquet", 5_000, seed=1)
    again = write_citizens(tmp_path / "b.parquet", 5_000, seed=1)
    table = pq.read_table(first)
    assert table.num_columns == 12 and table.num_rows == 5_000
    assert table.equals(pq.read_table(again))
    for row in table.slice(0, 500).to_pylist():
        assert is_resident_id(row["id_number"]), row
        assert birth_date(row["id_number"]) == row["birth_date"]
        assert row["sex"] == ("男" if int(row["id_number"][16]) % 2 else "女")
        assert row["address"].startswith("山东省青岛市") and len(row["phone"]) == 11


def test_the_builder_and_the_baseline_keep_the_same_records(tmp_path: Path) -> None:
    source = write_citizens(tmp_path / "c.parquet", 300_000, seed=3)  # some groups reach k
    ours, theirs = tmp_path / "ours.parquet", tmp_path / "theirs.parquet"
    kept = build_with_sbx(source, ours)
    assert build_with_pandas(source, theirs) == kept > 0
    mine = sorted(pq.read_table(ours).column("id_number").to_pylist())
    baseline = sorted(pq.read_table(theirs).column("id_number").to_pylist())
    assert mine == baseline  # the same pseudonyms: the same HMAC under the same key


def test_the_aggregated_view_and_its_baseline_publish_the_same_cube(tmp_path: Path) -> None:
    source = write_citizens(tmp_path / "d.parquet", 3_000, seed=4)  # small: cells withheld
    ours, theirs = tmp_path / "ours.parquet", tmp_path / "theirs.parquet"
    withheld = aggregate_with_sbx(source, ours)
    assert aggregate_with_pandas(source, theirs) == withheld > 0

    def cells(path: Path) -> list[tuple[object, ...]]:
        rows = pq.read_table(path).to_pylist()
        keys = ("address", "age", "sex", "count", "sum_income", "suppressed")
        return sorted((tuple(row[k] for k in keys) for row in rows), key=repr)

    assert cells(ours) == cells(theirs)
