"""Turn digits, numbers, amounts, dates and durations into sequences of `[readback]` prompt ids.

Numbers go through `cn2an` (Arabic -> Chinese numerals); each Chinese character then maps to
one prompt. Spoken-Mandarin adjustments on top of cn2an, which always writes 二:
- 两 for a 2 that leads a group before 百/千/万/亿: 200 两百, 2000 两千, 22000 两万二千,
  120000000 一亿两千万 — but 1200 stays 一千二百 and 20 stays 二十;
- 两 for a count of exactly 2 before a measure word: 两元, 两分钟 (jiao and fen digits, and
  bare `number(2)`, stay 二).
"""

from __future__ import annotations

import datetime
from decimal import Decimal, InvalidOperation

import cn2an

DIGIT_IDS: tuple[str, ...] = tuple(f"digit_{d}" for d in range(10))
DIGIT_1_YAO = "digit_1_yao"
DIGIT_2_LIANG = "digit_2_liang"
NUM_10, NUM_100, NUM_1000 = "num_10", "num_100", "num_1000"
NUM_10000, NUM_100000000 = "num_10000", "num_100000000"
POINT, MINUS = "point", "minus"
UNIT_YUAN, UNIT_JIAO, UNIT_FEN = "unit_yuan", "unit_jiao", "unit_fen"
UNIT_YEAR, UNIT_MONTH, UNIT_DAY = "unit_year", "unit_month", "unit_day"
UNIT_MINUTE, UNIT_HOUR = "unit_minute", "unit_hour"
UNIT_KWH, UNIT_POSITION = "unit_kwh", "unit_position"

# cn2an's lower-case numerals -> prompt ids.
_CHAR_IDS: dict[str, str] = {
    **{ch: DIGIT_IDS[d] for d, ch in enumerate("零一二三四五六七八九")},
    "十": NUM_10,
    "百": NUM_100,
    "千": NUM_1000,
    "万": NUM_10000,
    "亿": NUM_100000000,
    "负": MINUS,
    "点": POINT,
}
_LIANG_BEFORE = frozenset("百千万亿")
_GROUP_START = frozenset("负万亿")
_MAX_DIGITS = 16  # cn2an's limit

ALL_READBACK_IDS: frozenset[str] = frozenset(
    {
        *_CHAR_IDS.values(),
        DIGIT_1_YAO,
        DIGIT_2_LIANG,
        UNIT_YUAN,
        UNIT_JIAO,
        UNIT_FEN,
        UNIT_YEAR,
        UNIT_MONTH,
        UNIT_DAY,
        UNIT_MINUTE,
        UNIT_HOUR,
        UNIT_KWH,
        UNIT_POSITION,
    }
)
"""Every prompt id this module produces or exports; each must be in the shipped catalog."""


def digits(value: str, *, yao: bool = True) -> list[str]:
    """Read ASCII digits one by one (accounts, phones, tickets); 1 is 幺 when `yao`."""
    ids: list[str] = []
    for ch in value:
        if not ("0" <= ch <= "9"):
            raise ValueError(f"digits() reads only 0-9, got {ch!r} in {value!r}")
        ids.append(DIGIT_1_YAO if yao and ch == "1" else DIGIT_IDS[int(ch)])
    return ids


def number(n: int) -> list[str]:
    """Read an integer as a Chinese number: 12 十二, 105 一百零五, 2000 两千, -5 负五."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number() needs an int, got {type(n).__name__}")
    if len(str(abs(n))) > _MAX_DIGITS:
        raise ValueError(f"number() reads at most {_MAX_DIGITS} digits, got {n}")
    text: str = cn2an.an2cn(n, "low")
    ids: list[str] = []
    for i, ch in enumerate(text):
        leads_group = i == 0 or text[i - 1] in _GROUP_START
        if ch == "二" and leads_group and text[i + 1 : i + 2] in _LIANG_BEFORE:
            ids.append(DIGIT_2_LIANG)
        else:
            ids.append(_CHAR_IDS[ch])
    return ids


def _count(n: int) -> list[str]:
    """A number used as a count before a measure word: exactly 2 reads 两."""
    return [DIGIT_2_LIANG] if n == 2 else number(n)


def amount(value: Decimal | str) -> list[str]:
    """Read money in yuan: 123.45 一百二十三元四角五分, 0.5 五角, 10 十元, 10.05 十元零五分."""
    try:
        money = Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ValueError(f"amount() needs a decimal number, got {value!r}") from exc
    if not money.is_finite():
        raise ValueError(f"amount() needs a finite number, got {value!r}")
    cents = money * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"amount() reads at most 2 decimals (fen), got {value!r}")
    yuan, rest = divmod(abs(int(cents)), 100)
    jiao, fen = divmod(rest, 10)
    ids = [MINUS] if money < 0 else []
    if yuan or not rest:
        ids += [*_count(yuan), UNIT_YUAN]
    if jiao:
        ids += [DIGIT_IDS[jiao], UNIT_JIAO]
    if fen:
        if yuan and not jiao:
            ids.append(DIGIT_IDS[0])  # 十元零五分
        ids += [DIGIT_IDS[fen], UNIT_FEN]
    return ids


def date(value: datetime.date | str) -> list[str]:
    """Read a date: 2026-11-27 二零二六年十一月二十七日 (year digit by digit, no 幺)."""
    if isinstance(value, str):
        try:
            value = datetime.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"date() needs YYYY-MM-DD, got {value!r}") from exc
    return [
        *digits(f"{value.year:04d}", yao=False),
        UNIT_YEAR,
        *number(value.month),
        UNIT_MONTH,
        *number(value.day),
        UNIT_DAY,
    ]


def minutes(n: int) -> list[str]:
    """Read a duration in minutes: 5 五分钟, 2 两分钟, 15 十五分钟."""
    if n < 0:
        raise ValueError(f"minutes() needs a non-negative count, got {n}")
    return [*_count(n), UNIT_MINUTE]
