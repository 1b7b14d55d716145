"""What a ledger entry is about: the subjects it links and the parent edges it shows.

Pure functions over one entry, shared by ingest and by the history's filter, so the two
can never disagree. A *subject* is ``"kind:id"``. An entry is linked to

- its ``object`` and its ``actor``,
- the actor's organization (``org:<id>``), when the actor is a known person,
- every id its ``detail`` names, anywhere in it (also inside nested objects and lists,
  e.g. feedback's per-dataset notes), under a key of :data:`DETAIL_KINDS`, as
  ``"<kind>:<id>"`` — a string or a list of strings, without spaces, at most
  :data:`MAX_ID` characters.

The detail is read as its canonical JSON text (FORMAT.md §2) with one regular expression:
in canonical JSON a ``"key":`` can only be a member's key, never the inside of a string
(quotes inside strings are always escaped), so the text need not be parsed.

*Structural* subjects (:data:`PARENT_KINDS`) form a tree of provenance: a sandbox session
belongs to a grant, an export to its grant and session, a grant to its agreement and the
datasets its views are built from, an agreement to its application, an application to
the datasets it asked consent for, an objection to its dataset, feedback to its grant and
datasets. An ``ok`` entry whose object is structural gives one edge ``(object, parent)``
for every linked subject of a parent kind (``export.request`` on ``export:e`` naming grant
``g`` and session ``s`` gives ``export:e → grant:g`` and ``export:e → session:s``).
"""

from __future__ import annotations

import json
import re

# detail key -> the kind of object the id under it names
DETAIL_KINDS: dict[str, str] = {
    "agreement": "agreement",
    "application": "application",
    "dataset": "dataset",
    "datasets": "dataset",
    "export": "export",
    "feedback": "feedback",
    "grant": "grant",
    "grants": "grant",
    "members": "user",
    "objection": "objection",
    "organization": "org",
    "session": "session",
    "user": "user",
}

# structural kind -> the kinds of its parents
PARENT_KINDS: dict[str, frozenset[str]] = {
    "agreement": frozenset({"application"}),
    "application": frozenset({"dataset"}),
    "dataset": frozenset(),
    "export": frozenset({"grant", "session"}),
    "feedback": frozenset({"grant", "dataset"}),
    "grant": frozenset({"agreement", "dataset"}),
    "objection": frozenset({"dataset"}),
    "session": frozenset({"grant"}),
}
STRUCTURAL = frozenset(PARENT_KINDS)
MAX_ID = 128  # longer values under an id key are text, not ids

_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_IDS = re.compile(rf'"({"|".join(DETAIL_KINDS)})":({_STRING}|\[(?:{_STRING}(?:,{_STRING})*)?\])')
_ITEM = re.compile(_STRING)
_PLAIN_ID = re.compile(r'[^\s"\\]+')


def kind_of(subject: str) -> str:
    return subject.partition(":")[0]


def is_structural(subject: str) -> bool:
    return kind_of(subject) in STRUCTURAL


def _subject(kind: str, quoted: str) -> str | None:
    """``kind:id`` for one JSON string under an id key, or ``None`` if it is no id."""
    value = quoted[1:-1]
    if "\\" in value:
        value = json.loads(quoted)
    if not value or len(value) > MAX_ID or not _PLAIN_ID.fullmatch(value):
        return None
    if value.startswith(f"{kind}:"):
        return value if len(value) > len(kind) + 1 else None
    return f"{kind}:{value}"


def detail_subjects(detail: str) -> list[str]:
    """The subjects named in a detail's canonical JSON text, in order, with repeats."""
    found: list[str] = []
    for key, value in _IDS.findall(detail):
        kind = DETAIL_KINDS[key]
        for quoted in _ITEM.findall(value) if value[0] == "[" else (value,):
            subject = _subject(kind, quoted)
            if subject is not None:
                found.append(subject)
    return found


def entry_links(obj: str, actor: str, detail: str, organization: str | None) -> list[str]:
    """Every subject the entry is linked to, without repeats, object first."""
    found = dict.fromkeys((obj, actor))
    if organization:
        found[f"org:{organization}"] = None
    if '":' in detail:
        found.update(dict.fromkeys(detail_subjects(detail)))
    return list(found)


def structural_links(obj: str, detail: str) -> list[str]:
    """The structural subjects the entry names (its object and ids in its detail)."""
    named = [obj, *detail_subjects(detail)] if '":' in detail else [obj]
    return list(dict.fromkeys(s for s in named if kind_of(s) in STRUCTURAL))


def entry_edges(obj: str, outcome: str, links: list[str]) -> list[tuple[str, str]]:
    """The ``(child, parent)`` edges an entry shows: only a successful entry about a
    structural object says what that object belongs to."""
    if outcome != "ok":
        return []
    parents = PARENT_KINDS.get(kind_of(obj))
    if not parents:
        return []
    return [(obj, s) for s in links if s != obj and kind_of(s) in parents]
