"""Feedback after use and the operation report (R14). Thin over :mod:`gateway.reports`.

- ``/grants/{grant_id}/feedback``: an applicant member gives feedback on the grant's
  data; its organization, the operator's readers, the regulators and the providers of
  its data read it.
- ``/reports/operations``: the operator's report for a period (``from`` and ``to``,
  China-time days, both included; the last full month by default), as JSON, CSV or PDF.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS
from gateway.api.routes.sandbox import GrantId
from gateway.identity.model import Account
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
from gateway.reports.operations import Period
from gateway.reports.service import Format, ReportService

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


def reports_of(found: ServicesDep) -> ReportService:
    if found.reports is None:  # a gateway opened without them (some tests)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway has no reports")
    return found.reports


Reports = Annotated[ReportService, Depends(reports_of)]
ReportReader = Annotated[Account, Depends(Requires("report", "read"))]


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
    made = reports.operations_file(account.actor(), period, kind)
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
