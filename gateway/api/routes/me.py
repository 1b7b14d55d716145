"""The signed-in person."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from gateway.api.deps import Requires
from gateway.api.routes.users import AccountPublic
from gateway.identity.model import Account

router = APIRouter(prefix="/me", tags=["me"])


@router.get("")
async def read_me(
    account: Annotated[Account, Depends(Requires("profile", "read"))],
) -> AccountPublic:
    return AccountPublic.model_validate(account)
