"""Applications (R9–R11): drafts, documents, submission, the review queues and every
decision on them. Thin over :mod:`gateway.applications.service`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.catalog import BINARY_BODY
from gateway.api.routes.organizations import PROBLEMS, Identifier, Limit, Offset, PagePublic
from gateway.applications.attachments import MAX_BYTES, AttachmentRefused
from gateway.applications.form import ApplicationForm
from gateway.applications.service import MAX_REASONS, ApplicationService
from gateway.applications.snapshots import (
    ApplicationDetail,
    ApplicationSnapshot,
    AttachmentSnapshot,
    EventSnapshot,
    RiskAssessment,
)
from gateway.db.models import ApplicationStatus
from gateway.identity.model import MAX_REASON, Account

router = APIRouter(prefix="/applications", tags=["applications"], responses=PROBLEMS)


def applications_of(found: ServicesDep) -> ApplicationService:
    if found.applications is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "applications are not configured")
    return found.applications


Applications = Annotated[ApplicationService, Depends(applications_of)]
Reader = Annotated[Account, Depends(Requires("application", "read"))]
Reasons = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=MAX_REASON)]],
    Field(max_length=MAX_REASONS, description="why it is refused: needed for a refusal"),
]


# ------------------------------------------------------------------ schemas
class ApplicationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    organization_id: str
    created_by: str
    title: str
    form: ApplicationForm
    status: ApplicationStatus
    round: int = Field(description="1, then one more for each amended resubmission")
    stage_since: datetime | None
    due_on: date | None = Field(description="the working day by which its queue answers")
    provisional: bool = Field(description="the deadline falls in a year not announced yet")
    overdue: bool
    opinion_by: str | None
    submitted_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    round: int
    step: str
    actor: str
    at: datetime
    status: ApplicationStatus = Field(description="the status the step left it in")
    dataset_id: str | None
    recommends: bool | None
    text: str | None
    reasons: list[str]
    risk: RiskAssessment | None
    due_on: date | None
    on_time: bool | None


class AttachmentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    name: str
    media_type: str
    size: int
    sha256: str
    uploaded_by: str
    uploaded_at: datetime


class FieldPlanPublic(BaseModel):
    name: str
    sensitivity: str
    conditional: bool = Field(description="its dataset needs the provider's consent")
    view: str = Field(description="record, aggregate, or none (cannot be granted)")
    treatments: list[str]


class DatasetPlanPublic(BaseModel):
    dataset_id: str
    name: str
    provider_id: str
    level: str
    conditional: bool
    usage_conditions: str
    fields: list[FieldPlanPublic]
    problems: list[str] = Field(description="what stands in the way of submitting")


class ApplicationDetailPublic(BaseModel):
    application: ApplicationPublic
    plans: list[DatasetPlanPublic]
    events: list[EventPublic]
    attachments: list[AttachmentPublic]
    pending_consents: list[str] = Field(description="conditional datasets awaiting consent")


class ApplicationPage(PagePublic[ApplicationPublic]):
    pass


class Withdrawal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_REASON)


class FormalCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    complete: StrictBool
    reasons: Reasons = []


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consents: StrictBool
    reasons: Reasons = []


class Opinion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recommends: StrictBool
    opinion: str = Field(min_length=1, max_length=8000)
    risk: RiskAssessment


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: StrictBool
    reasons: Reasons = []
    note: str = Field(default="", max_length=8000)


def application_public(snapshot: ApplicationSnapshot) -> ApplicationPublic:
    return ApplicationPublic.model_validate(snapshot)


def event_public(snapshot: EventSnapshot) -> EventPublic:
    return EventPublic(
        **{**snapshot.__dict__, "reasons": list(snapshot.reasons)},
    )


def detail_public(detail: ApplicationDetail) -> ApplicationDetailPublic:
    return ApplicationDetailPublic(
        application=application_public(detail.application),
        plans=[DatasetPlanPublic.model_validate(plan.to_dict()) for plan in detail.plans],
        events=[event_public(event) for event in detail.events],
        attachments=[AttachmentPublic.model_validate(item) for item in detail.attachments],
        pending_consents=list(detail.pending_consents),
    )


# ------------------------------------------------------------------ reading
@router.get("")
def list_applications(
    account: Reader,
    applications: Applications,
    status_: Annotated[ApplicationStatus | None, Query(alias="status")] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> ApplicationPage:
    """The applications you may see, newest first."""
    page = applications.listing(account.actor(), status=status_, offset=offset, limit=limit)
    return ApplicationPage.of(page, application_public)


@router.get("/queue")
def my_queue(account: Reader, applications: Applications) -> list[ApplicationPublic]:
    """What waits for you (formal checks, consents, reviews, decisions), by deadline."""
    return [application_public(item) for item in applications.queue(account.actor())]


@router.get("/overdue")
def overdue(account: Reader, applications: Applications) -> list[ApplicationPublic]:
    """Open applications past their queue's deadline (the operator's)."""
    return [application_public(item) for item in applications.overdue(account.actor())]


@router.post("/plan")
def plan(
    body: ApplicationForm,
    account: Annotated[Account, Depends(Requires("application", "create"))],
    applications: Applications,
) -> list[DatasetPlanPublic]:
    """What each field of a form would be in the sandbox, and what stands in the way."""
    plans = applications.plan(account.actor(), body)
    return [DatasetPlanPublic.model_validate(item.to_dict()) for item in plans]


@router.get("/{application_id}")
def read_application(
    application_id: Identifier, account: Reader, applications: Applications
) -> ApplicationDetailPublic:
    return detail_public(applications.get(account.actor(), application_id))


@router.get("/{application_id}/attachments/{attachment_id}")
def read_attachment(
    application_id: Identifier,
    attachment_id: Identifier,
    account: Reader,
    applications: Applications,
) -> Response:
    item, content = applications.attachment(account.actor(), application_id, attachment_id)
    return Response(
        content,
        media_type=item.media_type,
        headers={"Content-Disposition": f'attachment; filename="{item.id}"'},
    )


# ------------------------------------------------------------------ the applicant
@router.post("", status_code=status.HTTP_201_CREATED)
async def draft_application(
    body: ApplicationForm,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "create"))],
    applications: Applications,
) -> ApplicationPublic:
    """Save a new draft for your organization."""
    return application_public(await found.writes.call(applications.draft, account.actor(), body))


@router.put("/{application_id}")
async def update_application(
    application_id: Identifier,
    body: ApplicationForm,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "update"))],
    applications: Applications,
) -> ApplicationPublic:
    snapshot = await found.writes.call(applications.update, account.actor(), application_id, body)
    return application_public(snapshot)


@router.post(
    "/{application_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=BINARY_BODY,
)
async def attach_document(
    application_id: Identifier,
    request: Request,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "update"))],
    applications: Applications,
    kind: Annotated[str, Query(max_length=32)] = "commitment",
    name: Annotated[str, Query(min_length=1, max_length=200)] = "commitment.pdf",
) -> AttachmentPublic:
    """Attach a document (the security commitment letter: PDF, PNG or JPEG, 10 MiB at
    most) to a draft, as the request body."""
    content = bytearray()
    async for block in request.stream():
        content += block
        if len(content) > MAX_BYTES:
            raise AttachmentRefused(f"a document has at most {MAX_BYTES >> 20} MiB")
    snapshot: AttachmentSnapshot = await found.writes.call(
        applications.attach,
        account.actor(),
        application_id,
        kind=kind,
        name=name,
        content=bytes(content),
    )
    return AttachmentPublic.model_validate(snapshot)


async def _step(found: Any, call: Any, *args: Any, **kwargs: Any) -> ApplicationPublic:
    return application_public(await found.writes.call(call, *args, **kwargs))


@router.post("/{application_id}/submit")
async def submit_application(
    application_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "submit"))],
    applications: Applications,
) -> ApplicationPublic:
    """Submit a draft. 422 with ``reasons`` listing every problem if it cannot be."""
    return await _step(found, applications.submit, account.actor(), application_id)


@router.post("/{application_id}/amend")
async def amend_application(
    application_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "update"))],
    applications: Applications,
) -> ApplicationPublic:
    """Take a refused application back as a draft, to change and submit again."""
    return await _step(found, applications.amend, account.actor(), application_id)


@router.post("/{application_id}/withdraw")
async def withdraw_application(
    application_id: Identifier,
    body: Withdrawal,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "withdraw"))],
    applications: Applications,
) -> ApplicationPublic:
    return await _step(found, applications.withdraw, account.actor(), application_id, body.reason)


# ------------------------------------------------------------------ the operator, providers
@router.post("/{application_id}/check")
async def check_application(
    application_id: Identifier,
    body: FormalCheck,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "check"))],
    applications: Applications,
) -> ApplicationPublic:
    """The formal check: complete, or refused with reasons."""
    return await _step(
        found,
        applications.check,
        account.actor(),
        application_id,
        complete=body.complete,
        reasons=body.reasons,
    )


@router.post("/{application_id}/consents/{dataset_id}")
async def consent_to_application(
    application_id: Identifier,
    dataset_id: Identifier,
    body: Consent,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "consent"))],
    applications: Applications,
) -> ApplicationPublic:
    """A provider's consent to the use of its conditional dataset, or its refusal."""
    return await _step(
        found,
        applications.consent,
        account.actor(),
        application_id,
        dataset_id,
        consents=body.consents,
        reasons=body.reasons,
    )


@router.post("/{application_id}/review")
async def review_application(
    application_id: Identifier,
    body: Opinion,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "review"))],
    applications: Applications,
) -> ApplicationPublic:
    """The substantive review: an opinion with its risk assessment."""
    return await _step(
        found,
        applications.review,
        account.actor(),
        application_id,
        recommends=body.recommends,
        opinion=body.opinion,
        risk=body.risk,
    )


@router.post("/{application_id}/decision")
async def decide_application(
    application_id: Identifier,
    body: Decision,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("application", "approve"))],
    applications: Applications,
) -> ApplicationPublic:
    """The approver's decision (never the opinion's author): approved, or refused with
    reasons."""
    return await _step(
        found,
        applications.decide,
        account.actor(),
        application_id,
        approve=body.approve,
        reasons=body.reasons,
        note=body.note,
    )
