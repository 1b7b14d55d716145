"""Organizations: created and administered by the platform's administrators."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Requires, ServicesDep
from gateway.db.models import (
    Organization,
    OrganizationStatus,
    OrganizationType,
    VerificationStatus,
)
from gateway.identity.service import Account

router = APIRouter(prefix="/organizations", tags=["organizations"])


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: OrganizationType
    name: str = Field(min_length=1, max_length=200)
    credit_code: str = Field(min_length=18, max_length=40, description="统一社会信用代码")


class OrganizationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    type: OrganizationType
    name: str
    credit_code: str
    verification: VerificationStatus
    flagged: bool
    status: OrganizationStatus
    created_at: datetime


@router.post("", status_code=status.HTTP_201_CREATED)
def create_organization(
    body: OrganizationCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("organization", "create"))],
) -> OrganizationPublic:
    organization = found.identity.create_organization(
        account.actor(), kind=body.type, name=body.name, credit_code=body.credit_code
    )
    return OrganizationPublic.model_validate(organization)


@router.get("/{organization_id}")
def read_organization(
    organization_id: Annotated[str, Field(max_length=64)],
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("organization", "read"))],
) -> OrganizationPublic:
    with found.sessions() as session:
        organization = session.get(Organization, organization_id)
        if organization is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no organization {organization_id}")
        return OrganizationPublic.model_validate(organization)
