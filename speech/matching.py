"""Homophone-tolerant matching of what a caller said against menu phrases (pypinyin + rapidfuzz).

The recognizer may write a phrase with the wrong characters but the right sounds (亭电 for 停电),
so after an exact-substring check we compare tone-less pinyin. The comparison slides a window
of whole syllables over the utterance — "我家停电了" matches 停电 — and scores each window with
rapidfuzz's character-level ratio, so near-homophones (ting/tin) still score high while a match
can never straddle part of one syllable and part of the next.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import Style, lazy_pinyin
from rapidfuzz import fuzz

EXACT_SCORE = 100.0


@dataclass(frozen=True)
class PhraseMatch:
    """The menu choice a caller's words matched best."""

    key: str
    """The option key (the menu choice)."""
    phrase: str
    """The option phrase that matched, as given."""
    score: float
    """0-100; 100 for an exact substring or an identical pinyin reading."""


def normalise(text: str) -> str:
    """Lower-cased text with spaces, punctuation and symbols removed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


@lru_cache(maxsize=4096)
def _syllables(normalised: str) -> tuple[str, ...]:
    """Tone-less pinyin, one item per hanzi; runs of other letters/digits stay one item."""
    return tuple(lazy_pinyin(normalised, style=Style.NORMAL))


def _pinyin_score(text: tuple[str, ...], phrase: tuple[str, ...]) -> float:
    width = len(phrase)
    target = " ".join(phrase)
    if len(text) <= width:
        return fuzz.ratio(" ".join(text), target)
    return max(
        fuzz.ratio(" ".join(text[start : start + width]), target)
        for start in range(len(text) - width + 1)
    )


def match_phrases(
    text: str,
    options: Mapping[str, Sequence[str]],
    *,
    threshold: float = 85.0,
) -> PhraseMatch | None:
    """The option whose phrase best matches `text`, if it scores at least `threshold`.

    An exact substring (after normalising) wins outright, earliest option first; otherwise the
    best pinyin score wins, ties going to the earlier option. Empty text matches nothing.
    """
    said = normalise(text)
    if not said:
        return None
    candidates = [
        (key, phrase, normalise(phrase)) for key, phrases in options.items() for phrase in phrases
    ]
    candidates = [c for c in candidates if c[2]]  # an empty phrase would match everything
    for key, phrase, wanted in candidates:
        if wanted in said:
            return PhraseMatch(key=key, phrase=phrase, score=EXACT_SCORE)
    said_syllables = _syllables(said)
    best: PhraseMatch | None = None
    for key, phrase, wanted in candidates:
        score = _pinyin_score(said_syllables, _syllables(wanted))
        if score >= threshold and (best is None or score > best.score):
            best = PhraseMatch(key=key, phrase=phrase, score=score)
    return best
