"""Who reads the reports, the record of every copy handed out, and the authority's
verdict on the operator's year.

The reports (the operation report, the annual evaluation of the operator, the providers'
contribution evaluation) are read by those with ``report:read`` (the regulators, the
operator's reviewers, approvers and administrators): on screen and as JSON they are only
read; as a file (CSV or PDF) each is a document that leaves the platform, so each file is
recorded first (``report.operations``, ``report.evaluation``, ``report.contributions``)
with what it covers, its format, the SHA-256 of its figures (the same for a CSV and a PDF
of the same figures) and the SHA-256 of the file itself, so that a copy can be matched to
its entry.

A verdict on the operator's year is given by those with ``evaluation:judge`` (the
regulators), in the order of the other services: who may (the policy), whether the
year's verdicts so far allow it (:func:`~gateway.reports.evaluation.verdict_refusal`),
then the row and its ledger entry (``evaluation.verdict``: the year, the round, the
verdict, the reasons, the last day to rectify and the SHA-256 of the figures it was given
on) as one job of the write queue. Refusals by the policy are recorded too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, NoReturn

from sqlalchemy.orm import Session, sessionmaker

from gateway.authz import Actor, Authorizer, Denied
from gateway.catalog.service import CHINA
from gateway.db.models import OperatorVerdict, Verdict
from gateway.db.writes import WriteQueue
from gateway.identity.model import Conflict, _entry, clean_text
from gateway.reports.contributions import ContributionReport, compute_contributions
from gateway.reports.evaluation import (
    MAX_REASONS,
    AnnualEvaluation,
    VerdictRecord,
    compute_evaluation,
    default_year,
    read_verdicts,
    rectify_by,
    verdict_refusal,
    year_period,
)
from gateway.reports.feedback import FeedbackService
from gateway.reports.files import (
    contributions_csv,
    contributions_pdf,
    evaluation_csv,
    evaluation_pdf,
    report_csv,
    report_pdf,
)
from gateway.reports.operations import OperationReport, Period, compute_report

Format = Literal["csv", "pdf"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


@dataclass(frozen=True)
class ReportFile:
    name: str
    media_type: str
    content: bytes


class ReportService:
    """The operation report; ``feedback`` is the applicants' feedback it counts."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        writes: WriteQueue,
        authorizer: Authorizer,
        *,
        feedback: FeedbackService,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.writes = writes
        self.record = writes.record
        self.authorizer = authorizer
        self.feedback = feedback
        self.clock = clock

    def today(self) -> date:
        return self.clock().astimezone(CHINA).date()

    def _authorize(self, actor: Actor, what: str, action: str = "report.operations") -> None:
        reason = self.authorizer.refusal(actor, "report", "read")
        if reason is not None:
            self._deny(actor, what, reason, action)

    def _deny(
        self, actor: Actor, what: str, reason: str, action: str = "report.operations"
    ) -> NoReturn:
        self.record(_entry(actor.user, action, what, "denied", {"reason": reason}))
        raise Denied(reason)

    def _handed_out(
        self,
        actor: Actor,
        action: str,
        what: str,
        covers: dict[str, Any],
        kind: Format,
        sha256: str,
        make: Callable[[datetime], bytes],
    ) -> tuple[bytes, datetime]:
        """The file ``make`` writes, recorded (durably) before it is handed out."""
        generated_at = self.clock()
        content = make(generated_at)
        self.record(
            _entry(
                actor.user,
                action,
                what,
                "ok",
                {
                    **covers,
                    "format": kind,
                    "generated_at": generated_at.astimezone(UTC).isoformat(),
                    "sha256": sha256,
                    "file_sha256": hashlib.sha256(content).hexdigest(),
                },
            )
        )
        return content, generated_at

    def period(self, starts_on: str | None = None, ends_on: str | None = None) -> Period:
        """The period of ``YYYY-MM-DD`` texts; by default the last full calendar month."""
        return Period.parse(starts_on, ends_on, today=self.today())

    def operations(self, actor: Actor, period: Period) -> OperationReport:
        """The figures of ``period``, for reading."""
        self._authorize(actor, "report:operations")
        with self.sessions() as session:
            return compute_report(session, period)

    def operations_file(self, actor: Actor, period: Period, kind: Format) -> ReportFile:
        """The report of ``period`` as a file, recorded (durably) before it is handed out."""
        what = f"report:operations:{period.starts_on}..{period.ends_on}"
        self._authorize(actor, what)
        with self.sessions() as session:
            report = compute_report(session, period)
        content, _ = self._handed_out(
            actor,
            "report.operations",
            what,
            period.to_dict(),
            kind,
            report.sha256(),
            lambda at: report_csv(report) if kind == "csv" else report_pdf(report, generated_at=at),
        )
        name = f"operations-{period.starts_on}-{period.ends_on}.{kind}"
        return ReportFile(name, MEDIA_TYPES[kind], content)

    # ------------------------------------------------------------------ contributions
    def contributions(self, actor: Actor, period: Period) -> ContributionReport:
        """The providers' and datasets' contribution in ``period``, for reading."""
        self._authorize(actor, "report:contributions", "report.contributions")
        with self.sessions() as session:
            return compute_contributions(session, period)

    def contributions_file(self, actor: Actor, period: Period, kind: Format) -> ReportFile:
        """The contribution evaluation of ``period`` as a file, recorded first."""
        what = f"report:contributions:{period.starts_on}..{period.ends_on}"
        self._authorize(actor, what, "report.contributions")
        with self.sessions() as session:
            report = compute_contributions(session, period)
        content, _ = self._handed_out(
            actor,
            "report.contributions",
            what,
            period.to_dict(),
            kind,
            report.sha256(),
            lambda at: (
                contributions_csv(report)
                if kind == "csv"
                else contributions_pdf(report, generated_at=at)
            ),
        )
        name = f"contributions-{period.starts_on}-{period.ends_on}.{kind}"
        return ReportFile(name, MEDIA_TYPES[kind], content)

    # ------------------------------------------------------------------ the annual evaluation
    def year(self, value: int | None = None) -> int:
        """``value``, checked (2000 to the current year); by default the year of the
        last full month."""
        year = default_year(self.today()) if value is None else value
        year_period(year, today=self.today())
        return year

    def evaluation(self, actor: Actor, year: int) -> AnnualEvaluation:
        """The operator's year: its figures and the verdicts so far, for reading."""
        self._authorize(actor, f"evaluation:{year}", "report.evaluation")
        with self.sessions() as session:
            return compute_evaluation(session, year, today=self.today())

    def evaluation_file(self, actor: Actor, year: int, kind: Format) -> ReportFile:
        """The year's evaluation as a file, recorded first."""
        what = f"evaluation:{year}"
        self._authorize(actor, what, "report.evaluation")
        with self.sessions() as session:
            evaluation = compute_evaluation(session, year, today=self.today())
        content, _ = self._handed_out(
            actor,
            "report.evaluation",
            what,
            {"year": year, "verdicts": len(evaluation.verdicts)},
            kind,
            evaluation.sha256(),
            lambda at: (
                evaluation_csv(evaluation)
                if kind == "csv"
                else evaluation_pdf(evaluation, generated_at=at)
            ),
        )
        return ReportFile(f"evaluation-{year}.{kind}", MEDIA_TYPES[kind], content)

    def may_judge(self, actor: Actor) -> bool:
        return self.authorizer.allows(actor, "evaluation", "judge")

    def judge(self, actor: Actor, year: int, verdict: Verdict, reasons: str) -> VerdictRecord:
        """Record the authority's verdict on the operator's ``year``, with its reasons."""
        what = f"evaluation:{year}"
        refused = self.authorizer.refusal(actor, "evaluation", "judge")
        if refused is not None:
            self._deny(actor, what, refused, "evaluation.verdict")
        self.year(year)
        text = clean_text(reasons, "a reason for the verdict", MAX_REASONS, lines=True)
        with self.sessions() as session:
            refusal = verdict_refusal(read_verdicts(session, year), verdict)
            if refusal is not None:
                raise Conflict(refusal)
            figures = compute_evaluation(session, year, today=self.today()).sha256()

        def apply(session: Session) -> VerdictRecord:
            given = read_verdicts(session, year)
            refusal = verdict_refusal(given, verdict)
            if refusal is not None:
                raise Conflict(refusal)
            now = self.clock()
            row = OperatorVerdict(
                year=year,
                round=len(given) + 1,
                verdict=verdict,
                reasons=text,
                rectify_by=(
                    rectify_by(now.astimezone(CHINA).date()) if verdict is Verdict.RECTIFY else None
                ),
                figures_sha256=figures,
                decided_by=actor.user,
                decided_at=now,
            )
            session.add(row)
            session.flush()
            recorded = read_verdicts(session, year)[-1]
            self.record(
                _entry(
                    actor.user,
                    "evaluation.verdict",
                    what,
                    "ok",
                    {
                        "year": year,
                        "round": recorded.round,
                        "verdict": str(verdict),
                        "reasons": text,
                        "rectify_by": (
                            recorded.rectify_by.isoformat() if recorded.rectify_by else None
                        ),
                        "figures_sha256": figures,
                    },
                )
            )
            return recorded

        return self.writes.run(apply)
