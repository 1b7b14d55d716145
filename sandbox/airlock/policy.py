"""The airlock's thresholds: ``policies/airlock.yaml``, checked, merged per security level
with the table rules of ``policies/disclosure.yaml`` (the same rules as the aggregated
views, :class:`sandbox.views.disclosure.DisclosureRules`).

The file has ``defaults`` and ``levels``; a level gives only what differs from the
defaults, and after merging every level must give every rule. A file that cannot be used
raises :class:`AirlockPolicyError` naming the file and the place; the caller keeps the
policy already in force.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from sandbox.identifiers import Kind
from sandbox.views.disclosure import DisclosurePolicy, DisclosureRules

_EXTENSION = re.compile(r"[a-z0-9]{1,10}")
_POSITIVE_INTEGERS = (
    "max_file_bytes",
    "max_export_bytes",
    "max_parse_bytes",
    "archive_depth",
    "archive_members",
    "archive_bytes",
    "encoded_depth",
    "row_match_rows",
    "row_sample",
    "aggregate_rows",
    "min_degrees_of_freedom",
)


class AirlockPolicyError(ValueError):
    """The airlock policy file cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class AirlockRules:
    """Everything the checks need to know about one security level (``policies/airlock.yaml``
    explains each rule)."""

    level: str
    disclosure: DisclosureRules
    extensions: frozenset[str]
    max_file_bytes: int
    max_export_bytes: int
    max_parse_bytes: int
    archive_depth: int
    archive_members: int
    archive_expansion: float
    archive_bytes: int
    encoded_min_chars: int
    encoded_depth: int
    row_match_rows: int
    row_sample: int
    subset_columns: int
    aggregate_rows: int
    min_degrees_of_freedom: int
    zero_cells: bool
    full_cells: bool
    identifier_kinds: frozenset[Kind]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, frozenset):
                value = sorted(str(v) for v in value)
            elif isinstance(value, DisclosureRules):
                value = value.to_dict()
            data[item.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AirlockRules:
        entry = dict(data)
        level = str(entry.pop("level"))
        disclosure = DisclosureRules(**entry.pop("disclosure"))
        return cls(level, disclosure, **_checked(f"rules of {level}", entry))


RULE_NAMES = tuple(f.name for f in fields(AirlockRules) if f.name not in ("level", "disclosure"))


@dataclass(frozen=True)
class AirlockPolicy:
    levels: Mapping[str, AirlockRules]
    digest: str  # SHA-256 of the airlock file and of the disclosure file, together

    def rules(self, level: str) -> AirlockRules:
        try:
            return self.levels[level]
        except KeyError:
            raise AirlockPolicyError(f"there is no security level {level!r}") from None


def load_airlock(path: Path, disclosure: DisclosurePolicy) -> AirlockPolicy:
    """The policy at ``path``, each level merged with ``disclosure``'s rules for it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AirlockPolicyError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise AirlockPolicyError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"defaults", "levels"}:
        raise AirlockPolicyError(f"{path}: a mapping with only defaults and levels")
    defaults = data.get("defaults") or {}
    levels = data.get("levels")
    if not isinstance(defaults, dict):
        raise AirlockPolicyError(f"{path}: defaults must be a mapping of rules")
    if not isinstance(levels, dict) or not levels:
        raise AirlockPolicyError(f"{path}: levels must be a mapping of security levels")
    unknown = sorted(set(defaults) - set(RULE_NAMES))
    if unknown:
        raise AirlockPolicyError(f"{path}: defaults: unknown rules {', '.join(unknown)}")
    missing_levels = sorted(set(disclosure.levels) - set(map(str, levels)))
    extra_levels = sorted(set(map(str, levels)) - set(disclosure.levels))
    if missing_levels or extra_levels:
        raise AirlockPolicyError(
            f"{path}: levels must be those of the disclosure rules "
            f"(missing: {', '.join(missing_levels) or 'none'}; "
            f"unknown: {', '.join(extra_levels) or 'none'})"
        )
    parsed: dict[str, AirlockRules] = {}
    for level, entry in levels.items():
        place = f"{path}: levels.{level}"
        if not isinstance(entry, dict):
            raise AirlockPolicyError(f"{place} must be a mapping of rules ({{}} for none)")
        unknown = sorted(set(entry) - set(RULE_NAMES))
        if unknown:
            raise AirlockPolicyError(f"{place}: unknown rules {', '.join(unknown)}")
        merged = {**defaults, **entry}
        missing = [name for name in RULE_NAMES if name not in merged]
        if missing:
            raise AirlockPolicyError(f"{place}: no value for {', '.join(missing)}")
        parsed[str(level)] = AirlockRules(
            str(level), disclosure.rules(str(level)), **_checked(place, merged)
        )
    digest = hashlib.sha256(
        hashlib.sha256(raw).hexdigest().encode() + b"\n" + disclosure.digest.encode()
    ).hexdigest()
    return AirlockPolicy(parsed, digest)


def _checked(place: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The rules of ``entry`` as :class:`AirlockRules` holds them."""
    out: dict[str, Any] = {}
    for name in _POSITIVE_INTEGERS:
        value = entry[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise AirlockPolicyError(f"{place}.{name} must be a whole number of at least 1")
        out[name] = value
    for name in ("subset_columns", "encoded_min_chars"):
        value = entry[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            raise AirlockPolicyError(f"{place}.{name} must be a whole number of at least 2")
        out[name] = value
    if out["encoded_min_chars"] < 16:
        raise AirlockPolicyError(f"{place}.encoded_min_chars must be at least 16")
    expansion = entry["archive_expansion"]
    if not isinstance(expansion, int | float) or isinstance(expansion, bool) or expansion < 1:
        raise AirlockPolicyError(f"{place}.archive_expansion must be a number of at least 1")
    out["archive_expansion"] = float(expansion)
    for name in ("zero_cells", "full_cells"):
        if not isinstance(entry[name], bool):
            raise AirlockPolicyError(f"{place}.{name} must be true or false")
        out[name] = entry[name]
    if out["max_file_bytes"] > out["max_export_bytes"]:
        raise AirlockPolicyError(f"{place}.max_file_bytes is larger than max_export_bytes")
    extensions = entry["extensions"]
    if (
        not isinstance(extensions, list | tuple | frozenset | set)
        or not extensions
        or not all(isinstance(e, str) and _EXTENSION.fullmatch(e) for e in extensions)
    ):
        raise AirlockPolicyError(
            f"{place}.extensions must be a list of lower-case file endings without the dot"
        )
    out["extensions"] = frozenset(extensions)
    kinds = entry["identifier_kinds"]
    if not isinstance(kinds, list | tuple | frozenset | set):
        raise AirlockPolicyError(f"{place}.identifier_kinds must be a list")
    try:
        out["identifier_kinds"] = frozenset(Kind(str(kind)) for kind in kinds)
    except ValueError:
        known = ", ".join(kind.value for kind in Kind)
        raise AirlockPolicyError(f"{place}.identifier_kinds are among {known}") from None
    return out
