"""Aggregated views: the threshold, dominance and p% rules, and secondary suppression that
leaves no withheld cell recoverable from the published ones."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.views.aggregate import (
    AggregateViewSpec,
    Cell,
    Released,
    build_aggregate_view,
    protect,
    recoverable,
    relations,
    treatment_id,
)
from sandbox.views.disclosure import (
    DisclosurePolicyError,
    DisclosureRules,
    load_disclosure,
    rules_from,
)
from sandbox.views.fields import FieldRule, ViewSpecError
from sandbox.views.treatments import SensitivityClass, Treatment, load_treatments
from tests.attacks.solver import determined
from tests.conftest import REPO_ROOT

POLICY = load_treatments(REPO_ROOT / "policies" / "treatments.yaml")
DISCLOSURE = load_disclosure(REPO_ROOT / "policies" / "disclosure.yaml")
Q, S, D, ORD = (
    SensitivityClass.QUASI_IDENTIFIER,
    SensitivityClass.SENSITIVE_ATTRIBUTE,
    SensitivityClass.DIRECT_IDENTIFIER,
    SensitivityClass.ORDINARY,
)
CLASSES = {"district": Q, "age": Q, "sex": Q, "income": S, "name": D, "firm": D, "note": ORD}
DISTRICT = FieldRule("district", Treatment.KEEP)
AGE = FieldRule("age", Treatment.GENERALIZE, {"to": "band", "width": 20})


def table(rows: int = 2000, seed: int = 3, **overrides: Any) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    data: dict[str, list[Any]] = {
        "district": [rng.choice(["市南区", "市北区", "崂山区", "黄岛区"]) for _ in range(rows)],
        "age": [rng.randrange(20, 80) for _ in range(rows)],
        "sex": [rng.choice("MF") for _ in range(rows)],
        "income": [round(rng.uniform(1000, 9000), 2) for _ in range(rows)],
        "name": [f"person {n}" for n in range(rows)],
        "firm": [f"firm {n % 400}" for n in range(rows)],
        "note": ["x"] * rows,
    }
    for column, values in overrides.items():
        data[column][: len(values)] = values
    return data


def build(
    tmp_path: Path,
    data: dict[str, list[Any]],
    spec: AggregateViewSpec,
    released: Released | None = None,
) -> tuple[Any, Any]:
    source = tmp_path / "source.parquet"
    pq.write_table(pa.table(data), source)
    report = build_aggregate_view(
        source, spec, POLICY, DISCLOSURE, destination=tmp_path / "view.parquet", released=released
    )
    return report, pq.read_table(tmp_path / "view.parquet").to_pylist()


def spec(*dimensions: FieldRule, **options: Any) -> AggregateViewSpec:
    return AggregateViewSpec("L2", CLASSES, dimensions, **options)


def test_a_small_cell_is_withheld_and_so_is_a_partner_of_it(tmp_path: Path) -> None:
    data = table(district=["小区"] * 4)  # four people alone in a district: under 10
    report, rows = build(tmp_path, data, spec(DISTRICT))
    small = next(row for row in rows if row["district"] == "小区")
    assert small["suppressed"] and small["count"] is None
    assert report.reasons == {"threshold": 1}
    # the total is published, so one more district must be withheld with it
    assert report.secondary_suppressed == 1
    assert sum(row["suppressed"] for row in rows) == 2
    total = next(row for row in rows if row["district"] is None)
    assert total["count"] == 2000 and not total["suppressed"]


def test_published_counts_and_sums_are_exact(tmp_path: Path) -> None:
    data = table()
    _, rows = build(tmp_path, data, spec(DISTRICT, AGE, measures=("income",)))
    for row in rows:
        if row["suppressed"]:
            continue
        chosen = [
            i
            for i in range(len(data["age"]))
            if row["district"] in (None, data["district"][i])
            and (row["age"] is None or row["age"] == _band(data["age"][i]))
        ]
        assert row["count"] == len(chosen)
        assert row["sum_income"] == pytest.approx(sum(data["income"][i] for i in chosen))
        assert row["mean_income"] == pytest.approx(row["sum_income"] / row["count"])


def _band(age: int) -> str:
    low = age // 20 * 20
    return f"{low}-{low + 19}"


def test_a_dominant_contributor_withholds_every_cell_it_dominates(tmp_path: Path) -> None:
    data = table(income=[200_000_000.0])  # one income twenty times all others together
    report, rows = build(tmp_path, data, spec(DISTRICT, measures=("income",)))
    first = data["district"][0]
    withheld = {row["district"] for row in rows if row["suppressed"]}
    assert {first, None} <= withheld
    assert report.reasons.get("dominance") == 2
    assert all(row["sum_income"] is None for row in rows if row["suppressed"])


def test_the_p_percent_rule_catches_what_dominance_lets_pass() -> None:
    rules = DisclosureRules(10, 3, 0.99, 0.10, 1.0)
    # three contributors hold 97% (dominance passes) but the second-largest, knowing the
    # total, learns the largest to within 5 (under 10% of it)
    magnitudes = [(100.0, [80.0, 15.0, 2.0])]
    assert rules.primary(12, magnitudes) == "p_percent"
    assert rules.primary(12, [(100.0, [20.0, 10.0, 10.0])]) is None
    assert rules.primary(9, [(100.0, [20.0, 10.0, 10.0])]) == "threshold"


def test_contributors_are_counted_distinctly_when_the_spec_names_them(tmp_path: Path) -> None:
    data = table(rows=600)
    data["firm"] = ["firm A"] * 300 + ["firm B"] * 300  # two firms only: under any threshold
    report, rows = build(tmp_path, data, spec(DISTRICT, measures=("income",), contributor="firm"))
    assert all(row["suppressed"] for row in rows)
    assert report.reasons["threshold"] == report.cells


def test_the_spec_is_checked_before_anything_is_built(tmp_path: Path) -> None:
    data = table(rows=50)
    cases = [
        (spec(FieldRule("name", Treatment.KEEP)), "direct identifier"),
        (spec(DISTRICT, measures=("name",)), "direct identifier"),
        (spec(DISTRICT, measures=("sex",)), "numeric"),
        (spec(FieldRule("age", Treatment.MASK)), "kept, generalized"),
        (
            spec(
                DISTRICT,
                AGE,
                FieldRule("sex", Treatment.KEEP),
                FieldRule("note", Treatment.KEEP),
                FieldRule("income", Treatment.GENERALIZE, {"to": "band", "width": 1000}),
            ),
            "1 to 4",
        ),
        (spec(DISTRICT, DISTRICT), "named twice"),
        (spec(FieldRule("nowhere", Treatment.KEEP)), "not a column"),
        (spec(DISTRICT, rules=DisclosureRules(5, 2, 0.9, 0.1, 1.0)), "min_cell"),
        (spec(DISTRICT, rules=DisclosureRules(10, 2, 0.9, 0.1, 9.0)), "epsilon_budget"),
        (AggregateViewSpec("L9", CLASSES, (DISTRICT,)), "no security level"),
    ]
    for case, reason in cases:
        with pytest.raises(ViewSpecError, match=reason):
            build(tmp_path, data, case)
        assert not (tmp_path / "view.parquet").exists()


def test_stricter_rules_of_the_spec_are_applied(tmp_path: Path) -> None:
    data = table(district=["小区"] * 15)
    strict = DisclosureRules(20, 2, 0.9, 0.1, 1.0)
    report, rows = build(tmp_path, data, spec(DISTRICT, rules=strict))
    assert report.rules == strict
    assert next(row for row in rows if row["district"] == "小区")["suppressed"]


def test_a_table_too_fine_is_refused(tmp_path: Path) -> None:
    data = table(rows=30_000)
    data["income"] = [float(n) for n in range(30_000)]
    fine = spec(FieldRule("income", Treatment.GENERALIZE, {"to": "band", "width": 1}))
    with pytest.raises(ViewSpecError, match="generalize"):
        build(tmp_path, data, fine)


# a 2 x 2 table with its margins: the inner cells, the row and column totals, the total
TWO_WAY: list[tuple[str | None, ...]] = [
    *[(row, column) for row in "ab" for column in "xy"],
    *[(row, None) for row in "ab"],
    *[(None, column) for column in "xy"],
    (None, None),
]


def test_relations_of_a_two_way_cube() -> None:
    found = sorted(sorted(r) for r in relations(TWO_WAY))
    assert found == sorted(
        sorted(r) for r in [[4, 0, 1], [5, 2, 3], [6, 0, 2], [7, 1, 3], [8, 4, 5], [8, 6, 7]]
    )


def test_a_lone_withheld_cell_of_a_line_is_recoverable_and_a_2x2_block_is_not() -> None:
    found = relations(TWO_WAY)
    assert recoverable(found, {0}) == [0]
    assert recoverable(found, {0, 1}) == [0, 1]  # column margins give each
    assert recoverable(found, {0, 1, 2, 3}) == []


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 5),
    st.integers(2, 5),
    st.lists(st.integers(0, 30), min_size=25, max_size=25),
    st.integers(0, 2**32 - 1),
)
def test_no_withheld_cell_is_recoverable_whatever_the_table(
    rows: int, columns: int, counts: list[int], seed: int
) -> None:
    cells = _cube(rows, columns, counts)
    primary = {i for i, cell in enumerate(cells) if cell.count < 10}
    withheld = protect(cells, primary)
    assert primary <= withheld
    assert determined(cells, withheld) == set()
    del seed


def _cube(rows: int, columns: int, counts: list[int]) -> list[Cell]:
    inner = {(f"r{r}", f"c{c}"): counts[r * 5 + c] for r in range(rows) for c in range(columns)}
    totals: dict[tuple[str | None, str | None], int] = dict(inner)
    for (r, c), n in inner.items():
        for key in ((r, None), (None, c), (None, None)):
            totals[key] = totals.get(key, 0) + n
    return [Cell(key, n, n, [], []) for key, n in totals.items()]


def test_the_disclosure_policy_is_loaded_and_checked(tmp_path: Path) -> None:
    assert DISCLOSURE.rules("L3").min_cell == 10
    assert len(DISCLOSURE.digest) == 64
    good = {
        "min_cell": 10,
        "dominance_n": 2,
        "dominance_k": 0.9,
        "p_percent": 0.1,
        "epsilon_budget": 1,
    }
    bad = [
        ({**good, "min_cell": 2, "dominance_n": 1}, "min_cell"),
        ({**good, "dominance_k": 1.5}, "fraction"),
        ({key: value for key, value in good.items() if key != "p_percent"}, "exactly"),
        ({**good, "epsilon_budget": -1}, "at least 0"),
        ({**good, "dominance_n": 10}, "dominance_n"),
    ]
    cases = {yaml.safe_dump({"levels": {"L1": entry}}): reason for entry, reason in bad}
    cases.update({"levels: []": "mapping", "levels: {": "not YAML"})
    for text, reason in cases.items():
        path = tmp_path / "disclosure.yaml"
        path.write_text(text)
        with pytest.raises(DisclosurePolicyError, match=reason):
            load_disclosure(path)
    with pytest.raises(DisclosurePolicyError, match="exactly"):
        rules_from("spec.rules", {"min_cell": 10})


def test_a_later_view_keeps_what_earlier_views_of_the_grant_published(tmp_path: Path) -> None:
    sizes = {"甲区": 5, "乙区": 12, "丙区": 50, "丁区": 60}
    data = table(rows=sum(sizes.values()))
    data["district"] = [name for name, n in sizes.items() for _ in range(n)]
    alone = Released()
    _, rows = build(tmp_path, data, spec(DISTRICT, measures=("income",)), alone)
    assert _withheld(rows) == {"甲区", "乙区"}  # the small one and the cheapest partner
    # had 乙区 been published by an earlier view with its income, it is known: another
    # partner (published with its count alone, it would still be a candidate)
    b = frozenset({("district", "乙区")})
    known = Released(cells={b: False}, measures={b: frozenset({"income"})})
    report, rows = build(tmp_path, data, spec(DISTRICT, measures=("income",)), known)
    assert _withheld(rows) == {"甲区", "丙区"}
    # a cell withheld before stays withheld, whatever the rules would say of it now
    hidden = Released(cells={frozenset({("district", "丁区")}): True})
    report, rows = build(tmp_path, data, spec(DISTRICT, measures=("income",)), hidden)
    assert {"甲区", "丁区"} <= _withheld(rows)
    assert report.reasons["earlier_release"] == 1
    assert hidden.cells[frozenset({("district", "甲区")})] is True  # the state is kept up to date
    assert hidden.treatments == {"district": treatment_id(DISTRICT)}
    assert Released.from_json(hidden.to_json()) == hidden
    # the cells of earlier views that this one does not have still count in the check
    other = Released(cells={frozenset({("sex", "M")}): False, frozenset(): False})
    build(tmp_path, data, spec(DISTRICT), other)
    with pytest.raises(ViewSpecError, match="one treatment"):
        build(
            tmp_path,
            data,
            spec(FieldRule("district", Treatment.GENERALIZE, {"to": "district"})),
            hidden,
        )


def _withheld(rows: list[dict[str, Any]]) -> set[str | None]:
    return {row["district"] for row in rows if row["suppressed"]}


def test_a_cell_published_before_is_still_protected_for_a_new_measure(tmp_path: Path) -> None:
    rows = 400
    data = table(rows=rows)
    data["district"] = ["甲区" if n < 200 else "乙区" for n in range(rows)]
    data["sex"] = ["M" if n % 2 else "F" for n in range(rows)]
    # one rich man in 甲区: dominant among its men, not in its margin nor among all men
    data["income"] = [1.5e6 if n == 1 else 1000.0 + n for n in range(rows)]
    sex = FieldRule("sex", Treatment.KEEP)
    released = Released()
    _, counts_only = build(tmp_path, data, spec(DISTRICT, sex), released)
    assert not any(row["suppressed"] for row in counts_only)  # every count published
    report, rows_out = build(tmp_path, data, spec(DISTRICT, sex, measures=("income",)), released)
    by = {(row["district"], row["sex"]): row for row in rows_out}
    assert by[("甲区", "M")]["suppressed"] and report.reasons == {"dominance": 1}
    # the margin less the women would give the men's sum: one of them is withheld too,
    # though both counts were published by the first view
    assert by[("甲区", None)]["suppressed"] or by[("甲区", "F")]["suppressed"]
    cells = [Cell((r["district"], r["sex"]), 0, 0, [], []) for r in rows_out]
    hidden = {i for i, r in enumerate(rows_out) if r["suppressed"]}
    assert determined(cells, hidden, truth=False) == set()


def test_a_smaller_dominance_n_is_a_looser_rule() -> None:
    floor = DisclosureRules(10, 2, 0.9, 0.1, 3.0)
    assert DisclosureRules(10, 1, 0.9, 0.1, 3.0).looser_than(floor) == ["dominance"]
    assert DisclosureRules(10, 3, 0.9, 0.1, 3.0).looser_than(floor) == []


def test_means_leave_missing_values_out_and_names_do_not_collide(tmp_path: Path) -> None:
    data = table(rows=40)
    data["district"] = ["甲区"] * 40
    data["income"] = [10.0] * 20 + [None] * 20
    _, rows = build(tmp_path, data, spec(DISTRICT, measures=("income",)))
    assert {row["mean_income"] for row in rows} == {10.0}
    with pytest.raises(ViewSpecError, match="adds itself"):
        build(
            tmp_path,
            {**data, "count": data["district"]},
            AggregateViewSpec("L2", {**CLASSES, "count": Q}, (FieldRule("count", Treatment.KEEP),)),
        )
