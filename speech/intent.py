"""What a caller wants, from free speech: ranked intents (hazard, fault, billing, …) with scores.

The vocabulary is data (`speech/intents.toml`, or an operator's file of the same shape): each
intent has phrases and a priority. The text is cleaned first (fillers such as 嗯/那个/就是/我想
removed, so "停，嗯，电" still says 停电), then every phrase is looked for by its characters
and by its tone-less pinyin (`speech.matching.best_window`), so homophones the recognizer wrote
wrong (亭电, 店费) and a dropped or added character (停了电) still count.

Two rules decide between intents:

- A phrase found inside a longer phrase of another intent gives way to it: "欠费停电" is billing,
  not a fault; "不对" is no, not yes; "没听见" is repeat, not a homophone of 停电.
- Intents whose score reaches the table's `sure_score` are ranked by priority, then score, then
  where they were said: "电线掉了还冒火 家里停电了" is a hazard before a fault. Below
  `sure_score` nothing is chosen (`IntentResult.unsure`): the caller is asked again, never
  guessed at.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from speech.matching import EXACT_SCORE, Syllables, Window, best_window, normalise

SHIPPED_INTENTS = "intents.toml"
"""The intent table shipped in the `speech` package."""

LISTED_SCORE = 70.0
"""Matches below this are not listed at all (they are noise, not candidates)."""


class IntentTableError(ValueError):
    """An intent table file that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Intent:
    """One thing a caller may want, and the phrases that say it."""

    name: str
    """Stable id used by flows and tickets: hazard, fault, billing, …"""
    priority: int
    """Higher wins when several intents are said at once."""
    phrases: tuple[str, ...]
    """Words that say it, normalised (no fillers, no punctuation)."""
    description: str = ""
    """What it means, for people reading the table."""


@dataclass(frozen=True)
class IntentScore:
    """How well an intent matched an utterance."""

    intent: str
    """The intent's name."""
    score: float
    """0-100: 100 for the phrase's characters or the same pinyin."""
    phrase: str
    """The phrase of the table that matched best."""
    said: str
    """The words of the utterance it matched."""
    priority: int
    """The intent's priority."""
    start: int
    """Where `said` starts in `IntentResult.cleaned`."""
    end: int
    """Where `said` ends in `IntentResult.cleaned`."""


@dataclass(frozen=True)
class IntentResult:
    """The intents found in one utterance, best first."""

    text: str
    """The utterance as given."""
    cleaned: str
    """Normalised, without fillers: what was matched."""
    ranked: tuple[IntentScore, ...]
    """Sure intents by priority, score and position; then unsure ones by score."""
    sure_score: float
    """The table's threshold for a choice."""

    @property
    def best(self) -> IntentScore | None:
        """The chosen intent, None when unsure."""
        if self.ranked and self.ranked[0].score >= self.sure_score:
            return self.ranked[0]
        return None

    @property
    def intent(self) -> str | None:
        """The chosen intent's name, None when unsure."""
        best = self.best
        return best.intent if best is not None else None

    @property
    def unsure(self) -> bool:
        """True when no intent reaches the threshold."""
        return self.best is None

    @property
    def sure(self) -> tuple[IntentScore, ...]:
        """Every intent that reaches the threshold, in rank order."""
        return tuple(s for s in self.ranked if s.score >= self.sure_score)

    def score(self, intent: str) -> float:
        """The score of one intent (0 when it did not match)."""
        return next((s.score for s in self.ranked if s.intent == intent), 0.0)


@dataclass(frozen=True)
class IntentTable:
    """Intents, fillers and the sure threshold, loaded from a TOML file."""

    intents: tuple[Intent, ...]
    fillers: tuple[str, ...]
    sure_score: float = 85.0

    @classmethod
    def load(cls, path: Path) -> IntentTable:
        """Read an intent table file; IntentTableError names the problem."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise IntentTableError(f"{path}: {exc}") from None
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, source: str = "intent table") -> IntentTable:
        """Build a table from parsed TOML data."""
        fillers = tuple(normalise(f) for f in _strings(data.get("fillers", []), "fillers", source))
        fillers = tuple(sorted((f for f in fillers if f), key=len, reverse=True))
        sure = data.get("sure_score", 85.0)
        if not isinstance(sure, int | float) or not 0 < sure <= 100:
            raise IntentTableError(f"{source}: sure_score must be a number in (0, 100]")
        raw = data.get("intents")
        if not isinstance(raw, dict) or not raw:
            raise IntentTableError(f"{source}: no [intents.<name>] tables")
        strip = _filler_pattern(fillers)
        intents: list[Intent] = []
        for name, body in raw.items():
            where = f"{source}: intents.{name}"
            if not isinstance(body, dict):
                raise IntentTableError(f"{where} is not a table")
            unknown = set(body) - {"priority", "phrases", "description"}
            if unknown:
                raise IntentTableError(f"{where}: unknown keys {sorted(unknown)}")
            priority = body.get("priority", 0)
            if not isinstance(priority, int) or isinstance(priority, bool):
                raise IntentTableError(f"{where}.priority must be an integer")
            phrases: list[str] = []
            for phrase in _strings(body.get("phrases", []), f"intents.{name}.phrases", source):
                said = normalise(phrase)
                if not said:
                    raise IntentTableError(f"{where}: empty phrase")
                if strip is not None and strip.sub("", said) != said:
                    # The text is matched without fillers: such a phrase could never match.
                    raise IntentTableError(f"{where}: phrase {phrase!r} contains a filler")
                phrases.append(said)
            if not phrases:
                raise IntentTableError(f"{where} has no phrases")
            description = body.get("description", "")
            intents.append(Intent(name, priority, tuple(phrases), str(description)))
        return cls(tuple(intents), fillers, float(sure))

    def names(self) -> tuple[str, ...]:
        """Every intent's name, in the table's order."""
        return tuple(i.name for i in self.intents)


def _strings(value: object, what: str, source: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise IntentTableError(f"{source}: {what} must be a list of strings")
    return list(value)


def _filler_pattern(fillers: tuple[str, ...]) -> re.Pattern[str] | None:
    if not fillers:
        return None
    return re.compile("|".join(re.escape(f) for f in fillers))


@cache
def shipped_intents() -> IntentTable:
    """The intent table shipped with the package (read once)."""
    text = resources.files("speech").joinpath(SHIPPED_INTENTS).read_text(encoding="utf-8")
    return IntentTable.from_data(tomllib.loads(text), source=SHIPPED_INTENTS)


@cache
def _filler_regex(fillers: tuple[str, ...]) -> re.Pattern[str] | None:
    return _filler_pattern(fillers)


def strip_fillers(text: str, table: IntentTable | None = None) -> str:
    """`text` normalised (no spaces or punctuation) and without filler words:
    "嗯 那个，我家就是停电了" -> "我家停电了"."""
    table = table or shipped_intents()
    said = normalise(text)
    pattern = _filler_regex(table.fillers)
    return pattern.sub("", said) if pattern is not None else said


@cache
def _phrase_syllables(phrase: str) -> Syllables:
    return Syllables.of(phrase)


def _wider(phrase: Syllables) -> int:
    # One added character (电线都掉 for 电线掉) in phrases of three syllables or more; a shorter
    # phrase would match too much of anything. Never narrower: a dropped 不 or 没 turns 听不见
    # into 听见.
    return 1 if len(phrase) >= 3 else 0


TWO_SYLLABLE_SCORE = 90.0
"""A two-syllable phrase needs nearly its own pinyin (tin/ting, za/zha): at 85 触电 would match
查电 and 停电 would match 听见."""


def _required(phrase: Syllables, sure_score: float) -> float:
    """The score a match of `phrase` needs to count as sure; above 100 = never by pinyin."""
    if len(phrase) == 1:
        return EXACT_ONLY  # 是 must not match every shi (十, 事, 市)
    if len(phrase) == 2:
        return max(sure_score, TWO_SYLLABLE_SCORE)
    return sure_score


EXACT_ONLY = 101.0


@dataclass(frozen=True)
class _Hit:
    intent: Intent
    phrase: str
    window: Window


def classify(
    text: str,
    table: IntentTable | None = None,
    *,
    only: Collection[str] | None = None,
) -> IntentResult:
    """The intents said in `text`, best first (see the module docstring for the rules).

    `only` limits the candidates (a yes/no question listens for yes, no and repeat).
    """
    table = table or shipped_intents()
    cleaned = strip_fillers(text, table)
    said = Syllables.of(cleaned)
    intents = [i for i in table.intents if only is None or i.name in only]
    hits: list[_Hit] = []
    for intent in intents:
        for phrase in intent.phrases:
            wanted = _phrase_syllables(phrase)
            window = best_window(said, wanted, wider=_wider(wanted))
            if window is None or window.score < LISTED_SCORE:
                continue
            if not window.exact and window.score < _required(wanted, table.sure_score):
                # Listed as a near miss, never sure.
                score = min(window.score, table.sure_score - 1)
                window = Window(score, window.start, window.end, exact=False)
            hits.append(_Hit(intent, phrase, window))
    hits = [h for h in hits if not _covered(h, hits, table.sure_score)]
    best: dict[str, _Hit] = {}
    for hit in hits:
        held = best.get(hit.intent.name)
        if held is None or _better(hit, held):
            best[hit.intent.name] = hit
    scores = [_score(hit, said) for hit in best.values()]
    sure = sorted(
        (s for s in scores if s.score >= table.sure_score),
        key=lambda s: (-s.priority, -s.score, s.start),
    )
    unsure = sorted(
        (s for s in scores if s.score < table.sure_score), key=lambda s: (-s.score, s.start)
    )
    return IntentResult(text, cleaned, (*sure, *unsure), table.sure_score)


def _better(hit: _Hit, other: _Hit) -> bool:
    """Higher score; then the characters themselves; then the longer phrase."""
    a, b = hit.window, other.window
    return (a.score, a.exact, a.end - a.start) > (b.score, b.exact, b.end - b.start)


def _covered(hit: _Hit, hits: list[_Hit], sure_score: float) -> bool:
    """Whether another intent's match takes the words this one matched.

    - A longer sure phrase said over these words, at least as well: 欠费停电 over 停电, 不对
      over 对.
    - A phrase said as it is (score 100) over words this one only nearly matched: in
      "服务态度很差" the complaint 态度很差 keeps the praise 服务态度很好 (95) out, and in
      "家里停电" the fault 停电 keeps billing's 欠费停电 out.
    """
    w = hit.window
    for other in hits:
        o = other.window
        if other.intent.name == hit.intent.name or o.score < sure_score:
            continue
        inside = o.start <= w.start and w.end <= o.end and o.end - o.start > w.end - w.start
        if inside and o.score >= w.score:
            return True
        overlap = min(w.end, o.end) - max(w.start, o.start)
        if o.score >= EXACT_SCORE > w.score and overlap > 0:
            return True
    return False


def _score(hit: _Hit, said: Syllables) -> IntentScore:
    w = hit.window
    start = said.offset(w.start)
    words = said.text(w.start, w.end)
    return IntentScore(
        intent=hit.intent.name,
        score=round(w.score, 1),
        phrase=hit.phrase,
        said=words,
        priority=hit.intent.priority,
        start=start,
        end=start + len(words),
    )
