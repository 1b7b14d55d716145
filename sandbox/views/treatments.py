"""Which treatments a view may apply to a field: ``policies/treatments.yaml``, checked.

The four sensitivity classes are fixed (the view builder treats each differently); the
security levels and what each class may undergo at each level are data. Loading refuses
a file that leaves any class and level undecided, names an unknown treatment, class or
level, or breaks a rule that holds whatever the file says:

- a direct identifier is never kept as it is (R13: nothing from which raw data can be
  restored);
- a level that is not ``record_level`` lists only ``drop`` and ``aggregate_only``.

A refused file raises :class:`TreatmentPolicyError` naming the file and the place; the
caller keeps the policy already in force.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from sandbox.identifiers import Kind


class SensitivityClass(StrEnum):
    DIRECT_IDENTIFIER = "direct_identifier"
    QUASI_IDENTIFIER = "quasi_identifier"
    SENSITIVE_ATTRIBUTE = "sensitive_attribute"
    ORDINARY = "ordinary"


class Treatment(StrEnum):
    KEEP = "keep"
    DROP = "drop"
    MASK = "mask"
    PSEUDONYMIZE = "pseudonymize"
    GENERALIZE = "generalize"
    TOP_BOTTOM_CODE = "top_bottom_code"
    SUPPRESS = "suppress"
    AGGREGATE_ONLY = "aggregate_only"


AGGREGATE_LEVEL_TREATMENTS = frozenset({Treatment.DROP, Treatment.AGGREGATE_ONLY})
AGGREGABLE = frozenset(
    {Treatment.KEEP, Treatment.GENERALIZE, Treatment.TOP_BOTTOM_CODE, Treatment.AGGREGATE_ONLY}
)
LOCALES = ("zh-CN", "en")


class TreatmentPolicyError(ValueError):
    """The treatments file cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class Level:
    name: str
    labels: Mapping[str, str]  # locale -> label
    record_level: bool


@dataclass(frozen=True)
class TreatmentPolicy:
    levels: Mapping[str, Level]
    labels: Mapping[SensitivityClass, Mapping[str, str]]
    allowed: Mapping[tuple[SensitivityClass, str], frozenset[Treatment]]
    detected_as: Mapping[Kind, SensitivityClass]
    digest: str  # SHA-256 of the file, for the audit record of a load

    def refusal(self, cls: SensitivityClass, level: str, treatment: Treatment) -> str | None:
        """Why ``treatment`` may not be applied to a ``cls`` field at ``level``; ``None``
        if it may."""
        if level not in self.levels:
            return f"there is no security level {level!r}"
        allowed = self.allowed[(cls, level)]
        if treatment in allowed:
            return None
        listed = ", ".join(sorted(allowed)) or "nothing"
        return f"a {cls} field at level {level} may undergo {listed}, not {treatment}"

    def allows(self, cls: SensitivityClass, level: str, treatment: Treatment) -> bool:
        return self.refusal(cls, level, treatment) is None

    def aggregate_refusal(self, cls: SensitivityClass, level: str) -> str | None:
        """Why a ``cls`` field at ``level`` may not be grouped by or summed in an
        aggregated view; ``None`` if it may. Direct identifiers never may; other fields
        may when the level lets them be kept, generalized, coded or aggregated."""
        if level not in self.levels:
            return f"there is no security level {level!r}"
        if cls is SensitivityClass.DIRECT_IDENTIFIER:
            return "a direct identifier never appears in an aggregated view"
        if self.allowed[(cls, level)] & AGGREGABLE:
            return None
        return f"a {cls} field at level {level} may only be dropped"

    def class_of(self, kind: Kind) -> SensitivityClass:
        """The class a column found to hold identifiers of ``kind`` belongs to at least."""
        return self.detected_as.get(kind, SensitivityClass.DIRECT_IDENTIFIER)


def load_treatments(path: Path) -> TreatmentPolicy:
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise TreatmentPolicyError(f"{path}: not YAML: {exc}") from None
    where = _Where(path)
    document = where.mapping(data, "the document")
    levels = _levels(where, document.get("levels"))
    labels, detected = _classes(where, document.get("classes"))
    allowed: dict[tuple[SensitivityClass, str], frozenset[Treatment]] = {}
    table = where.mapping(document.get("allowed"), "allowed")
    unknown = sorted(set(table) - set(SensitivityClass))
    if unknown:
        raise where.error(f"allowed: unknown classes {unknown}")
    for cls in SensitivityClass:
        row = where.mapping(table.get(cls.value), f"allowed.{cls}")
        extra = sorted(set(row) - set(levels))
        if extra:
            raise where.error(f"allowed.{cls}: unknown levels {extra}")
        for level in levels.values():
            place = f"allowed.{cls}.{level.name}"
            if level.name not in row:
                raise where.error(f"{place} is missing: every class needs every level")
            treatments = _treatments(where, row[level.name], place)
            if cls is SensitivityClass.DIRECT_IDENTIFIER and Treatment.KEEP in treatments:
                raise where.error(f"{place}: a direct identifier is never kept as it is")
            if not level.record_level and not treatments <= AGGREGATE_LEVEL_TREATMENTS:
                raise where.error(
                    f"{place}: level {level.name} has no record-level views; "
                    "only drop and aggregate_only may be listed"
                )
            allowed[(cls, level.name)] = treatments
    return TreatmentPolicy(levels, labels, allowed, detected, hashlib.sha256(raw).hexdigest())


class _Where:
    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, message: str) -> TreatmentPolicyError:
        return TreatmentPolicyError(f"{self.path}: {message}")

    def mapping(self, value: Any, place: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise self.error(f"{place} must be a mapping")
        return value


def _labels(where: _Where, entry: dict[str, Any], place: str) -> dict[str, str]:
    labels = {locale: entry.get(locale) for locale in LOCALES}
    missing = [locale for locale, label in labels.items() if not isinstance(label, str)]
    if missing:
        raise where.error(f"{place} needs a label in {', '.join(missing)}")
    return {locale: str(label) for locale, label in labels.items()}


def _levels(where: _Where, value: Any) -> dict[str, Level]:
    levels: dict[str, Level] = {}
    for name, entry in where.mapping(value, "levels").items():
        entry = where.mapping(entry, f"levels.{name}")
        record_level = entry.get("record_level", True)
        if not isinstance(record_level, bool):
            raise where.error(f"levels.{name}.record_level must be true or false")
        levels[name] = Level(name, _labels(where, entry, f"levels.{name}"), record_level)
    if not levels:
        raise where.error("levels: at least one security level")
    return levels


def _classes(
    where: _Where, value: Any
) -> tuple[dict[SensitivityClass, dict[str, str]], dict[Kind, SensitivityClass]]:
    table = where.mapping(value, "classes")
    if set(table) != set(SensitivityClass):
        expected = sorted(SensitivityClass)
        raise where.error(f"classes must be exactly {expected}, not {sorted(table)}")
    labels: dict[SensitivityClass, dict[str, str]] = {}
    detected: dict[Kind, SensitivityClass] = {}
    for cls in SensitivityClass:
        entry = where.mapping(table[cls.value], f"classes.{cls}")
        labels[cls] = _labels(where, entry, f"classes.{cls}")
        kinds = entry.get("detected_as", [])
        if not isinstance(kinds, list):
            raise where.error(f"classes.{cls}.detected_as must be a list")
        for kind in kinds:
            if kind not in set(Kind):
                raise where.error(f"classes.{cls}.detected_as: unknown identifier {kind!r}")
            detected[Kind(kind)] = cls
    return labels, detected


def _treatments(where: _Where, value: Any, place: str) -> frozenset[Treatment]:
    if not isinstance(value, list):
        raise where.error(f"{place} must be a list of treatments")
    unknown = sorted(str(item) for item in value if item not in set(Treatment))
    if unknown:
        raise where.error(f"{place}: unknown treatments {unknown}")
    return frozenset(Treatment(item) for item in value)
