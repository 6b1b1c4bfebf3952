"""Chinese spoken numbers -> digit strings, for account (户号), phone and ticket numbers said aloud.

The recognizer gives hanzi text such as "我的户号是幺三九 零零" or "一百二十三". Digits said one by
one are mapped character by character (幺 1, 两 2, 洞 0, and the radio-style 拐 7 and 勾 9);
a number said with 十/百/千/万/亿 is converted with cn2an. Everything else — spaces,
punctuation, filler words — is ignored.
"""

from __future__ import annotations

import unicodedata

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
