"""Homophone-tolerant matching of menu phrases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from speech.matching import PhraseMatch, Syllables, Window, best_window, match_phrases

MENU = {
    "hazard": ["电线落地", "触电", "起火"],
    "outage": ["停电", "没电"],
    "billing": ["电费", "交费"],
    "agent": ["人工", "人工服务"],
}


@pytest.mark.parametrize(
    ("text", "key", "phrase"),
    [
        ("停电", "outage", "停电"),
        ("我家停电了", "outage", "停电"),
        ("亭电", "outage", "停电"),  # homophone written wrong by the recognizer
        ("我家亭店了", "outage", "停电"),
        ("我想查一下电费。", "billing", "电费"),
        ("店费", "billing", "电费"),
        ("转 人 工", "agent", "人工"),
        ("家里起货了", "hazard", "起火"),
    ],
)
def test_matches(text: str, key: str, phrase: str) -> None:
    match = match_phrases(text, MENU)
    assert match is not None
    assert (match.key, match.phrase) == (key, phrase)
    assert match.score == pytest.approx(100.0)


def test_exact_substring_scores_100() -> None:
    assert match_phrases("我要转人工服务", MENU) == PhraseMatch("agent", "人工", 100.0)


def test_different_words_do_not_match() -> None:
    assert match_phrases("电费", {"outage": ["停电"]}) is None
    assert match_phrases("停电", {"billing": ["电费"]}) is None
    assert match_phrases("你好", MENU) is None
    # A short phrase must not match part of a syllable: an is inside dian.
    assert match_phrases("电", {"x": ["安"]}) is None


def test_near_homophone_scores_below_100() -> None:
    match = match_phrases("亲电", {"outage": ["停电"]}, threshold=0)
    assert match is not None
    assert 50 < match.score < 100


def test_ties_go_to_the_earlier_option() -> None:
    options = {"first": ["停电"], "second": ["停电"]}
    assert match_phrases("停电", options) == PhraseMatch("first", "停电", 100.0)
    assert match_phrases("亭电", options) == PhraseMatch("first", "停电", 100.0)


def test_exact_beats_homophone_of_earlier_option() -> None:
    options = {"homophone": ["亭电"], "exact": ["停电"]}
    match = match_phrases("停电", options)
    assert match is not None
    assert match.key == "exact"


def test_threshold() -> None:
    assert match_phrases("亲电", {"outage": ["停电"]}, threshold=99) is None


@pytest.mark.parametrize("text", ["", "   ", "，。！"])
def test_empty_text_is_none(text: str) -> None:
    assert match_phrases(text, MENU) is None


def test_empty_phrases_are_ignored() -> None:
    assert match_phrases("停电", {"blank": ["", " "]}) is None


@given(st.text(), st.dictionaries(st.text(max_size=3), st.lists(st.text(max_size=6), max_size=3)))
def test_never_crashes_and_scores_are_bounded(text: str, options: dict[str, list[str]]) -> None:
    match = match_phrases(text, options)
    if match is not None:
        assert 85.0 <= match.score <= 100.0
        assert match.phrase in options[match.key]


# ----------------------------------------------------------------------------- windows


def test_syllables_keep_runs_of_other_characters_together() -> None:
    said = Syllables.of("我家 亭电了，经10路88号")
    assert said.surface == ("我", "家", "亭", "电", "了", "经", "10", "路", "88", "号")
    assert said.sounds[:4] == ("wo", "jia", "ting", "dian")
    assert said.text(5, 8) == "经10路"
    assert said.offset(5) == 5
    assert said.offset(8) == 9


def test_best_window_finds_the_characters_first() -> None:
    window = best_window(Syllables.of("我家停电了"), Syllables.of("停电"))
    assert window == Window(100.0, 2, 4, exact=True)


def test_best_window_homophone_scores_100_but_is_not_exact() -> None:
    window = best_window(Syllables.of("我家亭电了"), Syllables.of("停电"))
    assert window == Window(100.0, 2, 4, exact=False)


def test_best_window_wider_tolerates_an_added_character() -> None:
    said, phrase = Syllables.of("我家停了电"), Syllables.of("停电")
    narrow = best_window(said, phrase)
    wide = best_window(said, phrase, wider=1)
    assert narrow is not None
    assert wide is not None
    assert narrow.score < 85 <= wide.score
    assert (wide.start, wide.end) == (2, 5)


def test_best_window_never_narrower_than_two_syllables() -> None:
    # 西安 against 先 (xian): a one-syllable window would score 89.
    window = best_window(Syllables.of("我先走"), Syllables.of("西安"), narrower=1)
    assert window is not None
    assert window.score < 85


def test_best_window_skips_a_match_inside_a_run_of_digits() -> None:
    said = Syllables.of("112号12楼")  # the first "12" is inside 112
    window = best_window(said, Syllables.of("12"))
    assert window is not None
    assert window.exact
    assert (window.start, window.end) == (2, 3)


@pytest.mark.parametrize(("said", "phrase"), [("", "停电"), ("停电", ""), ("，", "停电")])
def test_best_window_of_nothing_is_none(said: str, phrase: str) -> None:
    assert best_window(Syllables.of(said), Syllables.of(phrase)) is None


def test_one_syllable_phrases_match_only_their_own_character() -> None:
    assert match_phrases("十号", {"yes": ["是"]}) is None  # shi, but not 是
    assert match_phrases("是的", {"yes": ["是"]}) == PhraseMatch("yes", "是", 100.0)


def test_two_syllable_phrases_need_nearly_their_own_sounds() -> None:
    assert match_phrases("有人偷电", {"hazard": ["触电"]}) is None  # chu/tou: 87.5 before
    near = match_phrases("金费", {"x": ["经费"]})  # jin/jing: a nasal the recognizer blurs
    assert near is not None
    assert 85 <= near.score < 90
    assert match_phrases("亭店", {"x": ["停电"]}) == PhraseMatch("x", "停电", 100.0)
