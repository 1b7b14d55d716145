"""Unified social credit codes (统一社会信用代码), GB 32100-2015.

Eighteen characters from a 31-character alphabet (digits and capital letters without I,
O, Z, S and V): the registering authority (1), the kind of organization (1), the
administrative division (6), the organization code (9) and a check character (1). The
check character makes the weighted sum of all eighteen, with weights 3^i mod 31,
divisible by 31.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
VALUES = {char: value for value, char in enumerate(ALPHABET)}
WEIGHTS = tuple(pow(3, position, 31) for position in range(17))
LENGTH = 18


class InvalidCreditCode(ValueError):
    """Not a unified social credit code; the message says why."""


def check_character(first17: str) -> str:
    """The check character completing the first 17 characters of a code."""
    total = sum(VALUES[char] * weight for char, weight in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def normalize_credit_code(code: str) -> str:
    """``code`` in canonical form (upper case, no spaces), or :class:`InvalidCreditCode`."""
    text = "".join(code.split()).upper()
    if len(text) != LENGTH:
        raise InvalidCreditCode(f"a credit code has {LENGTH} characters, not {len(text)}")
    bad = sorted({char for char in text if char not in VALUES})
    if bad:
        raise InvalidCreditCode(
            f"{''.join(bad)!r} cannot appear in a credit code (letters I, O, Z, S, V never do)"
        )
    if not text[2:8].isdigit():
        raise InvalidCreditCode("characters 3–8 (the administrative division) must be digits")
    expected = check_character(text[:17])
    if text[17] != expected:
        raise InvalidCreditCode(f"the check character is {text[17]!r}; it should be {expected!r}")
    return text


def is_credit_code(code: str) -> bool:
    try:
        normalize_credit_code(code)
    except InvalidCreditCode:
        return False
    return True
