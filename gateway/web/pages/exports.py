"""Export requests in the console (R13): the exports the viewer may see and, for reviewers
and approvers, those waiting for them; an export's page with the airlock's report, its
files to read, its history, the step the viewer may take now and, once released, the
signed bundle with how to verify it offline.

Requests come from the sandbox, never from here (the files must be the workspace's):
these pages are thin over :class:`~gateway.exports.service.ExportService`, called as the
API calls it. What a page offers follows the workflow (:data:`~gateway.exports.workflow.STEPS`)
and the authorizer (``refusal``, with the export as the target); the service decides
again and records the step or the refusal, which the page then shows with the status the
API answers it with (403, 404, 409 or 422), what was typed kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.api.deps import Services, ServicesDep
from gateway.authz import Denied, Target
from gateway.catalog.service import CHINA
from gateway.db.models import ExportRisk, ExportStatus
from gateway.exports.service import MAX_REASONS, ExportService
from gateway.exports.snapshots import ExportSnapshot
from gateway.exports.workflow import STEPS
from gateway.identity.model import Conflict, NotFound
from gateway.sandboxes.service import GrantSnapshot
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.catalog import Failure, attempt, not_found, posted
from gateway.web.render import gettext_for, locale_of, render

router = APIRouter(include_in_schema=False)
QUEUE_ROLES = frozenset({"reviewer", "approver"})
DOWNLOAD_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}

NOTICES = {
    ExportStatus.APPROVAL: N_("The opinion was recorded; an approver decides next."),
    ExportStatus.SECOND_APPROVAL: N_(
        "The approval was recorded; as the risk is high, a second approver decides next."
    ),
    ExportStatus.RELEASED: N_("The export was released: its signed bundle can be downloaded."),
    ExportStatus.REJECTED: N_("The export was refused; the applicant sees why."),
}

ReadExports = Annotated[Viewer, Depends(Page("export", "read"))]
ExportId = Annotated[str, Path(min_length=1, max_length=64)]
FileNumber = Annotated[int, Path(ge=0, le=10_000)]  # the service knows how many there are


# ---------------------------------------------------------------------- plumbing
def exports_of(found: Services) -> ExportService:
    if found.exports is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "exports are not configured")
    return found.exports


def local_time(moment: datetime | None) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M") if moment else ""


def level_labeller(request: Request, found: Services) -> Callable[[str], str]:
    """The security level's name in the page's language (the treatments policy names
    them), or the level as the report gives it."""
    locale = locale_of(request)
    policy = found.applications.treatments if found.applications is not None else None

    def level_label(name: str) -> str:
        level = policy.levels.get(name) if policy is not None else None
        return level.labels.get(locale, name) if level is not None else name

    return level_label


def grants_of_viewer(found: Services, viewer: Viewer) -> dict[str, GrantSnapshot]:
    """The grants the viewer may see, by id (for their titles, organizations and members'
    names); none for a viewer who may not read grants."""
    if found.sandboxes is None:
        return {}
    try:
        return {grant.id: grant for grant in found.sandboxes.list_grants(viewer.account.actor())}
    except Denied:
        return {}


def grant_of(found: Services, viewer: Viewer, grant_id: str) -> GrantSnapshot | None:
    if found.sandboxes is None:
        return None
    try:
        return found.sandboxes.get_grant(viewer.account.actor(), grant_id)
    except (Denied, NotFound):
        return None


def requester_name(export: ExportSnapshot, grant: GrantSnapshot | None) -> str:
    """The requester's user name, from the grant's members (empty when unknown)."""
    if grant is None:
        return ""
    names = dict(zip(grant.members, grant.member_names, strict=False))
    return names.get(export.requested_by.removeprefix("user:"), "")


def target_of(export: ExportSnapshot) -> Target:
    """The export as the duties see it (as the service builds it)."""
    return Target(
        organization=f"org:{export.organization_id}",
        requested_by=export.requested_by,
        drafted_by=frozenset(review.actor for review in export.reviews),
    )


def offered_step(found: Services, viewer: Viewer, export: ExportSnapshot) -> dict[str, Any]:
    """What the page offers the viewer: ``step`` is ``review`` or ``approve`` when the
    export waits for it and the authorizer allows the viewer (the service decides again);
    ``another_decides`` tells an approver who may not decide this one that another will."""
    actor = viewer.account.actor()
    waiting = STEPS.get(export.status)
    if waiting is None:
        return {"step": None, "another_decides": False}
    action = waiting[0]
    allowed = found.authorizer.refusal(actor, "export", action, target_of(export)) is None
    return {
        "step": action if allowed else None,
        "another_decides": action == "approve" and not allowed and "approver" in actor.roles,
    }


def back(export_id: str, notice: ExportStatus) -> RedirectResponse:
    return RedirectResponse(
        f"/exports/{export_id}?{urlencode({'notice': str(notice)})}",
        status_code=status.HTTP_303_SEE_OTHER,
    )


# ---------------------------------------------------------------------- the lists
@router.get("/exports")
def exports_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadExports,
    status_: Annotated[ExportStatus | Literal[""], Query(alias="status")] = "",
) -> Response:
    exports = exports_of(found)
    actor = viewer.account.actor()
    chosen = status_ or None
    return render(
        request,
        "exports.html",
        viewer=viewer,
        queue=exports.queue(actor) if QUEUE_ROLES & actor.roles else None,
        exports=exports.list_exports(actor, status=chosen),
        chosen=str(chosen or ""),
        statuses=[str(item) for item in ExportStatus],
        grants=grants_of_viewer(found, viewer),
        read_only="regulator" in actor.roles and not QUEUE_ROLES & actor.roles,
        local_time=local_time,
    )


# ---------------------------------------------------------------------- an export
@router.get("/exports/{export_id}")
def export_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadExports,
    export_id: ExportId,
    notice: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    return detail_page(request, found, viewer, export_id, notice=notice)


def detail_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    export_id: str,
    *,
    notice: str = "",
    failure: Failure | None = None,
    kept: Mapping[str, str] | None = None,
) -> Response:
    try:
        export = exports_of(found).get(viewer.account.actor(), export_id)
    except NotFound as exc:
        return not_found(request, viewer, failure.message if failure else str(exc))
    grant = grant_of(found, viewer, export.grant_id)
    known = {str(key): message for key, message in NOTICES.items()}
    return render(
        request,
        "exports_detail.html",
        viewer=viewer,
        export=export,
        report=export.report,
        grant=grant,
        requester=requester_name(export, grant),
        notice=known.get(notice),
        failure=failure,
        kept=kept or {},
        max_reasons=MAX_REASONS,
        level_label=level_labeller(request, found),
        local_time=local_time,
        status_code=failure.status if failure else status.HTTP_200_OK,
        here=f"/exports/{export.id}",
        **offered_step(found, viewer, export),
    )


@router.get("/exports/{export_id}/files/{n}")
def export_file(
    request: Request, found: ServicesDep, viewer: ReadExports, export_id: ExportId, n: FileNumber
) -> Response:
    """File ``n`` as a download that no browser runs or sniffs."""
    try:
        name, path = exports_of(found).file(viewer.account.actor(), export_id, n)
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=name.rsplit("/", 1)[-1],
        headers=DOWNLOAD_HEADERS,
    )


@router.get("/exports/{export_id}/bundle")
def export_bundle(
    request: Request, found: ServicesDep, viewer: ReadExports, export_id: ExportId
) -> Response:
    """The released export as its signed bundle (written on first download)."""
    try:
        path = exports_of(found).bundle(viewer.account.actor(), export_id)
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    except Denied as exc:
        return render(request, "refused.html", viewer=viewer, reason=exc.reason, status_code=403)
    except Conflict as exc:
        return render(
            request,
            "problem.html",
            viewer=viewer,
            heading=N_("The export is not released"),
            reason=str(exc),
            status_code=status.HTTP_409_CONFLICT,
        )
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"release-{export_id}.zip",
        headers=DOWNLOAD_HEADERS,
    )


# ---------------------------------------------------------------------- deciding
@router.post("/exports/{export_id}/decision")
async def decide_export(
    request: Request, found: ServicesDep, viewer: ReadExports, export_id: ExportId
) -> Response:
    """The step the export waits for: the reviewer's opinion with a risk assessment, or
    an approver's decision; the service says whether the viewer may take it."""
    values = await posted(request, "decision", "reasons", "risk")
    risks = {str(item): item for item in ExportRisk}
    _ = gettext_for(request)
    unclear = status.HTTP_422_UNPROCESSABLE_CONTENT
    if values["decision"] not in ("approve", "refuse"):
        done: ExportSnapshot | Failure = Failure(_("Choose to approve or to refuse."), unclear)
    elif values["risk"] and values["risk"] not in risks:
        done = Failure(_("The risk is normal or high."), unclear)
    else:
        done = await attempt(
            run_in_threadpool(
                exports_of(found).decide,
                viewer.account.actor(),
                export_id,
                approve=values["decision"] == "approve",
                reasons=values["reasons"],
                risk=risks.get(values["risk"]),
            )
        )
    if isinstance(done, Failure):
        return await run_in_threadpool(
            detail_page, request, found, viewer, export_id, failure=done, kept=values
        )
    return back(done.id, done.status)
