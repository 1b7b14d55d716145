"""Grants in the console: the grants the viewer may see, with their period and status;
a member opens the grant's sandbox from here (a POST that answers with a redirect to the
hub and a one-minute sign-on ticket), and an approver suspends a grant with a reason.

Thin pages over :class:`~gateway.sandboxes.service.SandboxService`, as the API calls it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Services, ServicesDep
from gateway.catalog.service import CHINA
from gateway.db.models import GrantStatus
from gateway.sandboxes.service import SandboxService
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.catalog import Failure, attempt, posted
from gateway.web.render import render

router = APIRouter(include_in_schema=False)

NOTICES = {
    "grant.suspended": N_("The grant was suspended; its sandboxes are being stopped."),
    "grant.created": N_("The grant was made from the signed agreement; its views are built."),
}
STATUS_NAMES = {
    GrantStatus.ACTIVE: N_("active"),
    GrantStatus.SUSPENDED: N_("suspended"),
    GrantStatus.EXPIRED: N_("expired"),
    GrantStatus.TERMINATED: N_("terminated"),
}
ReadGrants = Annotated[Viewer, Depends(Page("grant", "read"))]
OpenSandbox = Annotated[Viewer, Depends(Page("sandbox", "open"))]
SuspendGrant = Annotated[Viewer, Depends(Page("grant", "suspend"))]


def sandboxes_of(found: Services) -> SandboxService:
    if found.sandboxes is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this gateway has no sandboxes")
    return found.sandboxes


def _local_time(moment: datetime) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def _grants_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    *,
    notice: str = "",
    failure: Failure | None = None,
) -> Response:
    sandboxes = sandboxes_of(found)
    actor = viewer.account.actor()
    grants = sandboxes.list_grants(actor)
    now = sandboxes.clock()
    return render(
        request,
        "grants.html",
        viewer=viewer,
        grants=grants,
        opens={g.id for g in grants if viewer.account.id in g.members and g.usable(now)},
        suspends=found.authorizer.allows(actor, "grant", "suspend"),
        status_names={key.value: value for key, value in STATUS_NAMES.items()},
        local_time=_local_time,
        notice=NOTICES.get(notice),
        failure=failure,
        status_code=failure.status if failure else status.HTTP_200_OK,
        here="/grants",
    )


@router.get("/grants")
def grants_page(
    request: Request, found: ServicesDep, viewer: ReadGrants, notice: str = ""
) -> Response:
    return _grants_page(request, found, viewer, notice=notice)


@router.post("/grants/{grant_id}/open")
async def open_sandbox(
    request: Request, found: ServicesDep, viewer: OpenSandbox, grant_id: str
) -> Response:
    """To the hub, signed on with a ticket for the viewer and the grant."""
    account = viewer.account
    url = await attempt(
        run_in_threadpool(
            sandboxes_of(found).open_sandbox,
            account.actor(),
            grant_id,
            username=account.username,
        )
    )
    if isinstance(url, Failure):
        return await run_in_threadpool(_grants_page, request, found, viewer, failure=url)
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


@router.post("/grants/{grant_id}/suspend")
async def suspend_grant(
    request: Request, found: ServicesDep, viewer: SuspendGrant, grant_id: str
) -> Response:
    values = await posted(request, "reason")
    done = await attempt(
        run_in_threadpool(
            sandboxes_of(found).suspend_grant, viewer.account.actor(), grant_id, values["reason"]
        )
    )
    if isinstance(done, Failure):
        return await run_in_threadpool(_grants_page, request, found, viewer, failure=done)
    return RedirectResponse(
        f"/grants?{urlencode({'notice': 'grant.suspended'})}", status_code=status.HTTP_303_SEE_OTHER
    )
