"""The operation agreement in the console (R12), on its application's page once the
application is approved: made on first request, signed for each organization, read as a
PDF or as the canonical JSON that is signed; and, once both have signed, the grant an
approver makes from it with one record-level view
(:class:`~gateway.agreements.grants.AgreementGrants`).

The page shows the application's agreement once it has been made (the "make or show"
button makes it on first request), or the one its address names (``?agreement=``).

The grant's members are chosen among the applicant unit's people the record names (who
drafted, submitted, attached and signed for it), and by user id for anyone else: the
identity service lets an approver list only the operator's own users.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

import duckdb
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from gateway.agreements.grants import AgreementGrants, ViewRequest
from gateway.agreements.pdf import PdfError
from gateway.agreements.service import AgreementService, AgreementSnapshot
from gateway.api.deps import Services, ServicesDep
from gateway.applications.snapshots import ApplicationDetail
from gateway.applications.workflow import Step
from gateway.authz import Actor
from gateway.catalog.entry import FieldType
from gateway.db.models import AgreementStatus, ApplicationStatus
from gateway.identity.model import NotFound
from gateway.sandboxes.service import MAX_MEMBERS, GrantSnapshot
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.applications import attempt_step, back, detail_page
from gateway.web.pages.catalog import Failure, catalog_of, not_found
from gateway.web.render import gettext_for, render
from sandbox.spawner.ticket import GRANT
from sandbox.views.fields import GENERALIZATIONS, FieldRule
from sandbox.views.treatments import Treatment

router = APIRouter(include_in_schema=False)
NUMBER = re.compile(r"[0-9]{1,5}")
APPLICANT_STEPS = frozenset({str(Step.SUBMIT), str(Step.AMEND), str(Step.WITHDRAW)})
# What a field of each type may be generalized to (sandbox.views.fields.FieldRule).
GENERALIZE_BY_TYPE = {
    FieldType.DATE: ("year", "month"),
    FieldType.DATETIME: ("year", "month"),
    FieldType.INTEGER: ("band",),
    FieldType.DECIMAL: ("band",),
    FieldType.STRING: ("district",),
    FieldType.BOOLEAN: (),
}

ReadAgreement = Annotated[Viewer, Depends(Page("agreement", "read"))]
SignAgreement = Annotated[Viewer, Depends(Page("agreement", "sign"))]
CreateGrant = Annotated[Viewer, Depends(Page("grant", "create"))]


def agreements_of(found: Services) -> AgreementService:
    if found.agreements is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "agreements are not configured")
    return found.agreements


def grants_of(found: Services) -> AgreementGrants:
    if found.agreement_grants is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "grants are not configured")
    return found.agreement_grants


@dataclass(frozen=True)
class GrantChoices:
    """What the grant form offers: the people of the applicant unit the record names (user
    ids), and the scope's datasets with the fields a record-level view may hold."""

    members: tuple[str, ...]
    datasets: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class AgreementShown:
    agreement: AgreementSnapshot
    problems: tuple[str, ...]  # why the signatures do not hold (yet)
    signs: bool  # the viewer signs for their organization now
    grant: GrantChoices | None  # for an approver, once both have signed


def agreement_part(
    found: Services, viewer: Viewer, detail: ApplicationDetail, agreement_id: str
) -> dict[str, Any]:
    """What the application's page shows of its agreement: ``makes_agreement`` (the button
    that makes or shows it) and ``shown`` (the agreement its address names, if it is this
    application's and the viewer may read it)."""
    actor = viewer.account.actor()
    application = detail.application
    makes = application.status is ApplicationStatus.APPROVED and found.authorizer.allows(
        actor, "agreement", "read"
    )
    part: dict[str, Any] = {"makes_agreement": makes, "shown": None}
    if not makes:
        return part
    agreements = agreements_of(found)
    try:
        agreement = (
            agreements.get(actor, agreement_id)
            if agreement_id
            else agreements.of_application(actor, application.id)
        )
    except NotFound:
        return part
    if agreement is None or agreement.application_id != application.id:
        return part
    party = party_of(viewer, agreement)
    signs = (
        party is not None
        and party not in agreement.signatures
        and found.authorizer.allows(actor, "agreement", "sign")
    )
    grant = None
    if agreement.status is AgreementStatus.SIGNED and found.authorizer.allows(
        actor, "grant", "create"
    ):
        grant = GrantChoices(
            members=known_members(detail, agreement),
            datasets=record_scope(found, actor, agreement),
        )
    problems = tuple(agreements.problems(actor, agreement.id))
    part["shown"] = AgreementShown(agreement, problems, signs, grant)
    return part


def party_of(viewer: Viewer, agreement: AgreementSnapshot) -> str | None:
    """The party the viewer signs for: an applicant of the application unit, or an
    approver of the operator (as the service decides it)."""
    account = viewer.account
    if account.organization_id == agreement.applicant_id and "applicant" in account.roles:
        return "applicant"
    if account.organization_id == agreement.operator_id and "approver" in account.roles:
        return "operator"
    return None


def known_members(detail: ApplicationDetail, agreement: AgreementSnapshot) -> tuple[str, ...]:
    """User ids of the applicant unit's people the record names, in order of appearance."""
    named = [detail.application.created_by]
    named += [item.uploaded_by for item in detail.attachments]
    named += [event.actor for event in detail.events if event.step in APPLICANT_STEPS]
    signed = agreement.signatures.get("applicant")
    if signed:
        named.append(signed["signed_by"])
    return tuple(dict.fromkeys(user.removeprefix("user:") for user in named))


def record_scope(
    found: Services, actor: Actor, agreement: AgreementSnapshot
) -> tuple[dict[str, Any], ...]:
    """The scope's datasets that have fields a record-level view may hold, with them and,
    by each field's type in the catalog, what it may be generalized to."""
    chosen = []
    for item in agreement.document["scope"]:
        generalize = generalize_to(found, actor, item["dataset_id"])
        fields = [
            {**field, "generalize_to": generalize.get(field["name"], GENERALIZATIONS)}
            for field in item["fields"]
            if field["view"] == "record"
        ]
        if fields:
            chosen.append({"id": item["dataset_id"], "name": item["name"], "fields": fields})
    return tuple(chosen)


def generalize_to(found: Services, actor: Actor, dataset_id: str) -> dict[str, tuple[str, ...]]:
    """What each field of the dataset may be generalized to, by its type in the entry in
    force (a field whose type is unknown may try any)."""
    try:
        entry = catalog_of(found).dataset(actor, dataset_id).entry
    except NotFound:
        return {}
    return {item.name: GENERALIZE_BY_TYPE[item.type] for item in entry.fields} if entry else {}


# ---------------------------------------------------------------------- making, signing
@router.post("/applications/{application_id}/agreement")
async def make_agreement(
    request: Request, found: ServicesDep, viewer: ReadAgreement, application_id: str
) -> Response:
    """The approved application's agreement, made the first time it is asked for."""
    agreements = agreements_of(found)
    made = await attempt_step(
        found.writes.call(agreements.for_application, viewer.account.actor(), application_id)
    )
    if isinstance(made, Failure):
        return await run_in_threadpool(
            detail_page, request, found, viewer, application_id, failure=made
        )
    return RedirectResponse(
        f"/applications/{made.application_id}?{urlencode({'agreement': made.id})}#agreement",
        status_code=status.HTTP_303_SEE_OTHER,
    )


async def _on_its_page(
    request: Request, found: Services, viewer: Viewer, agreement_id: str, failure: Failure
) -> Response:
    """The agreement's application page again, saying why a request was refused."""
    shown = await attempt_step(
        run_in_threadpool(agreements_of(found).get, viewer.account.actor(), agreement_id)
    )
    if isinstance(shown, Failure):
        return not_found(request, viewer, failure.message)
    return await run_in_threadpool(
        detail_page,
        request,
        found,
        viewer,
        shown.application_id,
        failure=failure,
        agreement_id=shown.id,
    )


@router.post("/agreements/{agreement_id}/signature")
async def sign_agreement(
    request: Request, found: ServicesDep, viewer: SignAgreement, agreement_id: str
) -> Response:
    """Sign for the viewer's organization; the second signature makes it signed."""
    signed = await attempt_step(
        found.writes.call(agreements_of(found).sign, viewer.account.actor(), agreement_id)
    )
    if isinstance(signed, Failure):
        return await _on_its_page(request, found, viewer, agreement_id, signed)
    return back(signed.application_id, "agreement.signed", agreement_id=signed.id)


@router.get("/agreements/{agreement_id}/pdf")
def agreement_pdf(
    request: Request, found: ServicesDep, viewer: ReadAgreement, agreement_id: str
) -> Response:
    agreements = agreements_of(found)
    actor = viewer.account.actor()
    try:
        agreement = agreements.get(actor, agreement_id)
        content = agreements.pdf(actor, agreement.id)
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    except PdfError as exc:
        heading = N_("The PDF cannot be made here")
        return render(
            request,
            "problem.html",
            viewer=viewer,
            heading=heading,
            reason=str(exc),
            status_code=503,
        )
    return Response(
        content,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{agreement.number}.pdf"'},
    )


@router.get("/agreements/{agreement_id}/document")
def agreement_document(
    request: Request, found: ServicesDep, viewer: ReadAgreement, agreement_id: str
) -> Response:
    """The signed text: the document's canonical JSON (its SHA-256 is the agreement's)."""
    try:
        content = agreements_of(found).document(viewer.account.actor(), agreement_id)
    except NotFound as exc:
        return not_found(request, viewer, str(exc))
    return Response(content, media_type="application/json")


# ---------------------------------------------------------------------- the grant
@router.post("/agreements/{agreement_id}/grant")
async def make_grant(
    request: Request, found: ServicesDep, viewer: CreateGrant, agreement_id: str
) -> Response:
    """Build the record-level view the form describes and grant it to the members for
    the agreement's period; then to the grants."""
    actor = viewer.account.actor()
    shown = await attempt_step(run_in_threadpool(agreements_of(found).get, actor, agreement_id))
    if isinstance(shown, Failure):
        return not_found(request, viewer, shown.message)
    form = await request.form()
    _ = gettext_for(request)
    scope = await run_in_threadpool(record_scope, found, actor, shown)
    read = read_grant(form, scope, _)
    if isinstance(read, Failure):
        made: GrantSnapshot | Failure = read
    else:
        grant_id, members, view = read
        try:
            made = await attempt_step(
                run_in_threadpool(
                    grants_of(found).grant,
                    actor,
                    shown.id,
                    grant_id=grant_id,
                    members=members,
                    views=[view],
                )
            )
        except duckdb.Error as exc:  # the data does not fit the treatment; nothing was kept
            reason = str(exc).splitlines()[0]
            made = Failure(
                _("The view could not be built from the data: %(reason)s") % {"reason": reason},
                status.HTTP_422_UNPROCESSABLE_CONTENT,
            )
    if isinstance(made, Failure):
        kept = {"grant": {name: _value(form, name) for name in GRANT_INPUTS}}
        return await run_in_threadpool(
            detail_page,
            request,
            found,
            viewer,
            shown.application_id,
            failure=made,
            kept=kept,
            agreement_id=shown.id,
        )
    return RedirectResponse(
        f"/grants?{urlencode({'notice': 'grant.created'})}", status_code=status.HTTP_303_SEE_OTHER
    )


GRANT_INPUTS = ("grant_id", "more_members", "view_name", "k")


def _value(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def read_grant(
    form: FormData, scope: Sequence[dict[str, Any]], gettext: Callable[[str], str]
) -> tuple[str, list[str], ViewRequest] | Failure:
    """The grant the form describes: its id, its members and its one record-level view of
    the chosen dataset of ``scope`` (:func:`record_scope`), each chosen field with an
    agreed treatment; or what is wrong with the form (the service checks the rest: the
    scope again, the treatments policy, k)."""
    _ = gettext
    unreadable = status.HTTP_422_UNPROCESSABLE_CONTENT
    grant_id = _value(form, "grant_id")
    if not GRANT.fullmatch(grant_id):
        message = _("A grant id is 1 to 63 lower-case letters, digits and dashes.")
        return Failure(message, unreadable)
    members = [item for item in form.getlist("member") if isinstance(item, str)]
    members += _value(form, "more_members").replace(",", " ").split()
    members = list(dict.fromkeys(members))
    if not members or len(members) > MAX_MEMBERS:
        return Failure(_("Choose the members of the grant."), unreadable)
    k = _value(form, "k")
    if not NUMBER.fullmatch(k) or not 2 <= int(k) <= 1000:
        return Failure(_("k is a whole number from 2 to 1000."), unreadable)
    dataset = {item["id"]: item for item in scope}.get(_value(form, "dataset"))
    if dataset is None:
        return Failure(_("Choose the dataset of the view."), unreadable)
    included = {item for item in form.getlist("field") if isinstance(item, str)}
    rules = []
    for field in dataset["fields"]:
        key = f"{dataset['id']}.{field['name']}"
        if key not in included:
            continue
        named = {"field": field["name"]}
        treatment = _value(form, f"treatment.{key}")
        if treatment not in field["treatments"]:
            return Failure(_("Choose an agreed treatment for %(field)s.") % named, unreadable)
        params: dict[str, Any] = {}
        if treatment == Treatment.GENERALIZE:
            params["to"] = _value(form, f"to.{key}")
            if params["to"] not in field["generalize_to"]:
                return Failure(_("Say what %(field)s is generalized to.") % named, unreadable)
            if params["to"] == "band":
                width = _value(form, f"width.{key}") or "10"
                if not NUMBER.fullmatch(width):
                    message = _("The band width of %(field)s is a whole number.")
                    return Failure(message % named, unreadable)
                params["width"] = int(width)
        rules.append(FieldRule(field["name"], Treatment(treatment), params))
    if not rules:
        return Failure(_("Choose at least one field for the view."), unreadable)
    view = ViewRequest(
        dataset_id=dataset["id"],
        name=_value(form, "view_name"),
        kind="record",
        fields=tuple(rules),
        k=int(k),
    )
    return grant_id, members, view
