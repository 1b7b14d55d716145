"""Evidence bundles in the console, for regulators (``evidence:create``, ``evidence:read``):
a form to take the evidence of an organization or a grant, optionally within a period of
China-time days, and the bundles the regulator made, newest first, each to download and
verify offline with ``python -m audit.evidence`` (FORMAT.md §11).

Thin over :class:`~gateway.trail.evidence.EvidenceService`, called as the API calls it:
the service decides and records ``evidence.create`` and ``evidence.download``; a refused
scope is shown with the service's reason and the status the API answers with, what was
typed kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Services, ServicesDep
from gateway.identity.model import NotFound
from gateway.trail.evidence import EvidenceScope, EvidenceService, EvidenceSnapshot
from gateway.trail.times import china_day, china_time
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.catalog import Failure, attempt, not_found, posted
from gateway.web.pages.exports import DOWNLOAD_HEADERS
from gateway.web.pages.trail import organization_names, start_of_day
from gateway.web.render import gettext_for, render

router = APIRouter(include_in_schema=False)
ReadEvidence = Annotated[Viewer, Depends(Page("evidence", "read"))]
TakeEvidence = Annotated[Viewer, Depends(Page("evidence", "create"))]
EvidenceId = Annotated[str, Path(min_length=1, max_length=64)]
FIELDS = ("organization", "grant", "since", "until")
MAX_ID = 64

NOTICES = {
    "created": N_("The evidence bundle was made: download it and verify it offline."),
}


def evidence_of(found: Services) -> EvidenceService | None:
    return found.evidence


def unavailable(request: Request, viewer: Viewer) -> Response:
    return render(
        request,
        "problem.html",
        viewer=viewer,
        heading=N_("Evidence bundles are unavailable"),
        reason="this gateway makes no evidence bundles (the trail index is not open)",
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def scope_text(scope: Mapping[str, Any], organizations: Mapping[str, str], _: Any) -> str:
    """A bundle's scope as the list shows it: what it covers, then its China-time days."""
    parts = []
    if organization := scope.get("organization"):
        name = organizations.get(organization, organization)
        parts.append(_("organization %(name)s") % {"name": name})
    if grant := scope.get("grant"):
        parts.append(_("grant %(id)s") % {"id": grant})
    since, until = scope.get("since"), scope.get("until")
    if since is not None or until is not None:
        first = china_day(since) if since is not None else "…"
        last = china_day(until - 1) if until is not None else "…"  # until is exclusive
        parts.append(_("days %(first)s to %(last)s") % {"first": first, "last": last})
    return ", ".join(parts)


def evidence_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    *,
    notice: str = "",
    failure: Failure | None = None,
    kept: Mapping[str, str] | None = None,
) -> Response:
    evidence = evidence_of(found)
    if evidence is None:
        return unavailable(request, viewer)
    _ = gettext_for(request)
    organizations = organization_names(found, viewer)
    bundles: list[EvidenceSnapshot] = evidence.list_bundles(viewer.account.actor())
    return render(
        request,
        "evidence.html",
        viewer=viewer,
        organizations=organizations,
        bundles=bundles,
        scope_text=lambda scope: scope_text(scope, organizations, _),
        china_time=china_time,
        first_key=found.ledger.keychain().records[0].key_id,
        notice=NOTICES.get(notice),
        failure=failure,
        kept={name: "" for name in FIELDS} | dict(kept or {}),
        status_code=failure.status if failure else status.HTTP_200_OK,
        here="/evidence",
    )


def scope_of(values: Mapping[str, str], _: Any) -> EvidenceScope | Failure:
    """The scope the form asks for, or why it cannot be one (the service checks the rest:
    that something is chosen, not both, and that it exists)."""
    unclear = status.HTTP_422_UNPROCESSABLE_CONTENT
    days: dict[str, date | None] = {}
    for name in ("since", "until"):
        text = values[name].strip()
        try:
            days[name] = date.fromisoformat(text) if text else None
        except ValueError:
            message = _("%(text)s is not a date written YYYY-MM-DD.") % {"text": text[:40]}
            return Failure(message, unclear)
    since, until = days["since"], days["until"]
    if since is not None and until is not None and since > until:
        return Failure(_("The first day is after the last day."), unclear)
    organization, grant = values["organization"].strip(), values["grant"].strip()
    if len(organization) > MAX_ID or len(grant) > MAX_ID:
        return Failure(_("An id has at most %(n)s characters.") % {"n": MAX_ID}, unclear)
    return EvidenceScope(
        organization=organization or None,
        grant=grant or None,
        since=start_of_day(since) if since else None,
        until=start_of_day(until + timedelta(days=1)) if until else None,
    )


@router.get("/evidence")
def evidence_list(
    request: Request,
    found: ServicesDep,
    viewer: ReadEvidence,
    notice: Annotated[str, Query(max_length=32)] = "",
    grant: Annotated[str, Query(max_length=MAX_ID)] = "",
) -> Response:
    """The form (``grant`` fills it in, from a grant's history) and the viewer's bundles."""
    return evidence_page(request, found, viewer, notice=notice, kept={"grant": grant})


@router.post("/evidence")
async def take_evidence(request: Request, found: ServicesDep, viewer: TakeEvidence) -> Response:
    """Make the bundle of the form's scope; refused with the reason, the form kept."""
    values = await posted(request, *FIELDS)
    evidence = evidence_of(found)
    if evidence is None:
        return unavailable(request, viewer)
    scope = scope_of(values, gettext_for(request))
    done: EvidenceSnapshot | Failure
    if isinstance(scope, Failure):
        done = scope
    else:
        done = await attempt(run_in_threadpool(evidence.create, viewer.account.actor(), scope))
    if isinstance(done, Failure):
        return await run_in_threadpool(
            evidence_page, request, found, viewer, failure=done, kept=values
        )
    return RedirectResponse(
        f"/evidence?{urlencode({'notice': 'created'})}#bundle-{done.id}",
        status_code=status.HTTP_303_SEE_OTHER,
    )


@router.get("/evidence/{evidence_id}/bundle")
def evidence_bundle(
    request: Request, found: ServicesDep, viewer: ReadEvidence, evidence_id: EvidenceId
) -> Response:
    """The bundle's zip (the download is recorded)."""
    evidence = evidence_of(found)
    if evidence is None:
        return unavailable(request, viewer)
    try:
        path = evidence.bundle(viewer.account.actor(), evidence_id)
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"evidence-{evidence_id}.zip",
        headers=DOWNLOAD_HEADERS,
    )
