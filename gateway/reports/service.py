"""Who reads the operation report, and the record of every copy handed out.

The report is read by those with ``report:read`` (the regulators, the operator's
reviewers, approvers and administrators): on screen and as JSON it is only read; as a
file (CSV or PDF) it is a document that leaves the platform, so each file is recorded
first as ``report.operations`` with its period, its format, the SHA-256 of its figures
(:meth:`OperationReport.sha256`, the same for a CSV and a PDF of the same figures) and
the SHA-256 of the file itself, so that a copy can be matched to its entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal, NoReturn

from sqlalchemy.orm import Session, sessionmaker

from gateway.authz import Actor, Authorizer, Denied
from gateway.catalog.service import CHINA
from gateway.db.writes import WriteQueue
from gateway.identity.model import _entry
from gateway.reports.feedback import FeedbackService
from gateway.reports.files import report_csv, report_pdf
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

    def _authorize(self, actor: Actor, what: str) -> None:
        reason = self.authorizer.refusal(actor, "report", "read")
        if reason is not None:
            self._deny(actor, what, reason)

    def _deny(self, actor: Actor, what: str, reason: str) -> NoReturn:
        self.record(_entry(actor.user, "report.operations", what, "denied", {"reason": reason}))
        raise Denied(reason)

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
        generated_at = self.clock()
        content = (
            report_csv(report) if kind == "csv" else report_pdf(report, generated_at=generated_at)
        )
        self.record(
            _entry(
                actor.user,
                "report.operations",
                what,
                "ok",
                {
                    **period.to_dict(),
                    "format": kind,
                    "generated_at": generated_at.astimezone(UTC).isoformat(),
                    "sha256": report.sha256(),
                    "file_sha256": hashlib.sha256(content).hexdigest(),
                },
            )
        )
        name = f"operations-{period.starts_on}-{period.ends_on}.{kind}"
        return ReportFile(name, MEDIA_TYPES[kind], content)
