"""Differentially private aggregates: counts, sums, means, histograms and quantiles with
diffprivlib, each paid for from the grant's privacy budget before it is computed.

Every query states its own epsilon and, for anything but a count, the bounds of the
column's values. The bounds come from the spec, never from the data (the data's own range
would leak its extremes); values outside them are clipped. A query may be split by a
column whose categories the spec lists: the groups are disjoint, so by parallel
composition the query costs its epsilon once, and a category absent from the data is
still answered (with noise), so the answer does not reveal which categories exist.

The answers are computed in memory, then paid for, atomically, by the :class:`Budget`
the caller gives (the platform's is ``gateway.budget.PrivacyBudgets``: one conditional
update in the control plane's database, recorded in the ledger), and only then written.
A request that would take the grant past its budget is refused and its answers are
discarded unseen; a computation that fails costs nothing, since nothing was released.

Randomness is diffprivlib's secure default (``secrets.SystemRandom``); no seed is taken.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.views.aggregate import NUMERIC_PREFIXES
from sandbox.views.fields import ViewSpecError, quoted, source_connection
from sandbox.views.treatments import SensitivityClass, TreatmentPolicy

MAX_EPSILON = 10.0  # for one query; a grant's budget is set by policies/disclosure.yaml
MAX_CATEGORIES = 1000
MAX_BINS = 1000


class Statistic(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    HISTOGRAM = "histogram"
    QUANTILE = "quantile"


class BudgetExceeded(Exception):
    """The grant's privacy budget cannot pay for the request; nothing was computed."""

    def __init__(self, grant: str, asked: float, remaining: float) -> None:
        super().__init__(
            f"grant {grant} has epsilon {remaining:g} left; the request needs {asked:g}"
        )
        self.grant = grant
        self.asked = asked
        self.remaining = remaining


class Budget(Protocol):
    def spend(self, grant: str, epsilon: float, purpose: Mapping[str, Any]) -> float:
        """Take ``epsilon`` from ``grant``'s budget, atomically and recorded, and return
        what is left; raise :class:`BudgetExceeded` (taking nothing) if it is too little."""
        ...


@dataclass(frozen=True)
class PrivateQuery:
    name: str  # names the query's rows in the output
    statistic: Statistic
    epsilon: float
    column: str | None = None  # None: a count of records
    bounds: tuple[float, float] | None = None  # the values' range, public knowledge
    bins: int = 10  # histogram
    quantile: float = 0.5  # quantile, from 0 to 1
    group_by: str | None = None
    categories: tuple[str, ...] = ()  # every value of group_by answered

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PrivateViewSpec:
    level: str
    classes: Mapping[str, SensitivityClass]
    queries: tuple[PrivateQuery, ...]

    @property
    def epsilon(self) -> float:
        return math.fsum(query.epsilon for query in self.queries)


@dataclass(frozen=True)
class PrivateViewReport:
    """No exact figure of the data is reported: the manifest travels with the view."""

    epsilon_spent: float
    epsilon_left: float
    queries: tuple[str, ...]


def check_private_spec(
    spec: PrivateViewSpec, types: Mapping[str, str], policy: TreatmentPolicy
) -> None:
    """:class:`ViewSpecError` unless every query is well formed and the policy lets its
    columns be aggregated."""
    if not spec.queries:
        raise ViewSpecError("a private view has at least one query")
    names = [query.name for query in spec.queries]
    for query in spec.queries:
        where = f"query {query.name!r}"
        if not query.name or names.count(query.name) > 1:
            raise ViewSpecError(f"{where}: every query has a name of its own")
        if not (isinstance(query.epsilon, int | float) and 0 < query.epsilon <= MAX_EPSILON):
            raise ViewSpecError(f"{where}: epsilon is above 0 and at most {MAX_EPSILON:g}")
        for column in (query.column, query.group_by):
            if column is None:
                continue
            if column not in types:
                raise ViewSpecError(f"{where}: {column!r} is not a column of the data")
            if column not in spec.classes:
                raise ViewSpecError(f"{where}: {column!r} has no sensitivity class")
            reason = policy.aggregate_refusal(spec.classes[column], spec.level)
            if reason is not None:
                raise ViewSpecError(f"{where}: {column}: {reason}")
        if query.statistic is not Statistic.COUNT:
            if query.column is None:
                raise ViewSpecError(f"{where}: a {query.statistic} needs a column")
            if not types[query.column].upper().startswith(NUMERIC_PREFIXES):
                raise ViewSpecError(
                    f"{where}: a {query.statistic} needs numbers; {query.column} is "
                    f"{types[query.column]}"
                )
            low, high = _bounds(where, query.bounds)
            if query.statistic is Statistic.HISTOGRAM and not 1 <= query.bins <= MAX_BINS:
                raise ViewSpecError(f"{where}: bins are from 1 to {MAX_BINS}")
            if query.statistic is Statistic.QUANTILE and not 0 <= query.quantile <= 1:
                raise ViewSpecError(f"{where}: the quantile is from 0 to 1")
            del low, high
        if query.group_by is not None:
            if not 1 <= len(query.categories) <= MAX_CATEGORIES:
                raise ViewSpecError(
                    f"{where}: a grouped query lists its categories (1 to {MAX_CATEGORIES})"
                )
            if len(set(query.categories)) != len(query.categories):
                raise ViewSpecError(f"{where}: a category is listed twice")
        elif query.categories:
            raise ViewSpecError(f"{where}: categories without group_by")


def build_private_view(
    source: Path,
    spec: PrivateViewSpec,
    policy: TreatmentPolicy,
    budget: Budget,
    *,
    grant: str,
    destination: Path,
    memory_limit: str = "512MB",
) -> PrivateViewReport:
    """Answer the spec's queries over ``source`` into ``destination`` (Parquet: one row
    per query and group, or per histogram bin), paying ``spec.epsilon`` from ``grant``."""
    with source_connection(source, destination, memory_limit) as (connection, _, types):
        check_private_spec(spec, types, policy)
        purpose = {
            "queries": [query.name for query in spec.queries],
            "destination": destination.name,
        }
        rows: list[dict[str, Any]] = []
        for query in spec.queries:
            _answer(connection, query, rows)
    left = budget.spend(grant, spec.epsilon, purpose)  # refused: the answers go unseen
    _write(rows, destination)
    return PrivateViewReport(
        epsilon_spent=spec.epsilon,
        epsilon_left=left,
        queries=tuple(query.name for query in spec.queries),
    )


def _answer(connection: Any, query: PrivateQuery, rows: list[dict[str, Any]]) -> None:
    """Answer ``query`` into ``rows``: one row per group, or per group and bin."""
    selected = [quoted(query.column) if query.column else "1"]
    if query.group_by is not None:
        selected.append(f"CAST({quoted(query.group_by)} AS VARCHAR)")
    table = connection.sql(f"SELECT {', '.join(selected)} FROM source").to_arrow_table()  # noqa: S608
    if query.group_by is None:
        groups: Sequence[tuple[str | None, np.ndarray]] = [(None, _numbers(table.column(0)))]
    else:
        values, keys = _numbers(table.column(0)), table.column(1).to_numpy(zero_copy_only=False)
        groups = [(category, values[keys == category]) for category in query.categories]
    for group, values in groups:
        answer = _statistic(query, values)
        if query.statistic is Statistic.HISTOGRAM:
            counts, edges = answer
            for n, count in enumerate(counts):
                rows.append(_row(query, group, float(count), float(edges[n]), float(edges[n + 1])))
        else:
            rows.append(_row(query, group, float(answer), None, None))


def _statistic(query: PrivateQuery, values: np.ndarray) -> Any:
    # diffprivlib brings scikit-learn and SciPy: two seconds that every `sbx` command and
    # the gateway's start would pay, so it is imported where a private answer is computed
    from diffprivlib import tools
    from diffprivlib.mechanisms import Geometric

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffprivlib warns when it clips: the bounds are set
        if query.statistic is Statistic.COUNT:
            return Geometric(epsilon=query.epsilon, sensitivity=1).randomise(len(values))
        low, high = query.bounds or (0.0, 0.0)
        clipped = np.clip(values[~np.isnan(values)], low, high)
        if query.statistic is Statistic.SUM:
            return _sum(clipped, query.epsilon, low, high)
        if query.statistic is Statistic.MEAN:
            # a noisy sum over a noisy count, half the epsilon each: the mean of diffprivlib
            # takes the group's size as public, which a group of a grouped query is not
            total = _sum(clipped, query.epsilon / 2, low, high)
            count = Geometric(epsilon=query.epsilon / 2, sensitivity=1).randomise(len(clipped))
            return float(np.clip(total / max(count, 1), low, high))
        if query.statistic is Statistic.HISTOGRAM:
            return tools.histogram(
                clipped, epsilon=query.epsilon, bins=query.bins, range=(low, high)
            )
        return tools.quantile(clipped, query.quantile, epsilon=query.epsilon, bounds=(low, high))


def _sum(values: np.ndarray, epsilon: float, low: float, high: float) -> float:
    """The Laplace mechanism over the sum, one record changing it by at most the larger
    bound in magnitude (diffprivlib's own sum answers an empty array without noise)."""
    from diffprivlib.mechanisms import Laplace

    sensitivity = max(abs(low), abs(high))
    return float(Laplace(epsilon=epsilon, sensitivity=sensitivity).randomise(float(values.sum())))


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    if (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_decimal(column.type)
    ):
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    return np.ones(len(column))  # a count over a non-numeric column counts its records


def _row(
    query: PrivateQuery, group: str | None, value: float, low: float | None, high: float | None
) -> dict[str, Any]:
    return {
        "query": query.name,
        "statistic": str(query.statistic),
        "column": query.column,
        "group": group,
        "bin_low": low,
        "bin_high": high,
        "value": value,
        "epsilon": float(query.epsilon),
    }


def _write(rows: list[dict[str, Any]], destination: Path) -> None:
    schema = pa.schema(
        [
            ("query", pa.string()),
            ("statistic", pa.string()),
            ("column", pa.string()),
            ("group", pa.string()),
            ("bin_low", pa.float64()),
            ("bin_high", pa.float64()),
            ("value", pa.float64()),
            ("epsilon", pa.float64()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), destination)


def _bounds(where: str, bounds: Any) -> tuple[float, float]:
    if (
        not isinstance(bounds, tuple | list)
        or len(bounds) != 2
        or not all(
            isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b)
            for b in bounds
        )
        or not bounds[0] < bounds[1]
    ):
        raise ViewSpecError(f"{where}: bounds are two finite numbers, low below high")
    return float(bounds[0]), float(bounds[1])
