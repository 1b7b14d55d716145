"""The operator's periodic operation report (R14), for the authority: what happened on
the platform in a period of days, China time, both ends included.

Everything is counted by the database (SQL aggregates, ``GROUP BY``): nothing reads
every row into memory, however long the period. An event counts in the period its time
falls in:

- applications: submitted (distinct applications with a ``submit`` step), approved,
  refused (at the formal check, by a provider, or by the approver) with each refusal
  reason counted, withdrawn; in progress: those whose last step before the period's end
  left them waiting in a queue;
- stage deadlines: the steps that closed a queue, met or missed (``on_time``), by queue;
- agreements: signed by both parties (the later signature in the period);
- grants: made; suspended (a suspension in force that began in the period: one lifted
  since is in the ledger, not in the grants table) with each reason counted; active at
  the period's end (its own period covers that moment, not terminated, not suspended then);
- exports: requested; blocked by the airlock, with the blocked exports counted by each
  check that blocked them; released; rejected; the requested ones by risk;
- objections: raised; answered on time or late (the day of the answer, China time,
  against the deadline then in force); overdue: unanswered at the period's end and due
  before its last day (as the catalog counts overdue answers);
- feedback: received, and the average quality rating.

:class:`OperationReport` is the figures as a frozen dataclass; :meth:`~OperationReport.sections`
flattens them into the section / item / value rows that the CSV, the PDF and the console
show, :meth:`~OperationReport.to_dict` nests those rows by section, and
:meth:`~OperationReport.sha256` is the digest of its canonical JSON that the ledger names.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import JSON, Date, and_, case, cast, distinct, func, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from audit import canonical
from gateway.applications.workflow import OPEN, Step
from gateway.catalog.service import CHINA
from gateway.db.models import (
    Agreement,
    AgreementStatus,
    ApplicationEvent,
    ApplicationStatus,
    Export,
    ExportRisk,
    ExportStatus,
    Feedback,
    Grant,
    GrantStatus,
    Objection,
)
from gateway.identity.model import IdentityError

FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2099, 12, 31)
MAX_DAYS = 3660  # ten years
Tally = tuple[tuple[str, int], ...]  # (what, how many), the most frequent first

REFUSALS = (Step.REFUSE_CHECK, Step.REFUSE_CONSENT, Step.REJECT)
# The queue each closing step closes, in the order of the workflow.
STAGES: dict[str, tuple[Step, ...]] = {
    str(ApplicationStatus.FORMAL): (Step.PASS_CHECK, Step.REFUSE_CHECK),
    str(ApplicationStatus.CONSENT): (Step.CONSENT, Step.REFUSE_CONSENT),
    str(ApplicationStatus.REVIEW): (Step.REVIEW,),
    str(ApplicationStatus.APPROVAL): (Step.APPROVE, Step.REJECT),
}


class ReportError(IdentityError):
    """A report cannot be made for what was asked (422)."""


# ------------------------------------------------------------------ the period
@dataclass(frozen=True)
class Period:
    """Days, China time, from ``starts_on`` to ``ends_on``, both included."""

    starts_on: date
    ends_on: date

    def __post_init__(self) -> None:
        if not FIRST_DAY <= self.starts_on <= self.ends_on <= LAST_DAY:
            raise ReportError(
                f"a period runs from one day to the same or a later one, "
                f"between {FIRST_DAY} and {LAST_DAY}"
            )
        if self.days > MAX_DAYS:
            raise ReportError(f"a period has at most {MAX_DAYS} days")

    @property
    def days(self) -> int:
        return (self.ends_on - self.starts_on).days + 1

    @property
    def start(self) -> datetime:
        """The period's first moment."""
        return datetime.combine(self.starts_on, time(), CHINA)

    @property
    def end(self) -> datetime:
        """The moment after the period (the next day's start)."""
        return datetime.combine(self.ends_on + timedelta(days=1), time(), CHINA)

    @classmethod
    def last_month(cls, today: date) -> Period:
        """The last full calendar month before ``today``."""
        ends_on = today.replace(day=1) - timedelta(days=1)
        return cls(ends_on.replace(day=1), ends_on)

    @classmethod
    def parse(cls, starts_on: str | None, ends_on: str | None, *, today: date) -> Period:
        """A period from ``YYYY-MM-DD`` texts; the last month when both are missing."""
        if not starts_on and not ends_on:
            return cls.last_month(today)
        try:
            return cls(date.fromisoformat(starts_on or ""), date.fromisoformat(ends_on or ""))
        except ValueError:
            raise ReportError("give the period's first and last days as YYYY-MM-DD") from None

    def to_dict(self) -> dict[str, str]:
        return {"from": self.starts_on.isoformat(), "to": self.ends_on.isoformat()}


# ------------------------------------------------------------------ the figures
@dataclass(frozen=True)
class StageDeadlines:
    stage: str  # an application status with a deadline: formal, consent, review, approval
    met: int
    missed: int


@dataclass(frozen=True)
class Section:
    """One block of the report: its name and its (item, value) rows."""

    name: str
    rows: tuple[tuple[str, int | str | None], ...]


@dataclass(frozen=True)
class OperationReport:
    period: Period
    submitted: int
    approved: int
    refused: int
    withdrawn: int
    in_progress: int
    refusal_reasons: Tally
    deadlines: tuple[StageDeadlines, ...]  # every stage, in the workflow's order
    agreements_signed: int
    grants_made: int
    grants_suspended: int
    suspension_reasons: Tally
    grants_active_at_end: int
    exports_requested: int
    exports_blocked: int
    exports_released: int
    exports_rejected: int
    blocked_by_check: Tally
    exports_by_risk: Tally  # every risk level, requested exports
    objections_raised: int
    objections_answered_on_time: int
    objections_answered_late: int
    objections_overdue: int
    feedback_received: int
    feedback_quality_total: int

    @property
    def average_quality(self) -> str | None:
        """The average quality rating of the feedback, to two decimals, as text."""
        if not self.feedback_received:
            return None
        average = Decimal(self.feedback_quality_total) / Decimal(self.feedback_received)
        return str(average.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))

    def sections(self) -> tuple[Section, ...]:
        deadlines: list[tuple[str, int | str | None]] = []
        for stage in self.deadlines:
            deadlines += [
                (f"{stage.stage}_met", stage.met),
                (f"{stage.stage}_missed", stage.missed),
            ]
        return (
            Section("period", tuple(self.period.to_dict().items())),
            Section(
                "applications",
                (
                    ("submitted", self.submitted),
                    ("approved", self.approved),
                    ("refused", self.refused),
                    ("withdrawn", self.withdrawn),
                    ("in_progress", self.in_progress),
                ),
            ),
            Section("refusal_reasons", self.refusal_reasons),
            Section("deadlines", tuple(deadlines)),
            Section("agreements", (("signed", self.agreements_signed),)),
            Section(
                "grants",
                (
                    ("made", self.grants_made),
                    ("suspended", self.grants_suspended),
                    ("active_at_end", self.grants_active_at_end),
                ),
            ),
            Section("suspension_reasons", self.suspension_reasons),
            Section(
                "exports",
                (
                    ("requested", self.exports_requested),
                    ("blocked", self.exports_blocked),
                    ("released", self.exports_released),
                    ("rejected", self.exports_rejected),
                ),
            ),
            Section("exports_blocked_by_check", self.blocked_by_check),
            Section("exports_by_risk", self.exports_by_risk),
            Section(
                "objections",
                (
                    ("raised", self.objections_raised),
                    ("answered_on_time", self.objections_answered_on_time),
                    ("answered_late", self.objections_answered_late),
                    ("overdue", self.objections_overdue),
                ),
            ),
            Section(
                "feedback",
                (("received", self.feedback_received), ("average_quality", self.average_quality)),
            ),
        )

    def to_dict(self) -> dict[str, dict[str, int | str | None]]:
        return {section.name: dict(section.rows) for section in self.sections()}

    def sha256(self) -> str:
        """SHA-256 of :meth:`to_dict` as canonical JSON: the figures, not a file's bytes."""
        return hashlib.sha256(canonical.encode(self.to_dict())).hexdigest()


# ------------------------------------------------------------------ labels
# Every section and fixed item in Chinese and English: the PDF shows both, the console
# the page's language. Items of the tallies (reasons, checks) are shown as they are.
SECTION_LABELS: dict[str, tuple[str, str]] = {
    "period": ("报告期", "Period"),
    "applications": ("数据使用申请", "Applications"),
    "refusal_reasons": ("不予通过的理由", "Reasons for refusal"),
    "deadlines": ("各环节办理时限", "Stage deadlines"),
    "agreements": ("运营协议", "Agreements"),
    "grants": ("授权", "Grants"),
    "suspension_reasons": ("暂停授权的理由", "Reasons for suspension"),
    "exports": ("成果导出", "Exports"),
    "exports_blocked_by_check": ("自动检查拦截（按检查项）", "Blocked by the airlock, by check"),
    "exports_by_risk": ("导出申请（按风险等级）", "Exports requested, by risk"),
    "objections": ("数据异议", "Objections"),
    "feedback": ("使用反馈", "Feedback"),
}
STAGE_LABELS = {
    "formal": ("形式审查", "Formal check"),
    "consent": ("提供单位同意", "Provider consent"),
    "review": ("实质审查", "Substantive review"),
    "approval": ("审批", "Approval"),
}
ITEM_LABELS: dict[tuple[str, str], tuple[str, str]] = {
    ("period", "from"): ("起", "From"),
    ("period", "to"): ("止", "To"),
    ("applications", "submitted"): ("提交", "Submitted"),
    ("applications", "approved"): ("通过", "Approved"),
    ("applications", "refused"): ("不予通过", "Refused"),
    ("applications", "withdrawn"): ("撤回", "Withdrawn"),
    ("applications", "in_progress"): ("期末在办", "In progress at the end"),
    ("agreements", "signed"): ("双方签署", "Signed by both parties"),
    ("grants", "made"): ("新增授权", "Made"),
    ("grants", "suspended"): ("暂停", "Suspended"),
    ("grants", "active_at_end"): ("期末有效", "Active at the end"),
    ("exports", "requested"): ("申请导出", "Requested"),
    ("exports", "blocked"): ("自动检查拦截", "Blocked by the airlock"),
    ("exports", "released"): ("审核放行", "Released"),
    ("exports", "rejected"): ("驳回", "Rejected"),
    ("exports_by_risk", "normal"): ("一般风险", "Normal risk"),
    ("exports_by_risk", "high"): ("高风险（双人审批）", "High risk (two approvers)"),
    ("objections", "raised"): ("提出", "Raised"),
    ("objections", "answered_on_time"): ("按期答复", "Answered on time"),
    ("objections", "answered_late"): ("逾期答复", "Answered late"),
    ("objections", "overdue"): ("期末逾期未答复", "Overdue, unanswered at the end"),
    ("feedback", "received"): ("收到反馈", "Received"),
    ("feedback", "average_quality"): ("数据质量平均评分（1–5）", "Average data quality (1–5)"),
}
for _stage, (_zh, _en) in STAGE_LABELS.items():
    ITEM_LABELS["deadlines", f"{_stage}_met"] = (f"{_zh}：按期", f"{_en}: met")
    ITEM_LABELS["deadlines", f"{_stage}_missed"] = (f"{_zh}：超期", f"{_en}: missed")


def label(section: str, item: str | None = None) -> tuple[str, str]:
    """A section's or an item's name in Chinese and English (an item of a tally, a
    reason or a check, as it is)."""
    if item is None:
        return SECTION_LABELS.get(section, (section, section))
    return ITEM_LABELS.get((section, item), (item, item))


# ------------------------------------------------------------------ counting
def _in(column: Any, period: Period) -> ColumnElement[bool]:
    return and_(column >= period.start, column < period.end)


def _when(condition: ColumnElement[bool]) -> Any:
    """1 where ``condition`` holds: summed, how many rows it holds for."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _tally(pairs: Iterable[tuple[Any, Any]]) -> Tally:
    counted: Counter[str] = Counter()
    for what, n in pairs:
        counted[str(what)] += int(n)
    return tuple(sorted(counted.items(), key=lambda pair: (-pair[1], pair[0])))


def _china_day(dialect: str, column: Any) -> Any:
    """The China-time day of a stored moment (China keeps UTC+8 all year)."""
    if dialect == "sqlite":
        return func.date(column, "+8 hours")
    return cast(func.timezone("Asia/Shanghai", column), Date)


def _json_elements(dialect: str, column: Any, key: str | None = None, *, text: bool = False) -> Any:
    """The elements of the JSON array in the text ``column`` (at ``key``, if given), as
    a table to join: its ``value`` column (the elements as text, if ``text``: an array
    of strings)."""
    if dialect == "sqlite":
        return func.json_each(column, f"$.{key}" if key else "$").table_valued("value")
    document = cast(column, JSON)
    array = func.json_extract_path(document, key) if key else document
    elements = func.json_array_elements_text if text else func.json_array_elements
    return elements(array).table_valued("value").lateral()


def _json_text(dialect: str, value: Any, key: str) -> Any:
    """The text at ``key`` of a JSON object ``value`` (an element of _json_elements)."""
    if dialect == "sqlite":
        return func.json_extract(value, f"$.{key}")
    return func.json_extract_path_text(value, key)


def _submitted() -> Any:
    """Over application events: the distinct applications submitted."""
    events = ApplicationEvent
    return func.count(distinct(case((events.step == str(Step.SUBMIT), events.application_id))))


def _grant_made(period: Period) -> ColumnElement[bool]:
    return _in(Grant.created_at, period)


def _requested(period: Period) -> Any:
    """Over exports: those requested in the period."""
    return _when(_in(Export.requested_at, period))


def _china_month(dialect: str, column: Any) -> Any:
    """The China-time month (YYYY-MM) of a stored moment."""
    if dialect == "sqlite":
        return func.strftime("%Y-%m", column, "+8 hours")
    return func.to_char(func.timezone("Asia/Shanghai", column), "YYYY-MM")


def volumes_by_month(session: Session, period: Period) -> dict[str, tuple[int, int, int]]:
    """Applications submitted, grants made and exports requested in ``period``, by
    China-time month (``YYYY-MM``; months without any are left out): three of the
    report's figures, counted as :func:`compute_report` counts them, month by month."""
    dialect = session.get_bind().dialect.name
    submitted = _china_month(dialect, ApplicationEvent.at)
    made = _china_month(dialect, Grant.created_at)
    requested = _china_month(dialect, Export.requested_at)
    queries = (
        select(submitted, _submitted()).where(_in(ApplicationEvent.at, period)).group_by(submitted),
        select(made, func.count()).where(_grant_made(period)).group_by(made),
        select(requested, _requested(period))
        .where(_in(Export.requested_at, period))
        .group_by(requested),
    )
    found: dict[str, list[int]] = {}
    for n, query in enumerate(queries):
        for month, count in session.execute(query):
            found.setdefault(str(month), [0, 0, 0])[n] = int(count or 0)
    return {month: (counts[0], counts[1], counts[2]) for month, counts in found.items()}


def objection_counts(dialect: str, period: Period) -> tuple[Any, Any, Any, Any]:
    """Sums over ``Objection`` rows: raised in the period; answered in it on time and
    late (the answer's day, China time, against the deadline then in force); overdue at
    its end (unanswered then and due before its last day, as the catalog counts them)."""
    answered_on = _china_day(dialect, Objection.answered_at)
    answered = _in(Objection.answered_at, period)
    return (
        _when(_in(Objection.raised_at, period)),
        _when(and_(answered, answered_on <= Objection.due_on)),
        _when(and_(answered, answered_on > Objection.due_on)),
        _when(
            and_(
                Objection.raised_at < period.end,
                or_(Objection.answered_at.is_(None), Objection.answered_at >= period.end),
                Objection.due_on < period.ends_on,
            )
        ),
    )


def compute_report(session: Session, period: Period) -> OperationReport:
    """The figures of ``period``, counted by the database."""
    dialect = session.get_bind().dialect.name
    events = ApplicationEvent
    steps = session.execute(
        select(
            _submitted(),
            _when(events.step == str(Step.APPROVE)),
            _when(events.step.in_([str(step) for step in REFUSALS])),
            _when(events.step == str(Step.WITHDRAW)),
        ).where(_in(events.at, period))
    ).one()

    refusals = and_(
        _in(events.at, period),
        events.step.in_([str(step) for step in REFUSALS]),
        events.reasons.is_not(None),
    )
    reason = _json_elements(dialect, events.reasons, text=True)
    reason_text = reason.c.value
    reasons = session.execute(
        select(reason_text, func.count())
        .select_from(events)
        .join(reason, true())
        .where(refusals)
        .group_by(reason_text)
    ).all()

    closed = session.execute(
        select(events.step, events.on_time, func.count())
        .where(_in(events.at, period), events.on_time.is_not(None))
        .group_by(events.step, events.on_time)
    ).all()
    met: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    for step, on_time, n in closed:
        stage = next((s for s, closing in STAGES.items() if step in closing), None)
        if stage is not None:
            (met if on_time else missed)[stage] += int(n)

    last = (
        select(events.application_id, func.max(events.id).label("id"))
        .where(events.at < period.end)
        .group_by(events.application_id)
        .subquery()
    )
    in_progress = session.scalar(
        select(func.count())
        .select_from(events)
        .join(last, last.c.id == events.id)
        .where(events.status.in_(list(OPEN)))
    )

    signed = session.scalar(
        select(func.count()).where(
            Agreement.status == AgreementStatus.SIGNED,
            Agreement.applicant_signed_at < period.end,
            Agreement.operator_signed_at < period.end,
            or_(
                Agreement.applicant_signed_at >= period.start,
                Agreement.operator_signed_at >= period.start,
            ),
        )
    )

    grants_made = session.scalar(select(func.count()).where(_grant_made(period)))
    suspensions = session.execute(
        select(Grant.suspended_reason, func.count())
        .where(Grant.status == GrantStatus.SUSPENDED, _in(Grant.suspended_at, period))
        .group_by(Grant.suspended_reason)
    ).all()
    active_at_end = session.scalar(
        select(func.count()).where(
            Grant.created_at < period.end,
            Grant.starts_at < period.end,
            Grant.ends_at >= period.end,
            Grant.status != GrantStatus.TERMINATED,
            or_(Grant.status != GrantStatus.SUSPENDED, Grant.suspended_at >= period.end),
        )
    )

    decided = _in(Export.decided_at, period)
    exports = session.execute(
        select(
            _requested(period),
            _when(and_(Export.status == ExportStatus.BLOCKED, _in(Export.submitted_at, period))),
            _when(and_(Export.status == ExportStatus.RELEASED, decided)),
            _when(and_(Export.status == ExportStatus.REJECTED, decided)),
        )
    ).one()
    by_risk = dict.fromkeys([str(risk) for risk in ExportRisk], 0)
    for risk, n in session.execute(
        select(Export.risk, func.count())
        .where(_in(Export.requested_at, period))
        .group_by(Export.risk)
    ):
        by_risk[str(risk)] = int(n)
    finding = _json_elements(dialect, Export.report, "findings")
    check = _json_text(dialect, finding.c.value, "check")
    blocked_by_check = session.execute(
        select(check, func.count(distinct(Export.id)))
        .select_from(Export)
        .join(finding, true())
        .where(
            Export.status == ExportStatus.BLOCKED,
            Export.report.is_not(None),
            _in(Export.submitted_at, period),
            _json_text(dialect, finding.c.value, "severity") == "block",
        )
        .group_by(check)
    ).all()

    objections = session.execute(select(*objection_counts(dialect, period))).one()

    feedback = session.execute(
        select(func.count(), func.coalesce(func.sum(Feedback.quality), 0)).where(
            _in(Feedback.submitted_at, period)
        )
    ).one()

    return OperationReport(
        period=period,
        submitted=int(steps[0]),
        approved=int(steps[1]),
        refused=int(steps[2]),
        withdrawn=int(steps[3]),
        in_progress=int(in_progress or 0),
        refusal_reasons=_tally(reasons),
        deadlines=tuple(StageDeadlines(stage, met[stage], missed[stage]) for stage in STAGES),
        agreements_signed=int(signed or 0),
        grants_made=int(grants_made or 0),
        grants_suspended=sum(int(n) for _, n in suspensions),
        suspension_reasons=_tally((why or "", n) for why, n in suspensions),
        grants_active_at_end=int(active_at_end or 0),
        exports_requested=int(exports[0]),
        exports_blocked=int(exports[1]),
        exports_released=int(exports[2]),
        exports_rejected=int(exports[3]),
        blocked_by_check=_tally(blocked_by_check),
        exports_by_risk=tuple(by_risk.items()),
        objections_raised=int(objections[0]),
        objections_answered_on_time=int(objections[1]),
        objections_answered_late=int(objections[2]),
        objections_overdue=int(objections[3]),
        feedback_received=int(feedback[0]),
        feedback_quality_total=int(feedback[1]),
    )
