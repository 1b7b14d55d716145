"""The standing terms of operation agreements: ``policies/agreement.yaml``, checked.

Every term is given in both of the agreement's languages (zh-CN, en); a file that lacks
one, or a section, is refused with the place named. The digest goes into each agreement,
so anyone can tell which version of the terms it was made with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LANGUAGES = ("zh-CN", "en")
LISTS = ("applicant_duties", "operator_duties", "confidentiality")


class TermsError(ValueError):
    """The terms file cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class Terms:
    method: dict[str, str]
    applicant_duties: tuple[dict[str, str], ...]
    operator_duties: tuple[dict[str, str], ...]
    confidentiality: tuple[dict[str, str], ...]
    digest: str  # SHA-256 of the file

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": dict(self.method),
            "applicant_duties": [dict(term) for term in self.applicant_duties],
            "operator_duties": [dict(term) for term in self.operator_duties],
            "confidentiality": [dict(term) for term in self.confidentiality],
            "digest": self.digest,
        }


def load_terms(path: Path) -> Terms:
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise TermsError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise TermsError(f"{path}: not a mapping of sections")
    method = _term(path, data.get("method"), "method")
    lists = {}
    for name in LISTS:
        items = data.get(name)
        if not isinstance(items, list) or not items:
            raise TermsError(f"{path}: {name} is a list of terms")
        lists[name] = tuple(_term(path, item, f"{name}[{n}]") for n, item in enumerate(items))
    return Terms(method=method, **lists, digest=hashlib.sha256(raw).hexdigest())


def _term(path: Path, value: Any, place: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TermsError(f"{path}: {place} gives the term in {' and '.join(LANGUAGES)}")
    term = {}
    for language in LANGUAGES:
        text = value.get(language)
        if not isinstance(text, str) or not text.strip():
            raise TermsError(f"{path}: {place} has no {language} text")
        term[language] = text.strip()
    return term
