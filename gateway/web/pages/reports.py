"""The reports and feedback after use in the console (R14, R15).

- ``/reports``: for those with ``report:read``, the report of a period (the last full
  month unless another is chosen) as tables, in the page's language, with its CSV and
  PDF to download (each download recorded in the ledger);
- ``/reports/evaluation``: the operator's annual evaluation of a year, its charts and
  tables, its CSV and PDF, the authority's verdicts so far, and for a regulator
  (``evaluation:judge``) the form to record the verdict;
- ``/reports/contributions``: the providers' and datasets' contribution of a period,
  its chart, its scores with the counts behind them, and its CSV and PDF;
- ``/grants/{id}/feedback``: the feedback given on a grant, and for its applicant
  members, once the grant has started, the form to give more.

Thin pages over :class:`~gateway.reports.service.ReportService` and its
:class:`~gateway.reports.feedback.FeedbackService`, called as the API calls them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from gateway.agreements.pdf import PdfError
from gateway.api.deps import Services, ServicesDep
from gateway.catalog.service import CHINA
from gateway.db.models import Verdict
from gateway.identity.model import NotFound
from gateway.reports import contributions as contrib
from gateway.reports import evaluation as annual
from gateway.reports.charts import Chart, Language, contribution_charts, evaluation_charts, svg
from gateway.reports.feedback import (
    MAX_QUALITY,
    MIN_QUALITY,
    DatasetNote,
    FeedbackForm,
    FeedbackRefused,
)
from gateway.reports.operations import Period, ReportError, label
from gateway.reports.service import Format, ReportFile, ReportService
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.catalog import Failure, attempt, not_found, posted
from gateway.web.render import gettext_for, locale_of, render

router = APIRouter(include_in_schema=False)
T = TypeVar("T")
NOTICES = {
    "feedback.given": N_("Thank you: the feedback was recorded."),
    "verdict.given": N_("The verdict was recorded in the audit ledger."),
}

ReadReports = Annotated[Viewer, Depends(Page("report", "read"))]
ReadFeedback = Annotated[Viewer, Depends(Page("feedback", "read"))]
GiveFeedback = Annotated[Viewer, Depends(Page("feedback", "create"))]
Judge = Annotated[Viewer, Depends(Page("evaluation", "judge"))]
From = Annotated[str, Query(alias="from", max_length=10)]
To = Annotated[str, Query(alias="to", max_length=10)]
YearText = Annotated[str, Query(alias="year", max_length=4)]


def reports_of(found: Services) -> ReportService:
    if found.reports is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway has no reports")
    return found.reports


def _local_time(moment: datetime) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


# ---------------------------------------------------------------------- the report
@router.get("/reports")
def reports_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadReports,
    starts_on: From = "",
    ends_on: To = "",
) -> Response:
    reports = reports_of(found)
    period, failure = _period(reports, starts_on, ends_on)
    report = reports.operations(viewer.account.actor(), period)
    english = locale_of(request) == "en"

    def name(section: str, item: str | None = None) -> str:
        return label(section, item)[1 if english else 0]

    query = urlencode(report.period.to_dict())
    return render(
        request,
        "reports.html",
        viewer=viewer,
        report=report,
        sections=report.sections()[1:],
        name=name,
        downloads={kind: f"/reports/operations.{kind}?{query}" for kind in ("csv", "pdf")},
        failure=failure,
        status_code=failure.status if failure else status.HTTP_200_OK,
    )


def _period(reports: ReportService, starts_on: str, ends_on: str) -> tuple[Period, Failure | None]:
    """The period asked for, or the default one and why the one asked for is not valid."""
    try:
        return reports.period(starts_on, ends_on), None
    except ReportError as exc:
        return reports.period(), Failure(str(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)


def _download(
    request: Request,
    found: Services,
    viewer: Viewer,
    starts_on: str,
    ends_on: str,
    kind: Format,
    report: Literal["operations", "contributions"] = "operations",
) -> Response:
    reports = reports_of(found)
    make = reports.operations_file if report == "operations" else reports.contributions_file
    return _handed(
        request,
        viewer,
        lambda: make(viewer.account.actor(), reports.period(starts_on, ends_on), kind),
    )


def _handed(request: Request, viewer: Viewer, make: Callable[[], ReportFile]) -> Response:
    """The file ``make`` makes, or a page saying why it cannot be made."""
    try:
        made = make()
    except ReportError as exc:
        heading, reason, code = N_("The request is not valid"), str(exc), 422
    except PdfError as exc:
        heading, reason, code = N_("The PDF cannot be made here"), str(exc), 503
    else:
        return Response(
            made.content,
            media_type=made.media_type,
            headers={"Content-Disposition": f'attachment; filename="{made.name}"'},
        )
    return render(
        request, "problem.html", viewer=viewer, heading=heading, reason=reason, status_code=code
    )


@router.get("/reports/operations.csv")
def report_csv_download(
    request: Request,
    found: ServicesDep,
    viewer: ReadReports,
    starts_on: From = "",
    ends_on: To = "",
) -> Response:
    return _download(request, found, viewer, starts_on, ends_on, "csv")


@router.get("/reports/operations.pdf")
def report_pdf_download(
    request: Request,
    found: ServicesDep,
    viewer: ReadReports,
    starts_on: From = "",
    ends_on: To = "",
) -> Response:
    return _download(request, found, viewer, starts_on, ends_on, "pdf")


# ---------------------------------------------------------------------- the evaluations
def _language(request: Request) -> Language:
    return "en" if locale_of(request) == "en" else "zh"


def _inline(chart: Chart, language: Language) -> Markup:
    """The chart's SVG, to be placed in the page as it is: every text in it is escaped
    by :func:`~gateway.reports.charts.svg`."""
    return Markup(svg(chart, language))  # noqa: S704 - its texts are escaped


def _namer(request: Request) -> Callable[[tuple[str, str]], str]:
    english = locale_of(request) == "en"
    return lambda pair: pair[1 if english else 0]


def _year(reports: ReportService, text: str) -> int:
    """The year asked for (the default one when blank), or :class:`ReportError`."""
    if not text:
        return reports.year()
    if not (text.isdigit() and len(text) == 4):
        raise ReportError("give the year as four digits, YYYY")
    return reports.year(int(text))


def _evaluation_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    year_text: str,
    *,
    notice: str = "",
    failure: Failure | None = None,
    kept: Mapping[str, str] | None = None,
) -> Response:
    reports = reports_of(found)
    try:
        year = _year(reports, year_text)
    except ReportError as exc:
        failure = failure or Failure(str(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)
        year = reports.year()
    actor = viewer.account.actor()
    evaluation = reports.evaluation(actor, year)
    language, name = _language(request), _namer(request)
    may_judge = reports.may_judge(actor) and evaluation.final is None
    last = evaluation.verdicts[-1] if evaluation.verdicts else None
    choices = [verdict for verdict in Verdict if annual.can_give(evaluation.verdicts, verdict)]
    return render(
        request,
        "evaluation.html",
        viewer=viewer,
        evaluation=evaluation,
        charts=[_inline(chart, language) for chart in evaluation_charts(evaluation)],
        sections=evaluation.report.sections()[1:],
        label=lambda section, item=None: name(annual.label(section, item)),
        verdict_name=lambda verdict: name(annual.VERDICT_LABELS[str(verdict)]),
        downloads={kind: f"/reports/evaluation.{kind}?year={year}" for kind in ("csv", "pdf")},
        may_judge=may_judge,
        choices=choices,
        rectifying=last is not None and last.verdict is Verdict.RECTIFY,
        max_reasons=annual.MAX_REASONS,
        local_time=_local_time,
        kept=kept or {},
        notice=NOTICES.get(notice),
        failure=failure,
        status_code=failure.status if failure else status.HTTP_200_OK,
        here=f"/reports/evaluation?year={year}",
    )


@router.get("/reports/evaluation")
def evaluation_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadReports,
    year: YearText = "",
    notice: str = "",
) -> Response:
    return _evaluation_page(request, found, viewer, year, notice=notice)


@router.post("/reports/evaluation/{year}/verdict")
async def give_verdict(
    request: Request, found: ServicesDep, viewer: Judge, year: Annotated[str, Path(max_length=4)]
) -> Response:
    """The regulator's verdict on the year, with reasons; refused with the reason shown."""
    values = await posted(request, "verdict", "reasons")
    _ = gettext_for(request)
    verdicts = {str(item): item for item in Verdict}
    reports = reports_of(found)
    unclear = status.HTTP_422_UNPROCESSABLE_CONTENT
    done: annual.VerdictRecord | Failure
    if values["verdict"] not in verdicts:
        done = Failure(_("Choose pass, fail or rectify."), unclear)
    elif not (year.isdigit() and len(year) == 4):
        done = Failure(_("The year is four digits."), unclear)
    else:
        done = await attempt(
            run_in_threadpool(
                reports.judge,
                viewer.account.actor(),
                int(year),
                verdicts[values["verdict"]],
                values["reasons"],
            )
        )
    if isinstance(done, Failure):
        return await run_in_threadpool(
            _evaluation_page, request, found, viewer, year, failure=done, kept=values
        )
    return RedirectResponse(
        f"/reports/evaluation?{urlencode({'year': done.year, 'notice': 'verdict.given'})}",
        status_code=status.HTTP_303_SEE_OTHER,
    )


def _evaluation_download(
    request: Request, found: Services, viewer: Viewer, year_text: str, kind: Format
) -> Response:
    reports = reports_of(found)
    return _handed(
        request,
        viewer,
        lambda: reports.evaluation_file(viewer.account.actor(), _year(reports, year_text), kind),
    )


@router.get("/reports/evaluation.csv")
def evaluation_csv_download(
    request: Request, found: ServicesDep, viewer: ReadReports, year: YearText = ""
) -> Response:
    return _evaluation_download(request, found, viewer, year, "csv")


@router.get("/reports/evaluation.pdf")
def evaluation_pdf_download(
    request: Request, found: ServicesDep, viewer: ReadReports, year: YearText = ""
) -> Response:
    return _evaluation_download(request, found, viewer, year, "pdf")


@router.get("/reports/contributions")
def contributions_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadReports,
    starts_on: From = "",
    ends_on: To = "",
) -> Response:
    reports = reports_of(found)
    period, failure = _period(reports, starts_on, ends_on)
    report = reports.contributions(viewer.account.actor(), period)
    name = _namer(request)
    query = urlencode(period.to_dict())
    return render(
        request,
        "evaluation_contributions.html",
        viewer=viewer,
        report=report,
        levels=contrib.LEVELS,
        charts=[_inline(chart, _language(request)) for chart in contribution_charts(report)],
        column=lambda key: name(contrib.COLUMN_LABELS[key]),
        level_name=lambda level: name(contrib.LEVEL_LABELS[level]),
        counts=contrib.NAMES,
        parts=contrib.PART_NAMES,
        scores=contrib.SCORES,
        downloads={kind: f"/reports/contributions.{kind}?{query}" for kind in ("csv", "pdf")},
        failure=failure,
        status_code=failure.status if failure else status.HTTP_200_OK,
    )


@router.get("/reports/contributions.csv")
def contributions_csv_download(
    request: Request,
    found: ServicesDep,
    viewer: ReadReports,
    starts_on: From = "",
    ends_on: To = "",
) -> Response:
    return _download(request, found, viewer, starts_on, ends_on, "csv", "contributions")


@router.get("/reports/contributions.pdf")
def contributions_pdf_download(
    request: Request,
    found: ServicesDep,
    viewer: ReadReports,
    starts_on: From = "",
    ends_on: To = "",
) -> Response:
    return _download(request, found, viewer, starts_on, ends_on, "pdf", "contributions")


# ---------------------------------------------------------------------- feedback
def _feedback_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    grant_id: str,
    *,
    notice: str = "",
    failure: Failure | None = None,
    kept: Mapping[str, str] | None = None,
) -> Response:
    try:
        overview = reports_of(found).feedback.overview(viewer.account.actor(), grant_id)
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    return render(
        request,
        "feedback.html",
        viewer=viewer,
        overview=overview,
        dataset_names={dataset.id: dataset.name for dataset in overview.datasets},
        ratings=range(MAX_QUALITY, MIN_QUALITY - 1, -1),
        kept=kept or {},
        local_time=_local_time,
        notice=NOTICES.get(notice),
        failure=failure,
        status_code=failure.status if failure else status.HTTP_200_OK,
        here=f"/grants/{overview.grant_id}/feedback",
    )


@router.get("/grants/{grant_id}/feedback")
def feedback_page(
    request: Request, found: ServicesDep, viewer: ReadFeedback, grant_id: str, notice: str = ""
) -> Response:
    return _feedback_page(request, found, viewer, grant_id, notice=notice)


def _rating(value: str) -> int | None:
    """A rating as chosen (none when left blank; 0, refused, when not a number)."""
    text = value.strip()
    if not text:
        return None
    return int(text) if text.isdigit() and len(text) < 3 else 0


def _form(values: Mapping[str, str]) -> FeedbackForm:
    """The posted form: the ratings and texts, and for each dataset of the grant (its
    fields ``quality.<id>`` and ``note.<id>``) what was said of it, if anything."""
    notes = []
    for key in values:
        if not key.startswith("quality."):
            continue
        dataset_id = key.removeprefix("quality.")
        rating, note = _rating(values[key]), values.get(f"note.{dataset_id}", "")
        if rating is not None or note.strip():
            notes.append(DatasetNote(dataset_id, rating, note))
    return FeedbackForm(
        quality=_rating(values.get("quality", "")) or 0,
        quality_note=values.get("quality_note", ""),
        usage=values.get("usage", ""),
        effect=values.get("effect", ""),
        datasets=tuple(notes),
    )


async def _every_reason(call: Awaitable[T]) -> T | Failure:
    """The answer, or refused feedback with every reason (the rest: :func:`attempt`)."""
    try:
        return await call
    except FeedbackRefused as exc:
        return Failure("", status.HTTP_422_UNPROCESSABLE_CONTENT, exc.reasons)


@router.post("/grants/{grant_id}/feedback")
async def give_feedback(
    request: Request, found: ServicesDep, viewer: GiveFeedback, grant_id: str
) -> Response:
    posted = await request.form()
    values = {key: value for key, value in posted.items() if isinstance(value, str)}
    feedback = reports_of(found).feedback
    given = run_in_threadpool(feedback.give, viewer.account.actor(), grant_id, _form(values))
    done = await attempt(_every_reason(given))
    if isinstance(done, Failure):
        return await run_in_threadpool(
            _feedback_page, request, found, viewer, grant_id, failure=done, kept=values
        )
    return RedirectResponse(
        f"/grants/{done.grant_id}/feedback?{urlencode({'notice': 'feedback.given'})}",
        status_code=status.HTTP_303_SEE_OTHER,
    )
