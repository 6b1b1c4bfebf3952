"""Sequence gaps as packet loss (RFC 3550 A.1, A.3): jumps, wrap-around, late packets, restarts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ivr.sip.rtp_loss import MAX_DROPOUT, SequenceGaps


def lost(*packets: tuple[int, int]) -> list[int]:
    gaps = SequenceGaps()
    return [gaps.push(ssrc, seq) for ssrc, seq in packets]


def test_an_unbroken_stream_loses_nothing_across_the_wrap():
    assert lost(*[(7, (65530 + i) & 0xFFFF) for i in range(12)]) == [0] * 12


def test_a_jump_counts_the_numbers_skipped():
    assert lost((7, 100), (7, 101), (7, 105), (7, 106)) == [0, 0, 3, 0]
    assert lost((7, 65534), (7, 2)) == [0, 3]  # 65535, 0, 1 lost across the wrap


def test_late_and_repeated_packets_count_nothing():
    assert lost((7, 10), (7, 13), (7, 11), (7, 13), (7, 14)) == [0, 2, 0, 0, 0]


def test_a_new_ssrc_or_a_huge_jump_restarts_the_count():
    assert lost((7, 10), (8, 5000), (8, 5001)) == [0, 0, 0]
    assert lost((7, 10), (7, 10 + MAX_DROPOUT + 2), (7, 10 + MAX_DROPOUT + 4)) == [0, 0, 1]


@given(st.integers(0, 0xFFFF), st.lists(st.booleans(), min_size=1, max_size=400))
def test_the_count_equals_the_packets_dropped(start, kept):
    # Drop packets at random from an in-order stream: the loss counted is exactly the number
    # dropped between the first and the last packet kept.
    sent = [(start + i) & 0xFFFF for i in range(len(kept))]
    received = [seq for seq, keep in zip(sent, kept, strict=True) if keep]
    if not received:
        return
    first, last = kept.index(True), len(kept) - 1 - kept[::-1].index(True)
    dropped = sum(1 for keep in kept[first : last + 1] if not keep)
    gaps = SequenceGaps()
    assert sum(gaps.push(1, seq) for seq in received) == dropped
