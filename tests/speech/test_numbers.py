"""Spoken Chinese numbers to digit strings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speech.numbers import spoken_digits


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("一三九零零", "13900"),
        ("幺三九", "139"),
        ("洞", "0"),
        ("〇", "0"),
        ("两", "2"),
        ("139 幺二", "13912"),
        ("１３９", "139"),
        ("我的户号是幺三九，嗯，零零。", "13900"),
        ("号码是 幺八六 拐拐 勾勾", "1867799"),
        ("我查一下户号一二三", "123"),  # 一下 is a filler, not a 1
        ("一百二十三", "123"),
        ("十", "10"),
        ("两千零二十六", "2026"),
        ("三千五", "3500"),
        ("一万二", "12000"),
        ("1百23", "123"),
        ("零零一", "001"),  # leading zeros of an account number survive
    ],
)
def test_spoken_digits(text: str, digits: str) -> None:
    assert spoken_digits(text) == digits


@pytest.mark.parametrize(
    "text", ["", "  ", "你好", "我的户号是", "嗯。。。", "百", "一三九十", "十十"]
)
def test_no_digits_or_malformed_number_is_none(text: str) -> None:
    assert spoken_digits(text) is None


SAY_DIGIT = {
    "0": ["0", "零", "〇", "洞"],
    "1": ["1", "一", "幺"],
    "2": ["2", "二", "两"],
    **{d: [d, "零一二三四五六七八九"[int(d)]] for d in "3456789"},
}


@st.composite
def said_digits(draw: st.DrawFn) -> tuple[str, str]:
    value = draw(st.text(alphabet="0123456789", min_size=1, max_size=20))
    parts = [draw(st.sampled_from(SAY_DIGIT[d])) for d in value]
    separators = [draw(st.sampled_from(["", "", " ", "，"])) for _ in parts]
    return value, "".join(p + s for p, s in zip(parts, separators, strict=True))


@given(said_digits())
def test_any_digit_string_said_digit_by_digit_round_trips(case: tuple[str, str]) -> None:
    value, text = case
    assert spoken_digits(f"我的户号是{text}") == value


@given(st.text())
def test_never_crashes(text: str) -> None:
    result = spoken_digits(text)
    assert result is None or result.isdigit()


@given(st.text(alphabet="零一二三四五六七八九十百千万亿两幺洞 ", max_size=30))
def test_never_crashes_on_numeral_soup(text: str) -> None:
    result = spoken_digits(text)
    assert result is None or result.isdigit()
