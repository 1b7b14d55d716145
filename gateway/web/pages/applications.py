"""Applications in the console (R9–R11): the applications the viewer may see, the queue
waiting for them and, for the operator, those past their deadline; a new application for
one dataset of the published catalog; and an application's page: its content with the
plan of every field, its history, its documents and the steps the viewer may take now
(the agreement's part of it: :mod:`gateway.web.pages.agreements`).

Thin pages over :class:`~gateway.applications.service.ApplicationService`, called as the
API calls it: state changes as jobs of the write queue, reads directly. What a page
offers follows the workflow (:func:`~gateway.applications.workflow.can_take`) and the
authorizer (``allows``, with the application as the target); the service decides again
and records the change or the refusal. After a change the browser goes back to the
application's page with a notice from :data:`NOTICES`; a refusal is shown on the page it
was made from, with the status the API answers it with (403, 404, 409 or 422), what was
typed kept and, for a refused submission, every reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gateway.api.deps import Services, ServicesDep
from gateway.applications.attachments import MAX_BYTES, AttachmentRefused
from gateway.applications.queries import OPERATOR_READERS
from gateway.applications.service import COMMITMENT, ApplicationService, NotQualified
from gateway.applications.snapshots import ApplicationDetail
from gateway.applications.workflow import Step, WorkflowError, can_take
from gateway.authz import Denied, Target
from gateway.catalog.service import CHINA, DatasetSnapshot
from gateway.db.models import ApplicationStatus, DatasetStatus
from gateway.identity.model import MAX_PAGE, Conflict, IdentityError, NotFound
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.catalog import Failure, catalog_of, not_found, posted
from gateway.web.render import gettext_for, locale_of, render
from sandbox.views.treatments import SensitivityClass

router = APIRouter(include_in_schema=False)
T = TypeVar("T")
PAGE_SIZE = 20
QUEUE_ROLES = frozenset({"reviewer", "approver", "provider_steward"})
SUFFIXES = {"application/pdf": ".pdf", "image/png": ".png", "image/jpeg": ".jpg"}
TEXTS = ("title", "purpose", "scenario", "security_measures")
FORM_INPUTS = ("dataset", "starts_on", "ends_on", "conditions", *TEXTS)
RISK_INPUTS = ("level", "reidentification", "misuse", "measures")

NOTICES = {
    "application.drafted": N_(
        "The draft was saved. Attach the security commitment letter, then submit it."
    ),
    "application.attached": N_("The document was attached."),
    "application.submitted": N_(
        "The application was submitted; the formal check is due within five working days."
    ),
    "application.withdrawn": N_("The application was withdrawn."),
    "application.amended": N_(
        "The application is a draft again, for another round: attach what is missing and submit it."
    ),
    "application.checked": N_("The formal check was recorded."),
    "application.consented": N_("Your organization's answer was recorded."),
    "application.reviewed": N_("The opinion was recorded."),
    "application.approved": N_("The application was approved; its agreement can be made now."),
    "application.rejected": N_("The application was not approved; the applicant sees why."),
    "agreement.signed": N_("The agreement was signed for your organization."),
}

ReadApplications = Annotated[Viewer, Depends(Page("application", "read"))]
CreateApplication = Annotated[Viewer, Depends(Page("application", "create"))]
UpdateApplication = Annotated[Viewer, Depends(Page("application", "update"))]
SubmitApplication = Annotated[Viewer, Depends(Page("application", "submit"))]
WithdrawApplication = Annotated[Viewer, Depends(Page("application", "withdraw"))]
CheckApplication = Annotated[Viewer, Depends(Page("application", "check"))]
ConsentToApplication = Annotated[Viewer, Depends(Page("application", "consent"))]
ReviewApplication = Annotated[Viewer, Depends(Page("application", "review"))]
DecideApplication = Annotated[Viewer, Depends(Page("application", "approve"))]


# ---------------------------------------------------------------------- plumbing
def applications_of(found: Services) -> ApplicationService:
    if found.applications is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "applications are not configured")
    return found.applications


async def attempt_step(call: Awaitable[T]) -> T | Failure:
    """The service's answer, or why it refused with the status the API gives it: every
    reason of a refused submission; 409 when the status does not allow the step."""
    try:
        return await call
    except NotQualified as exc:
        return Failure("", status.HTTP_422_UNPROCESSABLE_CONTENT, exc.reasons)
    except Denied as exc:
        return Failure(exc.reason, status.HTTP_403_FORBIDDEN)
    except NotFound as exc:
        return Failure(str(exc), status.HTTP_404_NOT_FOUND)
    except (Conflict, WorkflowError) as exc:
        return Failure(str(exc), status.HTTP_409_CONFLICT)
    except (IdentityError, AttachmentRefused) as exc:
        return Failure(str(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)


def labels(request: Request, found: Services) -> dict[str, Any]:
    """What the application pages show values with, in the page's language."""
    service = applications_of(found)
    policy = service.treatments
    locale = locale_of(request)

    def level_label(name: str) -> str:
        level = policy.levels.get(name)
        return level.labels.get(locale, name) if level else name

    def sensitivity_label(value: str) -> str:
        known = {cls.value: cls for cls in SensitivityClass}
        found_class = known.get(value)
        return policy.labels.get(found_class, {}).get(locale, value) if found_class else value

    def provisional(day: date) -> bool:
        return not service.calendar.known(day)

    def local_time(moment: datetime | str | None) -> str:
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M") if moment else ""

    return {
        "level_label": level_label,
        "sensitivity_label": sensitivity_label,
        "provisional": provisional,
        "local_time": local_time,
    }


def back(application_id: str, notice: str, *, agreement_id: str = "") -> RedirectResponse:
    """To the application's page with a notice (and its agreement, when there is one)."""
    query = {"notice": notice, **({"agreement": agreement_id} if agreement_id else {})}
    anchor = "#agreement" if agreement_id else ""
    return RedirectResponse(
        f"/applications/{application_id}?{urlencode(query)}{anchor}",
        status_code=status.HTTP_303_SEE_OTHER,
    )


def _text(value: str) -> str:
    return value.replace("\r\n", "\n").strip()


def _lines(value: str) -> list[str]:
    """The reasons typed one a line."""
    return [line.strip() for line in value.splitlines() if line.strip()]


# ---------------------------------------------------------------------- the lists
@router.get("/applications")
def applications_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadApplications,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    notice: str = "",
) -> Response:
    service = applications_of(found)
    actor = viewer.account.actor()
    listing = service.listing(actor, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    return render(
        request,
        "applications.html",
        viewer=viewer,
        listing=listing,
        queue=service.queue(actor) if QUEUE_ROLES & actor.roles else None,
        overdue=service.overdue(actor) if OPERATOR_READERS & actor.roles else None,
        page=page,
        pages=max(1, -(-listing.total // PAGE_SIZE)),
        notice=NOTICES.get(notice),
        **labels(request, found),
    )


# ---------------------------------------------------------------------- a new application
@router.get("/applications/new")
def new_application_page(
    request: Request,
    found: ServicesDep,
    viewer: CreateApplication,
    dataset: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    return _form_page(request, found, viewer, {"dataset": dataset})


def _form_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    values: Mapping[str, str],
    *,
    chosen: Sequence[str] = (),
    justifications: Mapping[str, str] | None = None,
    failure: Failure | None = None,
) -> Response:
    """The form for one dataset: the published datasets to choose from and, once one is
    chosen, its fields with what each would be (the service's plan)."""
    catalog = catalog_of(found)
    service = applications_of(found)
    actor = viewer.account.actor()
    offered = [
        item
        for item in catalog.datasets(actor, limit=MAX_PAGE).items
        if item.status is DatasetStatus.PUBLISHED and item.entry is not None
    ]
    dataset, plan = None, None
    if values.get("dataset"):
        try:
            dataset = catalog.dataset(actor, values["dataset"])
        except NotFound as exc:
            failure = failure or Failure(str(exc), status.HTTP_404_NOT_FOUND)
        if dataset is not None and dataset.entry is not None:
            [plan] = service.plan(actor, _every_field(service, dataset))
    return render(
        request,
        "applications_form.html",
        viewer=viewer,
        offered=offered,
        dataset=dataset,
        plan=plan,
        planned={item.name: item for item in plan.fields} if plan else {},
        values=values,
        chosen=set(chosen),
        justifications=justifications or {},
        failure=failure,
        status_code=failure.status if failure else status.HTTP_200_OK,
        here="/applications/new" + (f"?{urlencode({'dataset': dataset.id})}" if dataset else ""),
        **labels(request, found),
    )


def _every_field(service: ApplicationService, dataset: DatasetSnapshot) -> dict[str, Any]:
    """A form asking for every field of ``dataset``, for the plan of each (the plan reads
    the datasets alone; the rest only has to be a valid form)."""
    assert dataset.entry is not None  # noqa: S101 - the caller checked
    today = service.today()
    every = [{"name": item.name, "justification": "--"} for item in dataset.entry.fields]
    return {
        **dict.fromkeys(("title", "purpose", "scenario", "security_measures"), "-"),
        "starts_on": today,
        "ends_on": today + timedelta(days=1),
        "datasets": [{"dataset_id": dataset.id, "fields": every, "conditions": "-"}],
    }


@router.post("/applications")
async def create_application(
    request: Request, found: ServicesDep, viewer: CreateApplication
) -> Response:
    values = await posted(request, *FORM_INPUTS)
    form = await request.form()
    chosen = [name for name in form.getlist("field") if isinstance(name, str)]
    justifications = {
        key.removeprefix("justification."): value.strip()
        for key, value in form.multi_items()
        if key.startswith("justification.") and isinstance(value, str)
    }
    requested = {
        "dataset_id": values["dataset"],
        "fields": [
            {"name": name, "justification": justifications.get(name, "")} for name in chosen
        ],
        "conditions": _text(values["conditions"]),
    }
    body = {
        **{name: _text(values[name]) for name in TEXTS},
        "starts_on": values["starts_on"],
        "ends_on": values["ends_on"],
        "datasets": [requested],
    }
    service = applications_of(found)
    made = await attempt_step(found.writes.call(service.draft, viewer.account.actor(), body))
    if isinstance(made, Failure):
        return await run_in_threadpool(
            _form_page,
            request,
            found,
            viewer,
            values,
            chosen=chosen,
            justifications=justifications,
            failure=made,
        )
    return back(made.id, "application.drafted")


# ---------------------------------------------------------------------- an application
@router.get("/applications/{application_id}")
def application_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadApplications,
    application_id: str,
    notice: str = "",
    agreement: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    return detail_page(
        request, found, viewer, application_id, notice=notice, agreement_id=agreement
    )


def detail_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    application_id: str,
    *,
    notice: str = "",
    failure: Failure | None = None,
    kept: Mapping[str, Mapping[str, str]] | None = None,
    agreement_id: str = "",
) -> Response:
    # Imported here: the agreement pages import this module for their own answers.
    from gateway.web.pages.agreements import agreement_part

    try:
        detail = applications_of(found).get(viewer.account.actor(), application_id)
    except NotFound as exc:
        return not_found(request, viewer, failure.message if failure else str(exc))
    application = detail.application
    form = application.form
    here = f"/applications/{application.id}"
    return render(
        request,
        "applications_detail.html",
        viewer=viewer,
        detail=detail,
        application=application,
        may=allowed_steps(found, viewer, detail),
        justifications={
            (item.dataset_id, field.name): field.justification
            for item in form.datasets
            for field in item.fields
        },
        conditions={item.dataset_id: item.conditions for item in form.datasets},
        dataset_names={plan.dataset_id: plan.name or plan.dataset_id for plan in detail.plans},
        notice=NOTICES.get(notice),
        failure=failure,
        kept=kept or {},
        status_code=failure.status if failure else status.HTTP_200_OK,
        here=here + (f"?{urlencode({'agreement': agreement_id})}" if agreement_id else ""),
        **agreement_part(found, viewer, detail, agreement_id),
        **labels(request, found),
    )


def allowed_steps(found: Services, viewer: Viewer, detail: ApplicationDetail) -> dict[str, Any]:
    """The steps the page offers the viewer: those the workflow allows now and the
    authorizer allows them, with the application as the target (the service decides
    again when one is taken)."""
    actor = viewer.account.actor()
    row = detail.application
    current = row.status
    allows = found.authorizer.allows
    target = Target(
        organization=f"org:{row.organization_id}",
        requested_by=row.created_by,
        drafted_by=frozenset({row.opinion_by} if row.opinion_by else ()),
    )
    own = row.organization_id == viewer.account.organization_id

    def may(step: Step, act: str, on: Target | None = None) -> bool:
        return can_take(step, current) and allows(actor, "application", act, on)

    decides = may(Step.APPROVE, "approve", target)
    drafts = current is ApplicationStatus.DRAFT and allows(actor, "application", "update")
    return {
        "attach": own and drafts,
        "submit": own and may(Step.SUBMIT, "submit"),
        "withdraw": own and may(Step.WITHDRAW, "withdraw"),
        "amend": own and may(Step.AMEND, "update"),
        "check": may(Step.PASS_CHECK, "check", target),
        "consents": [
            plan
            for plan in detail.plans
            if plan.dataset_id in detail.pending_consents
            and plan.provider_id == viewer.account.organization_id
        ]
        if may(Step.CONSENT, "consent", target)
        else [],
        "review": may(Step.REVIEW, "review", target),
        "decide": decides,
        # an approver who may not decide this one (the opinion is theirs): another one will
        "another_decides": can_take(Step.APPROVE, current)
        and "approver" in actor.roles
        and not decides,
    }


async def _step(
    request: Request,
    found: Services,
    viewer: Viewer,
    application_id: str,
    call: Awaitable[Any],
    notice: str,
    kept: Mapping[str, Mapping[str, str]] | None = None,
) -> Response:
    """Take a step: back to the application's page with a notice, or the page again with
    the reason it was refused."""
    done = await attempt_step(call)
    if isinstance(done, Failure):
        return await _refused(request, found, viewer, application_id, done, kept)
    return back(application_id, notice)


async def _refused(
    request: Request,
    found: Services,
    viewer: Viewer,
    application_id: str,
    failure: Failure,
    kept: Mapping[str, Mapping[str, str]] | None = None,
) -> Response:
    return await run_in_threadpool(
        detail_page, request, found, viewer, application_id, failure=failure, kept=kept
    )


# ---------------------------------------------------------------------- documents
@router.post("/applications/{application_id}/attachments")
async def attach_document(
    request: Request, found: ServicesDep, viewer: UpdateApplication, application_id: str
) -> Response:
    """The security commitment letter, as the browser sent it (the service recognises
    PDF, PNG and JPEG by their first bytes)."""
    upload = (await request.form()).get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        _ = gettext_for(request)
        missing = Failure(_("Choose the file to upload."), status.HTTP_422_UNPROCESSABLE_CONTENT)
        return await _refused(request, found, viewer, application_id, missing)
    try:
        content = await upload.read(MAX_BYTES + 1)
    finally:
        await upload.close()
    call = found.writes.call(
        applications_of(found).attach,
        viewer.account.actor(),
        application_id,
        kind=COMMITMENT,
        name=upload.filename,
        content=content,
    )
    return await _step(request, found, viewer, application_id, call, "application.attached")


@router.get("/applications/{application_id}/attachments/{attachment_id}")
def read_document(
    request: Request,
    found: ServicesDep,
    viewer: ReadApplications,
    application_id: str,
    attachment_id: str,
) -> Response:
    try:
        item, content = applications_of(found).attachment(
            viewer.account.actor(), application_id, attachment_id
        )
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    name = f"{item.kind}-{item.id}{SUFFIXES.get(item.media_type, '')}"
    return Response(
        content,
        media_type=item.media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# ---------------------------------------------------------------------- the applicant
@router.post("/applications/{application_id}/submit")
async def submit_application(
    request: Request, found: ServicesDep, viewer: SubmitApplication, application_id: str
) -> Response:
    done = await attempt_step(
        found.writes.call(applications_of(found).submit, viewer.account.actor(), application_id)
    )
    if isinstance(done, Failure):
        if done.problems:
            _ = gettext_for(request)
            heading = _("The application cannot be submitted yet:")
            done = Failure(heading, done.status, done.problems)
        return await _refused(request, found, viewer, application_id, done)
    return back(application_id, "application.submitted")


@router.post("/applications/{application_id}/withdraw")
async def withdraw_application(
    request: Request, found: ServicesDep, viewer: WithdrawApplication, application_id: str
) -> Response:
    values = await posted(request, "reason")
    call = found.writes.call(
        applications_of(found).withdraw, viewer.account.actor(), application_id, values["reason"]
    )
    kept = {"withdraw": values}
    return await _step(request, found, viewer, application_id, call, "application.withdrawn", kept)


@router.post("/applications/{application_id}/amend")
async def amend_application(
    request: Request, found: ServicesDep, viewer: UpdateApplication, application_id: str
) -> Response:
    call = found.writes.call(applications_of(found).amend, viewer.account.actor(), application_id)
    return await _step(request, found, viewer, application_id, call, "application.amended")


# ---------------------------------------------------------------------- the operator, providers
def _unclear(request: Request, message: str) -> Failure:
    _ = gettext_for(request)
    return Failure(_(message), status.HTTP_422_UNPROCESSABLE_CONTENT)


@router.post("/applications/{application_id}/check")
async def check_application(
    request: Request, found: ServicesDep, viewer: CheckApplication, application_id: str
) -> Response:
    values = await posted(request, "complete", "reasons")
    kept = {"check": values}
    if values["complete"] not in ("yes", "no"):
        unclear = _unclear(request, N_("Say whether the application is complete."))
        return await _refused(request, found, viewer, application_id, unclear, kept)
    call = found.writes.call(
        applications_of(found).check,
        viewer.account.actor(),
        application_id,
        complete=values["complete"] == "yes",
        reasons=_lines(values["reasons"]),
    )
    return await _step(request, found, viewer, application_id, call, "application.checked", kept)


@router.post("/applications/{application_id}/consents/{dataset_id}")
async def consent_to_application(
    request: Request,
    found: ServicesDep,
    viewer: ConsentToApplication,
    application_id: str,
    dataset_id: str,
) -> Response:
    values = await posted(request, "consents", "reasons")
    kept = {f"consent.{dataset_id}": values}
    if values["consents"] not in ("yes", "no"):
        unclear = _unclear(request, N_("Say whether your organization consents."))
        return await _refused(request, found, viewer, application_id, unclear, kept)
    call = found.writes.call(
        applications_of(found).consent,
        viewer.account.actor(),
        application_id,
        dataset_id,
        consents=values["consents"] == "yes",
        reasons=_lines(values["reasons"]),
    )
    notice = "application.consented"
    return await _step(request, found, viewer, application_id, call, notice, kept)


@router.post("/applications/{application_id}/review")
async def review_application(
    request: Request, found: ServicesDep, viewer: ReviewApplication, application_id: str
) -> Response:
    values = await posted(request, "recommends", "opinion", *RISK_INPUTS)
    kept = {"review": values}
    if values["recommends"] not in ("yes", "no"):
        unclear = _unclear(request, N_("Say whether you recommend approving the application."))
        return await _refused(request, found, viewer, application_id, unclear, kept)
    call = found.writes.call(
        applications_of(found).review,
        viewer.account.actor(),
        application_id,
        recommends=values["recommends"] == "yes",
        opinion=_text(values["opinion"]),
        risk={name: _text(values[name]) for name in RISK_INPUTS},
    )
    return await _step(request, found, viewer, application_id, call, "application.reviewed", kept)


@router.post("/applications/{application_id}/decision")
async def decide_application(
    request: Request, found: ServicesDep, viewer: DecideApplication, application_id: str
) -> Response:
    values = await posted(request, "decision", "reasons", "note")
    kept = {"decision": values}
    if values["decision"] not in ("approve", "reject"):
        unclear = _unclear(request, N_("Choose to approve or to reject the application."))
        return await _refused(request, found, viewer, application_id, unclear, kept)
    approve = values["decision"] == "approve"
    call = found.writes.call(
        applications_of(found).decide,
        viewer.account.actor(),
        application_id,
        approve=approve,
        reasons=_lines(values["reasons"]),
        note=_text(values["note"]),
    )
    notice = "application.approved" if approve else "application.rejected"
    return await _step(request, found, viewer, application_id, call, notice, kept)
