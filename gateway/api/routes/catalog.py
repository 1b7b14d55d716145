"""The catalog: datasets and their entries (R4), reviewed revisions (R5), uploads with
their quality reports and objections (R6). Thin over :mod:`gateway.catalog.service`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

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
from gateway.catalog.entry import CatalogEntry
from gateway.catalog.service import (
    CatalogService,
    DatasetSnapshot,
    ObjectionSnapshot,
    RevisionSnapshot,
    VersionSnapshot,
)
from gateway.db.models import DatasetStatus, ObjectionState, RevisionState
from gateway.identity.model import Account

router = APIRouter(tags=["catalog"], responses=PROBLEMS)
Text = Annotated[str, Field(min_length=1, max_length=4000)]


def catalog_of(found: ServicesDep) -> CatalogService:
    if found.catalog is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the catalog is not configured")
    return found.catalog


Catalog = Annotated[CatalogService, Depends(catalog_of)]
# A request whose body is a file's bytes, streamed: documented here, read by the route.
BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
RevisionNumber = Annotated[int, Path(ge=1, le=1_000_000, description="a revision's number")]


class RevisionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    entry: CatalogEntry
    reason: str
    less_open: list[str] = Field(description="attributes this revision makes less open")
    state: RevisionState
    requested_by: str
    requested_at: datetime
    due_on: date = Field(description="the working day by which it is to be decided")
    opinion: str | None
    recommends: bool | None
    opinion_by: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    provider_id: str
    name: str
    status: DatasetStatus
    published_revision: int | None
    entry: CatalogEntry | None = Field(description="the entry in force")
    pending: RevisionPublic | None = Field(description="a requested change not decided yet")
    versions: int
    created_at: datetime


class DatasetPage(PagePublic[DatasetPublic]):
    pass


class VersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    number: int
    revision: int = Field(description="the entry revision it was checked against")
    sha256: str
    bytes: int
    rows: int
    format: str
    quality: dict[str, Any]
    warnings: int
    uploaded_by: str
    uploaded_at: datetime


class ObjectionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    version_id: str | None
    raised_by: str
    organization_id: str
    text: str
    state: ObjectionState
    raised_at: datetime
    due_on: date
    provisional: bool = Field(
        description="the deadline crosses a year whose holidays are not known yet"
    )
    extended: bool
    extension_reason: str | None
    answer: str | None
    answered_by: str | None
    answered_at: datetime | None
    overdue: bool


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry: CatalogEntry
    reason: Reason


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recommends: StrictBool
    opinion: Text


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: StrictBool
    reason: Reason


class ObjectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text
    version_id: str | None = Field(default=None, max_length=64)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text


class Extension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


def dataset_public(snapshot: DatasetSnapshot) -> DatasetPublic:
    pending = revision_public(snapshot.pending) if snapshot.pending else None
    return DatasetPublic(
        id=snapshot.id,
        provider_id=snapshot.provider_id,
        name=snapshot.name,
        status=snapshot.status,
        published_revision=snapshot.published_revision,
        entry=snapshot.entry,
        pending=pending,
        versions=snapshot.versions,
        created_at=snapshot.created_at,
    )


def revision_public(snapshot: RevisionSnapshot) -> RevisionPublic:
    return RevisionPublic.model_validate(snapshot)


def version_public(snapshot: VersionSnapshot) -> VersionPublic:
    return VersionPublic.model_validate(snapshot)


def objection_public(snapshot: ObjectionSnapshot) -> ObjectionPublic:
    return ObjectionPublic.model_validate(snapshot)


ReadCatalog = Annotated[Account, Depends(Requires("catalog", "read"))]


@router.get("/datasets")
def list_datasets(
    account: ReadCatalog, catalog: Catalog, q: Search = None, offset: Offset = 0, limit: Limit = 50
) -> DatasetPage:
    """Published datasets, newest first (a provider also sees its own drafts)."""
    page = catalog.datasets(account.actor(), offset=offset, limit=limit, search=q)
    return DatasetPage.of(page, dataset_public)


@router.post("/datasets", status_code=status.HTTP_201_CREATED)
async def register_dataset(
    body: Registration,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("catalog", "create"))],
    catalog: Catalog,
) -> DatasetPublic:
    """Register a dataset: its entry is requested as revision 1 and published once an
    approver has approved it after a reviewer's opinion."""
    snapshot = await found.writes.call(catalog.register, account.actor(), body.entry, body.reason)
    return dataset_public(snapshot)


@router.get("/datasets/{dataset_id}")
def read_dataset(dataset_id: Identifier, account: ReadCatalog, catalog: Catalog) -> DatasetPublic:
    return dataset_public(catalog.dataset(account.actor(), dataset_id))


@router.get("/datasets/{dataset_id}/revisions")
def list_revisions(
    dataset_id: Identifier, account: ReadCatalog, catalog: Catalog
) -> list[RevisionPublic]:
    return [revision_public(r) for r in catalog.revisions(account.actor(), dataset_id)]


@router.post("/datasets/{dataset_id}/revisions", status_code=status.HTTP_201_CREATED)
async def revise_dataset(
    dataset_id: Identifier,
    body: Registration,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("catalog", "update"))],
    catalog: Catalog,
) -> RevisionPublic:
    """Request a change of the entry (a new revision, pending until decided)."""
    revision = await found.writes.call(
        catalog.revise, account.actor(), dataset_id, body.entry, body.reason
    )
    return revision_public(revision)


@router.post("/datasets/{dataset_id}/revisions/{number}/opinion")
async def review_revision(
    dataset_id: Identifier,
    number: RevisionNumber,
    body: Review,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("catalog", "review"))],
    catalog: Catalog,
) -> RevisionPublic:
    revision = await found.writes.call(
        catalog.review,
        account.actor(),
        dataset_id,
        number,
        recommends=body.recommends,
        opinion=body.opinion,
    )
    return revision_public(revision)


@router.post("/datasets/{dataset_id}/revisions/{number}/decision")
async def decide_revision(
    dataset_id: Identifier,
    number: RevisionNumber,
    body: Decision,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("catalog", "approve"))],
    catalog: Catalog,
) -> RevisionPublic:
    revision = await found.writes.call(
        catalog.decide,
        account.actor(),
        dataset_id,
        number,
        approve=body.approve,
        reason=body.reason,
    )
    return revision_public(revision)


@router.get("/datasets/{dataset_id}/versions")
def list_versions(
    dataset_id: Identifier, account: ReadCatalog, catalog: Catalog
) -> list[VersionPublic]:
    return [version_public(v) for v in catalog.versions(account.actor(), dataset_id)]


@router.post(
    "/datasets/{dataset_id}/versions",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=BINARY_BODY,
)
async def upload_version(
    dataset_id: Identifier,
    request: Request,
    account: Annotated[Account, Depends(Requires("dataset", "upload"))],
    catalog: Catalog,
    filename: Annotated[str, Query(max_length=200)] = "",
) -> VersionPublic:
    """Upload the dataset's data (CSV, Parquet or Excel, as the entry says) as the request
    body. It streams to disk, is checked against the entry in force and stored encrypted;
    a refused upload answers 422 with what is wrong and stores nothing."""
    stream = request.stream()
    version = await run_in_threadpool(
        catalog.upload, account.actor(), dataset_id, _blocks(stream), filename=filename
    )
    return version_public(version)


def _blocks(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """The request body, pulled from the event loop by the worker thread that checks it."""
    while True:
        block = anyio.from_thread.run(_next, stream)
        if block is None:
            return
        if block:
            yield block


async def _next(stream: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


@router.get("/datasets/{dataset_id}/objections")
def list_objections(
    dataset_id: Identifier,
    account: Annotated[Account, Depends(Requires("objection", "read"))],
    catalog: Catalog,
) -> list[ObjectionPublic]:
    return [objection_public(o) for o in catalog.objections(account.actor(), dataset_id)]


@router.post("/datasets/{dataset_id}/objections", status_code=status.HTTP_201_CREATED)
async def raise_objection(
    dataset_id: Identifier,
    body: ObjectionCreate,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("objection", "create"))],
    catalog: Catalog,
) -> ObjectionPublic:
    """Report a quality problem: the provider answers within five working days."""
    objection = await found.writes.call(
        catalog.object, account.actor(), dataset_id, body.text, version_id=body.version_id
    )
    return objection_public(objection)


@router.post("/objections/{objection_id}/answer")
async def answer_objection(
    objection_id: Identifier,
    body: Answer,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("objection", "answer"))],
    catalog: Catalog,
) -> ObjectionPublic:
    return objection_public(
        await found.writes.call(catalog.answer, account.actor(), objection_id, body.text)
    )


@router.post("/objections/{objection_id}/extension")
async def extend_objection(
    objection_id: Identifier,
    body: Extension,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("objection", "answer"))],
    catalog: Catalog,
) -> ObjectionPublic:
    """Extend the deadline once, to fifteen working days from the objection."""
    return objection_public(
        await found.writes.call(catalog.extend, account.actor(), objection_id, body.reason)
    )


@router.post("/objections/{objection_id}/close")
async def close_objection(
    objection_id: Identifier,
    found: ServicesDep,
    account: Annotated[Account, Depends(Requires("objection", "create"))],
    catalog: Catalog,
) -> ObjectionPublic:
    """The objector's organization confirms the answer."""
    return objection_public(await found.writes.call(catalog.close, account.actor(), objection_id))
