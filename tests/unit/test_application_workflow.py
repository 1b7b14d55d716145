"""The application workflow as data: every status, every step, every transition."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from gateway.applications.workflow import (
    FINAL,
    OPEN,
    STAGE_DAYS,
    STEP_FROM,
    TRANSITIONS,
    Step,
    WorkflowError,
    after_check,
    can_change,
    can_take,
    check_can_change,
    check_can_take,
    mermaid,
)
from gateway.db.models import ApplicationStatus as S


def test_every_status_has_its_transitions_and_every_one_is_reachable() -> None:
    assert set(TRANSITIONS) == set(S)
    seen, todo = {S.DRAFT}, deque([S.DRAFT])
    while todo:
        for onward in TRANSITIONS[todo.popleft()]:
            if onward not in seen:
                seen.add(onward)
                todo.append(onward)
    assert seen == set(S)


def test_only_decisions_and_withdrawals_end_an_application() -> None:
    assert FINAL == {S.APPROVED, S.WITHDRAWN}
    assert S.REFUSED not in FINAL  # a refused application may be amended


@pytest.mark.parametrize(("current", "to"), list(itertools.product(S, S)))
def test_check_can_change_agrees_with_the_table(current: S, to: S) -> None:
    assert can_change(current, to) is (to in TRANSITIONS[current])
    if can_change(current, to):
        check_can_change(current, to)
    else:
        with pytest.raises(WorkflowError, match=f"from {current} to {to}"):
            check_can_change(current, to)


@pytest.mark.parametrize(("step", "current"), list(itertools.product(Step, S)))
def test_a_step_is_taken_only_from_its_statuses(step: Step, current: S) -> None:
    assert can_take(step, current) is (current in STEP_FROM[step])
    if can_take(step, current):
        check_can_take(step, current)
    else:
        with pytest.raises(WorkflowError, match=f"the application is {current}"):
            check_can_take(step, current)


def test_every_step_starts_from_a_status_that_can_move() -> None:
    assert set(STEP_FROM) == set(Step)
    for step, statuses in STEP_FROM.items():
        assert statuses, step
        assert all(TRANSITIONS[status] for status in statuses), step


def test_every_open_queue_has_a_deadline_in_working_days() -> None:
    assert OPEN == {S.FORMAL, S.CONSENT, S.REVIEW, S.APPROVAL}
    assert STAGE_DAYS[S.FORMAL] == 5 and STAGE_DAYS[S.REVIEW] == 10  # R11
    assert all(days > 0 for days in STAGE_DAYS.values())


def test_conditional_data_goes_to_its_providers_first() -> None:
    assert after_check(True) is S.CONSENT
    assert after_check(False) is S.REVIEW
    assert can_change(S.FORMAL, after_check(True)) and can_change(S.FORMAL, after_check(False))


def test_the_diagram_is_drawn_from_the_table() -> None:
    drawn = mermaid()
    assert drawn.startswith("stateDiagram-v2")
    for status, onward in TRANSITIONS.items():
        for to in onward:
            if to is not status:
                assert f"    {status} --> {to}" in drawn
    assert drawn.count("--> [*]") == len(FINAL)
