"""The thresholds of the abnormal-operation alerts: ``policies/alerts.yaml``, checked.

Every rule of :class:`Rule` must be in the file, with exactly the settings it takes; a
file that cannot be used raises :class:`AlertPolicyError` naming the file and the place,
and the gateway does not start with it (an alert rule silently off is worse than none).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MICROS = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Rule(enum.StrEnum):
    DENIED_BURST = "denied_burst"
    ORGANIZATION_DENIED_BURST = "organization_denied_burst"
    SIGN_IN_FAILURES = "sign_in_failures"
    CLIENT_FAILURES = "client_failures"
    EXPORT_REFUSALS = "export_refusals"
    DOWNLOAD_BURST = "download_burst"
    OFF_HOURS = "off_hours"
    SUSPENDED_GRANT_USE = "suspended_grant_use"
    BUDGET_LOW = "budget_low"


BURSTS = tuple(rule for rule in Rule if rule is not Rule.BUDGET_LOW)


class AlertPolicyError(ValueError):
    """The alerts policy cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class BurstRule:
    rule: Rule
    severity: Severity
    threshold: int
    window: int  # µs
    high_at: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class BudgetRule:
    severity: Severity
    below: float
    high_below: float
    enabled: bool = True


@dataclass(frozen=True)
class AlertPolicy:
    bursts: Mapping[Rule, BurstRule]
    budget: BudgetRule
    work_start: int  # minutes after midnight, China time
    work_end: int
    digest: str

    @property
    def hours(self) -> str:
        return f"{_clock(self.work_start)}–{_clock(self.work_end)}"


_DURATION = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")
_TIME = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")


def load_alert_policy(path: Path) -> AlertPolicy:
    """``policies/alerts.yaml``, checked; :class:`AlertPolicyError` says what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AlertPolicyError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise AlertPolicyError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"working_hours", "rules"}:
        raise AlertPolicyError(f"{path}: a mapping of working_hours and rules")
    hours, rules = data["working_hours"], data["rules"]
    if not isinstance(hours, dict) or set(hours) != {"start", "end"}:
        raise AlertPolicyError(f"{path}: working_hours has a start and an end")
    start, end = (_minutes(f"{path}: working_hours.{k}", hours[k]) for k in ("start", "end"))
    if start >= end:
        raise AlertPolicyError(f"{path}: working_hours.start must be before its end")
    if not isinstance(rules, dict):
        raise AlertPolicyError(f"{path}: rules must be a mapping of rules")
    missing = sorted(set(Rule) - set(rules))
    unknown = sorted(str(name) for name in set(rules) - set(Rule))
    if missing or unknown:
        raise AlertPolicyError(
            f"{path}: rules must be exactly {', '.join(Rule)} "
            f"(missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'})"
        )
    bursts: dict[Rule, BurstRule] = {
        rule: _burst_rule(f"{path}: rules.{rule}", rule, rules[rule]) for rule in BURSTS
    }
    budget = _budget_rule(f"{path}: rules.{Rule.BUDGET_LOW}", rules[Rule.BUDGET_LOW])
    return AlertPolicy(bursts, budget, start, end, hashlib.sha256(raw).hexdigest())


def _fields(place: str, entry: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise AlertPolicyError(f"{place} must be a mapping")
    unknown = sorted(set(entry) - required - optional)
    missing = sorted(required - set(entry))
    if unknown or missing:
        raise AlertPolicyError(
            f"{place}: unknown {', '.join(unknown) or 'nothing'}; "
            f"missing {', '.join(missing) or 'nothing'}"
        )
    if not isinstance(entry.get("enabled", True), bool):
        raise AlertPolicyError(f"{place}.enabled must be true or false")
    if entry["severity"] not in set(Severity):
        raise AlertPolicyError(f"{place}.severity is one of {', '.join(Severity)}")
    return entry


def _burst_rule(place: str, rule: Rule, entry: Any) -> BurstRule:
    found = _fields(place, entry, {"severity", "threshold", "window"}, {"high_at", "enabled"})
    threshold, high_at = found["threshold"], found.get("high_at")
    for name, value in (("threshold", threshold), ("high_at", high_at)):
        if value is None and name == "high_at":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100_000:
            raise AlertPolicyError(f"{place}.{name} must be a whole number from 1 to 100000")
    if high_at is not None and high_at < threshold:
        raise AlertPolicyError(f"{place}.high_at must be at least the threshold")
    window = _DURATION.match(str(found["window"]))
    if window is None:
        raise AlertPolicyError(f"{place}.window is a number and s, m, h or d, such as 10m")
    micros = int(window.group(1)) * MICROS[window.group(2)]
    severity = Severity(found["severity"])
    return BurstRule(rule, severity, threshold, micros, high_at, found.get("enabled", True))


def _budget_rule(place: str, entry: Any) -> BudgetRule:
    found = _fields(place, entry, {"severity", "below", "high_below"}, {"enabled"})
    below, high_below = found["below"], found["high_below"]
    numbers = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (below, high_below)
    )
    if not numbers or not 0 < high_below < below <= 1:
        raise AlertPolicyError(f"{place}: 0 < high_below < below <= 1 (parts of the budget)")
    severity = Severity(found["severity"])
    return BudgetRule(severity, float(below), float(high_below), found.get("enabled", True))


def _minutes(place: str, value: Any) -> int:
    found = _TIME.match(value) if isinstance(value, str) else None
    if found is None or (found.group(1) == "24" and found.group(2) != "00"):
        raise AlertPolicyError(f'{place} is a time of day in quotes, such as "08:00"')
    return int(found.group(1)) * 60 + int(found.group(2))


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
