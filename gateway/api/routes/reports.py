"""Feedback after use and the operation report (R14). Thin over :mod:`gateway.reports`.

- ``/grants/{grant_id}/feedback``: an applicant member gives feedback on the grant's
  data; its organization, the operator's readers, the regulators and the providers of
  its data read it.
- ``/reports/operations``: the operator's report for a period (``from`` and ``to``,
  China-time days, both included; the last full month by default), as JSON, CSV or PDF;
- ``/reports/contributions``: the providers' and datasets' contribution evaluation for a
  period, as JSON, CSV or PDF (R15);
- ``/reports/evaluation``: the operator's annual evaluation (``year``), as JSON, CSV or
  PDF, and ``/reports/evaluation/{year}/verdict``: the authority's verdict on it (R15).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS
from gateway.api.routes.sandbox import GrantId
from gateway.db.models import Verdict
from gateway.identity.model import Account
from gateway.reports.contributions import ContributionReport
from gateway.reports.evaluation import MAX_REASONS, AnnualEvaluation, VerdictRecord
from gateway.reports.feedback import (
    MAX_DATASET_NOTE,
    MAX_NOTE,
    MAX_QUALITY,
    MAX_TEXT,
    MIN_QUALITY,
    DatasetNote,
    FeedbackForm,
    FeedbackSnapshot,
)
from gateway.reports.operations import FIRST_DAY, LAST_DAY, Period
from gateway.reports.service import Format, ReportFile, ReportService

router = APIRouter(tags=["reports"], responses=PROBLEMS)
MAX_DATASETS = 50
From = Annotated[
    str | None,
    Query(alias="from", max_length=10, description="the first day, YYYY-MM-DD (China time)"),
]
To = Annotated[
    str | None,
    Query(alias="to", max_length=10, description="the last day, YYYY-MM-DD (China time)"),
]
Rating = Annotated[int, Field(ge=MIN_QUALITY, le=MAX_QUALITY, description="1 (poor) to 5 (good)")]
Year = Annotated[
    int | None,
    Query(
        ge=FIRST_DAY.year,
        le=LAST_DAY.year,
        description="the calendar year, up to the current one (default: the last full month's)",
    ),
]
YearPath = Annotated[int, Path(ge=FIRST_DAY.year, le=LAST_DAY.year, description="the year")]


def reports_of(found: ServicesDep) -> ReportService:
    if found.reports is None:  # a gateway opened without them (some tests)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway has no reports")
    return found.reports


Reports = Annotated[ReportService, Depends(reports_of)]
ReportReader = Annotated[Account, Depends(Requires("report", "read"))]
Judge = Annotated[Account, Depends(Requires("evaluation", "judge"))]


# ------------------------------------------------------------------ schemas
class DatasetNoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64)
    quality: Rating | None = None
    note: str = Field("", max_length=MAX_DATASET_NOTE)


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quality: Rating
    quality_note: str = Field(
        min_length=1, max_length=MAX_NOTE, description="what was good or wrong with the data"
    )
    usage: str = Field(min_length=1, max_length=MAX_TEXT, description="how the data was used")
    effect: str = Field(
        min_length=1, max_length=MAX_TEXT, description="the effect: outcomes and benefits"
    )
    datasets: list[DatasetNoteCreate] = Field(
        default_factory=list,
        max_length=MAX_DATASETS,
        description="notes on datasets the grant's views come from, for their providers",
    )


class DatasetNotePublic(BaseModel):
    dataset_id: str
    quality: int | None
    note: str


class FeedbackPublic(BaseModel):
    id: str
    grant_id: str
    organization_id: str
    submitted_by: str
    author: str
    submitted_at: datetime
    quality: int
    quality_note: str
    usage: str
    effect: str
    datasets: list[DatasetNotePublic]


def feedback_public(snapshot: FeedbackSnapshot) -> FeedbackPublic:
    return FeedbackPublic(
        **{**vars(snapshot), "datasets": [DatasetNotePublic(**vars(n)) for n in snapshot.datasets]}
    )


Figures = dict[str, int | str | None]


class OperationReportPublic(BaseModel):
    """The figures, section by section (docs/explanation/reports.md says what each
    counts); ``sha256`` is the digest a file of the same figures is recorded with."""

    period: dict[str, str]
    applications: Figures
    refusal_reasons: Figures
    deadlines: Figures
    agreements: Figures
    grants: Figures
    suspension_reasons: Figures
    exports: Figures
    exports_blocked_by_check: Figures
    exports_by_risk: Figures
    objections: Figures
    feedback: Figures
    sha256: str


Scores = dict[str, int | None]


class ContributionPublic(BaseModel):
    id: str
    name: str
    provider_id: str
    provider: str
    counts: dict[str, int] = Field(description="what the scores are computed from")
    scores: Scores = Field(description="each part and the four scores, 0 to 100 (or none)")


class ContributionReportPublic(BaseModel):
    """The providers' and datasets' contribution (docs/explanation/reports.md says how
    each score is computed); ``highest``: the period's highest use and value counts."""

    period: dict[str, str]
    providers: list[ContributionPublic]
    datasets: list[ContributionPublic]
    highest: dict[str, dict[str, int]]
    sha256: str


class VerdictCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict = Field(description="pass, fail, or rectify (within 30 days)")
    reasons: str = Field(
        min_length=1, max_length=MAX_REASONS, description="why; recorded in the audit ledger"
    )


class VerdictPublic(BaseModel):
    year: int
    round: int
    verdict: Verdict
    reasons: str
    rectify_by: str | None = Field(description="the last day to rectify (rectify only)")
    figures_sha256: str
    decided_by: str
    decider: str
    decided_at: datetime


class EvaluationPublic(BaseModel):
    """The operator's year: the volumes per month, the year's operation report, and the
    verdicts so far; ``sha256`` is the digest of the figures (not the verdicts)."""

    year: int
    figures: dict[str, Figures]
    verdicts: list[VerdictPublic]
    sha256: str


def verdict_public(given: VerdictRecord) -> VerdictPublic:
    return VerdictPublic(**given.to_dict())


def evaluation_public(evaluation: AnnualEvaluation) -> EvaluationPublic:
    return EvaluationPublic(
        year=evaluation.year,
        figures=evaluation.to_dict(),
        verdicts=[verdict_public(given) for given in evaluation.verdicts],
        sha256=evaluation.sha256(),
    )


def contributions_public(report: ContributionReport) -> ContributionReportPublic:
    return ContributionReportPublic(**report.to_dict(), sha256=report.sha256())


# ------------------------------------------------------------------ feedback
@router.post("/grants/{grant_id}/feedback", status_code=status.HTTP_201_CREATED)
async def give_feedback(
    grant_id: GrantId,
    body: FeedbackCreate,
    account: Annotated[Account, Depends(Requires("feedback", "create"))],
    reports: Reports,
) -> FeedbackPublic:
    """Report on the grant's data after use: its quality, how it was used and the effect."""
    form = FeedbackForm(
        quality=body.quality,
        quality_note=body.quality_note,
        usage=body.usage,
        effect=body.effect,
        datasets=tuple(DatasetNote(n.dataset_id, n.quality, n.note) for n in body.datasets),
    )
    given = await run_in_threadpool(reports.feedback.give, account.actor(), grant_id, form)
    return feedback_public(given)


@router.get("/grants/{grant_id}/feedback")
def read_feedback(
    grant_id: GrantId,
    account: Annotated[Account, Depends(Requires("feedback", "read"))],
    reports: Reports,
) -> list[FeedbackPublic]:
    """The feedback given on the grant, newest first."""
    return [feedback_public(f) for f in reports.feedback.of_grant(account.actor(), grant_id)]


# ------------------------------------------------------------------ the report
@router.get("/reports/operations")
def operation_report(
    account: ReportReader,
    reports: Reports,
    starts_on: From = None,
    ends_on: To = None,
) -> OperationReportPublic:
    """The operation report of a period (default: the last full calendar month)."""
    report = reports.operations(account.actor(), reports.period(starts_on, ends_on))
    return OperationReportPublic(**report.to_dict(), sha256=report.sha256())


def _file(account: Account, reports: ReportService, period: Period, kind: Format) -> Response:
    return _sent(reports.operations_file(account.actor(), period, kind))


def _sent(made: ReportFile) -> Response:
    return Response(
        made.content,
        media_type=made.media_type,
        headers={"Content-Disposition": f'attachment; filename="{made.name}"'},
    )


@router.get(
    "/reports/operations.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def operation_report_csv(
    account: ReportReader,
    reports: Reports,
    starts_on: From = None,
    ends_on: To = None,
) -> Response:
    """The report as CSV (UTF-8 with a byte-order mark): ``section,item,value`` rows."""
    return _file(account, reports, reports.period(starts_on, ends_on), "csv")


@router.get(
    "/reports/operations.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def operation_report_pdf(
    account: ReportReader,
    reports: Reports,
    starts_on: From = None,
    ends_on: To = None,
) -> Response:
    """The report as a PDF, in Chinese with English beside."""
    return _file(account, reports, reports.period(starts_on, ends_on), "pdf")


# ------------------------------------------------------------------ contributions
@router.get("/reports/contributions")
def contribution_report(
    account: ReportReader,
    reports: Reports,
    starts_on: From = None,
    ends_on: To = None,
) -> ContributionReportPublic:
    """The providers' and datasets' contribution of a period (default: the last full
    calendar month): quality, use and value, each with its counts."""
    period = reports.period(starts_on, ends_on)
    return contributions_public(reports.contributions(account.actor(), period))


@router.get(
    "/reports/contributions.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def contribution_report_csv(
    account: ReportReader,
    reports: Reports,
    starts_on: From = None,
    ends_on: To = None,
) -> Response:
    """As CSV (UTF-8 with a byte-order mark): one row per provider, then per dataset."""
    period = reports.period(starts_on, ends_on)
    return _sent(reports.contributions_file(account.actor(), period, "csv"))


@router.get(
    "/reports/contributions.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def contribution_report_pdf(
    account: ReportReader,
    reports: Reports,
    starts_on: From = None,
    ends_on: To = None,
) -> Response:
    """As a PDF, in Chinese with English beside, with its chart."""
    period = reports.period(starts_on, ends_on)
    return _sent(reports.contributions_file(account.actor(), period, "pdf"))


# ------------------------------------------------------------------ the annual evaluation
@router.get("/reports/evaluation")
def annual_evaluation(
    account: ReportReader, reports: Reports, year: Year = None
) -> EvaluationPublic:
    """The operator's year: volumes per month, deadlines, refusals, exports by risk, …
    and the authority's verdicts so far."""
    return evaluation_public(reports.evaluation(account.actor(), reports.year(year)))


@router.get(
    "/reports/evaluation.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def annual_evaluation_csv(account: ReportReader, reports: Reports, year: Year = None) -> Response:
    """As CSV (UTF-8 with a byte-order mark): ``section,item,value`` rows, then the verdicts."""
    return _sent(reports.evaluation_file(account.actor(), reports.year(year), "csv"))


@router.get(
    "/reports/evaluation.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
def annual_evaluation_pdf(account: ReportReader, reports: Reports, year: Year = None) -> Response:
    """As a PDF, in Chinese with English beside, with its charts."""
    return _sent(reports.evaluation_file(account.actor(), reports.year(year), "pdf"))


@router.post("/reports/evaluation/{year}/verdict", status_code=status.HTTP_201_CREATED)
async def give_verdict(
    year: YearPath, body: VerdictCreate, account: Judge, reports: Reports
) -> VerdictPublic:
    """The authority's verdict on the operator's year, with reasons: pass, fail, or
    rectify within 30 days and be evaluated again (then pass or fail)."""
    given = await run_in_threadpool(
        reports.judge, account.actor(), year, body.verdict, body.reasons
    )
    return verdict_public(given)
