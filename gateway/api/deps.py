"""Dependencies of the routes: the services, the signed-in account, and the permission
every route declares (a test fails for any route without a declaration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from audit import Ledger
from gateway.authz import Authorizer
from gateway.identity.service import Account, IdentityService, SignInFailed


@dataclass
class Services:
    sessions: sessionmaker[Session]
    ledger: Ledger
    authorizer: Authorizer
    identity: IdentityService

    def record(self, fields: dict[str, Any]) -> None:
        self.identity.record(fields)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]
_bearer = HTTPBearer(auto_error=False)


def current_account(
    found: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Account:
    if credentials is None:
        _refuse(found, "anonymous", status.HTTP_401_UNAUTHORIZED, "sign in first")
    try:
        return found.identity.authenticate_token(credentials.credentials)
    except SignInFailed:
        _refuse(found, "anonymous", status.HTTP_401_UNAUTHORIZED, "the token is not valid")


def _refuse(found: Services, actor: str, code: int, reason: str, **detail: Any) -> NoReturn:
    found.record(
        {
            "action": "request.denied",
            "actor": actor,
            "object": "request",
            "outcome": "denied",
            "detail": {"reason": reason, "status": code, **detail},
        }
    )
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    raise HTTPException(code, reason, headers=headers)


CurrentAccount = Annotated[Account, Depends(current_account)]


class Requires:
    """``Depends(Requires("organization", "create"))``: the permission a route needs.
    Refusals are recorded and answered with 403 and the reason."""

    def __init__(self, obj: str, act: str) -> None:
        self.obj, self.act = obj, act

    def __call__(self, found: ServicesDep, account: CurrentAccount) -> Account:
        actor = account.actor()
        reason = found.authorizer.refusal(actor, self.obj, self.act)
        if reason is not None:
            _refuse(
                found,
                actor.user,
                status.HTTP_403_FORBIDDEN,
                reason,
                action=f"{self.obj}:{self.act}",
                organization=actor.organization,
                roles=sorted(actor.roles),
            )
        return account


class Public:
    """``Depends(Public())``: a route anyone may call (health, readiness, sign-in)."""

    def __call__(self) -> None:
        return None
