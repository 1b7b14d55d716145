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


def valid_many(numbers: list[str], *, today: date | None = None) -> list[bool]:
    """:func:`is_resident_id` of each number, vectorized for the eighteen-character
    numbers that are already in canonical form (the common case in a table); any other is
    given to :func:`is_resident_id` one by one. The same answers, far faster."""
    import numpy as np

    when = today or date.today()
    answers = [False] * len(numbers)
    plain: list[int] = []
    for i, number in enumerate(numbers):
        if len(number) == LENGTH and number.isascii():
            plain.append(i)
        else:
            answers[i] = is_resident_id(number, today=when)
    if not plain:
        return answers
    everything = len(plain) == len(numbers)
    text = "".join(numbers) if everything else "".join(numbers[i] for i in plain)
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    chars = raw.reshape(-1, LENGTH)
    digits = chars[:, :17].astype(np.int64) - ord("0")
    last = chars[:, 17]
    ok = ((digits >= 0) & (digits <= 9)).all(axis=1)
    ok &= ((last >= ord("0")) & (last <= ord("9"))) | (last == ord("X"))
    total = (np.where(ok[:, None], digits, 0) * np.array(WEIGHTS, dtype=np.int64)).sum(axis=1)
    ok &= np.frombuffer(CHECK.encode(), dtype=np.uint8)[total % 11] == last
    ok &= np.isin(chars[:, 0], np.frombuffer(b"12345689", dtype=np.uint8))
    year = digits[:, 6] * 1000 + digits[:, 7] * 100 + digits[:, 8] * 10 + digits[:, 9]
    month = digits[:, 10] * 10 + digits[:, 11]
    day = digits[:, 12] * 10 + digits[:, 13]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    lengths = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
    month_days = lengths[np.clip(month, 0, 12)] + ((month == 2) & leap)
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    ok &= year >= FIRST_YEAR
    stamp = year * 10_000 + month * 100 + day
    ok &= stamp <= when.year * 10_000 + when.month * 100 + when.day
    if everything:
        return [bool(valid) for valid in ok.tolist()]
    for position, valid in zip(plain, ok.tolist(), strict=True):
        answers[position] = bool(valid)
    return answers
