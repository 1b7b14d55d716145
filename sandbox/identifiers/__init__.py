"""Direct identifiers in data: finding them in text and in columns.

Used wherever data is checked for what it must not carry: uploads (a column declared
"ordinary" that holds ID numbers), views and exports. A candidate is found by a pattern
and kept only if it passes its own check (a check character, the Luhn digit, a date of
birth), so a column of order numbers is not taken for bank cards:

- resident identity card numbers, GB 11643 (:mod:`sandbox.identifiers.resident_id`);
- unified social credit codes, GB 32100 (:mod:`sandbox.identifiers.credit_code`);
- mainland mobile numbers (11 digits from 13x to 19x, with or without +86);
- bank card numbers (16 to 19 digits of a card scheme's ranges, with a valid Luhn digit);
- e-mail addresses.

Where spans overlap, the kind listed first wins: an ID number is not also a bank card.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from sandbox.identifiers.credit_code import is_credit_code
from sandbox.identifiers.resident_id import is_resident_id


class Kind(StrEnum):
    RESIDENT_ID = "resident_id"
    CREDIT_CODE = "credit_code"
    BANK_CARD = "bank_card"
    MOBILE = "mobile"
    EMAIL = "email"


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _bank_card(candidate: str) -> bool:
    digits = _digits(candidate)
    # UnionPay 62, Visa 4, Mastercard 2/5, American Express and JCB 3, Discover 6.
    return 16 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


def _mobile(candidate: str) -> bool:
    return len(_digits(candidate).removeprefix("86")) == 11


_NOT_BEFORE = r"(?<![0-9A-Za-z])"
_NOT_AFTER = r"(?![0-9A-Za-z])"
_CODE_CHAR = "[0-9A-HJ-NP-RTUWXY]"
PATTERNS: tuple[tuple[Kind, re.Pattern[str], Callable[[str], bool]], ...] = (
    (
        Kind.RESIDENT_ID,
        re.compile(rf"{_NOT_BEFORE}(?:\d{{17}}[\dXx]|\d{{15}}){_NOT_AFTER}"),
        is_resident_id,
    ),
    (
        Kind.CREDIT_CODE,
        re.compile(rf"{_NOT_BEFORE}{_CODE_CHAR}{{2}}\d{{6}}{_CODE_CHAR}{{10}}{_NOT_AFTER}"),
        is_credit_code,
    ),
    (
        Kind.BANK_CARD,
        re.compile(rf"{_NOT_BEFORE}\d{{4}}(?:[ -]?\d{{4}}){{3}}(?:[ -]?\d{{1,3}})?{_NOT_AFTER}"),
        _bank_card,
    ),
    (
        Kind.MOBILE,
        re.compile(r"(?<![0-9])(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?![0-9])"),
        _mobile,
    ),
    (
        Kind.EMAIL,
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
        lambda _: True,
    ),
)


@dataclass(frozen=True)
class Found:
    kind: Kind
    start: int
    end: int
    text: str


def find_identifiers(text: str) -> list[Found]:
    """Every identifier in ``text``, in order of position."""
    found: list[Found] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern, valid in PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < stop and begin < end for begin, stop in taken):
                continue
            if valid(match.group()):
                found.append(Found(kind, start, end, match.group()))
                taken.append((start, end))
    return sorted(found, key=lambda item: item.start)


@dataclass
class ColumnScan:
    """What a column's values hold: how many values were looked at, and how many of them
    held an identifier of each kind (a value counts once per kind)."""

    values: int = 0
    holding: Counter[Kind] = field(default_factory=Counter)

    def share(self, kind: Kind) -> float:
        return self.holding[kind] / self.values if self.values else 0.0

    @property
    def kinds(self) -> list[Kind]:
        """The kinds found at all, most frequent first."""
        return [kind for kind, _ in self.holding.most_common()]


def scan_values(values: Iterable[object]) -> ColumnScan:
    """Look for identifiers in each value (``None`` and empty values are not counted)."""
    scan = ColumnScan()
    for value in values:
        if value is None:
            continue
        text = str(value)
        if not text.strip():
            continue
        scan.values += 1
        for kind in {item.kind for item in find_identifiers(text)}:
            scan.holding[kind] += 1
    return scan
