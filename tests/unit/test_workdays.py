"""Working-day deadlines on the Chinese public-holiday calendar."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.workdays import CalendarError, WorkCalendar
from tests.conftest import REPO_ROOT

CALENDAR = WorkCalendar.from_file(REPO_ROOT / "policies" / "calendar.toml")


@pytest.mark.parametrize(
    ("start", "count", "due"),
    [
        (date(2026, 2, 13), 1, date(2026, 2, 14)),  # a Saturday worked before Spring Festival
        (date(2026, 2, 14), 1, date(2026, 2, 24)),  # 15-23 February off
        (date(2026, 2, 12), 5, date(2026, 2, 26)),
        (date(2026, 9, 24), 5, date(2026, 10, 9)),  # Mid-Autumn, then National Day
        (date(2026, 9, 30), 3, date(2026, 10, 10)),  # 10 October, a Saturday, is worked
        (date(2026, 11, 25), 5, date(2026, 12, 2)),  # an ordinary week
        (date(2026, 11, 28), 1, date(2026, 11, 30)),  # from a Saturday: Monday
    ],
)
def test_deadlines_follow_the_holidays_and_the_days_worked_in_lieu(
    start: date, count: int, due: date
) -> None:
    deadline = CALENDAR.add_workdays(start, count)
    assert deadline.day == due and not deadline.provisional


def test_a_year_without_a_published_schedule_counts_weekdays_and_says_so() -> None:
    crossing = CALENDAR.add_workdays(date(2026, 12, 28), 5)
    assert crossing.day == date(2027, 1, 4) and crossing.provisional  # 1 January on a Friday
    assert not CALENDAR.known(date(2027, 1, 1)) and CALENDAR.is_workday(date(2027, 1, 1))
    within = CALENDAR.add_workdays(date(2026, 12, 1), 5)
    assert within.day == date(2026, 12, 8) and not within.provisional


def test_the_operator_adds_a_year_before_the_package_knows_it(tmp_path: Path) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(
        '[years.2027]\nholidays = ["2027-01-01"]\nworkdays = [2027-01-02]\n', encoding="utf-8"
    )
    calendar = WorkCalendar.from_file(path)
    assert calendar.known(date(2027, 6, 1))
    assert calendar.add_workdays(date(2026, 12, 31), 1).day == date(2027, 1, 2)  # a Saturday
    deadline = calendar.add_workdays(date(2026, 12, 31), 2)
    assert deadline.day == date(2027, 1, 4) and not deadline.provisional


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[years.2027]\nholidays = ["2027-02-30"]\n', "is not a date"),
        ('[years.2027]\nholidays = ["2028-01-01"]\n', "is not in 2027"),
        ("[years.2027]\nholidays = [2027-01-01]\nworkdays = [2027-01-01]\n", "both"),
        ('[years]\nnext = "soon"\n', "is not a year's table"),
        ('[years.2027]\nholidays = "2027-01-01"\n', "is not a list"),
        ("[years\n", "Expected"),
    ],
)
def test_a_broken_calendar_file_is_refused_with_the_place(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CalendarError, match=reason):
        WorkCalendar.from_file(path)


def test_a_deadline_is_at_least_a_working_day_away() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CALENDAR.add_workdays(date(2026, 1, 5), 0)


@given(st.dates(date(2024, 1, 1), date(2026, 11, 30)), st.integers(1, 40))
def test_a_deadline_is_a_working_day_with_exactly_that_many_before_it(
    start: date, count: int
) -> None:
    deadline = CALENDAR.add_workdays(start, count)
    assert CALENDAR.is_workday(deadline.day)
    assert CALENDAR.workdays_between(start, deadline.day) == count
    assert CALENDAR.workdays_between(start, deadline.day - timedelta(days=1)) == count - 1
