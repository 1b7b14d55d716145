"""The catalog entry form of the console: an entry as form values and back, its fields
typed as text, one field a line (``name | type | sensitivity | identifier | description``),
so that the form needs no JavaScript. :func:`parse_fields` says which line is wrong and
why, in the page's language; the catalog service then checks the entry as a whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from gateway.catalog.entry import FIELD_NAME, CatalogEntry, CatalogField, FieldType
from sandbox.identifiers import Kind
from sandbox.views.treatments import SensitivityClass


def field_line(item: CatalogField) -> str:
    """``item`` as a line of the fields box (what :func:`parse_fields` reads back)."""
    identifier = item.identifier.value if item.identifier else ""
    return f"{item.name} | {item.type} | {item.sensitivity} | {identifier} | {item.description}"


def parse_fields(
    text: str, gettext: Callable[[str], str], labels: dict[str, SensitivityClass]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The fields typed in ``text``, one a line: ``name | type | sensitivity |
    identifier | description`` (the identifier may be left out or empty; the description
    is the rest of the line). Blank lines and lines starting with ``#`` are skipped.
    Returns (fields, one message per wrong line). ``labels`` maps the sensitivity
    classes' names, in every language, to the class."""
    _ = gettext
    fields: list[dict[str, Any]] = []
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split("|", 4)]
        if len(parts) == 4:
            parts.insert(3, "")
        if len(parts) != 5:
            problems.append(
                _(
                    "Line %(line)s: write name | type | sensitivity | identifier | "
                    "description, separated by |."
                )
                % {"line": number}
            )
            continue
        name, kind, sensitivity, identifier, description = parts
        problem = _field_problem(name, kind, sensitivity, identifier, description, labels, _)
        if problem is None and name in first_seen:
            problem = _("the field %(name)s is already on line %(first)s") % {
                "name": name,
                "first": first_seen[name],
            }
        if problem is None:
            value = {
                "name": name,
                "type": kind,
                "sensitivity": labels[sensitivity.casefold()].value,
                "identifier": identifier or None,
                "description": description,
            }
            try:
                CatalogField.model_validate(value)
            except ValidationError as exc:
                problem = "; ".join(str(error["msg"]) for error in exc.errors())
            else:
                fields.append(value)
                first_seen[name] = number
                continue
        problems.append(_("Line %(line)s: %(problem)s.") % {"line": number, "problem": problem})
    if not fields and not problems:
        problems.append(_("List the dataset's fields, one a line."))
    return fields, problems


def _field_problem(
    name: str,
    kind: str,
    sensitivity: str,
    identifier: str,
    description: str,
    labels: dict[str, SensitivityClass],
    _: Callable[[str], str],
) -> str | None:
    if not FIELD_NAME.match(name):
        return _(
            "a field name has 1 to 63 characters, without spaces, quotes or backslashes: %(name)s"
        ) % {"name": name or "—"}
    if kind not in set(FieldType):
        return _("%(value)s is not a type; the types are %(choices)s") % {
            "value": kind or "—",
            "choices": ", ".join(FieldType),
        }
    if sensitivity.casefold() not in labels:
        return _("%(value)s is not a sensitivity class; the classes are %(choices)s") % {
            "value": sensitivity or "—",
            "choices": ", ".join(SensitivityClass),
        }
    if identifier and identifier not in set(Kind):
        return _("%(value)s is not a kind of identifier; the kinds are %(choices)s") % {
            "value": identifier,
            "choices": ", ".join(Kind),
        }
    if identifier and labels[sensitivity.casefold()] is not SensitivityClass.DIRECT_IDENTIFIER:
        return _("a field holding identifiers is a direct identifier (direct_identifier)")
    if not description:
        return _("the field %(name)s needs a description") % {"name": name}
    return None


def entry_form(entry: CatalogEntry | None) -> dict[str, str]:
    """The values of the entry form for ``entry`` (a new dataset's defaults for None)."""
    if entry is None:
        return {"update_cycle": "monthly", "format": "csv", "share": "conditional"}
    values = entry.model_dump(mode="json", exclude={"fields", "legal_basis"})
    return {
        **values,
        "basis_share": entry.legal_basis.get("share", ""),
        "basis_open": entry.legal_basis.get("open", ""),
        "fields": "\n".join(field_line(item) for item in entry.fields),
    }


def read_entry(
    values: dict[str, str], gettext: Callable[[str], str], labels: dict[str, SensitivityClass]
) -> tuple[dict[str, Any] | None, list[str]]:
    """The entry the form describes, for the service to check; or the wrong lines."""
    fields, problems = parse_fields(values["fields"], gettext, labels)
    if problems:
        return None, problems
    basis = {
        attribute: text
        for attribute in ("share", "open")
        if (text := _text(values[f"basis_{attribute}"]))
    }
    chosen = ("update_cycle", "format", "share", "open", "level")
    return {
        **{name: values[name] for name in chosen},
        "name": values["name"].strip(),
        "description": _text(values["description"]),
        "usage_conditions": _text(values["usage_conditions"]),
        "fields": fields,
        "legal_basis": basis,
    }, []


def _text(value: str) -> str:
    return value.replace("\r\n", "\n").strip()
