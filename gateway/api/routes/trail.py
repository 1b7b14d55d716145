"""The audit trail, for the regulator's explorer: search the ledger's entries and read an
object's whole history. Thin over :class:`gateway.trail.TrailIndex`.

- ``/trail/entries``: entries newest first, filtered by time, actor, organization,
  subject, action (exact or a prefix ending in ``.``) and outcome, a page at a time
  (``next_before`` is the cursor for the next page).
- ``/trail/history/{kind}/{id}``: everything that happened to an object and what it
  stands on, oldest first (docs/explanation/trail.md says what belongs to it).

Times are µs since 1970 (UTC) with ``at`` in China time beside; ``since`` and ``until``
take a China-time day (``YYYY-MM-DD``; ``until`` includes that day) or an ISO 8601 time
(China time when it names no offset).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Requires, ServicesDep
from gateway.api.routes.organizations import PROBLEMS
from gateway.catalog.service import CHINA
from gateway.identity.model import Account
from gateway.trail import TrailEntry, TrailIndex, TrailQuery, TrailQueryError
from gateway.trail.index import MAX_LIMIT
from gateway.trail.links import STRUCTURAL
from gateway.trail.search import MAX_LABEL, MAX_TIME
from gateway.trail.times import china_iso, micros

router = APIRouter(prefix="/trail", tags=["trail"], responses=PROBLEMS)
Reader = Annotated[Account, Depends(Requires("audit_trail", "read"))]
KINDS = frozenset(STRUCTURAL | {"user", "org"})
MAX_HISTORY = 5000
ID_PATTERN = r"^[A-Za-z0-9_.\-]+$"

When = Annotated[
    str | None,
    Query(
        max_length=40,
        description="a China-time day YYYY-MM-DD or an ISO 8601 time (China time if no offset)",
    ),
]
Label = Annotated[str | None, Query(min_length=1, max_length=MAX_LABEL)]


def trail_of(found: ServicesDep) -> TrailIndex:
    if found.trail is None:  # a gateway opened without it (some tests)
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway has no trail index")
    return found.trail


Trail = Annotated[TrailIndex, Depends(trail_of)]


# ------------------------------------------------------------------ schemas
class TrailEntryPublic(BaseModel):
    seq: int = Field(description="the entry's position in the ledger")
    time: int = Field(description="when it was written, µs since 1970 (UTC)")
    at: str = Field(description="the same time in China time, ISO 8601")
    actor: str
    actor_name: str | None = Field(description="the actor's username, when a person")
    organization: str | None = Field(description="the actor's organization id, when known")
    action: str
    object: str
    outcome: str
    detail: dict[str, Any]


class TrailPagePublic(BaseModel):
    entries: list[TrailEntryPublic] = Field(description="newest first")
    next_before: int | None = Field(description="`before` for the next page; null at the end")
    indexed: int = Field(description="how many ledger entries the index covers")


class TrailHistoryPublic(BaseModel):
    subject: str
    entries: list[TrailEntryPublic] = Field(description="oldest first")
    next_after: int | None = Field(
        description="`after` for the rest of a long history; null when this is all"
    )
    indexed: int = Field(description="how many ledger entries the index covers")


def entry_public(entry: TrailEntry) -> TrailEntryPublic:
    return TrailEntryPublic(**entry.to_dict(), at=china_iso(entry.time))


# ------------------------------------------------------------------ parameters
def parse_time(name: str, value: str | None, *, end: bool) -> int | None:
    """µs of ``value``; a day is its China-time start (``end``: the next day's start)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=CHINA)
            moment = start + timedelta(days=1) if end else start
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=CHINA)
    except (ValueError, OverflowError):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{name} is not a day (YYYY-MM-DD) or an ISO 8601 time: {value[:40]!r}",
        ) from None
    value_us = micros(moment)
    if not 0 <= value_us <= MAX_TIME:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} is before 1970 or too far ahead"
        )
    return value_us


def _query(**fields: Any) -> TrailQuery:
    try:
        return TrailQuery(**fields)
    except TrailQueryError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


# ------------------------------------------------------------------ routes
@router.get("/entries")
async def search_entries(
    _: Reader,
    trail: Trail,
    since: When = None,
    until: When = None,
    actor: Label = None,
    organization: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
    subject: Annotated[
        str | None, Query(min_length=3, max_length=MAX_LABEL, description="kind:id")
    ] = None,
    action: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_LABEL,
            description="an action, or a prefix ending in '.' such as 'export.'",
        ),
    ] = None,
    outcome: Label = None,
    before: Annotated[int | None, Query(ge=0, le=MAX_TIME, description="cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> TrailPagePublic:
    """Ledger entries matching every filter given, newest first."""
    starts, ends = parse_time("since", since, end=False), parse_time("until", until, end=True)
    if starts is not None and ends is not None and starts >= ends:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since is not before until")
    query = _query(
        since=starts,
        until=ends,
        actor=actor,
        organization=organization,
        subject=subject,
        action=action,
        outcome=outcome,
        before=before,
        limit=limit,
    )
    page = await run_in_threadpool(trail.search, query)
    return TrailPagePublic(
        entries=[entry_public(e) for e in page.entries],
        next_before=page.next_before,
        indexed=page.indexed,
    )


@router.get("/history/{kind}/{id}")
async def object_history(
    _: Reader,
    trail: Trail,
    kind: Annotated[str, Path(min_length=1, max_length=32, description="the object's kind")],
    id: Annotated[  # noqa: A002 - the path's name
        str, Path(min_length=1, max_length=128, pattern=ID_PATTERN, description="its id")
    ],
    after: Annotated[int | None, Query(ge=0, le=MAX_TIME, description="cursor")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = MAX_HISTORY,
) -> TrailHistoryPublic:
    """The object's whole history, oldest first."""
    if kind not in KINDS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"unknown kind {kind[:32]!r}; one of {', '.join(sorted(KINDS))}",
        )
    subject = f"{kind}:{id}"

    def read() -> tuple[list[TrailEntry], int]:
        entries = trail.history(subject, after=after, limit=limit + 1)
        return entries, trail.indexed()

    entries, indexed = await run_in_threadpool(read)
    more = len(entries) > limit
    entries = entries[:limit]
    return TrailHistoryPublic(
        subject=subject,
        entries=[entry_public(e) for e in entries],
        next_after=entries[-1].seq if more else None,
        indexed=indexed,
    )
