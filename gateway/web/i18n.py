"""The console's languages: zh-CN (the default) and en.

Messages are written in English in the templates and the code (``_("Sign in")``) and
translated through the gettext catalogue ``locales/zh_CN/LC_MESSAGES/messages.po``,
compiled in memory at start-up (no build step, nothing generated in the repository). A
test extracts every message from the templates and the code and fails when one has no
Chinese translation, or when the catalogue keeps one nobody uses.
"""

from __future__ import annotations

import gettext
import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES = {"zh-CN": "zh_CN", "en": None}  # None: the messages as written
DEFAULT_LOCALE = "zh-CN"
LOCALE_COOKIE = "sbx_lang"
CATALOGUES = Path(__file__).resolve().parent / "locales"


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "translate later"
    """Marks a message for the catalogue; templates translate it when they show it."""
    return message


def pick_locale(cookie: str | None) -> str:
    return cookie if cookie in LOCALES else DEFAULT_LOCALE


def catalogue_path(locale: str) -> Path | None:
    folder = LOCALES[locale]
    return None if folder is None else CATALOGUES / folder / "LC_MESSAGES" / "messages.po"


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The compiled translations of ``locale`` (cached: catalogues change with releases)."""
    path = catalogue_path(locale)
    if path is None:
        return gettext.NullTranslations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=LOCALES[locale])
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(fp=compiled)
