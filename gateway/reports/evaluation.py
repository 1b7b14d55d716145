"""The authority's annual evaluation of the operator (R15; Qingdao §37–39).

The figures of a calendar year (China time) are the operation report's: the volumes
per month (applications submitted, grants made, exports requested, counted by
:func:`~gateway.reports.operations.volumes_by_month` as the report counts them), then the
year's report (:func:`~gateway.reports.operations.compute_report`: deadlines met and
missed per queue, refusals by reason, exports by risk, …).

The verdict is the authority's, recorded by a regulator with reasons (Qingdao §39):

- ``pass`` (通过评估) and ``fail`` (未通过评估) end the year's evaluation;
- ``rectify`` (限期整改): the operator rectifies within 30 days (calendar days: §39 says
  "30日内", where the rules count working days they say "工作日") and is evaluated
  again: the next round of the same year, ``pass`` or ``fail``. A second ``rectify`` is
  not taken: §39 handles it as a fail ("若评估结果仍为限期整改，按未通过评估办理").

:func:`verdict_refusal` says whether a verdict may be recorded after those given so far.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from audit import canonical
from gateway import diagrams
from gateway.db.models import OperatorVerdict, User, Verdict
from gateway.reports.operations import (
    FIRST_DAY,
    OperationReport,
    Period,
    ReportError,
    Section,
    compute_report,
    volumes_by_month,
)
from gateway.reports.operations import label as operation_label

RECTIFY_DAYS = 30  # calendar days (Qingdao §39)
MAX_REASONS = 4000
MONTHLY = ("applications", "grants", "exports")  # the volumes counted per month


def year_period(year: int, *, today: date) -> Period:
    """The calendar year ``year``, from 2000 to the current one."""
    if not FIRST_DAY.year <= year <= today.year:
        raise ReportError(f"the year is between {FIRST_DAY.year} and {today.year}")
    return Period(date(year, 1, 1), date(year, 12, 31))


def default_year(today: date) -> int:
    """The year of the last full month: the previous year in January, else this one."""
    return Period.last_month(today).ends_on.year


@dataclass(frozen=True)
class MonthVolumes:
    month: str  # YYYY-MM
    applications: int  # submitted
    grants: int  # made
    exports: int  # requested


@dataclass(frozen=True)
class VerdictRecord:
    year: int
    round: int
    verdict: Verdict
    reasons: str
    rectify_by: date | None
    figures_sha256: str
    decided_by: str
    decider: str  # the display name of who recorded it
    decided_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "round": self.round,
            "verdict": str(self.verdict),
            "reasons": self.reasons,
            "rectify_by": self.rectify_by.isoformat() if self.rectify_by else None,
            "figures_sha256": self.figures_sha256,
            "decided_by": self.decided_by,
            "decider": self.decider,
            "decided_at": self.decided_at.astimezone(UTC).isoformat(),
        }


@dataclass(frozen=True)
class AnnualEvaluation:
    year: int
    months: tuple[MonthVolumes, ...]  # January to December
    report: OperationReport  # the whole year's
    verdicts: tuple[VerdictRecord, ...]  # in rounds' order

    def sections(self) -> tuple[Section, ...]:
        """The figures: the year, the volumes per month, then the year's report."""
        return (
            Section("year", (("year", self.year),)),
            *(
                Section(f"{kind}_by_month", tuple((m.month, getattr(m, kind)) for m in self.months))
                for kind in MONTHLY
            ),
            *self.report.sections()[1:],
        )

    def to_dict(self) -> dict[str, dict[str, int | str | None]]:
        return {section.name: dict(section.rows) for section in self.sections()}

    def sha256(self) -> str:
        """SHA-256 of the figures (:meth:`to_dict` as canonical JSON), not the verdicts:
        what a verdict names as the figures it was given on."""
        return hashlib.sha256(canonical.encode(self.to_dict())).hexdigest()

    @property
    def final(self) -> VerdictRecord | None:
        """The verdict that ends the year's evaluation (pass or fail), if given."""
        last = self.verdicts[-1] if self.verdicts else None
        return last if last is not None and last.verdict is not Verdict.RECTIFY else None


# ------------------------------------------------------------------ verdicts (pure)
# What may follow the year's last verdict (``None``: no verdict yet), Qingdao §39.
NEXT: dict[Verdict | None, frozenset[Verdict]] = {
    None: frozenset(Verdict),
    Verdict.RECTIFY: frozenset({Verdict.PASS, Verdict.FAIL}),  # the re-evaluation
    Verdict.PASS: frozenset(),
    Verdict.FAIL: frozenset(),
}


def verdict_refusal(given: Sequence[VerdictRecord], verdict: Verdict) -> str | None:
    """Why ``verdict`` may not follow the verdicts ``given`` for the year, or ``None``."""
    last = given[-1] if given else None
    if last is None or verdict in NEXT[last.verdict]:
        return None
    if last.verdict is Verdict.RECTIFY:
        return (
            "after a rectification the operator passes or fails: a second rectification "
            "counts as a fail (Qingdao §39)"
        )
    return f"the evaluation of {last.year} is over: {last.verdict} (round {last.round})"


def mermaid() -> str:
    """:data:`NEXT` as a Mermaid state diagram (docs/explanation/reports.md)."""
    lines = ["stateDiagram-v2"]
    for last, onward in NEXT.items():
        lines += [f"    {last or '[*]'} --> {to}" for to in sorted(onward)]
        if last is not None and not onward:
            lines.append(f"    {last} --> [*]")
    return "\n".join(lines)


def write_diagram(path: Path) -> None:
    """Put :func:`mermaid` into ``path`` (``make docs``)."""
    diagrams.write_diagram(path, "gateway/reports/evaluation.py", mermaid())


def can_give(given: Sequence[VerdictRecord], verdict: Verdict) -> bool:
    return verdict_refusal(given, verdict) is None


def rectify_by(decided_on: date) -> date:
    """The last day to rectify: 30 calendar days after the verdict's day."""
    return decided_on + timedelta(days=RECTIFY_DAYS)


# ------------------------------------------------------------------ reading
def read_verdicts(session: Session, year: int) -> tuple[VerdictRecord, ...]:
    rows = session.execute(
        select(OperatorVerdict, User.display_name)
        .join(User, literal("user:").concat(User.id) == OperatorVerdict.decided_by, isouter=True)
        .where(OperatorVerdict.year == year)
        .order_by(OperatorVerdict.round)
    ).all()
    return tuple(
        VerdictRecord(
            year=row.year,
            round=row.round,
            verdict=Verdict(row.verdict),
            reasons=row.reasons,
            rectify_by=row.rectify_by,
            figures_sha256=row.figures_sha256,
            decided_by=row.decided_by,
            decider=name or row.decided_by,
            decided_at=row.decided_at,
        )
        for row, name in rows
    )


def compute_evaluation(session: Session, year: int, *, today: date) -> AnnualEvaluation:
    """The year's figures, month by month and whole, and its verdicts so far."""
    whole = year_period(year, today=today)
    counted = volumes_by_month(session, whole)
    volumes = (
        MonthVolumes(key, *counted.get(key, (0, 0, 0)))
        for key in (f"{year}-{month:02d}" for month in range(1, 13))
    )
    return AnnualEvaluation(
        year=year,
        months=tuple(volumes),
        report=compute_report(session, whole),
        verdicts=read_verdicts(session, year),
    )


# ------------------------------------------------------------------ labels
SECTION_LABELS: dict[str, tuple[str, str]] = {
    "year": ("评估年度", "Year"),
    "applications_by_month": ("各月提交申请", "Applications submitted per month"),
    "grants_by_month": ("各月新增授权", "Grants made per month"),
    "exports_by_month": ("各月申请导出", "Exports requested per month"),
}
VERDICT_LABELS: dict[str, tuple[str, str]] = {
    "pass": ("通过评估", "Pass"),
    "fail": ("未通过评估", "Fail"),
    "rectify": ("限期整改", "Rectify"),
}


def label(section: str, item: str | None = None) -> tuple[str, str]:
    """A section's or an item's name in Chinese and English (months as they are)."""
    if section in SECTION_LABELS:
        if item is None:
            return SECTION_LABELS[section]
        return ("年度", "Year") if item == "year" else (item, item)
    return operation_label(section, item)
