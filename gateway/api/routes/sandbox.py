"""Grants and sandboxes. Thin over :mod:`gateway.sandboxes.service`.

- ``/sandbox/sessions``: JupyterHub's routes (its service token): start a session, ask
  whether it may go on, end it.
- ``/sandbox/executions``: a session's code recorder (the session's token): each
  executed cell, input and command, recorded before it runs.
- ``/grants``: people (their own sign-in): list, create, suspend, resume, open.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import HubService, Requires, ServicesDep, SessionBearer
from gateway.api.routes.organizations import PROBLEMS, Problem, Reason
from gateway.db.models import GrantStatus
from gateway.identity.model import Account
from gateway.sandboxes.service import (
    MAX_LABEL,
    MAX_MEMBERS,
    MAX_TITLE,
    GrantSnapshot,
    SandboxService,
)

HUB_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    401: {"model": Problem, "description": "Not the hub's service token"},
    403: {"model": Problem, "description": "The user, grant or session does not allow it"},
}
router = APIRouter(prefix="/sandbox", tags=["sandbox"], responses=HUB_PROBLEMS)
grants = APIRouter(prefix="/grants", tags=["sandbox"], responses=PROBLEMS)

Slug = Annotated[
    str,
    Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
]
GrantId = Annotated[
    str,
    Path(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="a grant"),
]
SessionId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="a session")
]
Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL, pattern=r"^[\x21-\x7e]+$")]
Hub = Annotated[SandboxService, Depends(HubService())]
SessionToken = Annotated[str, Depends(SessionBearer())]


def sandboxes_of(found: ServicesDep) -> SandboxService:
    if found.sandboxes is None:  # a gateway opened without them (some tests)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway has no sandboxes")
    return found.sandboxes


Sandboxes = Annotated[SandboxService, Depends(sandboxes_of)]


# ------------------------------------------------------------------ schemas
class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=64, description="the user name")
    grant: Slug


class Limits(BaseModel):
    memory_bytes: int
    pids: int
    disk_bytes: int
    tmp_bytes: int
    cpus: float


class SessionPublic(BaseModel):
    """A started session: ``token`` is its recorder's secret, shown this once."""

    session: str
    token: str
    uid: int
    gid: int
    views: str = Field(description="the host folder of the grant's views")
    limits: Limits
    expires_at: datetime = Field(description="the grant's end: the session ends then")
    user: str
    grant: str


class SessionState(BaseModel):
    session: str
    active: bool
    reason: str | None = Field(description="why it may not go on")


class ExecutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kernel: Label = Field(description="the kernel's id")
    message: Label = Field(description="the request's message id")
    kind: Literal["execute", "input", "command"]
    code: str = Field(description="the code (or input, or command) about to run")


class ExecutionReceipt(BaseModel):
    seq: int = Field(description="the ledger entry's sequence number")
    sha256: str = Field(description="SHA-256 (hex) of the code's UTF-8 bytes")


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Slug
    title: str = Field(min_length=1, max_length=MAX_TITLE)
    organization_id: str = Field(min_length=1, max_length=64)
    members: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_MEMBERS, description="user ids of the unit's applicants"
    )
    views: Slug = Field(description="the folder of views under <data_dir>/views")
    starts_at: datetime
    ends_at: datetime


class GrantPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    organization_id: str
    organization_name: str
    views: str
    starts_at: datetime
    ends_at: datetime
    status: GrantStatus
    gid: int
    members: list[str]
    member_names: list[str]
    created_by: str
    created_at: datetime
    suspended_by: str | None
    suspended_at: datetime | None
    suspended_reason: str | None
    agreement_id: str | None = Field(
        default=None, description="the signed agreement it was made from, if on the platform"
    )


class GrantChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class SandboxUrl(BaseModel):
    url: str = Field(description="where to send the browser: the hub, with a sign-on ticket")


def grant_public(snapshot: GrantSnapshot) -> GrantPublic:
    return GrantPublic.model_validate(snapshot)


# ------------------------------------------------------------------ the hub
@router.post("/sessions", status_code=status.HTTP_201_CREATED)
async def start_session(body: SessionCreate, hub: Hub, found: ServicesDep) -> SessionPublic:
    """Start a session of the user's sandbox for the grant (403 with the reason unless
    the user is an active member of an active grant within its period)."""
    started = await found.writes.call(hub.start_session, body.user, body.grant)
    return SessionPublic(
        session=started.session,
        token=started.token,
        uid=started.uid,
        gid=started.gid,
        views=str(started.views),
        limits=Limits.model_validate(started.limits),
        expires_at=started.expires_at,
        user=started.user,
        grant=started.grant,
    )


@router.get("/sessions/{session_id}")
async def read_session(session_id: SessionId, hub: Hub) -> SessionState:
    """Whether the session may go on (the hub asks every ``sandbox.poll_seconds``)."""
    active, reason = await run_in_threadpool(hub.session_state, session_id)
    return SessionState(session=session_id, active=active, reason=reason)


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def end_session(
    session_id: SessionId,
    hub: Hub,
    found: ServicesDep,
    reason: Annotated[str, Query(min_length=1, max_length=500)] = "stopped",
) -> Response:
    """End the session (ending it again changes nothing)."""
    await found.writes.call(hub.end_session, session_id, reason)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ------------------------------------------------------------------ the code record
@router.post(
    "/executions",
    status_code=status.HTTP_201_CREATED,
    responses={
        401: {"model": Problem, "description": "No session has this token"},
        403: {"model": Problem, "description": "The session ended or its grant is not active"},
        413: {"model": Problem, "description": "The code is larger than 48 KiB"},
    },
)
async def record_execution(
    body: ExecutionCreate, token: SessionToken, sandboxes: Sandboxes
) -> ExecutionReceipt:
    """Record code a session's kernel is about to run; it runs only once recorded."""
    # A worker thread waits for the write job: the answer is the entry's durable position.
    receipt = await run_in_threadpool(
        sandboxes.record_execution,
        token,
        kernel=body.kernel,
        message=body.message,
        kind=body.kind,
        code=body.code,
    )
    return ExecutionReceipt(seq=receipt.seq, sha256=receipt.sha256)


# ------------------------------------------------------------------ people
@grants.get("")
def list_grants(
    account: Annotated[Account, Depends(Requires("grant", "read"))], sandboxes: Sandboxes
) -> list[GrantPublic]:
    """Every grant for the operator and regulators; an applicant's own grants."""
    return [grant_public(g) for g in sandboxes.list_grants(account.actor())]


@grants.post("", status_code=status.HTTP_201_CREATED)
async def create_grant(
    body: GrantCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("grant", "create"))],
    sandboxes: Sandboxes,
) -> GrantPublic:
    """Grant members of an application unit a sandbox on a folder of views, for a period
    (the operator's manual path)."""
    made = await found.writes.call(
        sandboxes.create_grant,
        account.actor(),
        grant_id=body.id,
        title=body.title,
        organization_id=body.organization_id,
        members=body.members,
        views=body.views,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
    )
    return grant_public(made)


@grants.post("/{grant_id}/suspend")
async def suspend_grant(
    grant_id: GrantId,
    body: GrantChange,
    account: Annotated[Account, Depends(Requires("grant", "suspend"))],
    sandboxes: Sandboxes,
) -> GrantPublic:
    """Suspend the grant at once: its sessions end and its kernels stop executing."""
    # In a worker thread, not as a job: the hub is called once the change has committed.
    made = await run_in_threadpool(sandboxes.suspend_grant, account.actor(), grant_id, body.reason)
    return grant_public(made)


@grants.post("/{grant_id}/resume")
async def resume_grant(
    grant_id: GrantId,
    body: GrantChange,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("grant", "resume"))],
    sandboxes: Sandboxes,
) -> GrantPublic:
    made = await found.writes.call(sandboxes.resume_grant, account.actor(), grant_id, body.reason)
    return grant_public(made)


@grants.post("/{grant_id}/open")
async def open_sandbox(
    grant_id: GrantId,
    account: Annotated[Account, Depends(Requires("sandbox", "open"))],
    sandboxes: Sandboxes,
) -> SandboxUrl:
    """Where to send the browser to work in the grant's sandbox (a one-minute ticket)."""
    url = await run_in_threadpool(
        sandboxes.open_sandbox, account.actor(), grant_id, username=account.username
    )
    return SandboxUrl(url=url)
