"""Users, their roles and their personal API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.api.deps import Requires, ServicesDep
from gateway.identity.service import Account

router = APIRouter(tags=["users"])


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    display_name: str = Field("", max_length=200)
    roles: list[str] = Field(default_factory=list, max_length=6)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    display_name: str
    organization_id: str
    roles: list[str]

    @field_validator("roles")
    @classmethod
    def _sorted(cls, roles: list[str]) -> list[str]:
        return sorted(roles)


class AccountPublic(UserPublic):
    """The signed-in person's own view of themselves."""

    must_change_password: bool


class UserCreated(BaseModel):
    user: UserPublic
    one_time_password: str = Field(description="shown once; the user must change it")


class RoleGrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(min_length=1, max_length=32)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    days: int = Field(90, ge=1, le=365)


class TokenCreated(BaseModel):
    id: str
    token: str = Field(description="shown once; only its hash is kept")


@router.post("/organizations/{organization_id}/users", status_code=status.HTTP_201_CREATED)
def create_user(
    organization_id: str,
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


@router.post("/users/{user_id}/roles", status_code=status.HTTP_204_NO_CONTENT)
def grant_role(
    user_id: str,
    body: RoleGrantCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("role", "grant"))],
) -> Response:
    found.identity.grant_role(account.actor(), user_id, body.role)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/users/{user_id}/roles/{role}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_role(
    user_id: str,
    role: str,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("role", "revoke"))],
) -> Response:
    found.identity.revoke_role(account.actor(), user_id, role)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/me/tokens", status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("api_token", "manage"))],
) -> TokenCreated:
    token_id, secret = found.identity.issue_token(account.actor(), name=body.name, days=body.days)
    return TokenCreated(id=token_id, token=secret)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(
    token_id: str,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("api_token", "manage"))],
) -> Response:
    found.identity.revoke_token(account.actor(), token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
