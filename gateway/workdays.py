"""Working days on the Chinese public-holiday calendar, for deadlines.

A working day is a weekday that is not a public holiday, or a weekend day worked in lieu
(调休). The schedule comes from the State Council's yearly notice: through the
``chinesecalendar`` package for the years it knows, and from ``policies/calendar.toml``,
which the operator extends as soon as a new notice is out (it wins over the package).
For a year known to neither, weekdays count as working days and every deadline that
falls in or reaches across that year says it is provisional.

A deadline of *n* working days from a day is the *n*-th working day after it: the day
itself never counts, and counting starts at the next working day whatever day it is.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import chinese_calendar

SATURDAY = 5


class CalendarError(ValueError):
    """The calendar file is not what it should be; the message says where."""


@dataclass(frozen=True)
class Deadline:
    day: date
    provisional: bool  # some day counted is in a year whose schedule is not known yet


@dataclass(frozen=True)
class _Year:
    holidays: frozenset[date]
    workdays: frozenset[date]


class WorkCalendar:
    def __init__(self, years: dict[int, _Year] | None = None) -> None:
        self._years = dict(years or {})
        official = chinese_calendar.holidays
        self._package_years = range(min(official).year, max(official).year + 1)

    @classmethod
    def from_file(cls, path: Path) -> WorkCalendar:
        """The calendar with the years of ``path`` (``policies/calendar.toml``) added."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CalendarError(f"{path}: {exc}") from None
        years: dict[int, _Year] = {}
        for name, entry in (data.get("years") or {}).items():
            if not (isinstance(name, str) and name.isdigit() and isinstance(entry, dict)):
                raise CalendarError(f"{path}: [years.{name}] is not a year's table")
            year = int(name)
            days = {
                kind: _days(path, year, kind, entry.get(kind, []))
                for kind in ("holidays", "workdays")
            }
            both = days["holidays"] & days["workdays"]
            if both:
                raise CalendarError(f"{path}: {min(both)} is both a holiday and a working day")
            years[year] = _Year(days["holidays"], days["workdays"])
        return cls(years)

    def known(self, day: date) -> bool:
        """Whether the schedule of ``day``'s year is known."""
        return day.year in self._years or day.year in self._package_years

    def is_workday(self, day: date) -> bool:
        year = self._years.get(day.year)
        if year is not None:
            if day in year.workdays:
                return True
            return day not in year.holidays and day.weekday() < SATURDAY
        if day.year in self._package_years:
            return bool(chinese_calendar.is_workday(day))
        return day.weekday() < SATURDAY

    def add_workdays(self, start: date, count: int) -> Deadline:
        """The ``count``-th working day after ``start``."""
        if count < 1:
            raise ValueError("a deadline is at least one working day away")
        day, provisional = start, False
        while count:
            day += timedelta(days=1)
            provisional = provisional or not self.known(day)
            if self.is_workday(day):
                count -= 1
        return Deadline(day, provisional)

    def workdays_between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end`` (0 if ``end`` is not
        later): how many of a deadline's days have been used by ``end``."""
        days = (end - start).days
        return sum(self.is_workday(start + timedelta(days=n)) for n in range(1, days + 1))


def _days(path: Path, year: int, kind: str, values: object) -> frozenset[date]:
    if not isinstance(values, list):
        raise CalendarError(f"{path}: years.{year}.{kind} is not a list of dates")
    days = set()
    for value in values:
        try:
            day = value if isinstance(value, date) else date.fromisoformat(str(value))
        except ValueError:
            raise CalendarError(f"{path}: years.{year}.{kind}: {value!r} is not a date") from None
        if day.year != year:
            raise CalendarError(f"{path}: years.{year}.{kind}: {day} is not in {year}")
        days.add(day)
    return frozenset(days)
