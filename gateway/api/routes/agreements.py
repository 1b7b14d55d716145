"""Operation agreements (R12): made from approved applications, signed by both
organizations, read as canonical JSON or PDF. Thin over :mod:`gateway.agreements.service`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.agreements.grants import AgreementGrants, ViewRequest
from gateway.agreements.service import AgreementService, AgreementSnapshot
from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS, Identifier
from gateway.api.routes.sandbox import GrantPublic, Slug, grant_public
from gateway.db.models import AgreementStatus
from gateway.identity.model import Account
from sandbox.views.fields import FieldRule
from sandbox.views.treatments import Treatment

router = APIRouter(tags=["agreements"], responses=PROBLEMS)


def agreements_of(found: ServicesDep) -> AgreementService:
    if found.agreements is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "agreements are not configured")
    return found.agreements


Agreements = Annotated[AgreementService, Depends(agreements_of)]
Reader = Annotated[Account, Depends(Requires("agreement", "read"))]


class SignaturePublic(BaseModel):
    key_id: str
    public_key: str = Field(description="base64 of the raw Ed25519 public key")
    signature: str = Field(description="base64 Ed25519 over sbx/agreement/v1 + the document")
    signed_by: str
    signed_at: datetime


class AgreementPublic(BaseModel):
    id: str
    number: str
    application_id: str
    applicant_id: str
    operator_id: str
    document: dict[str, Any] = Field(description="the agreement (signed as canonical JSON)")
    sha256: str = Field(description="SHA-256 of the document's canonical JSON")
    status: AgreementStatus
    signatures: dict[str, SignaturePublic] = Field(description="by party: applicant, operator")
    problems: list[str] = Field(
        default_factory=list, description="why the signatures do not hold yet"
    )
    created_at: datetime


def agreement_public(snapshot: AgreementSnapshot, problems: list[str]) -> AgreementPublic:
    return AgreementPublic(
        id=snapshot.id,
        number=snapshot.number,
        application_id=snapshot.application_id,
        applicant_id=snapshot.applicant_id,
        operator_id=snapshot.operator_id,
        document=snapshot.document,
        sha256=snapshot.sha256,
        status=snapshot.status,
        signatures={
            name: SignaturePublic.model_validate(signed)
            for name, signed in snapshot.signatures.items()
        },
        problems=problems,
        created_at=snapshot.created_at,
    )


@router.post("/applications/{application_id}/agreement")
async def agreement_for_application(
    application_id: Identifier, found: ServicesDep, account: Reader, agreements: Agreements
) -> AgreementPublic:
    """The agreement of an approved application, made the first time it is asked for."""
    actor = account.actor()
    made = await found.writes.call(agreements.for_application, actor, application_id)
    return agreement_public(made, agreements.problems(actor, made.id))


@router.get("/applications/{application_id}/agreement")
def read_application_agreement(
    application_id: Identifier, account: Reader, agreements: Agreements
) -> AgreementPublic:
    """The application's agreement, if it has been made (404 until then)."""
    actor = account.actor()
    found = agreements.of_application(actor, application_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no agreement has been made yet")
    return agreement_public(found, agreements.problems(actor, found.id))


@router.get("/agreements/{agreement_id}")
def read_agreement(
    agreement_id: Identifier, account: Reader, agreements: Agreements
) -> AgreementPublic:
    actor = account.actor()
    return agreement_public(
        agreements.get(actor, agreement_id), agreements.problems(actor, agreement_id)
    )


@router.get("/agreements/{agreement_id}/document")
def agreement_document(
    agreement_id: Identifier, account: Reader, agreements: Agreements
) -> Response:
    """The signed text: the document's canonical JSON (its SHA-256 is the agreement's)."""
    return Response(
        agreements.document(account.actor(), agreement_id), media_type="application/json"
    )


@router.get("/agreements/{agreement_id}/pdf")
def agreement_pdf(agreement_id: Identifier, account: Reader, agreements: Agreements) -> Response:
    return Response(
        agreements.pdf(account.actor(), agreement_id),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="agreement-{agreement_id}.pdf"'},
    )


@router.post("/agreements/{agreement_id}/signature")
async def sign_agreement(
    agreement_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("agreement", "sign"))],
    agreements: Agreements,
) -> AgreementPublic:
    """Sign for your organization (the application unit's applicant, or the operator's
    approver); the second signature makes the agreement signed."""
    actor = account.actor()
    signed = await found.writes.call(agreements.sign, actor, agreement_id)
    return agreement_public(signed, agreements.problems(actor, agreement_id))


def agreement_grants_of(found: ServicesDep) -> AgreementGrants:
    if found.agreement_grants is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "grants are not configured")
    return found.agreement_grants


class FieldRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str = Field(min_length=1, max_length=63)
    treatment: Treatment
    params: dict[str, str | int | float] = Field(
        default_factory=dict, max_length=8, description="e.g. to: month; width: 10"
    )


class ViewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: Literal["record", "aggregate"]
    fields: list[FieldRuleCreate] = Field(
        min_length=1, max_length=500, description="a record view's columns, or dimensions"
    )
    measures: list[str] = Field(default_factory=list, max_length=50)
    k: int = Field(default=5, ge=2, le=1000)


class GrantFromAgreement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grant_id: Slug
    members: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=200, description="user ids of the unit's applicants"
    )
    views: list[ViewCreate] = Field(min_length=1, max_length=20)


@router.post("/agreements/{agreement_id}/grant", status_code=status.HTTP_201_CREATED)
async def grant_from_agreement(
    agreement_id: Identifier,
    body: GrantFromAgreement,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("grant", "create"))],
    grants: Annotated[AgreementGrants, Depends(agreement_grants_of)],
) -> GrantPublic:
    """Build the views the signed agreement allows and grant its unit's members a
    sandbox on them for the agreement's period."""
    views = [
        ViewRequest(
            dataset_id=view.dataset_id,
            name=view.name,
            kind=view.kind,
            fields=tuple(FieldRule(f.column, f.treatment, dict(f.params)) for f in view.fields),
            measures=tuple(view.measures),
            k=view.k,
        )
        for view in body.views
    ]
    made = await run_in_threadpool(
        grants.grant,
        account.actor(),
        agreement_id,
        grant_id=body.grant_id,
        members=body.members,
        views=views,
    )
    return grant_public(made)
