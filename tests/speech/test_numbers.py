"""Spoken Chinese numbers to digit strings, phone numbers and amounts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speech.numbers import digit_runs, phone_number, spoken_amount, spoken_digits


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
        ("两百", "200"),
        ("两千", "2000"),
        ("幺洞洞", "100"),
        ("八八号", "88"),  # house numbers said digit by digit
        ("八十八号", "88"),
        ("一 三 八 零 零", "13800"),  # spaced digits
        ("1 3 8 0 0", "13800"),
        ("幺三八，一二三四，五六七八", "13812345678"),
        ("我的电话是一三八零零一三八零零零", "13800138000"),
        ("户号是 三二 零一 二三 四五 六七", "3201234567"),
        ("嗯 那个 两两幺", "221"),
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


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("户号幺三九零零 电话一三八零零一三八零零零", ["13900", "13800138000"]),
        ("幺三八 一二三四，五六七八", ["13812345678"]),  # pauses inside one number
        ("经十路八十八号", ["10", "88"]),
        ("三号楼二单元五零一", ["3", "2", "501"]),
        ("我查一下户号一二三", ["123"]),
        ("户号一三九十 电话幺幺零", ["110"]),  # a malformed run is left out
        ("没有数字", []),
        ("", []),
    ],
)
def test_digit_runs(text: str, runs: list[str]) -> None:
    assert digit_runs(text) == runs


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("我的电话是幺三八 一二三四 五六七八 谢谢", "13812345678"),
        ("一八六，一二三四，五六七八", "18612345678"),
        ("手机 1 3 9 1 2 3 4 5 6 7 8", "13912345678"),
        ("座机零五三一 八八八八 六六六六", "053188886666"),
        ("打八六一二三四五六", "86123456"),  # a local landline
        ("户号三二零一二三四五六七，电话幺三八零零幺三八零零零", "13800138000"),
        ("户号三二零一二三四五六七", None),  # ten digits: an account, not a phone
        ("幺二三", None),
        ("我家停电了", None),
    ],
)
def test_phone_number(text: str, phone: str | None) -> None:
    assert phone_number(text) == phone


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("一百二十块五", "120.5"),  # the numeral after 块 is 毛, not a digit of the yuan
        ("一百二十块五毛", "120.5"),
        ("一百二十元五角", "120.5"),
        ("两块五毛三", "2.53"),
        ("三块零五", "3.05"),  # 零 after 块 skips the 毛
        ("三块零五分", "3.05"),
        ("十块零五毛", "10.5"),
        ("五毛", "0.5"),
        ("五毛五", "0.55"),
        ("八分", "0.08"),
        ("一块二", "1.2"),
        ("一百块", "100"),
        ("三块钱", "3"),
        ("一百零五块", "105"),
        ("两百块", "200"),
        ("三点五元", "3.5"),
        ("一千二百三十四点五六元", "1234.56"),
        ("123.45元", "123.45"),
        ("１２０元", "120"),
        ("一百二十", "120"),
        ("三千五", "3500"),
        ("我交了 嗯 一百二十块五毛钱 电费", "120.5"),
        ("欠费两百三十块零八分", "230.08"),
    ],
)
def test_spoken_amount(text: str, amount: str) -> None:
    assert spoken_amount(text) == Decimal(amount)


@pytest.mark.parametrize(
    "text",
    ["", "我也不知道", "块", "五毛十二", "三块四块", "十二毛", "一块五毛三分四", "三点五毛"],
)
def test_no_amount_or_parts_that_do_not_fit_is_none(text: str) -> None:
    assert spoken_amount(text) is None


@given(st.text())
def test_amount_and_runs_never_crash(text: str) -> None:
    amount = spoken_amount(text)
    assert amount is None or amount >= 0
    assert all(run.isdigit() for run in digit_runs(text))


@given(st.text(alphabet="零一二两三四五六七八九十百千万块元毛角分钱点幺 ", max_size=20))
def test_amount_never_crashes_on_money_soup(text: str) -> None:
    amount = spoken_amount(text)
    assert amount is None or amount >= 0
