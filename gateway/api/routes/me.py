"""The signed-in person: who they are, and their personal API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS
from gateway.api.routes.users import AccountPublic
from gateway.identity.model import Account

router = APIRouter(prefix="/me", tags=["me"], responses=PROBLEMS)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    days: StrictInt = Field(90, ge=1, le=365)


class TokenCreated(BaseModel):
    id: str
    token: str = Field(description="shown once; only its hash is kept")


@router.get("")
async def read_me(
    account: Annotated[Account, Depends(Requires("profile", "read"))],
) -> AccountPublic:
    return AccountPublic.model_validate(account)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
async def create_token(
    body: TokenCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("api_token", "manage"))],
) -> TokenCreated:
    token_id, secret = await found.writes.call(
        found.identity.issue_token, account.actor(), name=body.name, days=body.days
    )
    return TokenCreated(id=token_id, token=secret)
