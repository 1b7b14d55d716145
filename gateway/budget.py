"""Privacy budgets of grants: what differentially private views may still spend.

A budget is opened with a grant, at the amount ``policies/disclosure.yaml`` sets for the
dataset's security level. A spend is one job of the write queue: a single conditional
``UPDATE ... SET spent = spent + e WHERE spent + e <= total``, which both SQLite (one
writer at a time) and PostgreSQL (the row's lock) apply atomically, so parallel requests
from any number of processes can never take a grant past its total. The spend and its
ledger entry commit together; a refused spend is recorded as denied.

Amounts are kept in millionths of epsilon and a request is rounded up to the next
millionth, so the arithmetic is exact and rounding never favours the spender; the ledger
entries carry the same integers (``epsilon_micro``, ``left_micro``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from gateway.db.models import PrivacyBudget, PrivacySpend, new_id
from gateway.db.writes import WriteQueue
from gateway.identity.model import _entry
from sandbox.views.private import BudgetExceeded

MICRO = 1_000_000


class BudgetError(ValueError):
    """A budget that does not exist, or one opened twice with different totals."""


def to_micro(epsilon: float) -> int:
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon >= 0):
        raise BudgetError("epsilon is a finite number of at least 0")
    return math.ceil(round(epsilon * MICRO, 3))


class PrivacyBudgets:
    """The :class:`sandbox.views.private.Budget` of the platform."""

    def __init__(self, writes: WriteQueue, *, actor: str = "system:view-builder") -> None:
        self.writes = writes
        self.actor = actor

    def open(self, grant: str, epsilon: float) -> float:
        """Give ``grant`` a budget of ``epsilon`` (idempotent for the same amount)."""
        total = to_micro(epsilon)

        def apply(session: Session) -> float:
            found = session.get(PrivacyBudget, grant)
            if found is not None:
                if found.total_micro != total:
                    raise BudgetError(
                        f"grant {grant} already has a budget of {_eps(found.total_micro)}"
                    )
                return _eps(found.total_micro - found.spent_micro)
            session.add(PrivacyBudget(grant_id=grant, total_micro=total, spent_micro=0))
            self.writes.record(
                _entry(
                    self.actor,
                    "privacy.budget.open",
                    f"grant:{grant}",
                    "ok",
                    {"epsilon_micro": total},
                )
            )
            return _eps(total)

        return self.writes.run(apply)

    def remaining(self, grant: str) -> float:
        with self.writes.sessions() as session:
            found = session.get(PrivacyBudget, grant)
            if found is None:
                raise BudgetError(f"grant {grant} has no privacy budget")
            return _eps(found.total_micro - found.spent_micro)

    def spend(self, grant: str, epsilon: float, purpose: Mapping[str, Any]) -> float:
        asked = to_micro(epsilon)
        if asked <= 0:
            raise BudgetError("a spend is of more than 0")
        spend_id = new_id()

        def apply(session: Session) -> float:
            paid = session.execute(
                update(PrivacyBudget)
                .where(
                    PrivacyBudget.grant_id == grant,
                    PrivacyBudget.spent_micro + asked <= PrivacyBudget.total_micro,
                )
                .values(spent_micro=PrivacyBudget.spent_micro + asked)
                .execution_options(synchronize_session=False)
            )
            found = session.get(PrivacyBudget, grant, populate_existing=True)
            if found is None:
                raise BudgetError(f"grant {grant} has no privacy budget")
            left = found.total_micro - found.spent_micro
            detail = {"epsilon_micro": asked, "left_micro": left, "purpose": dict(purpose)}
            if getattr(paid, "rowcount", 0) != 1:
                self.writes.record(
                    _entry(self.actor, "privacy.spend", f"grant:{grant}", "denied", detail)
                )
                raise BudgetExceeded(grant, _eps(asked), _eps(left))
            session.add(PrivacySpend(id=spend_id, grant_id=grant, epsilon_micro=asked))
            self.writes.record(
                _entry(
                    self.actor,
                    "privacy.spend",
                    f"grant:{grant}",
                    "ok",
                    {"spend": spend_id, **detail},
                )
            )
            return _eps(left)

        return self.writes.run(apply)


def _eps(micro: int) -> float:
    return micro / MICRO
