"""The signed-in person."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from gateway.api.deps import Requires
from gateway.identity.service import Account

router = APIRouter(prefix="/me", tags=["me"])


class AccountPublic(BaseModel):
    id: str
    username: str
    display_name: str
    organization_id: str
    roles: list[str]
    must_change_password: bool


@router.get("")
def read_me(account: Annotated[Account, Depends(Requires("profile", "read"))]) -> AccountPublic:
    return AccountPublic(
        id=account.id,
        username=account.username,
        display_name=account.display_name,
        organization_id=account.organization_id,
        roles=sorted(account.roles),
        must_change_password=account.must_change_password,
    )
