"""One key stream from three DTMF sources: RFC 4733 events, SIP INFO and in-band tones.

A phone may signal one key press several ways at once — an RFC 4733 event *and* a SIP INFO, or
an event whose tones also leak into the audio where the in-band detector hears them. The dialog
must see the key once. Sans-I/O: the time is an argument.

The rule: a report of key K from source S is the *same press* as an earlier accepted press of
K when that press was first reported less than ``window`` seconds ago and S has not reported it
yet. Otherwise it is a new press. So one source can never merge two of its own reports (each
source already de-duplicates itself: RFC 4733 by event timestamp, the detector by its
inter-digit gap), and "1 1" pressed quickly is still two keys when both sources see both.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

KEYS = frozenset("0123456789*#ABCD")
"""Every key a DTMF keypad has."""


class DtmfSource(StrEnum):
    """Where a key report came from."""

    RFC4733 = "rfc4733"
    """An RTP telephone-event (RFC 4733)."""
    SIP_INFO = "sip_info"
    """A SIP INFO with application/dtmf-relay or application/dtmf."""
    INBAND = "inband"
    """Tones in the caller's audio, heard by :class:`speech.dtmf.DtmfDetector`."""


@dataclass
class _Press:
    digit: str
    at: float
    sources: set[DtmfSource] = field(default_factory=set)


class DtmfMerger:
    """Merges key reports from all sources of one call into one stream of key presses."""

    def __init__(self, window: float = 0.150) -> None:
        self.window = window
        """Seconds within which reports of the same key from different sources are one press.

        Longer than the lag between sources (in-band detection trails the RFC 4733 event by
        ~30 ms, a SIP INFO may trail by a proxy hop), shorter than the fastest repeat of one
        key (40 ms tone + 40 ms pause by an autodialer; people need well over 150 ms).
        """
        self._recent: deque[_Press] = deque(maxlen=64)
        self.duplicates: dict[DtmfSource, int] = dict.fromkeys(DtmfSource, 0)
        """Reports absorbed as the same press, by source (how often each path is redundant)."""

    def push(self, digit: str, source: DtmfSource, now: float) -> str | None:
        """Report `digit` from `source` at `now`; return the key if it is a new press, else None.

        Raises ValueError for something that is not a DTMF key (the transports validate first).
        """
        key = digit.upper()
        if key not in KEYS or len(key) != 1:
            raise ValueError(f"not a DTMF key: {digit!r}")
        recent = self._recent
        while recent and now - recent[0].at >= self.window:
            recent.popleft()
        for press in recent:
            if press.digit == key and source not in press.sources:
                press.sources.add(source)
                self.duplicates[source] += 1
                return None
        recent.append(_Press(key, now, {source}))
        return key
