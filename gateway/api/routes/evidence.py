"""Evidence bundles for regulators (FORMAT.md §11). Thin over
:class:`gateway.trail.evidence.EvidenceService`.

- ``POST /evidence``: make the bundle of a scope — an organization, a grant, a period, or
  one of the two within a period — recorded as ``evidence.create``.
- ``GET /evidence``: the bundles the caller made, newest first; ``/evidence/{id}`` one of
  them; ``/evidence/{id}/bundle`` its zip (recorded as ``evidence.download``), which
  ``python -m audit.evidence`` or ``sbx verify-evidence`` checks offline.

``since`` and ``until`` take a China-time day (``YYYY-MM-DD``; ``until`` includes that
day) or an ISO 8601 time (China time when it names no offset).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS, Identifier
from gateway.api.routes.trail import parse_time
from gateway.catalog.service import CHINA
from gateway.identity.model import Account
from gateway.trail.evidence import EvidenceScope, EvidenceService, EvidenceSnapshot

router = APIRouter(prefix="/evidence", tags=["evidence"], responses=PROBLEMS)
Creator = Annotated[Account, Depends(Requires("evidence", "create"))]
Reader = Annotated[Account, Depends(Requires("evidence", "read"))]
ID_PATTERN = r"^[A-Za-z0-9_-]+$"


def evidence_of(found: ServicesDep) -> EvidenceService:
    if found.evidence is None:  # a gateway opened without the trail index (some tests)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway makes no evidence bundles")
    return found.evidence


Evidence = Annotated[EvidenceService, Depends(evidence_of)]


# ------------------------------------------------------------------ schemas
class EvidenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organization: str | None = Field(
        None, min_length=1, max_length=64, pattern=ID_PATTERN, description="an organization's id"
    )
    grant: str | None = Field(
        None, min_length=1, max_length=64, pattern=ID_PATTERN, description="a grant's id"
    )
    since: str | None = Field(
        None, max_length=40, description="from this China-time day (YYYY-MM-DD) or ISO time"
    )
    until: str | None = Field(
        None, max_length=40, description="up to this China-time day (included) or ISO time"
    )


class EvidencePublic(BaseModel):
    id: str
    scope: dict[str, Any] = Field(description="organization, grant; since, until in µs")
    created_by: str
    created_at: int = Field(description="µs since 1970 (UTC)")
    at: str = Field(description="the same time in China time, ISO 8601")
    entries: int = Field(description="ledger entries in the bundle")
    documents: int = Field(description="documents in the bundle")
    missing: list[str] = Field(description="entries naming documents the platform lacks")
    bytes: int
    sha256: str = Field(description="SHA-256 of the zip, as evidence.create records it")
    manifest_sha256: str
    checkpoint_size: int = Field(description="the size of the checkpoint the proofs are against")
    key_id: str = Field(description="the ledger key that signed the manifest")
    download: str = Field(description="where to download the zip")


def evidence_public(snapshot: EvidenceSnapshot) -> EvidencePublic:
    at = datetime.fromtimestamp(snapshot.created_at / 1_000_000, CHINA).isoformat()
    return EvidencePublic(
        **vars(snapshot), at=at, download=f"/api/v1/evidence/{snapshot.id}/bundle"
    )


# ------------------------------------------------------------------ routes
@router.post("", status_code=status.HTTP_201_CREATED)
async def create_evidence(
    body: EvidenceCreate, account: Creator, evidence: Evidence
) -> EvidencePublic:
    """Make the evidence bundle of a scope: its entries, their inclusion proofs against
    one signed checkpoint, the key chain and the documents the entries name."""
    scope = EvidenceScope(
        organization=body.organization,
        grant=body.grant,
        since=parse_time("since", body.since, end=False),
        until=parse_time("until", body.until, end=True),
    )
    made = await run_in_threadpool(evidence.create, account.actor(), scope)
    return evidence_public(made)


@router.get("")
async def list_evidence(account: Reader, evidence: Evidence) -> list[EvidencePublic]:
    """The evidence bundles the caller made, newest first."""
    found = await run_in_threadpool(evidence.list_bundles, account.actor())
    return [evidence_public(snapshot) for snapshot in found]


@router.get("/{evidence_id}")
async def get_evidence(
    evidence_id: Identifier, account: Reader, evidence: Evidence
) -> EvidencePublic:
    """One of the caller's evidence bundles."""
    found = await run_in_threadpool(evidence.get, account.actor(), evidence_id)
    return evidence_public(found)


@router.get(
    "/{evidence_id}/bundle",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def evidence_bundle(evidence_id: Identifier, account: Reader, evidence: Evidence) -> FileResponse:
    """The bundle's zip; `python -m audit.evidence` checks it offline."""
    path = evidence.bundle(account.actor(), evidence_id)
    return FileResponse(path, media_type="application/zip", filename=f"evidence-{evidence_id}.zip")
