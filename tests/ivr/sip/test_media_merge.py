"""DtmfMerger: one key stream from RFC 4733, SIP INFO and in-band reports of the same presses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.sip.dtmf_merge import KEYS, DtmfMerger, DtmfSource

RTP, INFO, TONE = DtmfSource.RFC4733, DtmfSource.SIP_INFO, DtmfSource.INBAND


def merged(reports: list[tuple[str, DtmfSource, float]], window: float = 0.150) -> str:
    merger = DtmfMerger(window)
    return "".join(key for d, s, t in reports if (key := merger.push(d, s, t)) is not None)


def test_one_press_heard_three_ways_is_one_key() -> None:
    merger = DtmfMerger()
    assert merger.push("5", RTP, 10.000) == "5"
    assert merger.push("5", TONE, 10.030) is None
    assert merger.push("5", INFO, 10.120) is None
    assert merger.duplicates == {RTP: 0, INFO: 1, TONE: 1}


def test_whichever_source_comes_first_wins() -> None:
    assert merged([("#", TONE, 1.0), ("#", RTP, 1.02)]) == "#"
    assert merged([("#", INFO, 1.0), ("#", TONE, 1.1)]) == "#"


def test_one_source_twice_is_two_presses() -> None:
    # Each source de-duplicates itself; two reports from it are two presses, however close.
    assert merged([("1", RTP, 1.0), ("1", RTP, 1.08)]) == "11"


def test_different_keys_are_never_merged() -> None:
    assert merged([("1", RTP, 1.0), ("2", TONE, 1.01), ("3", INFO, 1.02)]) == "123"


def test_the_same_key_after_the_window_is_a_new_press() -> None:
    assert merged([("9", RTP, 1.0), ("9", TONE, 1.2)]) == "99"
    assert merged([("9", RTP, 1.0), ("9", TONE, 1.1)]) == "9"


def test_a_fast_double_press_seen_by_two_sources_is_two_keys() -> None:
    # An autodialer's "11": 80 ms apart; RFC 4733 on time, the in-band detector 30 ms behind.
    reports = [("1", RTP, 0.000), ("1", TONE, 0.030), ("1", RTP, 0.080), ("1", TONE, 0.110)]
    assert merged(reports) == "11"


def test_a_late_source_matches_the_oldest_unclaimed_press() -> None:
    reports = [("1", RTP, 0.000), ("1", RTP, 0.080), ("1", TONE, 0.100), ("1", TONE, 0.190)]
    assert merged(reports) == "11"


def test_keys_are_normalised_and_checked() -> None:
    merger = DtmfMerger()
    assert merger.push("a", INFO, 0.0) == "A"
    for bad in ("", "10", "E", "!", "**"):
        with pytest.raises(ValueError, match="not a DTMF key"):
            merger.push(bad, INFO, 1.0)


def test_memory_stays_bounded() -> None:
    merger = DtmfMerger(window=1000.0)  # nothing ever expires by time
    for i in range(10_000):
        merger.push("0123456789"[i % 10], RTP, float(i))
    assert len(merger._recent) <= 64


@st.composite
def presses(draw: st.DrawFn) -> tuple[str, list[tuple[str, DtmfSource, float]]]:
    """Presses two windows apart, each reported by some sources, each lagging < one window.

    (Closer than that, the same key from two *different* sources is ambiguous by design: one
    press heard twice, or two presses each heard once. The window decides.)
    """
    window = 0.150
    keys = draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=12))
    reports: list[tuple[str, DtmfSource, float]] = []
    at = 0.0
    for key in keys:
        at += draw(st.floats(min_value=2 * window, max_value=2.0))
        sources = draw(st.sets(st.sampled_from(list(DtmfSource)), min_size=1))
        for source in sources:
            lag = draw(st.floats(min_value=0.0, max_value=window * 0.99))
            reports.append((key, source, at + lag))
    reports.sort(key=lambda r: r[2])
    return "".join(keys), reports


@given(presses())
def test_every_press_comes_out_exactly_once_in_order(
    case: tuple[str, list[tuple[str, DtmfSource, float]]],
) -> None:
    keys, reports = case
    assert merged(reports) == keys
