"""The audit trail in the console, for those who may read it (``audit_trail:read``:
regulators, administrators): a search of the ledger's entries and any object's whole
history, every row with a "verify" button.

The pages are thin over the trail index (:class:`~gateway.trail.index.TrailIndex`, a
searchable copy of the ledger), called in-process as other pages call their services.
The index is a convenience, not evidence: the browser checks each entry it is asked to
(``static/trail.js``) against the ledger's signed checkpoints and key chain, with
WebCrypto alone, and compares what the verified bytes say with what the row shows. The
rows therefore carry the raw values (seq, China time to the second, actor, action,
object, outcome, detail as JSON) that the script compares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import Response

from gateway.api.deps import Services, ServicesDep
from gateway.authz import Denied
from gateway.catalog.service import CHINA
from gateway.identity.model import IdentityError
from gateway.trail import TrailEntry, TrailIndex, TrailQuery, TrailQueryError
from gateway.trail.times import china_iso, china_time, micros
from gateway.web.deps import Page, Viewer
from gateway.web.i18n import N_
from gateway.web.pages.catalog import Failure
from gateway.web.render import gettext_for, render

router = APIRouter(include_in_schema=False)
ReadTrail = Annotated[Viewer, Depends(Page("audit_trail", "read"))]

PAGE_SIZE = 50
HISTORY_PAGE = 500
MAX_TIME = 2**53 - 1
MAX_LISTED = 1000  # organizations and datasets offered in the search form
KIND = re.compile(r"[a-z][a-z0-9_\-]*")

# The stages of an object's history, by action (the longest matching prefix wins).
STAGES: dict[str, str] = {
    "catalog.": "catalog",
    "dataset.": "catalog",
    "vault.": "catalog",
    "objection.": "objection",
    "application.": "application",
    "agreement.": "agreement",
    "organization.key": "agreement",
    "grant.": "grant",
    "view.": "grant",
    "privacy.": "grant",
    "sandbox.": "session",
    "session.": "session",
    "export.request": "export",
    "export.upload": "export",
    "export.submit": "export",
    "airlock.": "export",
    "export.review": "review",
    "export.approve": "review",
    "export.reject": "review",
    "export.refuse": "review",
    "export.release": "release",
    "export.download": "download",
    "feedback.": "feedback",
}
STAGE_NAMES = {
    "catalog": N_("Catalog entry and data"),
    "objection": N_("Objections"),
    "application": N_("Application"),
    "agreement": N_("Agreement"),
    "grant": N_("Grant and views"),
    "session": N_("Sandbox sessions and executed cells"),
    "export": N_("Export requests and checks"),
    "review": N_("Export reviews"),
    "release": N_("Release"),
    "download": N_("Downloads"),
    "feedback": N_("Feedback"),
    "other": N_("Other"),
}

# What the browser's verification says, in the page's language ({name}: filled in there).
VERIFY_MESSAGES = {
    "checking": N_("Checking…"),
    "verified": N_(
        "Verified: entry {seq} is in the tree of {size} entries signed by key {key} at {time}."
    ),
    "failed": N_("Not verified: {reason}"),
    "entry.bytes": N_("What the verified entry says"),
    "trust.none": N_("none yet"),
    "trust.first-use": N_("(pinned by this browser at first use)"),
    "trust.entered": N_("(entered by you)"),
    "trust.witness": N_("{size} entries, signed at {time}"),
    "trust.invalid": N_("A key id is 64 hexadecimal digits."),
    "trust.saved": N_("Saved: entries verify only under this first key from now on."),
    "field.seq": N_("seq"),
    "field.time": N_("time"),
    "field.actor": N_("actor"),
    "field.action": N_("action"),
    "field.object": N_("object"),
    "field.outcome": N_("outcome"),
    "field.detail": N_("detail"),
    "fetch": N_("the server did not give the {what} (status {status})."),
    "no-crypto": N_("this browser cannot verify Ed25519 signatures."),
    "not-canonical": N_("a record is not canonical JSON ({why})."),
    "keys-malformed": N_("the ledger's key list is malformed: {why}."),
    "key-id": N_("key {key} is not the SHA-256 of its public key."),
    "key-chain": N_("key {key} does not follow the key before it in the chain."),
    "key-starts-early": N_("key {key} starts before the key it replaces."),
    "endorsement": N_("key {key} is not endorsed by the key before it."),
    "first-key": N_("the ledger's first key {key} is not the trusted first key {trusted}."),
    "ledger-changed": N_("the ledger {ledger} is not the ledger this browser trusts ({trusted})."),
    "checkpoint-malformed": N_("the checkpoint is malformed: {why}."),
    "checkpoint-ledger": N_("the checkpoint is for another ledger ({ledger})."),
    "unknown-key": N_("the checkpoint is signed by key {key}, which is not in the key chain."),
    "key-not-allowed": N_("key {key} was not allowed to sign a tree of {size} entries."),
    "signature": N_("the checkpoint's signature does not verify with key {key}."),
    "fork": N_(
        "the ledger's tree of {size} entries differs from the one this browser verified "
        "before: the ledger was rewritten."
    ),
    "rollback": N_(
        "the ledger cannot show the tree of {size} entries this browser verified before; "
        "it now shows {now}: the ledger was rolled back."
    ),
    "consistency": N_(
        "the consistency proof does not show that the tree of {old} entries is a prefix of "
        "the tree of {new} entries."
    ),
    "proof-malformed": N_("the inclusion proof is malformed: {why}."),
    "proof-other-entry": N_("the proof is for entry {got}, not entry {seq}."),
    "entry-not-canonical": N_("the entry's bytes are not canonical JSON."),
    "entry-malformed": N_("the entry's bytes are not a ledger entry."),
    "entry-seq": N_("the entry's bytes say seq {got}, not {seq}."),
    "leaf-hash": N_("the entry's bytes do not hash to the proof's leaf hash."),
    "path": N_("the inclusion path does not lead from entry {seq} to the signed root."),
    "key-entry": N_("entry {seq} introduces a key that is not the chain's."),
    "shown-differs": N_("the page shows something other than the verified entry: {fields}."),
    "error": N_("the verification stopped: {why}."),
}


# ---------------------------------------------------------------------- formatting
def detail_text(detail: Mapping[str, Any]) -> str:
    """An entry's detail as the rows show it: JSON, keys sorted, indented."""
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, indent=2)


def object_link(subject: str) -> str | None:
    """The timeline page of ``kind:id``, or None for what is not one."""
    kind, sep, ident = subject.partition(":")
    if not sep or not ident or not KIND.fullmatch(kind) or any(c.isspace() for c in ident):
        return None
    return f"/trail/history/{kind}/{quote(ident, safe='')}"


def stage_of(action: str) -> str:
    best = ""
    for prefix in STAGES:
        if (action == prefix or action.startswith(prefix)) and len(prefix) > len(best):
            best = prefix
    return STAGES[best] if best else "other"


def start_of_day(day: date) -> int:
    """The first µs of a China-time day."""
    moment = datetime.combine(day, time(0), CHINA)
    return micros(moment)


@dataclass(frozen=True)
class Stage:
    name: str
    entries: list[TrailEntry]


def stages_of(entries: list[TrailEntry]) -> list[Stage]:
    """Consecutive entries of one stage, together (a history is oldest first)."""
    groups: list[Stage] = []
    for entry in entries:
        name = stage_of(entry.action)
        if not groups or groups[-1].name != name:
            groups.append(Stage(name, []))
        groups[-1].entries.append(entry)
    return groups


# ---------------------------------------------------------------------- plumbing
def trail_of(found: Services) -> TrailIndex | None:
    return found.trail


def unavailable(request: Request, viewer: Viewer) -> Response:
    return render(
        request,
        "problem.html",
        viewer=viewer,
        heading=N_("The audit trail is unavailable"),
        reason="the trail index is not open on this gateway",
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


def organization_names(found: Services, viewer: Viewer) -> dict[str, str]:
    """Organization id → name, for the select and the rows."""
    names: dict[str, str] = {}
    actor = viewer.account.actor()
    offset = 0
    try:
        while offset < MAX_LISTED:
            page = found.identity.list_organizations(actor, offset=offset, limit=100)
            names.update((item.id, item.name) for item in page.items)
            offset += 100
            if offset >= page.total:
                break
    except (Denied, IdentityError):
        pass
    return names


def dataset_names(found: Services, viewer: Viewer) -> dict[str, str]:
    if found.catalog is None:
        return {}
    try:
        page = found.catalog.datasets(viewer.account.actor(), limit=100)
    except (Denied, ValueError):
        return {}
    return {item.id: item.name for item in page.items}


def grant_titles(found: Services, viewer: Viewer) -> dict[str, str]:
    if found.sandboxes is None:
        return {}
    try:
        grants = found.sandboxes.list_grants(viewer.account.actor())
    except Denied:
        return {}
    return {grant.id: grant.title for grant in grants}


def counted(trail: TrailIndex, field: str) -> list[str]:
    """The actions or outcomes the ledger holds (from the index's counts)."""
    with trail.read() as conn:
        rows = conn.execute(
            "SELECT value FROM counts WHERE field = ? AND n > 0 ORDER BY value", (field,)
        ).fetchall()
    return [str(value) for (value,) in rows]


def usernames(trail: TrailIndex) -> list[str]:
    with trail.read() as conn:
        rows = conn.execute(
            "SELECT username FROM people WHERE username IS NOT NULL ORDER BY username LIMIT ?",
            (MAX_LISTED,),
        ).fetchall()
    return [str(name) for (name,) in rows]


def person_of(found: Services, viewer: Viewer, trail: TrailIndex, username: str) -> str | None:
    """``user:<id>`` of the user name, from the index's people or the identity service."""
    name = username.strip().lower()
    with trail.read() as conn:
        row = conn.execute("SELECT user FROM people WHERE username = ?", (name,)).fetchone()
    if row is not None:
        return str(row[0])
    try:
        return f"user:{found.identity.find_user(viewer.account.actor(), name).id}"
    except (Denied, IdentityError):
        return None


def verify_messages(request: Request) -> dict[str, str]:
    _ = gettext_for(request)
    return {code: _(message) for code, message in VERIFY_MESSAGES.items()}


def row_helpers(organizations: Mapping[str, str]) -> dict[str, Any]:
    """What the rows' template needs to show entries."""
    return {
        "china_time": china_time,
        "iso_time": china_iso,
        "detail_text": detail_text,
        "object_link": object_link,
        "organization_name": lambda org: organizations.get(org, org),
    }


# ---------------------------------------------------------------------- the search
Text = Annotated[str, Query(max_length=256)]
Day = Annotated[str, Query(max_length=10)]


@dataclass
class Search:
    """The search form's values, as typed (kept on the page)."""

    since: str = ""
    until: str = ""
    person: str = ""
    organization: str = ""
    dataset: str = ""
    grant: str = ""
    action: str = ""
    outcome: str = ""

    def values(self) -> dict[str, str]:
        return {name: value for name, value in self.__dict__.items() if value}


class Unclear(ValueError):
    """A search that cannot be run; the message says why, in the page's language."""


def parse_day(text: str, _: Any) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise Unclear(_("%(text)s is not a date written YYYY-MM-DD.") % {"text": text}) from None


def build_query(
    found: Services, viewer: Viewer, trail: TrailIndex, search: Search, before: int | None, _: Any
) -> TrailQuery:
    """The index's query for the form; :class:`Unclear` when it cannot be one."""
    since, until = parse_day(search.since, _), parse_day(search.until, _)
    if since is not None and until is not None and since > until:
        raise Unclear(_("The first day is after the last day."))
    dataset, grant = search.dataset.strip(), search.grant.strip()
    if dataset and grant:
        raise Unclear(_("Search by a dataset or by a grant, not both at once."))
    actor = None
    if search.person.strip():
        actor = person_of(found, viewer, trail, search.person)
        if actor is None:
            name = search.person.strip()
            raise Unclear(_("Nobody has the user name %(name)s.") % {"name": name})
    subject = f"dataset:{dataset}" if dataset else f"grant:{grant}" if grant else None
    try:
        return TrailQuery(
            since=start_of_day(since) if since else None,
            until=start_of_day(until + timedelta(days=1)) if until else None,
            actor=actor,
            organization=search.organization.strip() or None,
            subject=subject,
            action=search.action.strip() or None,
            outcome=search.outcome.strip() or None,
            before=before,
            limit=PAGE_SIZE,
        )
    except TrailQueryError as exc:
        raise Unclear(str(exc)) from None


@router.get("/trail")
def trail_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadTrail,
    since: Day = "",
    until: Day = "",
    person: Annotated[str, Query(max_length=64)] = "",
    organization: Annotated[str, Query(max_length=64)] = "",
    dataset: Annotated[str, Query(max_length=128)] = "",
    grant: Annotated[str, Query(max_length=128)] = "",
    action: Text = "",
    outcome: Annotated[str, Query(max_length=64)] = "",
    before: Annotated[int | None, Query(ge=0, le=MAX_TIME)] = None,
) -> Response:
    """Entries by time (China-time days), person, organization, dataset or grant, action
    (a family such as ``export.`` or one action) and outcome, newest first, a page at a
    time (``before`` is the cursor)."""
    trail = trail_of(found)
    if trail is None:
        return unavailable(request, viewer)
    search = Search(since, until, person, organization, dataset, grant, action, outcome)
    failure, page = None, None
    try:
        page = trail.search(build_query(found, viewer, trail, search, before, gettext_for(request)))
    except Unclear as exc:
        failure = Failure(str(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)
    organizations = organization_names(found, viewer)
    actions = counted(trail, "action")
    families = sorted({name.split(".", 1)[0] + "." for name in actions if "." in name})
    kept = search.values()
    next_page = (
        f"/trail?{urlencode({**kept, 'before': page.next_before})}"
        if page is not None and page.next_before is not None
        else None
    )
    return render(
        request,
        "trail.html",
        viewer=viewer,
        search=search,
        failure=failure,
        page=page,
        first_page=f"/trail?{urlencode(kept)}" if before is not None else None,
        next_page=next_page,
        organizations=organizations,
        datasets=dataset_names(found, viewer),
        grants=grant_titles(found, viewer),
        people=usernames(trail),
        families=families,
        actions=actions,
        outcomes=counted(trail, "outcome"),
        messages=verify_messages(request),
        status_code=failure.status if failure else status.HTTP_200_OK,
        **row_helpers(organizations),
    )


# ---------------------------------------------------------------------- a history
@router.get("/trail/history/{kind}/{subject_id:path}")
def history_page(
    request: Request,
    found: ServicesDep,
    viewer: ReadTrail,
    kind: Annotated[str, Path(max_length=32, pattern=r"^[a-z][a-z0-9_\-]*$")],
    subject_id: Annotated[str, Path(min_length=1, max_length=256)],
    after: Annotated[int | None, Query(ge=0, le=MAX_TIME)] = None,
) -> Response:
    """Everything the ledger holds about one object, oldest first, by stage; for a grant,
    from its datasets' catalog entries to the downloads of its released exports."""
    trail = trail_of(found)
    if trail is None:
        return unavailable(request, viewer)
    subject = f"{kind}:{subject_id}"
    entries = trail.history(subject, after=after, limit=HISTORY_PAGE)
    organizations = organization_names(found, viewer)
    more = (
        f"{object_link(subject)}?{urlencode({'after': entries[-1].seq})}"
        if len(entries) == HISTORY_PAGE
        else None
    )
    searchable = {"dataset": "dataset", "grant": "grant", "org": "organization"}
    search = f"/trail?{urlencode({searchable[kind]: subject_id})}" if kind in searchable else None
    return render(
        request,
        "trail_history.html",
        viewer=viewer,
        subject=subject,
        stages=stages_of(entries),
        stage_names=STAGE_NAMES,
        more=more,
        search=search,
        messages=verify_messages(request),
        **row_helpers(organizations),
    )
