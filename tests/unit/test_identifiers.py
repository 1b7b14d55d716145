"""Finding direct identifiers: resident ID numbers, credit codes, cards, phones, e-mails."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.identifiers import Kind, find_identifiers, luhn_valid, scan_values
from sandbox.identifiers.credit_code import check_character as credit_check
from sandbox.identifiers.resident_id import (
    InvalidResidentId,
    birth_date,
    check_character,
    is_resident_id,
    normalize_resident_id,
)

TODAY = date(2026, 11, 25)
GB_EXAMPLE = "11010519491231002X"  # the example number of GB 11643-1999


def luhn_complete(head: str) -> str:
    return next(head + digit for digit in "0123456789" if luhn_valid(head + digit))


def resident_id(head17: str) -> str:
    return head17 + check_character(head17)


CARD = luhn_complete("622202020000000")  # a UnionPay number, 16 digits
CODE = "91370200MA3C5XYL0" + credit_check("91370200MA3C5XYL0")


def test_the_standard_example_and_its_parts() -> None:
    assert normalize_resident_id("110105 19491231 002x", today=TODAY) == GB_EXAMPLE
    assert birth_date(GB_EXAMPLE) == date(1949, 12, 31)
    assert is_resident_id("110105491231002", today=TODAY)  # fifteen digits, before 1999
    assert birth_date("110105491231002") == date(1949, 12, 31)


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("110105194912310021", "check character"),
        (resident_id("11010519990230002"), "not a date of birth"),  # 30 February
        (resident_id("11010520300101002"), "plausible"),  # born in 2030
        (resident_id("11010518800101002"), "plausible"),  # born in 1880
        (resident_id("71010519491231002"), "administrative division"),
        ("11010519491231002", r"18 \(or 15\)"),
        ("1101051949123100XX", "seventeen digits"),
    ],
)
def test_what_is_not_a_resident_id_number_and_why(number: str, reason: str) -> None:
    with pytest.raises(InvalidResidentId, match=reason):
        normalize_resident_id(number, today=TODAY)


@given(
    st.integers(110000, 659999),
    st.dates(date(1920, 1, 1), date(2020, 12, 31)),
    st.integers(0, 999),
    st.integers(0, 16),
    st.integers(1, 9),
)
def test_every_single_digit_changed_is_caught(
    region: int, born: date, sequence: int, position: int, shift: int
) -> None:
    number = resident_id(f"{region}{born:%Y%m%d}{sequence:03d}")
    assert is_resident_id(number, today=TODAY)
    changed = number[:position] + str((int(number[position]) + shift) % 10) + number[position + 1 :]
    assert changed != number and not is_resident_id(changed, today=TODAY)


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_the_luhn_digit_completes_any_number(head: str) -> None:
    whole = luhn_complete(head)
    assert luhn_valid(whole)
    assert not luhn_valid(whole[:-1] + str((int(whole[-1]) + 1) % 10))


def test_identifiers_in_free_text_are_found_with_their_kinds() -> None:
    text = (
        f"张三，身份证{GB_EXAMPLE}，手机 +86 138-0013-8000，邮箱 zhang.san@example.com.cn，"
        f"卡号 {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}，单位代码 {CODE}。"
    )
    found = find_identifiers(text)
    assert [(item.kind, item.text) for item in found] == [
        (Kind.RESIDENT_ID, GB_EXAMPLE),
        (Kind.MOBILE, "+86 138-0013-8000"),
        (Kind.EMAIL, "zhang.san@example.com.cn"),
        (Kind.BANK_CARD, f"{CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}"),
        (Kind.CREDIT_CODE, CODE),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "订单号 20261125000123",  # fourteen digits
        "流水 " + CARD[:-1] + str((int(CARD[-1]) + 1) % 10),  # Luhn fails
        "110105194912310021",  # an ID-shaped number whose check character is wrong
        "2026-11-25 21:00:00, 12.5%, 金额 1380.00元",  # a time, a share, an amount
        "12345678901",  # eleven digits that are no mobile number (12x)
        "ISBN 9787111544937",
    ],
)
def test_numbers_that_are_not_identifiers_are_left_alone(text: str) -> None:
    assert find_identifiers(text) == []


def test_an_id_number_that_also_passes_luhn_counts_once_as_an_id() -> None:
    number = next(
        candidate
        for sequence in range(1000)
        if luhn_valid(candidate := resident_id(f"37020219800101{sequence:03d}"))
        and candidate[17] != "X"
    )
    assert [item.kind for item in find_identifiers(number)] == [Kind.RESIDENT_ID]


def test_a_column_scan_counts_values_holding_each_kind() -> None:
    column = [GB_EXAMPLE, "无", None, "", f"联系 {GB_EXAMPLE} 或 13800138000", "13900139000", "ok"]
    scan = scan_values(column)
    assert scan.values == 5
    assert scan.holding == {Kind.RESIDENT_ID: 2, Kind.MOBILE: 2}
    assert scan.share(Kind.RESIDENT_ID) == pytest.approx(0.4)
    assert (
        scan.kinds[0] in (Kind.RESIDENT_ID, Kind.MOBILE) and scan_values([]).share(Kind.EMAIL) == 0
    )


ID_LIKE = st.one_of(
    # well-formed heads with the right or a wrong check character and any date digits
    st.builds(
        lambda head, date_digits, tail, right: (
            (head + date_digits + tail)
            + (check_character(head + date_digits + tail) if right else "0")
        ),
        st.text("0123456789", min_size=6, max_size=6),
        st.text("0123456789", min_size=8, max_size=8),
        st.text("0123456789", min_size=3, max_size=3),
        st.booleans(),
    ),
    st.text("0123456789X x", min_size=0, max_size=20),  # anything else, lower x, spaces
    st.text(max_size=18),
)


@given(st.lists(ID_LIKE, max_size=60))
def test_the_vectorized_check_answers_as_the_scalar_one(numbers: list[str]) -> None:
    from sandbox.identifiers.resident_id import valid_many

    today = date(2026, 11, 25)
    assert valid_many(numbers, today=today) == [is_resident_id(n, today=today) for n in numbers]
