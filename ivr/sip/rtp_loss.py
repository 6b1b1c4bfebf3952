"""Packet loss of an incoming RTP stream, from sequence number gaps (RFC 3550 §6.4.1, A.1, A.3).

Pure and tiny on purpose: `ivr.sip.rtp_stream` calls `SequenceGaps.push` once per valid packet
and adds what it returns to the call's counters; the SIP server adds every call's count to
`hotline_rtp_packets_lost` when the call ends.

A packet whose sequence number jumps ahead counts the numbers skipped as lost. A packet that is
late or repeated (behind the highest seen) counts nothing: it was already counted lost when the
jump passed it, and a real-time receiver had to play out without it anyway. A jump of more than
``MAX_DROPOUT`` (RFC 3550 A.1's 3000), or a new SSRC, is a restarted source (a re-INVITE to
another gateway, a transfer): the count starts again from that packet instead.
"""

from __future__ import annotations

MAX_DROPOUT = 3000
"""RFC 3550 A.1: a larger forward jump is taken as a restarted sequence, not as loss."""

_HALF = 0x8000


class SequenceGaps:
    """The highest sequence number seen of one incoming stream."""

    __slots__ = ("_next", "_ssrc")

    def __init__(self) -> None:
        self._ssrc: int | None = None
        self._next = 0

    def push(self, ssrc: int, sequence: int) -> int:
        """Take one packet's SSRC and sequence number; the packets it shows lost (0 or more)."""
        if ssrc != self._ssrc:
            self._ssrc, self._next = ssrc, (sequence + 1) & 0xFFFF
            return 0
        gap = (sequence - self._next) & 0xFFFF
        if gap >= _HALF:  # behind the highest seen: late or repeated
            return 0
        self._next = (sequence + 1) & 0xFFFF
        return gap if gap <= MAX_DROPOUT else 0
