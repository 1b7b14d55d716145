"""Operation agreements (R12): made from approved applications, signed by both
organizations, read as canonical JSON or PDF. Thin over :mod:`gateway.agreements.service`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from pydantic import BaseModel, Field

from gateway.agreements.service import AgreementService, AgreementSnapshot
from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS, Identifier
from gateway.db.models import AgreementStatus
from gateway.identity.model import Account

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
