"""Resident identity card numbers (公民身份号码), GB 11643-1999.

Eighteen characters: the administrative division of first registration (6 digits), the
date of birth (8 digits, YYYYMMDD), a sequence number (3 digits, odd for men, even for
women) and a check character. The check character is ``10X98765432`` indexed by the
weighted sum of the first seventeen digits, weights 2^(17-i) mod 11, taken mod 11.
Numbers issued before 1999 had fifteen digits (a two-digit year, no check character).
"""

from __future__ import annotations

from datetime import date

WEIGHTS = tuple(pow(2, 17 - position, 11) for position in range(17))
CHECK = "10X98765432"
LENGTH = 18
LEGACY_LENGTH = 15
FIRST_YEAR = 1900  # nobody alive was born before; a date earlier is no birth date


class InvalidResidentId(ValueError):
    """Not a resident identity card number; the message says why."""


def check_character(first17: str) -> str:
    """The check character completing the first 17 digits of a number."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, WEIGHTS, strict=True))
    return CHECK[total % 11]


def birth_date(number: str, *, today: date | None = None) -> date:
    """The date of birth in a normalized number; :class:`InvalidResidentId` if it is none."""
    digits = number[6:14] if len(number) == LENGTH else "19" + number[6:12]
    try:
        born = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise InvalidResidentId(f"{digits} is not a date of birth") from None
    if not FIRST_YEAR <= born.year or born > (today or date.today()):
        raise InvalidResidentId(f"{born.isoformat()} is not a plausible date of birth")
    return born


def normalize_resident_id(number: str, *, today: date | None = None) -> str:
    """``number`` in canonical form (no spaces, upper-case X), or :class:`InvalidResidentId`.
    Fifteen-digit numbers are accepted as they are (they have no check character)."""
    text = "".join(number.split()).upper()
    if len(text) == LEGACY_LENGTH:
        if not text.isdigit():
            raise InvalidResidentId("a fifteen-digit number has digits only")
    elif len(text) == LENGTH:
        if not text[:17].isdigit() or text[17] not in "0123456789X":
            raise InvalidResidentId("seventeen digits, then a digit or X")
        expected = check_character(text[:17])
        if text[17] != expected:
            raise InvalidResidentId(
                f"the check character is {text[17]!r}; it should be {expected!r}"
            )
    else:
        raise InvalidResidentId(f"a resident ID number has 18 (or 15) characters, not {len(text)}")
    if text[0] not in "12345689":  # 1x-6x mainland, 8x HK/Macau/Taiwan permits, 9 foreigners
        raise InvalidResidentId(f"{text[:2]} is not an administrative division")
    birth_date(text, today=today)
    return text


def is_resident_id(number: str, *, today: date | None = None) -> bool:
    try:
        normalize_resident_id(number, today=today)
    except InvalidResidentId:
        return False
    return True
