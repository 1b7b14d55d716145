"""Statistical disclosure control rules for tables: ``policies/disclosure.yaml``, checked.

One set of rules per security level: the threshold rule (a minimum number of contributors
per cell), the (n, k) dominance rule, the p% rule, and the differential-privacy budget a
grant starts with. Aggregated views apply them to every cell they publish; the export
airlock applies the same rules to tables leaving a sandbox.

A spec may carry rules of its own; they are used only if no rule is looser than the
level's (:meth:`DisclosureRules.looser_than`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

MIN_CELL_FLOOR = 3  # below three, the p% rule (two largest contributors) means nothing


class DisclosurePolicyError(ValueError):
    """The disclosure rules file cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class DisclosureRules:
    min_cell: int
    dominance_n: int
    dominance_k: float  # a fraction: 0.9 is 90%
    p_percent: float  # a fraction: 0.1 is 10%
    epsilon_budget: float

    def looser_than(self, floor: DisclosureRules) -> list[str]:
        """The names of the rules in which ``self`` protects less than ``floor``."""
        looser = []
        if self.min_cell < floor.min_cell:
            looser.append("min_cell")
        if self.dominance_n < floor.dominance_n or self.dominance_k > floor.dominance_k:
            # the n largest hold more of a total the larger n is, so a smaller n, or a
            # larger share k, withholds fewer cells: looser
            looser.append("dominance")
        if self.p_percent < floor.p_percent:
            looser.append("p_percent")
        if self.epsilon_budget > floor.epsilon_budget:
            looser.append("epsilon_budget")
        return looser

    def primary(
        self, contributors: int, magnitudes: Sequence[tuple[float, Sequence[float]]]
    ) -> str | None:
        """Why a cell may not be published (``threshold``, ``dominance`` or ``p_percent``),
        or ``None``. ``magnitudes`` holds, for each published sum, the total of the
        absolute contributions and the largest ones, largest first."""
        if contributors < self.min_cell:
            return "threshold"
        for total, largest in magnitudes:
            if total <= 0:
                continue
            if sum(largest[: self.dominance_n]) > self.dominance_k * total:
                return "dominance"
            first = largest[0] if largest else 0.0
            second = largest[1] if len(largest) > 1 else 0.0
            if total - first - second < self.p_percent * first:
                return "p_percent"
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DisclosurePolicy:
    levels: Mapping[str, DisclosureRules]
    digest: str  # SHA-256 of the file

    def rules(self, level: str) -> DisclosureRules:
        try:
            return self.levels[level]
        except KeyError:
            raise DisclosurePolicyError(f"there is no security level {level!r}") from None


def load_disclosure(path: Path) -> DisclosurePolicy:
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise DisclosurePolicyError(f"{path}: not YAML: {exc}") from None
    levels = data.get("levels") if isinstance(data, dict) else None
    if not isinstance(levels, dict) or not levels:
        raise DisclosurePolicyError(f"{path}: levels must be a mapping of security levels")
    names = [f.name for f in fields(DisclosureRules)]
    parsed: dict[str, DisclosureRules] = {}
    for level, entry in levels.items():
        place = f"{path}: levels.{level}"
        if not isinstance(entry, dict) or set(entry) != set(names):
            raise DisclosurePolicyError(f"{place} must give exactly {', '.join(names)}")
        parsed[str(level)] = _rules(place, entry)
    return DisclosurePolicy(parsed, hashlib.sha256(raw).hexdigest())


def rules_from(place: str, entry: Mapping[str, Any]) -> DisclosureRules:
    """Rules given in a spec (a mapping of the same names as the file's), checked."""
    names = {f.name for f in fields(DisclosureRules)}
    if set(entry) != names:
        raise DisclosurePolicyError(f"{place} must give exactly {', '.join(sorted(names))}")
    return _rules(place, entry)


def _rules(place: str, entry: Mapping[str, Any]) -> DisclosureRules:
    min_cell, n = entry["min_cell"], entry["dominance_n"]
    for name, value in (("min_cell", min_cell), ("dominance_n", n)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise DisclosurePolicyError(f"{place}.{name} must be a whole number")
    if min_cell < MIN_CELL_FLOOR:
        raise DisclosurePolicyError(f"{place}.min_cell is at least {MIN_CELL_FLOOR}")
    if not 1 <= n < min_cell:
        raise DisclosurePolicyError(f"{place}.dominance_n is from 1 to min_cell - 1")
    fractions = {}
    for name in ("dominance_k", "p_percent"):
        value = entry[name]
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1:
            raise DisclosurePolicyError(f"{place}.{name} is a fraction between 0 and 1")
        fractions[name] = float(value)
    budget = entry["epsilon_budget"]
    if (
        not isinstance(budget, int | float)
        or isinstance(budget, bool)
        or not math.isfinite(budget)
        or budget < 0
    ):
        raise DisclosurePolicyError(f"{place}.epsilon_budget is a number of at least 0")
    return DisclosureRules(
        min_cell, n, fractions["dominance_k"], fractions["p_percent"], float(budget)
    )
