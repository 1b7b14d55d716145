"""Dependencies of the routes: the services, the signed-in account, and the permission
every route declares (a test fails for any route without a declaration).

A caller is signed in by a personal API token (``Authorization: Bearer sbx_…``) or by a
browser session cookie. A browser's state-changing request must also carry the session's
CSRF token (``X-CSRF-Token`` header, or the ``csrf_token`` form field on console pages):
cookies are sent by browsers on their own, tokens are not.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from audit import Ledger
from gateway.agreements.grants import AgreementGrants
from gateway.agreements.service import AgreementService
from gateway.applications.service import ApplicationService
from gateway.authz import Authorizer
from gateway.catalog.service import CatalogService
from gateway.db.writes import WriteQueue
from gateway.exports.service import ExportService
from gateway.identity.model import Account, SignInFailed
from gateway.identity.service import IdentityService
from gateway.identity.sessions import ActiveSession, SessionService
from gateway.reports.service import ReportService
from gateway.sandboxes.service import SandboxService
from gateway.settings import WebSettings
from gateway.trail import TrailIndex
from gateway.trail.evidence import EvidenceService

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
_UNSET = object()


@dataclass
class Services:
    sessions: sessionmaker[Session]
    ledger: Ledger
    authorizer: Authorizer
    identity: IdentityService
    web: WebSettings = field(default_factory=WebSettings)
    catalog: CatalogService | None = None
    sandboxes: SandboxService | None = None
    applications: ApplicationService | None = None
    agreements: AgreementService | None = None
    agreement_grants: AgreementGrants | None = None
    exports: ExportService | None = None
    reports: ReportService | None = None
    trail: TrailIndex | None = None
    evidence: EvidenceService | None = None
    browser_sessions: SessionService = field(init=False)

    def __post_init__(self) -> None:
        self.browser_sessions = SessionService(
            self.sessions,
            self.identity,
            idle=self.web.idle,
            lifetime=self.web.lifetime,
            clock=self.identity.clock,
        )

    @property
    def session_cookie(self) -> str:
        """``__Host-`` binds the cookie to this exact origin, path / and HTTPS."""
        return "__Host-sbx_session" if self.web.secure_cookies else "sbx_session"

    @property
    def writes(self) -> WriteQueue:
        """The process's write queue: every state change goes through it."""
        return self.identity.writes

    def record(self, fields: dict[str, Any]) -> None:
        self.identity.record(fields)

    def close(self) -> None:
        """Apply the queued writes, close the ledger (its last checkpoint is signed) and
        the database connections."""
        self.writes.close()
        if self.sandboxes is not None and self.sandboxes.hub is not None:
            self.sandboxes.hub.close()
        if self.trail is not None:
            self.trail.close()
        self.ledger.close()
        engine = self.sessions.kw.get("bind")
        if engine is not None:
            engine.dispose()


async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]
BEARER = "HTTPBearer"  # the security scheme's name in the OpenAPI document


def bearer_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    """The ``Authorization: Bearer …`` credentials, read as FastAPI's ``HTTPBearer`` reads
    them (any case of the scheme; nothing when the header is missing or not a bearer)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=token)


class Refused(HTTPException):
    """A request refused before its handler ran: 401 (not signed in) or 403."""


def browser_session(found: Services, request: Request) -> ActiveSession | None:
    """The live browser session of this request's cookie (resolved once per request)."""
    cached = getattr(request.state, "browser_session", _UNSET)
    if cached is None or isinstance(cached, ActiveSession):
        return cached
    secret = request.cookies.get(found.session_cookie)
    resolved = found.browser_sessions.resolve(secret) if secret else None
    request.state.browser_session = resolved
    if resolved is not None:
        request.state.user = resolved.account.id  # for the request's log line
    return resolved


async def current_account(
    found: Services, request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Account:
    """The caller, by personal API token or browser session (401 when neither). On the
    event loop when the token cache answers; the database, the ledger (for a refusal) and
    browser sessions are reached through the thread pool. A plain function rather than a
    dependency of its own: each dependency costs every request its resolution."""
    if credentials is not None:
        secret = credentials.credentials
        account = found.identity.cached_token(secret)
        if account is None:
            try:
                account = await run_in_threadpool(found.identity.authenticate_token, secret)
            except SignInFailed:
                reason = "the token is not valid"
                await run_in_threadpool(
                    record_refusal, found, "anonymous", status.HTTP_401_UNAUTHORIZED, reason
                )
                raise refusal(status.HTTP_401_UNAUTHORIZED, reason) from None
        request.state.user = account.id
        return account
    return await run_in_threadpool(_session_account, found, request)


def _session_account(found: Services, request: Request) -> Account:
    active = browser_session(found, request)
    if active is None:
        refuse(found, "anonymous", status.HTTP_401_UNAUTHORIZED, "sign in first")
    if request.method not in SAFE_METHODS and not active.csrf_matches(
        request.headers.get(CSRF_HEADER)
    ):
        refuse(
            found,
            f"user:{active.account.id}",
            status.HTTP_403_FORBIDDEN,
            "the CSRF token is missing or wrong",
        )
    return active.account


def record_refusal(found: Services, actor: str, code: int, reason: str, **detail: Any) -> None:
    found.record(
        {
            "action": "request.denied",
            "actor": actor,
            "object": "request",
            "outcome": "denied",
            "detail": {"reason": reason, "status": code, **detail},
        }
    )


def record_forbidden(found: Services, account: Account, action: str, reason: str) -> None:
    """Record a 403: who, in which organization, with which roles, wanted what, and why not."""
    actor = account.actor()
    record_refusal(
        found,
        actor.user,
        status.HTTP_403_FORBIDDEN,
        reason,
        action=action,
        organization=actor.organization,
        roles=sorted(actor.roles),
    )


def refuse(found: Services, actor: str, code: int, reason: str, **detail: Any) -> NoReturn:
    """Record the refusal, then answer it (401 asks for a token)."""
    record_refusal(found, actor, code, reason, **detail)
    raise refusal(code, reason)


def refusal(code: int, reason: str) -> Refused:
    """The answer to a refused request (401 asks for a token)."""
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    return Refused(code, reason, headers=headers)


class Declaration:
    """What a route declares about who may call it; every route has one (the test
    ``test_every_route_declares_who_may_call_it`` walks the application)."""


class Requires(Declaration):
    """``Depends(Requires("organization", "create"))``: the permission a route needs.
    Refusals are recorded and answered with 403 and the reason."""

    def __init__(self, obj: str, act: str) -> None:
        self.obj, self.act = obj, act

    async def __call__(self, request: Request) -> Account:
        credentials = bearer_credentials(request)
        # Deciding is a lookup in memory, done on the event loop; recording a refusal
        # waits for the disk, in the thread pool.
        found: Services = request.app.state.services
        account = await current_account(found, request, credentials)
        reason = found.authorizer.refusal_before_target(account.actor(), self.obj, self.act)
        if reason is not None:
            action = f"{self.obj}:{self.act}"
            await run_in_threadpool(record_forbidden, found, account, action, reason)
            raise Refused(status.HTTP_403_FORBIDDEN, reason)
        return account


def path_operations(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every path operation of ``routes``, including those of included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router, resolved lazily
            yield from path_operations(route.original_router.routes)


def requirement_of(route: APIRoute) -> Requires | None:
    """The :class:`Requires` a path operation declares, if it declares one."""
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, Requires):
            return dependency.call
    return None


def takes_bearer(route: APIRoute) -> bool:
    """Whether a path operation is called with a bearer token (a person's, the hub's or a
    sandbox session's)."""
    return any(
        isinstance(dependency.call, Requires | HubService | SessionBearer)
        for dependency in route.dependant.dependencies
    )


def document_sign_in(app: FastAPI) -> None:
    """Mark the operations that need a signed-in caller in the OpenAPI document (bearer
    token). ``Requires`` reads the ``Authorization`` header itself rather than through
    FastAPI's ``HTTPBearer`` dependency, which would add a dependency to resolve to every
    request, so the document is told here instead."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER] = {"type": "http", "scheme": "bearer"}
        for context in iter_route_contexts(app.routes):  # the paths as the document has them
            route = context.original_route
            if not isinstance(route, APIRoute) or not context.include_in_schema:
                continue
            if takes_bearer(route):
                for method in context.methods or ():
                    operation = schema["paths"][context.path_format][method.lower()]
                    operation["security"] = [{BEARER: []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class Public(Declaration):
    """``Depends(Public())``: a route anyone may call (health, readiness, sign-in)."""

    async def __call__(self) -> None:
        return None


class HubService(Declaration):
    """``Depends(HubService())``: a route only JupyterHub calls, with the service token
    the gateway made for it (``hub-service.token``), compared in constant time. Anything
    else is recorded and answered with 401."""

    async def __call__(self, request: Request) -> SandboxService:
        found: Services = request.app.state.services
        sandboxes = found.sandboxes
        credentials = bearer_credentials(request)
        presented = credentials.credentials.encode() if credentials else b""
        # A gateway without sandboxes has no service token: nobody is the hub.
        expected = sandboxes.secrets.service_token.encode() if sandboxes else b""
        if sandboxes is None or not hmac.compare_digest(presented, expected):
            reason = "only the hub calls this, with its service token"
            await run_in_threadpool(
                record_refusal, found, "anonymous", status.HTTP_401_UNAUTHORIZED, reason
            )
            raise refusal(status.HTTP_401_UNAUTHORIZED, reason)
        return sandboxes


class SessionBearer(Declaration):
    """``Depends(SessionBearer())``: a route a sandbox session's code recorder calls with
    the session's token; the service looks the session up by the token's hash (401 when
    no token is presented or it belongs to no session)."""

    async def __call__(self, request: Request) -> str:
        credentials = bearer_credentials(request)
        if credentials is None:
            raise refusal(status.HTTP_401_UNAUTHORIZED, "a session token is needed")
        return credentials.credentials
