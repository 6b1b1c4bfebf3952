"""Results from Vosk's JSON, the model's vocabulary, and the shared free-form recognizers."""

from __future__ import annotations

import json
import math
from typing import Any

from speech.utterance import (
    FreeRecognizers,
    Vocabulary,
    free_result,
    grammar_json,
    grammar_result,
    malloc_trim,
)

MENU = ("단전", "미납", "상담원", "계량기")


def nbest(*alternatives: tuple[str, float]) -> str:
    """Vosk's n-best JSON (SetMaxAlternatives > 0)."""
    return json.dumps(
        {"alternatives": [{"text": t, "confidence": c} for t, c in alternatives]},
        ensure_ascii=False,
    )


def test_a_single_phrase_gets_its_posterior_over_the_n_best_list() -> None:
    text, confidence, alternatives = grammar_result(nbest(("단전", 46.7), ("미납", 45.7)), MENU)
    assert text == "단전"
    assert math.isclose(confidence, 1 / (1 + math.exp(-1.0)))
    assert alternatives == ("미납",)
    assert grammar_result(nbest(("상담원", 80.0)), MENU) == ("상담원", 1.0, ())


def test_anything_but_exactly_one_phrase_has_no_confidence() -> None:
    # Off-grammar speech comes back as the garbage word or as a string of phrases.
    assert grammar_result(nbest(("<UNK>", 90.0), ("미납", 80.0)), MENU)[:2] == ("<UNK>", 0.0)
    text, confidence, alternatives = grammar_result(
        nbest(("미납 미납", 64.7), ("미납 계량기", 64.5), ("미납", 64.0)), MENU
    )
    assert (text, confidence, alternatives) == ("미납 미납", 0.0, ("미납",))
    # Nothing heard: Vosk's empty n-best answer.
    assert grammar_result('{"alternatives" : [{"text": "", "confidence" : 1.0}] }', MENU) == (
        "",
        0.0,
        (),
    )
    assert grammar_result("{}", MENU) == ("", 0.0, ())


def test_free_form_confidence_is_the_mean_word_confidence() -> None:
    raw = json.dumps(
        {
            "result": [
                {"word": "서울", "conf": 1.0, "start": 0.1, "end": 0.4},
                {"word": "시청", "conf": 0.5, "start": 0.4, "end": 0.8},
            ],
            "text": "서울 시청",
        },
        ensure_ascii=False,
    )
    assert free_result(raw) == ("서울 시청", 0.75)
    assert free_result('{"text": ""}') == ("", 0.0)


def test_grammar_json_keeps_hangul_and_adds_the_garbage_word() -> None:
    assert grammar_json(["네", "아니요"], "<UNK>") == '["네", "아니요", "<UNK>"]'
    assert grammar_json(["네"], None) == '["네"]'


def test_vocabulary_of_the_korean_model(korean_model: Any) -> None:
    vocabulary = Vocabulary(korean_model)
    assert vocabulary.garbage == "<UNK>"  # this model has no [unk]
    assert vocabulary.missing("상담원") == []
    assert vocabulary.missing("상담원 연결하기요롱") == ["연결하기요롱"]


def test_free_recognizers_are_shared_limited_and_recycled(korean_model: Any) -> None:
    free = FreeRecognizers(korean_model, 8000, limit=2, reuse_seconds=10.0)
    first, second = free.acquire(), free.acquire()
    assert first is not None
    assert second is not None
    assert free.acquire() is None  # the limit
    assert free.in_use == 2
    free.release(first, 4.0)
    again = free.acquire()
    assert again is first  # warm, reused
    free.release(again, 7.0)  # 11 s of audio: freed
    assert (free.created, free.recycled) == (2, 1)
    assert first.recognizer is None
    fresh = free.acquire()
    assert fresh is not None
    assert fresh is not first
    free.close()  # nothing idle: both in use
    free.release(second, 1.0)
    free.release(fresh, 1.0)
    assert free.acquire() is None  # closed
    assert (free.created, free.recycled, free.in_use) == (3, 3, 0)


def test_reuse_zero_recycles_after_every_utterance(korean_model: Any) -> None:
    free = FreeRecognizers(korean_model, 8000, limit=1, reuse_seconds=0.0)
    warm = free.acquire()
    assert warm is not None
    free.release(warm, 0.5)
    assert free.recycled == 1
    malloc_trim()  # and the trim itself is harmless
