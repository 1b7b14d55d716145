"""Disclosure attacks on the views. Each test plays an applicant who holds the views of a
grant (and, where said, a second grant's) and tries to learn what the views withhold;
each asserts that the attack fails.

- recover an identifier from a record-level view;
- link the pseudonyms of two grants;
- difference two aggregated views of one grant to isolate a withheld cell;
- recover a withheld cell of one view from its margins;
- single a person out by differencing two private counts;
- spend more than a grant's privacy budget with parallel requests from many processes.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import multiprocessing
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.views import spec as bench_spec
from sandbox.identifiers import find_identifiers
from sandbox.synthetic import write_citizens
from sandbox.vault import Vault
from sandbox.views.aggregate import AggregateViewSpec, Cell
from sandbox.views.builder import ViewBuilder
from sandbox.views.disclosure import load_disclosure
from sandbox.views.fields import FieldRule, ViewSpecError
from sandbox.views.private import BudgetExceeded
from sandbox.views.record import RecordViewSpec
from sandbox.views.treatments import SensitivityClass, Treatment, load_treatments
from tests.attacks.solver import determined
from tests.conftest import REPO_ROOT

TREATMENTS = load_treatments(REPO_ROOT / "policies" / "treatments.yaml")
DISCLOSURE = load_disclosure(REPO_ROOT / "policies" / "disclosure.yaml")


@pytest.fixture(scope="module")
def citizens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("citizens") / "citizens.parquet"
    write_citizens(path, 20_000, seed=11)
    return path


@pytest.fixture
def builder(tmp_path: Path, citizens: Path) -> ViewBuilder:
    """A builder with the citizens as version ``v1``, and 1,500 of them as ``small``
    (a town: its tables have small cells to aim at)."""
    entries: list[dict[str, Any]] = []
    vault = Vault(tmp_path / "vault", entries.append)
    vault.put([citizens.read_bytes()], dataset="citizens", version="v1", actor="user:provider")
    town = tmp_path / "town.parquet"
    pq.write_table(pq.read_table(citizens).slice(0, 1500), town)
    vault.put([town.read_bytes()], dataset="citizens", version="small", actor="user:provider")
    return ViewBuilder(
        tmp_path / "builder",
        tmp_path / "vault",
        TREATMENTS,
        DISCLOSURE,
        entries.append,
    )


def record_spec(source: Path) -> RecordViewSpec:
    """The benchmark's view (pseudonymized ID number and name, masked phone, age bands,
    districts) without the dates, so that most records survive k-anonymity."""
    made: RecordViewSpec = bench_spec()
    assert set(made.classes) == set(pq.read_schema(source).names)
    kept = tuple(
        FieldRule(rule.column, Treatment.DROP)
        if rule.column in ("birth_date", "last_visit")
        else rule
        for rule in made.fields
    )
    return replace(made, fields=kept)


def classes(source: Path) -> dict[str, SensitivityClass]:
    return dict(record_spec(source).classes)


def test_no_identifier_can_be_recovered_from_a_record_view(
    builder: ViewBuilder, citizens: Path, tmp_path: Path
) -> None:
    built = builder.build(
        grant="g1",
        version="v1",
        spec=record_spec(citizens),
        name="people",
        out=tmp_path / "views",
        actor="user:r",
    )
    raw = pq.read_table(citizens).to_pydict()
    view = pq.read_table(built.path).to_pydict()
    assert len(view["id_number"]) > 15_000  # the attack has most of the people to work on
    published = {str(value) for column in view.values() for value in column if value is not None}
    for column in ("id_number", "name", "phone"):
        secrets = {str(value) for value in raw[column]}
        assert not secrets & published, f"raw {column} values appear in the view"
    # nothing in the view reads as a resident ID, mobile number or e-mail either
    found = [hit for value in list(published)[:50_000] for hit in find_identifiers(value)]
    assert found == []
    # the pseudonyms are not hashes of the identifiers under any guessable key
    pseudonyms = set(view["id_number"])
    for value in raw["id_number"][:2000]:
        data = str(value).encode()
        guesses = [hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()]  # noqa: S324
        for key in (b"", b"\0" * 32, b"g1", b"citizens", b"v1"):
            guesses.append(hmac.new(key, data, hashlib.sha256).hexdigest())
        assert not pseudonyms & set(guesses)


def test_two_grants_pseudonyms_cannot_be_linked(
    builder: ViewBuilder, citizens: Path, tmp_path: Path
) -> None:
    spec = record_spec(citizens)
    first = builder.build(
        grant="g1", version="v1", spec=spec, name="a", out=tmp_path / "g1", actor="user:r"
    )
    second = builder.build(
        grant="g2", version="v1", spec=spec, name="a", out=tmp_path / "g2", actor="user:r"
    )
    again = builder.build(
        grant="g1", version="v1", spec=spec, name="b", out=tmp_path / "g1", actor="user:r"
    )
    one = pq.read_table(first.path).column("id_number").to_pylist()
    two = pq.read_table(second.path).column("id_number").to_pylist()
    assert set(one) == set(pq.read_table(again.path).column("id_number").to_pylist())
    assert not set(one) & set(two)  # no pseudonym in common: joining the grants finds nothing
    # nor does their order or the rest of the row give a join key: the rows agree, the
    # pseudonyms do not
    assert len(one) == len(two) and one != two


def aggregate_cells(path: Path, dimensions: list[str]) -> list[tuple[dict[str, Any], Any, bool]]:
    rows = pq.read_table(path).to_pylist()
    return [({d: row[d] for d in dimensions}, row["count"], row["suppressed"]) for row in rows]


def test_two_aggregated_views_cannot_be_differenced(
    builder: ViewBuilder, citizens: Path, tmp_path: Path
) -> None:
    cls = classes(citizens)
    district = FieldRule("address", Treatment.GENERALIZE, {"to": "district"})
    band = FieldRule("age", Treatment.GENERALIZE, {"to": "band", "width": 10})
    sex = FieldRule("sex", Treatment.KEEP)
    views = {
        "by_district": AggregateViewSpec("L2", cls, (district,)),
        "by_district_age": AggregateViewSpec("L2", cls, (district, band)),
        "by_district_sex": AggregateViewSpec("L2", cls, (district, sex)),
    }
    published: dict[frozenset[tuple[str, str]], int] = {}
    withheld: set[frozenset[tuple[str, str]]] = set()
    for name, spec in views.items():
        built = builder.build(
            grant="g1", version="small", spec=spec, name=name, out=tmp_path / "v", actor="user:r"
        )
        dims = [rule.column for rule in spec.dimensions]
        for values, count, hidden in aggregate_cells(built.path, dims):
            population = frozenset((k, v) for k, v in values.items() if v is not None)
            if hidden:
                withheld.add(population)
            else:
                published[population] = count
    assert withheld, "the data has small cells: the attack needs something to aim at"
    assert not withheld & set(published), "a cell withheld in one view is published in another"
    # the attacker stacks every view's cells and sums into one system and solves it
    populations = sorted(withheld | set(published), key=sorted)
    columns = sorted({column for population in populations for column, _ in population})
    cells = [
        Cell(tuple(dict(p).get(c) for c in columns), published.get(p, 0), 0, [], [])
        for p in populations
    ]
    secret = {i for i, p in enumerate(populations) if p in withheld}
    assert determined(cells, secret, truth=False) == set()
    # and the builder refuses the classic overlap: the same column banded two ways
    finer = AggregateViewSpec(
        "L2", cls, (FieldRule("age", Treatment.GENERALIZE, {"to": "band", "width": 5}),)
    )
    with pytest.raises(ViewSpecError, match="one treatment"):
        builder.build(
            grant="g1",
            version="small",
            spec=finer,
            name="finer",
            out=tmp_path / "v",
            actor="user:r",
        )


def test_a_withheld_cell_is_not_recoverable_from_its_margins(
    builder: ViewBuilder, citizens: Path, tmp_path: Path
) -> None:
    cls = classes(citizens)
    spec = AggregateViewSpec(
        "L2",
        cls,
        (
            FieldRule("address", Treatment.GENERALIZE, {"to": "district"}),
            FieldRule("age", Treatment.GENERALIZE, {"to": "band", "width": 10}),
            FieldRule("sex", Treatment.KEEP),
        ),
    )
    built = builder.build(
        grant="g1", version="small", spec=spec, name="cube", out=tmp_path / "v", actor="user:r"
    )
    rows = pq.read_table(built.path).to_pylist()
    assert any(row["suppressed"] for row in rows)
    cells = [
        Cell((row["address"], row["age"], row["sex"]), row["count"] or 0, 0, [], []) for row in rows
    ]
    secret = {i for i, row in enumerate(rows) if row["suppressed"]}
    assert determined(cells, secret, truth=False) == set()
    # the simplest attack of all: a margin less the published cells under it
    by_key = {(row["address"], row["age"], row["sex"]): row for row in rows}
    for key, row in by_key.items():
        if row["suppressed"] or key[1] is not None:
            continue
        below = [
            r for k, r in by_key.items() if k[0] == key[0] and k[2] == key[2] and k[1] is not None
        ]
        hidden = [r for r in below if r["suppressed"]]
        assert len(hidden) != 1, f"one withheld cell under the margin {key}: it is the difference"


def test_two_private_counts_do_not_single_a_person_out(tmp_path: Path) -> None:
    """The attacker asks for the count of a group with and without its one target and
    guesses from the difference whether the target is in; with epsilon 0.1 per count the
    guess must not beat a coin by more than the mechanism allows."""
    from diffprivlib.mechanisms import Geometric

    from sandbox.views.private import PrivateQuery, PrivateViewSpec, Statistic, build_private_view

    class Purse:
        def spend(self, grant: str, epsilon: float, purpose: Mapping[str, Any]) -> float:
            return 1.0

    source = tmp_path / "group.parquet"
    pq.write_table(pa.table({"district": ["市南区"] * 40}), source)
    spec = PrivateViewSpec(
        "L2",
        {"district": SensitivityClass.QUASI_IDENTIFIER},
        (PrivateQuery("n", Statistic.COUNT, 0.1),),
    )
    build_private_view(
        source, spec, TREATMENTS, Purse(), grant="g", destination=tmp_path / "n.parquet"
    )
    assert pq.read_table(tmp_path / "n.parquet").num_rows == 1
    trials, right = 1000, 0
    mechanism = Geometric(epsilon=0.1, sensitivity=1)  # what the view uses for a count
    for trial in range(trials):
        present = trial % 2 == 0
        with_target = mechanism.randomise(40 if present else 39)
        without_target = mechanism.randomise(39)
        right += (with_target - without_target > 0.5) == present
    # the best test's advantage is bounded by e^eps / (1 + e^eps) = 0.525 at epsilon 0.1
    assert right / trials < 0.525 + 4 * math.sqrt(0.25 / trials)


def _spend_many(url: str, grant: str, attempts: int, results: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from gateway.budget import PrivacyBudgets
    from gateway.db import make_engine, session_factory
    from gateway.db.writes import WriteQueue

    engine = make_engine(url)
    writes = WriteQueue(session_factory(engine), lambda entry: None)
    budgets = PrivacyBudgets(writes)

    def one(_: int) -> bool:
        try:
            budgets.spend(grant, 0.1, {"queries": ["n"]})
        except BudgetExceeded:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        paid = sum(pool.map(one, range(attempts)))
    writes.close()
    engine.dispose()
    results.put(paid)


def test_parallel_requests_cannot_exceed_the_budget(database_url: str) -> None:
    from gateway.budget import PrivacyBudgets
    from gateway.db import make_engine, migrate, session_factory
    from gateway.db.writes import WriteQueue

    engine = make_engine(database_url)
    migrate(engine)
    writes = WriteQueue(session_factory(engine), lambda entry: None)
    budgets = PrivacyBudgets(writes)
    budgets.open("g1", 1.0)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_spend_many, args=(database_url, "g1", 12, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    paid = sum(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert paid == 10  # 48 requests of 0.1 against 1.0: exactly ten are paid
    assert budgets.remaining("g1") == 0.0
    writes.close()
    engine.dispose()
