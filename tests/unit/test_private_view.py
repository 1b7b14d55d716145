"""Differentially private aggregates: answers near the truth, noise that is really there,
the budget paid before anything is computed, and specs checked first."""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.views.fields import ViewSpecError
from sandbox.views.private import (
    BudgetExceeded,
    PrivateQuery,
    PrivateViewSpec,
    Statistic,
    build_private_view,
)
from sandbox.views.treatments import SensitivityClass, load_treatments
from tests.conftest import REPO_ROOT

POLICY = load_treatments(REPO_ROOT / "policies" / "treatments.yaml")
CLASSES = {
    "age": SensitivityClass.QUASI_IDENTIFIER,
    "sex": SensitivityClass.QUASI_IDENTIFIER,
    "income": SensitivityClass.SENSITIVE_ATTRIBUTE,
    "id_number": SensitivityClass.DIRECT_IDENTIFIER,
}


class Purse:
    """A budget in memory, as the protocol asks: all or nothing per spend."""

    def __init__(self, epsilon: float) -> None:
        self.left = epsilon
        self.spends: list[tuple[str, float, Mapping[str, Any]]] = []

    def spend(self, grant: str, epsilon: float, purpose: Mapping[str, Any]) -> float:
        if epsilon > self.left + 1e-12:
            raise BudgetExceeded(grant, epsilon, self.left)
        self.left -= epsilon
        self.spends.append((grant, epsilon, purpose))
        return self.left


@pytest.fixture
def source(tmp_path: Path) -> Path:
    rng = random.Random(5)
    rows = 20_000
    path = tmp_path / "people.parquet"
    pq.write_table(
        pa.table(
            {
                "age": [rng.randrange(18, 90) for _ in range(rows)],
                "sex": [rng.choice("MF") for _ in range(rows)],
                "income": [rng.uniform(0, 10_000) for _ in range(rows)],
                "id_number": [f"{n:018d}" for n in range(rows)],
            }
        ),
        path,
    )
    return path


def run(
    source: Path, purse: Purse, *queries: PrivateQuery, name: str = "dp"
) -> list[dict[str, Any]]:
    spec = PrivateViewSpec("L2", CLASSES, queries)
    destination = source.parent / f"{name}.parquet"
    build_private_view(source, spec, POLICY, purse, grant="g1", destination=destination)
    rows: list[dict[str, Any]] = pq.read_table(destination).to_pylist()
    return rows


def test_answers_are_near_the_truth_and_noisy(source: Path) -> None:
    purse = Purse(10.0)
    counts = [
        run(source, purse, PrivateQuery("n", Statistic.COUNT, 1.0), name=f"n{i}")[0]["value"]
        for i in range(8)
    ]
    assert all(abs(count - 20_000) < 30 for count in counts)
    assert len(set(counts)) > 1  # the same query twice does not give the same answer
    assert purse.left == pytest.approx(2.0)


def test_every_statistic_and_grouping(source: Path) -> None:
    purse = Purse(3.0)
    rows = run(
        source,
        purse,
        PrivateQuery("sum", Statistic.SUM, 0.5, "income", (0, 10_000)),
        PrivateQuery(
            "mean",
            Statistic.MEAN,
            0.5,
            "income",
            (0, 10_000),
            group_by="sex",
            categories=("M", "F", "X"),
        ),
        PrivateQuery("hist", Statistic.HISTOGRAM, 0.5, "age", (0, 100), bins=5),
        PrivateQuery("median", Statistic.QUANTILE, 0.5, "age", (0, 100)),
    )
    by = {(row["query"], row["group"], row["bin_low"]): row["value"] for row in rows}
    assert by[("sum", None, None)] == pytest.approx(20_000 * 5_000, rel=0.05)
    assert by[("mean", "M", None)] == pytest.approx(5_000, rel=0.05)
    assert 0 <= by[("mean", "X", None)] <= 10_000  # absent, answered all the same
    assert sum(v for (q, _, _), v in by.items() if q == "hist") == pytest.approx(20_000, rel=0.01)
    assert by[("median", None, None)] == pytest.approx(54, abs=3)
    assert purse.left == pytest.approx(1.0)
    assert purse.spends[0][2]["queries"] == ["sum", "mean", "hist", "median"]


def test_a_request_beyond_the_budget_is_refused_and_nothing_is_written(source: Path) -> None:
    purse = Purse(0.5)
    query = PrivateQuery("n", Statistic.COUNT, 0.3)
    run(source, purse, query)
    with pytest.raises(BudgetExceeded, match="0.2 left"):
        run(source, purse, query, name="second")
    assert not (source.parent / "second.parquet").exists()
    assert purse.left == pytest.approx(0.2)


def test_a_spec_is_checked_before_the_budget_is_touched(source: Path) -> None:
    purse = Purse(5.0)
    bad = [
        (PrivateQuery("x", Statistic.SUM, 0.1, "income"), "bounds"),
        (PrivateQuery("x", Statistic.SUM, 0.1, "income", (10, 1)), "bounds"),
        (PrivateQuery("x", Statistic.COUNT, 0.0), "epsilon"),
        (PrivateQuery("x", Statistic.COUNT, 50.0), "epsilon"),
        (PrivateQuery("x", Statistic.COUNT, 0.1, group_by="sex"), "categories"),
        (PrivateQuery("x", Statistic.COUNT, 0.1, categories=("M",)), "without group_by"),
        (PrivateQuery("x", Statistic.SUM, 0.1, "id_number", (0, 1)), "direct identifier"),
        (
            PrivateQuery("x", Statistic.COUNT, 0.1, group_by="nowhere", categories=("a",)),
            "not a column",
        ),
        (PrivateQuery("x", Statistic.QUANTILE, 0.1, "age", (0, 100), quantile=2), "quantile"),
        (PrivateQuery("x", Statistic.MEAN, 0.1), "needs a column"),
        (PrivateQuery("x", Statistic.SUM, 0.1, "sex", (0, 1)), "needs numbers"),
    ]
    for query, reason in bad:
        with pytest.raises(ViewSpecError, match=reason):
            run(source, purse, query)
    with pytest.raises(ViewSpecError, match="name of its own"):
        run(
            source,
            purse,
            PrivateQuery("x", Statistic.COUNT, 0.1),
            PrivateQuery("x", Statistic.COUNT, 0.1),
        )
    assert purse.spends == []


def test_the_noise_is_of_the_scale_epsilon_implies(source: Path) -> None:
    purse = Purse(1000.0)
    answers = [
        run(source, purse, PrivateQuery("n", Statistic.COUNT, 0.5), name=f"s{i}")[0]["value"]
        for i in range(120)
    ]
    spread = statistics.pstdev(answers)
    # the two-sided geometric mechanism at epsilon 0.5 has a standard deviation near 2.8
    assert 2.0 < spread < 3.8
    assert abs(statistics.mean(answers) - 20_000) < 1.0


def test_a_computation_that_fails_costs_nothing(tmp_path: Path) -> None:
    source = tmp_path / "visits.csv"
    rows = "\n".join(["age,sex"] + [f"{20 + n % 50},M" for n in range(30_000)] + ["N/A,F"])
    source.write_text(rows + "\n")  # DuckDB types age from its sample: the late N/A breaks it
    purse = Purse(1.0)
    query = PrivateQuery("mean_age", Statistic.MEAN, 0.5, "age", (0, 100))
    with pytest.raises(Exception, match="(?i)conver|cast|could not"):
        build_private_view(
            source,
            PrivateViewSpec("L2", CLASSES, (query,)),
            POLICY,
            purse,
            grant="g1",
            destination=tmp_path / "dp.parquet",
        )
    assert purse.spends == [] and purse.left == 1.0
    assert not (tmp_path / "dp.parquet").exists()
