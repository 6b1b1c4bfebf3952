"""Homophone-tolerant matching of what a caller said against menu phrases (pypinyin + rapidfuzz).

The recognizer may write a phrase with the wrong characters but the right sounds (亭电 for 停电),
so after an exact-substring check we compare tone-less pinyin. The comparison slides a window of
whole syllables over the utterance — "我家停电了" matches 停电 — and scores each window with
rapidfuzz's character-level ratio, so near-homophones (ting/tin) still score high while a match
can never straddle part of one syllable and part of the next. A one-syllable phrase matches only
by its character, and a two-syllable one a little more strictly: one sound off is often another
word (偷电 is not 触电).

`Syllables` and `best_window` expose the same comparison with *where* it matched, for callers
that rank several vocabularies against one utterance (speech.intent, speech.streets).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import Style, lazy_pinyin
from rapidfuzz import fuzz, process

EXACT_SCORE = 100.0

TWO_SYLLABLE_PENALTY = 5.0
"""Taken off a two-syllable phrase's pinyin score unless the sounds are identical: at the
default threshold tin/ting (94) still matches, chu/tou (触电 for 偷电, 87.5) no longer does."""


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
        wanted_syllables = _syllables(wanted)
        if len(wanted_syllables) == 1:
            continue  # 是 must not match every shi (十, 事, 市): its own character only
        score = _pinyin_score(said_syllables, wanted_syllables)
        if score < EXACT_SCORE and len(wanted_syllables) == 2:
            # Two syllables with one sound off are often another word: 触电/偷电 score 87.5.
            score -= TWO_SYLLABLE_PENALTY
        if score >= threshold and (best is None or score > best.score):
            best = PhraseMatch(key=key, phrase=phrase, score=score)
    return best


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Syllables:
    """Normalised text cut into syllables: one item per hanzi, one per run of other characters."""

    surface: tuple[str, ...]
    """The characters of each item."""
    sounds: tuple[str, ...]
    """Tone-less pinyin of each item (other characters as they are)."""

    @classmethod
    def of(cls, text: str) -> Syllables:
        """`text` normalised (see `normalise`) and cut into syllables."""
        return _cut(normalise(text))

    def __len__(self) -> int:
        return len(self.surface)

    def text(self, start: int = 0, end: int | None = None) -> str:
        """The characters of items start..end."""
        return "".join(self.surface[start:end])

    def offset(self, index: int) -> int:
        """Where item `index` starts in the normalised text."""
        return sum(len(s) for s in self.surface[:index])


@lru_cache(maxsize=4096)
def _cut(normalised: str) -> Syllables:
    sounds = _syllables(normalised)
    surface: list[str] = []
    position = 0
    for sound in sounds:
        # pypinyin gives one reading per hanzi and passes other runs through unchanged.
        size = len(sound) if normalised.startswith(sound, position) else 1
        surface.append(normalised[position : position + size])
        position += size
    return Syllables(tuple(surface), sounds)


@dataclass(frozen=True)
class Window:
    """Where a phrase matched best in an utterance, and how well."""

    score: float
    """0-100: 100 for the same characters or the same pinyin."""
    start: int
    """First syllable of the window."""
    end: int
    """Syllable after the window."""
    exact: bool
    """The window holds the phrase's own characters (not a homophone)."""


def best_window(
    said: Syllables, phrase: Syllables, *, wider: int = 0, narrower: int = 0
) -> Window | None:
    """The window of `said` most like `phrase`: its characters if they occur, else the best
    pinyin score over windows as wide as the phrase, or up to `wider` syllables wider (words the
    recognizer added) or `narrower` narrower (a character it dropped), never narrower than two
    syllables. Earlier and same-width windows win ties. None when either side is empty."""
    width = len(phrase)
    if not width or not len(said):
        return None
    wanted = phrase.text()
    text = said.text()
    found = text.find(wanted)
    while found >= 0:
        start = _item_at(said, found)
        if start is not None and said.text(start, start + width) == wanted:
            return Window(EXACT_SCORE, start, start + width, exact=True)
        found = text.find(wanted, found + 1)  # inside a run of digits or letters: look on
    target = " ".join(phrase.sounds)
    best: Window | None = None
    widths = sorted(
        # Never narrower than two syllables: one syllable is too easily any word.
        {min(len(said), max(min(width, 2), width + d)) for d in range(-narrower, wider + 1)},
        key=lambda w: abs(w - width),
    )
    for size in widths:
        choices = [" ".join(said.sounds[i : i + size]) for i in range(len(said) - size + 1)]
        hit = process.extractOne(target, choices, scorer=fuzz.ratio)
        if hit is None:
            continue
        _, score, start = hit
        if best is None or score > best.score:
            best = Window(float(score), start, start + size, exact=False)
    return best


def _item_at(said: Syllables, offset: int) -> int | None:
    """The item that starts at character `offset`, if one does."""
    position = 0
    for index, item in enumerate(said.surface):
        if position == offset:
            return index
        position += len(item)
    return None
