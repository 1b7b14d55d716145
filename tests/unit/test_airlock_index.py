"""The airlock's canonical values and its index of the granted views' rows: the same
value written differently is one value, a row is found whatever its column order and
names, a few of its columns are found, an aggregate's rows are not, and the index
holds no value."""

from __future__ import annotations

import random
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.airlock import RowIndexError, build_row_index
from sandbox.airlock.normalise import ValueHasher, canonical, canonical_texts, row_keys, text_of
from sandbox.airlock.rowindex import RowIndex, RowMatcher

DISTRICTS = ["市南区", "市北区", "崂山区", "黄岛区"]


def people(rows: int = 400, seed: int = 5) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "district": [rng.choice(DISTRICTS) for _ in range(rows)],
            "sex": [rng.choice("男女") for _ in range(rows)],
            "age": [rng.randrange(18, 90) for _ in range(rows)],
            "income": [rng.randrange(5_000, 200_000) for _ in range(rows)],
            "visits": [rng.randrange(0, 12) for _ in range(rows)],
        }
    )


def matcher_for(index: RowIndex, table: pa.Table) -> RowMatcher:
    hasher = ValueHasher()
    try:
        canon = [canonical(text_of(column)) for column in table.columns]
        matcher = RowMatcher(index, table.column_names, hasher.empty)
        matcher.feed(hasher.hashes(canon))
    finally:
        hasher.close()
    return matcher


# ---------------------------------------------------------------------- canonical values
@pytest.mark.parametrize(
    ("written", "value"),
    [
        (["7", "007", "+7", "7.0", " 7 ", "７", "7.00"], "7"),
        (["1234.5", "1,234.5", "1234.50", "1.2345e3"], "1234.5"),
        (["-0", "0.0", "-0.0"], "0"),
        (["2024-01-05", "2024/1/5", "2024.01.05", "2024-01-05 00:00:00"], "2024-01-05"),
        (["", "NaN", "None", "null", "N/A", None], ""),
        (["王伟", " 王伟 "], "王伟"),
        (["ABC", "abc", "ＡＢＣ"], "abc"),
        (["370202198501011234"], "370202198501011234"),  # long digits stay exact
    ],
)
def test_one_value_however_written(written: list[str | None], value: str) -> None:
    assert set(canonical_texts(written)) == {value}


def test_typed_columns_match_their_text() -> None:
    typed = pa.table(
        {
            "i": pa.array([7], pa.int64()),
            "f": pa.array([7.0], pa.float64()),
            "g": pa.array([0.1], pa.float32()),
            "d": pa.array([date(2024, 1, 5)]),
            "t": pa.array([datetime(2024, 1, 5)]),
            "b": pa.array([True]),
        }
    )
    assert [canonical(text_of(c)).to_pylist()[0] for c in typed.columns] == [
        "7",
        "7",
        "0.1",
        "2024-01-05",
        "2024-01-05",
        "true",
    ]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=2, max_size=6))
def test_row_keys_ignore_column_order(values: list[str]) -> None:
    hasher = ValueHasher()
    try:
        hashes = hasher.hashes([pa.array([v]) for v in values])
        shuffled = hashes[::-1]
    finally:
        hasher.close()
    assert row_keys(hashes)[0] == row_keys(shuffled)[0]


# ---------------------------------------------------------------------- the index
def test_whole_rows_are_found_reordered_and_renamed() -> None:
    view = people()
    index = build_row_index([view])
    assert (index.tables, index.records, len(index.rows)) == (1, 400, 400)
    renamed = view.select(list(reversed(view.column_names))).rename_columns(
        [f"c{n}" for n in range(view.num_columns)]
    )
    matcher = matcher_for(
        index, renamed.cast(pa.schema([(n, pa.string()) for n in renamed.column_names]))
    )
    assert matcher.whole == 400 and matcher.first_row == 1


def test_a_few_columns_are_found_on_the_same_record() -> None:
    view = people()
    index = build_row_index([view])
    few = view.select(["income", "age", "district"])
    assert matcher_for(index, few).partial == 400
    # the same values, each column shuffled on its own, belong to no record
    rng = np.random.default_rng(1)
    shuffled = pa.table(
        {name: few.column(name).take(pa.array(rng.permutation(400))) for name in few.column_names}
    )
    assert matcher_for(index, shuffled).partial < 10
    assert matcher_for(index, shuffled).beyond_chance(3) == (0, 0)
    assert matcher_for(index, few).beyond_chance(3) == (0, 400)


def test_an_aggregate_table_is_not_found() -> None:
    view = people(2000)
    index = build_row_index([view])
    counts = view.group_by(["district", "sex"]).aggregate([("income", "count")])
    matcher = matcher_for(index, counts)
    assert (matcher.whole, matcher.partial) == (0, 0)


def test_other_people_are_not_found_beyond_chance() -> None:
    index = build_row_index([people(2000, seed=1)])
    matcher = matcher_for(index, people(2000, seed=2))
    # district, sex, age and visits say little: some other people agree with some record
    # on all of them, about as many as when the columns are shifted apart
    assert matcher.partial > 50 and matcher.chance_partial > 50
    assert matcher.beyond_chance(3) == (0, 0)
    copied = matcher_for(index, people(2000, seed=1).drop_columns(["income"]))
    assert copied.beyond_chance(3)[1] > 100  # the same columns, copied, are found


def test_the_index_holds_no_value_and_round_trips(tmp_path: Path) -> None:
    view = people()
    path = tmp_path / "view.parquet"
    pq.write_table(view, path)
    index = build_row_index([path], label="raw data")
    data = index.to_bytes()
    for value in ("市南区", "男"):
        assert value.encode() not in data
    loaded = RowIndex.from_bytes(data)
    assert loaded.label == "raw data" and loaded.records == 400
    assert np.array_equal(loaded.subsets, index.subsets)
    assert np.array_equal(loaded.subset_records, index.subset_records)
    with pytest.raises(RowIndexError):
        RowIndex.from_bytes(b"not an index")


def test_an_index_of_another_hash_version_is_refused() -> None:
    index = build_row_index([people(50)])
    stale = RowIndex(
        index.label,
        index.rows,
        index.subsets,
        index.subset_records,
        index.values,
        index.pseudonyms,
        hasher="duckdb-0.0.1",
    )
    with pytest.raises(RowIndexError, match="rebuild it"):
        RowIndex.from_bytes(stale.to_bytes())


def test_a_bounded_index_keeps_a_consistent_sample() -> None:
    view = people(2000)
    full = build_row_index([view])
    small = build_row_index([view], max_keys=5000)
    assert len(small.subsets) == 5000 < len(full.subsets)
    assert small.limit("subsets") == int(small.subsets[-1])
    assert matcher_for(small, view).whole == 2000  # whole rows fit under the cap
    few = view.select(["income", "age"])
    assert 0 < matcher_for(small, few).partial < 2000  # a sample of the rows is found


def test_pseudonym_shaped_values_are_indexed() -> None:
    view = pa.table({"id": ["ghij" * 16, "abcd" * 16], "x": ["1", "2"]})
    index = build_row_index([view])
    assert len(index.pseudonyms) == 2
    assert len(build_row_index([people(10)]).pseudonyms) == 0


def test_subset_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build_row_index([people(5)], subset_sizes=())
