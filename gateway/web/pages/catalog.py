"""The data catalog in the console: the catalog, registering a dataset and requesting a
change of its entry, and a dataset's page: the entry in force, the change waiting for a
decision, the revision history, the uploaded versions with their quality reports, and
the quality objections with their deadlines.

Thin pages over :class:`~gateway.catalog.service.CatalogService`, called as the API calls
it: state changes as jobs of the write queue, reads directly. Each form posts to a route
of its own, which declares the permission it needs; the service checks again (the
provider's own dataset, separation of duties, the state of the revision or objection)
and records the change or the refusal. After a change the browser goes back to the
dataset's page with a notice from :data:`NOTICES`; a refusal is shown on the page the
form was on, with what was typed kept.

An entry's fields are typed as text, one field a line, so that the form needs no
JavaScript; :mod:`gateway.web.pages.entry_form` reads them and says which line is wrong
and why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import IO, Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gateway.api.deps import Services, ServicesDep
from gateway.authz import Denied
from gateway.catalog.entry import CatalogEntry, FieldType
from gateway.catalog.quality import UploadRejected
from gateway.catalog.service import CHINA, CatalogService, DatasetSnapshot
from gateway.identity.model import Conflict, IdentityError, NotFound
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.entry_form import entry_form, read_entry
from gateway.web.render import gettext_for, locale_of, render
from sandbox.identifiers import Kind
from sandbox.views.treatments import SensitivityClass

router = APIRouter(include_in_schema=False)
T = TypeVar("T")
PAGE_SIZE = 20
BLOCK = 1 << 20  # an upload is handed to the service a mebibyte at a time

NOTICES = {
    "dataset.registered": N_("The dataset was registered; its entry waits for review."),
    "revision.requested": N_("The change was requested; it waits for review."),
    "revision.reviewed": N_("The opinion was recorded."),
    "revision.approved": N_("The revision was approved and is now in force."),
    "revision.rejected": N_("The revision was rejected."),
    "version.uploaded": N_("The file was checked and stored; its quality report is below."),
    "objection.raised": N_("The objection was raised; the provider answers it in time."),
    "objection.extended": N_("The deadline was extended to fifteen working days."),
    "objection.answered": N_("The answer was recorded."),
    "objection.closed": N_("The objection was closed."),
}
# The entry's attributes, in the order the forms and the pages show them.
ATTRIBUTES = (
    "name",
    "description",
    "update_cycle",
    "format",
    "share",
    "open",
    "level",
    "usage_conditions",
    "legal_basis",
    "fields",
)
ENTRY_INPUTS = (*ATTRIBUTES[:-2], "basis_share", "basis_open", "fields", "reason")

ReadCatalog = Annotated[Viewer, Depends(Page("catalog", "read"))]
CreateDataset = Annotated[Viewer, Depends(Page("catalog", "create"))]
UpdateDataset = Annotated[Viewer, Depends(Page("catalog", "update"))]
ReviewRevision = Annotated[Viewer, Depends(Page("catalog", "review"))]
ApproveRevision = Annotated[Viewer, Depends(Page("catalog", "approve"))]
UploadVersion = Annotated[Viewer, Depends(Page("dataset", "upload"))]
RaiseObjection = Annotated[Viewer, Depends(Page("objection", "create"))]
AnswerObjection = Annotated[Viewer, Depends(Page("objection", "answer"))]
RevisionNumber = Annotated[int, Path(ge=1, le=1_000_000)]


# ---------------------------------------------------------------------- plumbing
@dataclass(frozen=True)
class Failure:
    """A refused request as the page shows it: the message, its status, and a list of
    problems where there are several (the lines of a fields box, a refused upload)."""

    message: str
    status: int
    problems: tuple[str, ...] = field(default=())


async def attempt(call: Awaitable[T]) -> T | Failure:
    """The service's answer, or why it refused, as the page shows it."""
    try:
        return await call
    except Denied as exc:
        return Failure(exc.reason, status.HTTP_403_FORBIDDEN)
    except UploadRejected as exc:
        return Failure("", status.HTTP_422_UNPROCESSABLE_CONTENT, tuple(exc.problems))
    except NotFound as exc:
        return Failure(str(exc), status.HTTP_404_NOT_FOUND)
    except Conflict as exc:
        return Failure(str(exc), status.HTTP_409_CONFLICT)
    except IdentityError as exc:
        return Failure(str(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)


def catalog_of(found: Services) -> CatalogService:
    if found.catalog is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the catalog is not configured")
    return found.catalog


async def posted(request: Request, *names: str) -> dict[str, str]:
    """The text values of the posted form (the form was read once already, for its CSRF
    token: this reads it from the request's cache)."""
    form = await request.form()
    return {name: value if isinstance(value := form.get(name), str) else "" for name in names}


def _back(dataset_id: str, notice: str) -> RedirectResponse:
    return RedirectResponse(
        f"/catalog/{dataset_id}?{urlencode({'notice': notice})}",
        status_code=status.HTTP_303_SEE_OTHER,
    )


def _labels(request: Request, found: Services) -> dict[str, Any]:
    """What every catalog page shows values with, in the page's language."""
    catalog = catalog_of(found)
    locale = locale_of(request)
    levels = catalog.treatments.levels

    def level_label(name: str) -> str:
        level = levels.get(name)
        return level.labels.get(locale, name) if level else name

    def sensitivity_label(value: str) -> str:
        labels = catalog.treatments.labels.get(SensitivityClass(value), {})
        return labels.get(locale, value)

    def provisional(day: date) -> bool:
        return not catalog.calendar.known(day)

    def local_time(moment: datetime | None) -> str:
        return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M") if moment else ""

    return {
        "levels": {name: level_label(name) for name in levels},
        "level_label": level_label,
        "sensitivity_label": sensitivity_label,
        "provisional": provisional,
        "local_time": local_time,
    }


def _sensitivity_names(found: Services) -> dict[str, SensitivityClass]:
    """Each sensitivity class by its value and by its label in every language."""
    names = {cls.value: cls for cls in SensitivityClass}
    for cls, labels in catalog_of(found).treatments.labels.items():
        names.update({label.casefold(): cls for label in labels.values()})
    return names


# ---------------------------------------------------------------------- the catalog
@router.get("/catalog")
def catalog_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadCatalog,
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    listing = catalog_of(found).datasets(
        viewer.account.actor(),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
        search=q.strip() or None,
    )
    return render(
        request,
        "catalog.html",
        viewer=viewer,
        listing=listing,
        shown=[
            (item, item.entry or (item.pending.entry if item.pending else None))
            for item in listing.items
        ],
        q=q,
        page=page,
        pages=max(1, -(-listing.total // PAGE_SIZE)),
        **_labels(request, found),
    )


@router.get("/catalog/new")
def new_dataset_page(request: Request, found: ServicesDep, viewer: CreateDataset) -> Response:
    return _entry_page(request, found, viewer, None, entry_form(None))


def _entry_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    dataset: DatasetSnapshot | None,
    form: dict[str, str],
    failure: Failure | None = None,
) -> Response:
    """The entry form: registering a dataset (``dataset`` None) or changing its entry."""
    return render(
        request,
        "catalog_form.html",
        viewer=viewer,
        dataset=dataset,
        form=form,
        failure=failure,
        classes=list(SensitivityClass),
        field_types=list(FieldType),
        kinds=list(Kind),
        status_code=failure.status if failure else status.HTTP_200_OK,
        here=f"/catalog/{dataset.id}/revise" if dataset else "/catalog/new",
        **_labels(request, found),
    )


@router.post("/catalog")
async def register_dataset(request: Request, found: ServicesDep, viewer: CreateDataset) -> Response:
    return await _submit_entry(request, found, viewer, None)


@router.get("/catalog/{dataset_id}/revise")
def revise_page(
    request: Request, found: ServicesDep, viewer: UpdateDataset, dataset_id: str
) -> Response:
    catalog = catalog_of(found)
    actor = viewer.account.actor()
    try:
        dataset = catalog.dataset(actor, dataset_id)
        latest = catalog.revisions(actor, dataset_id)[-1].entry
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    return _entry_page(request, found, viewer, dataset, entry_form(dataset.entry or latest))


@router.post("/catalog/{dataset_id}/revisions")
async def revise_dataset(
    request: Request, found: ServicesDep, viewer: UpdateDataset, dataset_id: str
) -> Response:
    shown = await attempt(
        run_in_threadpool(catalog_of(found).dataset, viewer.account.actor(), dataset_id)
    )
    if isinstance(shown, Failure):
        return not_found(request, viewer, shown.message)
    return await _submit_entry(request, found, viewer, shown)


async def _submit_entry(
    request: Request, found: Services, viewer: Viewer, dataset: DatasetSnapshot | None
) -> Response:
    """Register a dataset (``dataset`` None) or request a change of its entry."""
    catalog = catalog_of(found)
    actor = viewer.account.actor()
    values = await posted(request, *ENTRY_INPUTS)
    _ = gettext_for(request)
    entry, lines = read_entry(values, _, _sensitivity_names(found))
    if entry is None:
        unread = Failure(_("The fields could not be read:"), 422, tuple(lines))
        return _entry_page(request, found, viewer, dataset, values, unread)
    call: Awaitable[Any] = (
        found.writes.call(catalog.register, actor, entry, values["reason"])
        if dataset is None
        else found.writes.call(catalog.revise, actor, dataset.id, entry, values["reason"])
    )
    made = await attempt(call)
    if isinstance(made, Failure):
        return _entry_page(request, found, viewer, dataset, values, made)
    if dataset is None:
        return _back(made.id, "dataset.registered")
    return _back(dataset.id, "revision.requested")


# ---------------------------------------------------------------------- a dataset
@router.get("/catalog/{dataset_id}")
def dataset_page(
    request: Request, found: ServicesDep, viewer: ReadCatalog, dataset_id: str, notice: str = ""
) -> Response:
    return _dataset_page(request, found, viewer, dataset_id, notice=notice)


def _dataset_page(
    request: Request,
    found: Services,
    viewer: Viewer,
    dataset_id: str,
    *,
    notice: str = "",
    failure: Failure | None = None,
    kept: dict[str, dict[str, str]] | None = None,
) -> Response:
    catalog = catalog_of(found)
    actor = viewer.account.actor()
    try:
        dataset = catalog.dataset(actor, dataset_id)
        revisions = catalog.revisions(actor, dataset_id)
        versions = catalog.versions(actor, dataset_id)
        readable = found.authorizer.allows(actor, "objection", "read")
        objections = catalog.objections(actor, dataset_id) if readable else []
    except NotFound as exc:
        return not_found(request, viewer, failure.message if failure else str(exc))
    pending = dataset.pending
    return render(
        request,
        "catalog_dataset.html",
        viewer=viewer,
        dataset=dataset,
        entry=dataset.entry or (revisions[-1].entry if revisions else None),
        revisions=list(reversed(revisions)),
        versions=versions,
        objections=objections,
        changes=entry_changes(dataset.entry, pending.entry) if pending else [],
        field_changes=fields_changed(dataset.entry, pending.entry) if pending else {},
        own=dataset.provider_id == viewer.account.organization_id,
        # ``can`` checks a target-free request, which a decision never is (it needs an
        # opinion by someone else first): whether the viewer decides at all, then.
        decides=found.authorizer.refusal_before_target(actor, "catalog", "approve") is None,
        organization=viewer.account.organization_id,
        notice=NOTICES.get(notice),
        failure=failure,
        kept=kept or {},
        status_code=failure.status if failure else status.HTTP_200_OK,
        here=f"/catalog/{dataset.id}",
        **_labels(request, found),
    )


def entry_changes(before: CatalogEntry | None, after: CatalogEntry) -> list[str]:
    """The attributes ``after`` changes (none for a first entry: it is all new)."""
    if before is None:
        return []
    return [name for name in ATTRIBUTES if getattr(before, name) != getattr(after, name)]


def fields_changed(before: CatalogEntry | None, after: CatalogEntry) -> dict[str, list[str]]:
    """The fields ``after`` adds, removes and changes, by name."""
    if before is None:
        return {}
    old = {item.name: item for item in before.fields}
    new = {item.name: item for item in after.fields}
    return {
        "added": [name for name in new if name not in old],
        "removed": [name for name in old if name not in new],
        "changed": [name for name in new if name in old and new[name] != old[name]],
    }


def not_found(request: Request, viewer: Viewer, reason: str) -> Response:
    """The problem page for what the viewer may not see or is not there (404)."""
    return render(
        request,
        "problem.html",
        viewer=viewer,
        heading=N_("Not found"),
        reason=reason,
        status_code=status.HTTP_404_NOT_FOUND,
    )


async def _refused(
    request: Request,
    found: Services,
    viewer: Viewer,
    dataset_id: str,
    failure: Failure,
    kept: dict[str, dict[str, str]] | None = None,
) -> Response:
    """The dataset's page again, saying why the request was refused."""
    return await run_in_threadpool(
        _dataset_page, request, found, viewer, dataset_id, failure=failure, kept=kept
    )


async def _change(
    request: Request,
    found: Services,
    viewer: Viewer,
    dataset_id: str,
    call: Awaitable[Any],
    notice: str,
    kept: dict[str, dict[str, str]] | None = None,
) -> Response:
    """Make a change: back to the dataset's page with a notice, or the page with the
    reason it was refused."""
    done = await attempt(call)
    if isinstance(done, Failure):
        return await _refused(request, found, viewer, dataset_id, done, kept)
    return _back(dataset_id, notice)


@router.post("/catalog/{dataset_id}/revisions/{number}/opinion")
async def review_revision(
    request: Request,
    found: ServicesDep,
    viewer: ReviewRevision,
    dataset_id: str,
    number: RevisionNumber,
) -> Response:
    catalog = catalog_of(found)
    values = await posted(request, "recommends", "opinion")
    kept = {"opinion": values}
    if values["recommends"] not in ("yes", "no"):
        _ = gettext_for(request)
        unclear = Failure(_("Say whether you recommend approving the change."), 422)
        return await _refused(request, found, viewer, dataset_id, unclear, kept)
    call = found.writes.call(
        catalog.review,
        viewer.account.actor(),
        dataset_id,
        number,
        recommends=values["recommends"] == "yes",
        opinion=values["opinion"],
    )
    return await _change(request, found, viewer, dataset_id, call, "revision.reviewed", kept)


@router.post("/catalog/{dataset_id}/revisions/{number}/decision")
async def decide_revision(
    request: Request,
    found: ServicesDep,
    viewer: ApproveRevision,
    dataset_id: str,
    number: RevisionNumber,
) -> Response:
    catalog = catalog_of(found)
    values = await posted(request, "decision", "reason")
    kept = {"decision": values}
    if values["decision"] not in ("approve", "reject"):
        _ = gettext_for(request)
        unclear = Failure(_("Choose to approve or to reject the change."), 422)
        return await _refused(request, found, viewer, dataset_id, unclear, kept)
    approve = values["decision"] == "approve"
    call = found.writes.call(
        catalog.decide,
        viewer.account.actor(),
        dataset_id,
        number,
        approve=approve,
        reason=values["reason"],
    )
    notice = "revision.approved" if approve else "revision.rejected"
    return await _change(request, found, viewer, dataset_id, call, notice, kept)


@router.post("/catalog/{dataset_id}/versions")
async def upload_version(
    request: Request, found: ServicesDep, viewer: UploadVersion, dataset_id: str
) -> Response:
    """The file, as the browser sent it, streamed to the service a block at a time by the
    worker thread that checks it."""
    catalog = catalog_of(found)
    upload = (await request.form()).get("file")
    _ = gettext_for(request)
    if not isinstance(upload, UploadFile):
        missing = Failure(_("Choose the file to upload."), 422)
        return await _refused(request, found, viewer, dataset_id, missing)
    try:
        done = await attempt(
            run_in_threadpool(
                catalog.upload,
                viewer.account.actor(),
                dataset_id,
                _blocks(upload.file),
                filename=upload.filename or "",
            )
        )
    finally:
        await upload.close()
    if isinstance(done, Failure):
        if done.problems:
            done = Failure(_("The file was refused and nothing was stored:"), 422, done.problems)
        return await _refused(request, found, viewer, dataset_id, done)
    return _back(dataset_id, "version.uploaded")


def _blocks(source: IO[bytes]) -> Iterator[bytes]:
    while block := source.read(BLOCK):
        yield block


# ---------------------------------------------------------------------- objections
@router.post("/catalog/{dataset_id}/objections")
async def raise_objection(
    request: Request, found: ServicesDep, viewer: RaiseObjection, dataset_id: str
) -> Response:
    catalog = catalog_of(found)
    values = await posted(request, "text", "version")
    call = found.writes.call(
        catalog.object,
        viewer.account.actor(),
        dataset_id,
        values["text"],
        version_id=values["version"] or None,
    )
    kept = {"objection": values}
    return await _change(request, found, viewer, dataset_id, call, "objection.raised", kept)


async def _objection_change(
    request: Request,
    found: Services,
    viewer: Viewer,
    method: Callable[..., Any],
    objection_id: str,
    *arguments: str,
    notice: str,
) -> Response:
    """A change of an objection; its page is its dataset's (named by the form, and
    checked by the service like any other)."""
    dataset_id = (await posted(request, "dataset"))["dataset"]
    done = await attempt(
        found.writes.call(method, viewer.account.actor(), objection_id, *arguments)
    )
    if not isinstance(done, Failure):
        return _back(done.dataset_id, notice)
    if not dataset_id:
        return not_found(request, viewer, done.message)
    return await _refused(request, found, viewer, dataset_id, done)


@router.post("/catalog/objections/{objection_id}/answer")
async def answer_objection(
    request: Request, found: ServicesDep, viewer: AnswerObjection, objection_id: str
) -> Response:
    text = (await posted(request, "text"))["text"]
    return await _objection_change(
        request,
        found,
        viewer,
        catalog_of(found).answer,
        objection_id,
        text,
        notice="objection.answered",
    )


@router.post("/catalog/objections/{objection_id}/extension")
async def extend_objection(
    request: Request, found: ServicesDep, viewer: AnswerObjection, objection_id: str
) -> Response:
    reason = (await posted(request, "reason"))["reason"]
    return await _objection_change(
        request,
        found,
        viewer,
        catalog_of(found).extend,
        objection_id,
        reason,
        notice="objection.extended",
    )


@router.post("/catalog/objections/{objection_id}/close")
async def close_objection(
    request: Request, found: ServicesDep, viewer: RaiseObjection, objection_id: str
) -> Response:
    return await _objection_change(
        request, found, viewer, catalog_of(found).close, objection_id, notice="objection.closed"
    )
