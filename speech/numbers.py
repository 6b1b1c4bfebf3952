"""Chinese spoken numbers -> digit strings and amounts: 户号, phone and ticket numbers, 元角分.

The recognizer gives hanzi text such as "我的户号是幺三九 零零" or "一百二十三". Digits said one by
one are mapped character by character (幺 1, 两 2, 洞 0, and the radio-style 拐 7 and 勾 9);
a number said with 十/百/千/万/亿 is converted with cn2an. Everything else — spaces,
punctuation, filler words — is ignored by `spoken_digits`; `digit_runs` keeps numbers said apart
("户号幺三九零零，电话一三八…") apart, `phone_number` picks the one shaped like a phone number, and
`spoken_amount` reads money the way people say it (一百二十块五 is 120.5, not 1205).
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal

import cn2an

# Every way a single digit is said or written; NFKC has already turned full-width digits ASCII.
_DIGIT_CHARS: dict[str, str] = {
    **{str(d): str(d) for d in range(10)},
    **{ch: str(d) for d, ch in enumerate("零一二三四五六七八九")},
    "〇": "0",
    "洞": "0",
    "幺": "1",
    "两": "2",
    "拐": "7",
    "勾": "9",
}
# Radio-style readings cn2an does not know, spelled the way it does.
_FOR_CN2AN = str.maketrans({"洞": "零", "〇": "零", "拐": "七", "勾": "九"})
_UNIT_CHARS = frozenset("十百千万亿")
# Filler phrases that contain numeral characters but are not part of the number.
_FILLERS: tuple[str, ...] = ("一下", "一个", "一共", "一遍", "万一", "千万", "十分")


def _numeral_chars(text: str) -> str:
    """The digit and unit characters of `text`, in order, without anything else."""
    text = unicodedata.normalize("NFKC", text)
    for filler in _FILLERS:
        text = text.replace(filler, "")
    return "".join(ch for ch in text if ch in _DIGIT_CHARS or ch in _UNIT_CHARS)


def _with_units(numerals: str) -> str | None:
    """Convert a number said with 十/百/千/万/亿; None when it is not a well-formed number."""
    try:
        value = cn2an.cn2an(numerals.translate(_FOR_CN2AN), "smart")
    except (ValueError, KeyError, IndexError):
        # cn2an rejects malformed numbers with ValueError, and a few (e.g. 十十一) with
        # lookup errors from its own tables.
        return None
    return str(int(value))


def spoken_digits(text: str) -> str | None:
    """The digits a caller said: "幺三九 零零" -> "13900", "一百二十三" -> "123".

    Returns None when the text holds no digits, or when a number said with units is not
    well formed (e.g. "一三九十"): better to ask again than to guess an account number.
    """
    numerals = _numeral_chars(text)
    if not any(ch in _DIGIT_CHARS for ch in numerals):
        return None if not numerals else _with_units(numerals)
    if any(ch in _UNIT_CHARS for ch in numerals):
        return _with_units(numerals)
    return "".join(_DIGIT_CHARS[ch] for ch in numerals)


# ----------------------------------------------------------------------------- several numbers

_NUMERAL_CLASS = "".join(sorted(set(_DIGIT_CHARS) | _UNIT_CHARS))
# A number said in groups with pauses ("幺三八 一二三四，五六七八") is one number: spaces, commas
# and dashes between numerals do not split it; any other word does.
_RUN = re.compile(rf"[{_NUMERAL_CLASS}](?:[\s,，、\-]*[{_NUMERAL_CLASS}])*")
_PHONE = re.compile(r"1[3-9]\d{9}|0\d{9,11}|\d{7,8}")
"""A mainland mobile, a landline with its area code, or a local landline number."""


def _without_fillers(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    for filler in _FILLERS:
        text = text.replace(filler, " ")
    return text


def digit_runs(text: str) -> list[str]:
    """Each number said in `text`, in order: "户号幺三九零零 电话一三八零零一三八零零零" ->
    ["13900", "13800138000"]. Malformed runs (一三九十) are left out."""
    runs = (spoken_digits(m.group()) for m in _RUN.finditer(_without_fillers(text)))
    return [r for r in runs if r is not None]


def phone_number(text: str) -> str | None:
    """The first number in `text` shaped like a phone number (mobile 1[3-9]xxxxxxxxx, landline
    with area code 0xxx…, or a 7-8 digit local number); None when there is none."""
    return next((r for r in digit_runs(text) if _PHONE.fullmatch(r)), None)


# ----------------------------------------------------------------------------- amounts

_MONEY_TOKEN = re.compile(
    rf"(?P<num>[{_NUMERAL_CLASS}]+(?:[点.][{_NUMERAL_CLASS}]+)?)|(?P<unit>块钱|元钱|块|元|毛钱|毛|角|分)"
)
_UNIT_PLACE = {"块钱": 0, "元钱": 0, "块": 0, "元": 0, "毛钱": 1, "毛": 1, "角": 1, "分": 2}
_PLACE_VALUE = (Decimal(1), Decimal("0.1"), Decimal("0.01"))


def _numeral_value(numerals: str) -> Decimal | None:
    """The value of one numeral run, with an optional decimal part (三点五, 12.5)."""
    whole, _, fraction = numerals.replace("点", ".").partition(".")
    digits = spoken_digits(whole)
    if digits is None:
        return None
    value = Decimal(digits)  # said with units (一百二十) or digit by digit (一二零)
    if fraction:
        if any(ch in _UNIT_CHARS for ch in fraction):
            return None
        decimals = spoken_digits(fraction)
        if decimals is None:
            return None
        value += Decimal(f"0.{decimals}")
    return value


def spoken_amount(text: str) -> Decimal | None:
    """Money as callers say it: "一百二十块五" -> 120.5, "两块五毛三" -> 2.53, "三块零五" -> 3.05,
    "五毛" -> 0.5, "三点五元" -> 3.5, "一百二十" -> 120.

    A numeral without a unit takes the place after the one before it (块 -> 毛 -> 分), as in
    "一百二十块五"; a 零 right after 块 skips the 毛 ("三块零五" is 3.05). Returns None when the
    text holds no amount or the parts do not fit (a 毛 of 12, two 块).
    """
    said = _without_fillers(text).replace(" ", "")
    tokens = list(_MONEY_TOKEN.finditer(said))
    start = next((i for i, t in enumerate(tokens) if t.group("num")), None)
    if start is None:
        return None
    total = Decimal(0)
    place = -1  # the place of the last part taken: none yet
    pending: str | None = None  # a numeral waiting for its unit
    end = tokens[start].start()
    for token in tokens[start:]:
        if token.start() != end:
            break  # another word: the amount is over
        end = token.end()
        if token.group("num"):
            if pending is not None:
                break  # two numbers in a row: not one amount
            pending = token.group("num")
            continue
        unit_place = _UNIT_PLACE[token.group("unit")]
        if pending is None:
            if token.group("unit") in ("块钱", "元钱") or place == 0:
                continue  # "三块钱": 钱 after the unit adds nothing
            return None
        if unit_place <= place:
            return None
        part = _numeral_value(pending)
        if part is None or (unit_place > 0 and (part >= 10 or part != part.to_integral_value())):
            return None
        total += part * _PLACE_VALUE[unit_place]
        place, pending = unit_place, None
    if pending is not None:
        # A numeral after the last unit fills the next place: 一百二十块五, 两块五毛三, 三块零五.
        if place >= 2:
            return None
        next_place = place + 1
        if place == 0 and pending.startswith(("零", "0")) and len(pending) > 1:
            next_place, pending = 2, pending[1:]
        part = _numeral_value(pending)
        if part is None:
            return None
        if next_place > 0 and (part >= 10 or part != part.to_integral_value()):
            return None
        total += part * _PLACE_VALUE[next_place]
    return total
