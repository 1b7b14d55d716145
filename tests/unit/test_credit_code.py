"""Unified social credit codes (GB 32100-2015)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.identifiers.credit_code import (
    ALPHABET,
    InvalidCreditCode,
    check_character,
    is_credit_code,
    normalize_credit_code,
)

# Codes of well-known companies, as printed on their business licences.
PUBLISHED = ["91440300708461136T", "91110000600037341L", "91350100M000100Y43"]


@pytest.mark.parametrize("code", PUBLISHED)
def test_published_codes_are_valid(code: str) -> None:
    assert normalize_credit_code(code) == code
    assert normalize_credit_code(f" {code.lower()[:9]} {code[9:]} ") == code


def test_the_weights_are_powers_of_three_modulo_31() -> None:
    # Written out in the standard: 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28.
    assert check_character("00000000000000001") == ALPHABET[(31 - 28) % 31]
    assert check_character("10000000000000000") == ALPHABET[30]


first17 = st.text(alphabet=ALPHABET, min_size=17, max_size=17).map(
    lambda text: text[:2] + "".join(c if c.isdigit() else "1" for c in text[2:8]) + text[8:]
)


@given(first17, st.data())
def test_any_single_changed_character_is_caught(head: str, data: st.DataObject) -> None:
    code = head + check_character(head)
    assert is_credit_code(code)
    position = data.draw(st.integers(0, 17))
    other = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != code[position]))
    changed = code[:position] + other + code[position + 1 :]
    assert not is_credit_code(changed)


@given(first17, st.integers(0, 15))
def test_swapping_two_neighbours_is_caught_when_they_differ(head: str, position: int) -> None:
    code = head + check_character(head)
    swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
    assert is_credit_code(swapped) == (swapped == code)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("9144030070846113", "18 characters, not 16"),
        ("91440300708461136TX", "18 characters, not 19"),
        ("91440300708461I36T", "'I' cannot appear"),
        ("914403O0708461136T", "'O' cannot appear"),
        ("9144A300708461136T", "administrative division"),
        ("91440300708461136A", "should be 'T'"),
        ("", "not 0"),
    ],
)
def test_invalid_codes_say_why(code: str, message: str) -> None:
    with pytest.raises(InvalidCreditCode, match=message):
        normalize_credit_code(code)
