"""The console's message catalogue: extraction from templates and code, and its upkeep.

``python -m gateway.web.catalogue`` (``make messages``) brings the zh-CN catalogue in
line with the messages in use, keeping every translation, and lists what needs one; a
test fails while any message lacks a translation.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.pofile import read_po

from gateway.web.i18n import LOCALES, catalogue_path

KEYWORDS = {"_": None, "gettext": None, "N_": None}
METHODS = [("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
OPTIONS = {"templates/**.html": {"trimmed": "true"}}


def extract_messages() -> dict[str, list[str]]:
    """Every message the console can show: ``{message: [where it is used]}``."""
    from babel.messages.extract import extract_from_dir

    web = Path(__file__).resolve().parent
    found: dict[str, list[str]] = {}
    for filename, line, message, _comments, _context in extract_from_dir(
        str(web), method_map=METHODS, options_map=OPTIONS, keywords=KEYWORDS
    ):
        if isinstance(message, str):
            found.setdefault(message, []).append(f"{filename}:{line}")
    return found


def update_catalogue(locale: str = "zh-CN") -> tuple[list[str], list[str]]:
    """Bring ``locale``'s catalogue in line with the messages in use, keeping every
    translation: returns (messages added without translation, obsolete messages dropped)."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import write_po

    path = catalogue_path(locale)
    if path is None:
        return [], []
    old = read_po(path.open("rb"), locale=LOCALES[locale]) if path.exists() else None
    used = extract_messages()
    catalog = Catalog(locale=LOCALES[locale], project="sbx", header_comment="# sbx console")
    catalog.fuzzy = False
    added = []
    for message, places in sorted(used.items()):
        known = old.get(message) if old is not None else None
        translation = known.string if known is not None else ""
        if not translation:
            added.append(message)
        catalog.add(message, translation, locations=[_location(p) for p in places])
    dropped = sorted(str(m.id) for m in (old or []) if m.id and m.id not in used)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as target:
        write_po(target, catalog, width=100, sort_output=True, omit_header=False)
    return added, dropped


def _location(place: str) -> tuple[str, int]:
    filename, line = place.rsplit(":", 1)
    return filename, int(line)


if __name__ == "__main__":
    added, dropped = update_catalogue()
    print(f"{len(added)} messages to translate, {len(dropped)} obsolete dropped")
    for message in added:
        print(f"  untranslated: {message}")
