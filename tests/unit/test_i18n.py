"""The console's languages: every message has its Chinese translation, with the same
placeholders, and the catalogue keeps nothing that is no longer used."""

from __future__ import annotations

import re

from babel.messages.pofile import read_po

from gateway.web.catalogue import extract_messages
from gateway.web.i18n import DEFAULT_LOCALE, catalogue_path, pick_locale, translations

PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def catalogue() -> dict[str, str]:
    path = catalogue_path("zh-CN")
    assert path is not None
    with path.open("rb") as source:
        return {m.id: m.string for m in read_po(source, locale="zh_CN") if m.id}  # type: ignore[misc]


def test_every_message_in_use_has_a_chinese_translation() -> None:
    used = extract_messages()
    translated = catalogue()
    assert len(used) > 50  # the extraction saw the templates and the code
    missing = {m: where for m, where in used.items() if not translated.get(m)}
    assert missing == {}, "run `make messages` and translate these in messages.po"
    assert sorted(set(translated) - set(used)) == []  # obsolete: `make messages` drops them


def test_translations_keep_the_placeholders_and_are_chinese() -> None:
    for message, translation in catalogue().items():
        assert sorted(PLACEHOLDER.findall(translation)) == sorted(PLACEHOLDER.findall(message))
        assert re.search(r"[\u4e00-\u9fff]", translation), message


def test_chinese_is_the_default_and_unknown_choices_fall_back_to_it() -> None:
    assert DEFAULT_LOCALE == "zh-CN"
    assert pick_locale(None) == pick_locale("fr") == pick_locale("zh-CN") == "zh-CN"
    assert pick_locale("en") == "en"
    assert translations("zh-CN").gettext("Sign in") == "登录"
    assert translations("en").gettext("Sign in") == "Sign in"
