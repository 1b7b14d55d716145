"""Users, their roles, their state and their personal API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import (
    PROBLEMS,
    Identifier,
    Limit,
    Offset,
    PagePublic,
    Reason,
    Search,
)
from gateway.db.models import UserStatus
from gateway.identity.model import MAX_REASON, Account, UserSnapshot

router = APIRouter(tags=["users"], responses=PROBLEMS)

RoleName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]
RolePath = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9]+(\.[A-Za-z0-9]+)*$",
        description="letters and digits, with dots between; kept in lower case",
    )
    display_name: str = Field("", max_length=200)
    roles: list[RoleName] = Field(default_factory=list, max_length=6)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    display_name: str
    organization_id: str
    roles: list[str]

    @field_validator("roles", mode="before")
    @classmethod
    def _sorted(cls, roles: frozenset[str] | list[str]) -> list[str]:
        return sorted(roles)


class AccountPublic(UserPublic):
    """The signed-in person's own view of themselves."""

    must_change_password: bool


class UserDetail(UserPublic):
    """A user as administrators and colleagues see them (no credentials)."""

    status: UserStatus
    must_change_password: bool
    second_factor: bool = Field(description="a TOTP second factor is set up")
    failed_logins: int
    locked_until: datetime | None = Field(description="signing in is refused until then")
    created_at: datetime


class UserPage(PagePublic[UserDetail]):
    pass


class UserCreated(BaseModel):
    user: UserPublic
    one_time_password: str = Field(description="shown once; the user must change it")


class UserStatusUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: UserStatus
    reason: Reason


class OptionalReason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=MAX_REASON, description="recorded in the audit ledger")


class PasswordReset(BaseModel):
    user: UserDetail
    one_time_password: str = Field(description="shown once; the user must change it")


class RoleGrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName


def detail(user: UserSnapshot) -> UserDetail:
    return UserDetail.model_validate(user)


@router.post("/organizations/{organization_id}/users", status_code=status.HTTP_201_CREATED)
def create_user(
    organization_id: Identifier,
    body: UserCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("user", "create"))],
) -> UserCreated:
    user, password = found.identity.create_user(
        account.actor(),
        organization_id=organization_id,
        username=body.username,
        display_name=body.display_name,
        roles=tuple(body.roles),
    )
    return UserCreated(user=UserPublic.model_validate(user), one_time_password=password)


@router.get("/organizations/{organization_id}/users")
def list_users(
    organization_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("user", "read"))],
    state: Annotated[UserStatus | None, Query(alias="status")] = None,
    q: Search = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> UserPage:
    """The members of an organization, by user name; another organization than one's own
    is 404 as if absent (administrators and regulators: any)."""
    page = found.identity.list_users(
        account.actor(),
        organization_id=organization_id,
        status=state,
        text=q,
        offset=offset,
        limit=limit,
    )
    return UserPage.of(page, detail)


@router.get("/users/{user_id}")
def read_user(
    user_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("user", "read"))],
) -> UserDetail:
    """One user; a user of another organization is 404 as if absent."""
    return detail(found.identity.get_user(account.actor(), user_id))


@router.put("/users/{user_id}/status")
async def set_user_status(
    user_id: Identifier,
    body: UserStatusUpdate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("user", "lock"))],
) -> UserDetail:
    """Disable or re-enable an account: a disabled user cannot sign in and their tokens
    stop working. Nobody disables or enables themselves."""
    user = await found.writes.call(
        found.identity.set_user_status, account.actor(), user_id, body.status, body.reason
    )
    return detail(user)


@router.post("/users/{user_id}/unlock")
async def unlock_user(
    user_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("user", "lock"))],
    body: Annotated[OptionalReason | None, Body()] = None,
) -> UserDetail:
    """Lift a lockout after repeated failed sign-ins."""
    reason = body.reason if body is not None else ""
    return detail(
        await found.writes.call(found.identity.unlock_user, account.actor(), user_id, reason)
    )


@router.post("/users/{user_id}/password-reset")
def reset_password(
    user_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("user", "reset_password"))],
    body: Annotated[OptionalReason | None, Body()] = None,
) -> PasswordReset:
    """A new one-time password for the user, shown once; the user must change it, and a
    second factor stays required."""
    reason = body.reason if body is not None else ""
    user, password = found.identity.reset_password(account.actor(), user_id, reason)
    return PasswordReset(user=detail(user), one_time_password=password)


@router.post("/users/{user_id}/roles", status_code=status.HTTP_204_NO_CONTENT)
async def grant_role(
    user_id: Identifier,
    body: RoleGrantCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("role", "grant"))],
) -> Response:
    await found.writes.call(found.identity.grant_role, account.actor(), user_id, body.role)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/users/{user_id}/roles/{role}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_role(
    user_id: Identifier,
    role: RolePath,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("role", "revoke"))],
) -> Response:
    await found.writes.call(found.identity.revoke_role, account.actor(), user_id, role)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(
    token_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("api_token", "manage"))],
) -> Response:
    await found.writes.call(found.identity.revoke_token, account.actor(), token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
