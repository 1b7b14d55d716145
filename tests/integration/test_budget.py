"""Privacy budgets (gateway.budget): opened once, spent exactly, refused beyond the total,
and every spend and refusal in the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from audit import Ledger
from audit.entry import parse
from gateway.api.context import LedgerSink
from gateway.budget import BudgetError, PrivacyBudgets, to_micro
from gateway.db import make_engine, migrate, session_factory
from gateway.db.models import PrivacySpend
from gateway.db.writes import WriteQueue
from sandbox.views.private import BudgetExceeded


@pytest.fixture
def budgets(database_url: str, tmp_path: Path) -> Iterator[tuple[PrivacyBudgets, Ledger]]:
    engine = make_engine(database_url)
    migrate(engine)
    ledger = Ledger(tmp_path / "ledger")
    writes = WriteQueue(session_factory(engine), LedgerSink(ledger))
    yield PrivacyBudgets(writes), ledger
    writes.close()
    ledger.close()
    engine.dispose()


def test_spends_are_exact_and_the_last_one_that_does_not_fit_is_refused(
    budgets: tuple[PrivacyBudgets, Ledger],
) -> None:
    service, ledger = budgets
    assert service.open("g1", 1.0) == 1.0
    assert service.open("g1", 1.0) == 1.0  # opening again is harmless
    for _ in range(10):
        service.spend("g1", 0.1, {"queries": ["n"]})
    assert service.remaining("g1") == 0.0  # ten tenths are exactly one: no float drift
    with pytest.raises(BudgetExceeded, match="0 left"):
        service.spend("g1", 0.000001, {"queries": ["n"]})
    entries = [parse(body) for _, body in ledger.entries(1)]
    outcomes = [(e["action"], e["outcome"]) for e in entries]
    assert outcomes.count(("privacy.spend", "ok")) == 10
    assert outcomes[-1] == ("privacy.spend", "denied")
    assert entries[-1]["object"] == "grant:g1"
    assert entries[-1]["detail"]["epsilon_micro"] == 1
    assert entries[-1]["detail"]["left_micro"] == 0
    with service.writes.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PrivacySpend)) == 10


def test_budgets_are_apart_and_errors_are_clear(budgets: tuple[PrivacyBudgets, Ledger]) -> None:
    service, _ = budgets
    service.open("g1", 0.5)
    service.open("g2", 0.5)
    service.spend("g1", 0.5, {})
    assert service.remaining("g2") == 0.5
    with pytest.raises(BudgetError, match="already has a budget"):
        service.open("g1", 2.0)
    with pytest.raises(BudgetError, match="no privacy budget"):
        service.spend("g3", 0.1, {})
    with pytest.raises(BudgetError, match="no privacy budget"):
        service.remaining("g3")
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(BudgetError, match="finite"):
            service.spend("g2", bad, {})
    with pytest.raises(BudgetError, match="more than 0"):
        service.spend("g2", 0.0, {})
    assert service.remaining("g2") == 0.5


def test_a_request_is_rounded_up_never_down() -> None:
    assert to_micro(0.1) == 100_000
    assert to_micro(1e-7) == 1
    assert to_micro(0.3) == 300_000
