"""Readback of digits, numbers, amounts, dates and minutes as prompt-id sequences."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sounds import readback
from sounds.catalog import Catalog

# The spoken text of a sequence, so expectations read like Mandarin.
TEXTS = Catalog.shipped().texts


def say(ids: list[str]) -> str:
    return "".join(TEXTS[i] for i in ids)


def test_digits_reads_one_as_yao() -> None:
    assert say(readback.digits("13900")) == "幺三九零零"
    assert say(readback.digits("13900", yao=False)) == "一三九零零"
    assert readback.digits("") == []


@pytest.mark.parametrize("value", ["12a", "1 2", "-1", "１２", "٣"])
def test_digits_rejects_non_ascii_digits(value: str) -> None:
    with pytest.raises(ValueError, match="0-9"):
        readback.digits(value)


@pytest.mark.parametrize(
    ("n", "spoken"),
    [
        (0, "零"),
        (2, "二"),
        (10, "十"),
        (12, "十二"),
        (20, "二十"),
        (105, "一百零五"),
        (110, "一百一十"),
        (200, "两百"),
        (1200, "一千二百"),
        (2000, "两千"),
        (20000, "两万"),
        (22222, "两万两千二百二十二"),
        (10001, "一万零一"),
        (200000000, "两亿"),
        (120000000, "一亿两千万"),
        (-5, "负五"),
        (-200, "负两百"),
    ],
)
def test_number(n: int, spoken: str) -> None:
    assert say(readback.number(n)) == spoken


def test_number_limits() -> None:
    assert say(readback.number(10**16 - 1)).startswith("九千九百九十九万")
    with pytest.raises(ValueError, match="16 digits"):
        readback.number(10**16)
    with pytest.raises(TypeError):
        readback.number(True)


@pytest.mark.parametrize(
    ("value", "spoken"),
    [
        ("123.45", "一百二十三元四角五分"),
        (Decimal("0.5"), "五角"),
        ("10", "十元"),
        ("10.05", "十元零五分"),
        ("0.05", "五分"),
        ("100.50", "一百元五角"),
        ("0", "零元"),
        ("-0.00", "零元"),
        ("2", "两元"),
        ("2.22", "两元二角二分"),
        ("-3.2", "负三元二角"),
        ("1.500", "一元五角"),  # trailing zeros are still whole fen
    ],
)
def test_amount(value: Decimal | str, spoken: str) -> None:
    assert say(readback.amount(value)) == spoken


@pytest.mark.parametrize("value", ["1.234", "0.001", "abc", "NaN", "Infinity", ""])
def test_amount_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="amount"):
        readback.amount(value)


def test_date() -> None:
    assert say(readback.date("2026-11-27")) == "二零二六年十一月二十七日"
    assert say(readback.date(datetime.date(2021, 2, 1))) == "二零二一年二月一日"
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        readback.date("27/11/2026")


def test_minutes() -> None:
    assert say(readback.minutes(5)) == "五分钟"
    assert say(readback.minutes(2)) == "两分钟"
    assert say(readback.minutes(30)) == "三十分钟"
    with pytest.raises(ValueError, match="non-negative"):
        readback.minutes(-1)


@given(st.text(alphabet="0123456789"), st.booleans())
def test_digits_one_prompt_per_digit(value: str, yao: bool) -> None:
    ids = readback.digits(value, yao=yao)
    assert len(ids) == len(value)
    assert set(ids) <= readback.ALL_READBACK_IDS


@given(st.integers(min_value=-(10**16) + 1, max_value=10**16 - 1))
def test_number_uses_known_ids_and_round_trips(n: int) -> None:
    ids = readback.number(n)
    assert set(ids) <= readback.ALL_READBACK_IDS
    import cn2an

    assert cn2an.cn2an(say(ids), "smart") == n


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_amount_uses_known_ids(value: Decimal) -> None:
    ids = readback.amount(value)
    assert set(ids) <= readback.ALL_READBACK_IDS
    assert (ids[0] == readback.MINUS) == (value < 0)


@given(st.dates())
def test_date_uses_known_ids(value: datetime.date) -> None:
    ids = readback.date(value)
    assert set(ids) <= readback.ALL_READBACK_IDS
    assert ids[:4] == readback.digits(f"{value.year:04d}", yao=False)
