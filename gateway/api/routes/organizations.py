"""Organizations: created and administered by the platform's administrators; each member
may read their own organization (administrators and regulators: every one)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from gateway.api.deps import Requires, ServicesDep
from gateway.db.models import (
    OrganizationStatus,
    OrganizationType,
    VerificationStatus,
)
from gateway.identity.model import (
    MAX_OFFSET,
    MAX_PAGE,
    MAX_REASON,
    MAX_SEARCH,
    Account,
    OrganizationSnapshot,
    Page,
)

# ---------------------------------------------------------- shared by the identity routes


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class Invalid(BaseModel):
    """Why a request cannot be taken as it is: a sentence, or for a malformed request
    the list of what is wrong where."""

    detail: str | list[dict[str, Any]]


PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not JSON"},
    401: {"model": Problem, "description": "Not signed in, or the token is not valid"},
    403: {"model": Problem, "description": "The caller's roles do not allow this"},
    404: {"model": Problem, "description": "No such object (or not one the caller may see)"},
    409: {"model": Problem, "description": "The object's state does not allow this"},
    422: {"model": Invalid, "description": "The request is malformed or its values refused"},
    503: {"model": Problem, "description": "The audit ledger cannot record the change"},
}

Identifier = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="an id")
]
Reason = Annotated[
    str,
    Field(min_length=1, max_length=MAX_REASON, description="why; recorded in the audit ledger"),
]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="items per page")]
Search = Annotated[
    str | None, Query(max_length=MAX_SEARCH, description="text in the name (or credit code)")
]
M = TypeVar("M", bound=BaseModel)


class PagePublic(BaseModel, Generic[M]):
    """One page of a listing."""

    items: list[M]
    total: int = Field(description="how many match, on every page")
    offset: int
    limit: int

    @classmethod
    def of(cls, page: Page[Any], item: Callable[[Any], M]) -> Self:
        return cls(
            items=[item(each) for each in page.items],
            total=page.total,
            offset=page.offset,
            limit=page.limit,
        )


# ------------------------------------------------------------------ organizations

router = APIRouter(prefix="/organizations", tags=["organizations"], responses=PROBLEMS)


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


class OrganizationPage(PagePublic[OrganizationPublic]):
    pass


class OrganizationStatusUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: OrganizationStatus
    reason: Reason


class VerificationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal[VerificationStatus.VERIFIED, VerificationStatus.REJECTED]
    reason: Reason


class FlagUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flagged: StrictBool = Field(description="on the dishonesty / serious-violation list")
    reason: Reason


def public(organization: OrganizationSnapshot) -> OrganizationPublic:
    return OrganizationPublic.model_validate(organization)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_organization(
    body: OrganizationCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("organization", "create"))],
) -> OrganizationPublic:
    organization = await found.writes.call(
        found.identity.create_organization,
        account.actor(),
        kind=body.type,
        name=body.name,
        credit_code=body.credit_code,
    )
    return public(organization)


@router.get("")
def list_organizations(
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("organization", "read"))],
    kind: Annotated[OrganizationType | None, Query(alias="type")] = None,
    state: Annotated[OrganizationStatus | None, Query(alias="status")] = None,
    q: Search = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> OrganizationPage:
    """Organizations, oldest first; whoever may not read every organization sees their own."""
    page = found.identity.list_organizations(
        account.actor(), kind=kind, status=state, text=q, offset=offset, limit=limit
    )
    return OrganizationPage.of(page, public)


@router.get("/{organization_id}")
def read_organization(
    organization_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("organization", "read"))],
) -> OrganizationPublic:
    """One organization; another organization than one's own is 404 as if absent."""
    return public(found.identity.get_organization(account.actor(), organization_id))


@router.put("/{organization_id}/status")
async def set_organization_status(
    organization_id: Identifier,
    body: OrganizationStatusUpdate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("organization", "suspend"))],
) -> OrganizationPublic:
    """Suspend or reactivate: a suspended organization's members cannot sign in and their
    tokens stop working."""
    return public(
        await found.writes.call(
            found.identity.set_organization_status,
            account.actor(),
            organization_id,
            body.status,
            body.reason,
        )
    )


@router.put("/{organization_id}/verification")
async def set_organization_verification(
    organization_id: Identifier,
    body: VerificationUpdate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("organization", "update"))],
) -> OrganizationPublic:
    """The outcome of the real-name verification."""
    return public(
        await found.writes.call(
            found.identity.set_organization_verification,
            account.actor(),
            organization_id,
            body.status,
            body.reason,
        )
    )


@router.put("/{organization_id}/flag")
async def set_organization_flag(
    organization_id: Identifier,
    body: FlagUpdate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("organization", "update"))],
) -> OrganizationPublic:
    """Put the organization on, or take it off, the dishonesty / serious-violation list."""
    return public(
        await found.writes.call(
            found.identity.set_organization_flag,
            account.actor(),
            organization_id,
            body.flagged,
            body.reason,
        )
    )
