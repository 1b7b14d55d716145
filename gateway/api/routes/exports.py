"""Export requests (R13). Thin over :mod:`gateway.exports.service`.

- ``/sandbox/exports``: the sandbox's trusted server, with the session's token: announce
  the files, send each one, submit for the airlock's checks.
- ``/exports``: people (their own sign-in): list, the queue, an export with its checks
  and history, its files, the reviewer's opinion and the approvers' decisions, and the
  released bundle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Requires, ServicesDep, SessionBearer
from gateway.api.routes.catalog import BINARY_BODY, _blocks
from gateway.api.routes.organizations import PROBLEMS, Identifier, Problem
from gateway.db.models import ExportRisk, ExportStatus
from gateway.exports.service import MAX_REASONS, ExportService
from gateway.exports.snapshots import Announced, ExportSnapshot
from gateway.identity.model import Account
from sandbox.notebook.outbox import MAX_DESCRIPTION_CHARS, MAX_FILES

SESSION_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    401: {"model": Problem, "description": "No session has this token"},
    403: {"model": Problem, "description": "The session ended or its grant is not active"},
}
from_sandbox = APIRouter(prefix="/sandbox/exports", tags=["exports"], responses=SESSION_PROBLEMS)
router = APIRouter(prefix="/exports", tags=["exports"], responses=PROBLEMS)
FileNumber = Annotated[int, Path(ge=0, lt=MAX_FILES, description="the file's place in the list")]


def exports_of(found: ServicesDep) -> ExportService:
    if found.exports is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "exports are not configured")
    return found.exports


Exports = Annotated[ExportService, Depends(exports_of)]
SessionToken = Annotated[str, Depends(SessionBearer())]
Reader = Annotated[Account, Depends(Requires("export", "read"))]


# ------------------------------------------------------------------ schemas
class FileAnnouncement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, description="the path in the workspace")
    bytes: int = Field(ge=0, description="its size")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="its SHA-256, in hex")


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        min_length=1,
        max_length=MAX_DESCRIPTION_CHARS,
        description="what the files are and why they are safe to release",
    )
    files: list[FileAnnouncement] = Field(min_length=1, max_length=MAX_FILES)


class ExportFilePublic(BaseModel):
    n: int
    name: str
    bytes: int
    sha256: str
    received: bool


class ReviewPublic(BaseModel):
    stage: ExportStatus
    actor: str
    approve: bool
    risk: ExportRisk
    reasons: str
    at: datetime


class ExportPublic(BaseModel):
    id: str
    grant_id: str
    organization_id: str
    requested_by: str
    description: str
    status: ExportStatus
    risk: ExportRisk
    level: str
    requested_at: datetime
    submitted_at: datetime | None
    decided_at: datetime | None
    manifest_sha256: str | None = Field(description="SHA-256 of the signed release manifest")
    findings: int
    blocking: int
    url: str = Field(description="the export's page in the console")
    files: list[ExportFilePublic]
    reviews: list[ReviewPublic]
    report: dict[str, Any] | None = Field(description="the airlock's checks, once submitted")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    reasons: str = Field(min_length=1, max_length=MAX_REASONS)
    risk: ExportRisk | None = Field(
        None, description="the reviewer's risk assessment (high: two approvers)"
    )


def export_public(snapshot: ExportSnapshot) -> ExportPublic:
    return ExportPublic(
        id=snapshot.id,
        grant_id=snapshot.grant_id,
        organization_id=snapshot.organization_id,
        requested_by=snapshot.requested_by,
        description=snapshot.description,
        status=snapshot.status,
        risk=snapshot.risk,
        level=snapshot.level,
        requested_at=snapshot.requested_at,
        submitted_at=snapshot.submitted_at,
        decided_at=snapshot.decided_at,
        manifest_sha256=snapshot.manifest_sha256,
        findings=snapshot.findings,
        blocking=snapshot.blocking,
        url=snapshot.console_path,
        files=[ExportFilePublic(**vars(item)) for item in snapshot.files],
        reviews=[ReviewPublic(**vars(item)) for item in snapshot.reviews],
        report=snapshot.report,
    )


# ------------------------------------------------------------------ from the sandbox
@from_sandbox.post("", status_code=status.HTTP_201_CREATED)
async def request_export(body: ExportCreate, token: SessionToken, exports: Exports) -> ExportPublic:
    """Announce an export of workspace files: their names, sizes and SHA-256."""
    files = [Announced(item.name, item.bytes, item.sha256) for item in body.files]
    found = await run_in_threadpool(exports.request, token, body.description, files)
    return export_public(found)


@from_sandbox.put(
    "/{export_id}/files/{n}",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra=BINARY_BODY,
)
async def send_file(
    export_id: Identifier, n: FileNumber, request: Request, token: SessionToken, exports: Exports
) -> Response:
    """Send file ``n``'s bytes as the body; refused unless they are what was announced."""
    await run_in_threadpool(exports.receive, token, export_id, n, _blocks(request.stream()))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@from_sandbox.post("/{export_id}/submit")
async def submit_export(
    export_id: Identifier, token: SessionToken, exports: Exports
) -> ExportPublic:
    """Run the airlock's checks: the export goes to a reviewer, or is blocked with why."""
    return export_public(await run_in_threadpool(exports.submit, token, export_id))


# ------------------------------------------------------------------ people
@router.get("")
def list_exports(
    account: Reader,
    exports: Exports,
    status_: Annotated[ExportStatus | None, Query(alias="status")] = None,
) -> list[ExportPublic]:
    """The exports the caller may see, newest first."""
    return [export_public(found) for found in exports.list_exports(account.actor(), status=status_)]


@router.get("/queue")
def export_queue(account: Reader, exports: Exports) -> list[ExportPublic]:
    """The exports waiting for a step the caller may take, oldest first."""
    return [export_public(found) for found in exports.queue(account.actor())]


@router.get("/{export_id}")
def get_export(export_id: Identifier, account: Reader, exports: Exports) -> ExportPublic:
    return export_public(exports.get(account.actor(), export_id))


@router.get(
    "/{export_id}/files/{n}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def export_file(
    export_id: Identifier, n: FileNumber, account: Reader, exports: Exports
) -> FileResponse:
    """File ``n`` of the export, for its requesters and reviewers to read."""
    name, path = exports.file(account.actor(), export_id, n)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=name.rsplit("/", 1)[-1],
        headers={"Content-Security-Policy": "sandbox"},  # with the site's own policy
    )


@router.post("/{export_id}/decision")
async def decide_export(
    export_id: Identifier, body: Decision, account: Reader, exports: Exports
) -> ExportPublic:
    """The step the export waits for: a reviewer's opinion (with a risk assessment) or an
    approver's decision. The last approval releases it as a signed bundle."""
    found = await run_in_threadpool(
        exports.decide,
        account.actor(),
        export_id,
        approve=body.approve,
        reasons=body.reasons,
        risk=body.risk,
    )
    return export_public(found)


@router.get(
    "/{export_id}/bundle",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def export_bundle(export_id: Identifier, account: Reader, exports: Exports) -> FileResponse:
    """The released export as a signed bundle (`sbx verify-bundle` checks it offline)."""
    path = exports.bundle(account.actor(), export_id)
    return FileResponse(path, media_type="application/zip", filename=f"release-{export_id}.zip")
