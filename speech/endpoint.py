"""When a caller starts and stops speaking: a sans-I/O energy endpointer over 16-bit PCM frames.

The recognizer pool runs one per utterance next to Vosk's own endpoint (Kaldi's trailing-silence
rules). This one decides barge-in (the prompt stops when it says ``start``), ends an utterance
after ``end_silence`` of quiet, forces one after ``max_utterance``, and is the judge of whether
the caller spoke at all: Vosk gets an utterance's audio only once this endpointer hears
speech (a grammar recognizer turns white noise into a confident word, and decoding silence
costs as much CPU as decoding speech).

A frame counts as speech when it is loud enough **and** its zero-crossing rate is that of voiced
sound: white noise crosses zero in about half of its samples at 8 kHz, voiced speech in under
a third (the energy + zero-crossing endpointer of Rabiner and Sambur, 1975). Unvoiced consonants
(s, h) also cross often, but they are short and next to vowels, so they neither start an
utterance on their own nor end one.

Pure: time is audio time (the frames fed), there is no clock and no I/O; the state machine
itself (`Endpointer.update`) takes a duration and a speech flag, so it is tested without audio.
"""

from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass
from typing import Literal

_EPSILON = 1e-9
"""Slack for sums of frame durations (five 20 ms frames add up to 0.09999...)."""

Transition = Literal["start", "end", "max_length"]
"""What a frame changed: speech began, the caller stopped, or the utterance ran too long."""


@dataclass(frozen=True)
class EndpointConfig:
    """Thresholds of the endpointer (the pool's settings fill in the two durations)."""

    level_db: float = -40.0
    """Speech frames are at least this loud, in dB below full scale (phone speech: -30..-10)."""
    max_zcr: float = 0.35
    """Speech frames cross zero in at most this share of sample pairs (white noise: ~0.5)."""
    start_seconds: float = 0.1
    """This much speech in a row starts an utterance (a click or a cough does not)."""
    end_silence: float = 0.8
    """This much non-speech after speech ends the utterance."""
    max_utterance: float = 15.0
    """An utterance is ended this long after speech started, even if the caller goes on."""


_SIGN_BIT = bytes(1 if byte >= 0x80 else 0 for byte in range(256))
"""High byte of a little-endian sample -> 1 when the sample is negative."""


def frame_features(frame: bytes) -> tuple[float, float]:
    """(level in dBFS, zero-crossing rate) of a frame of signed 16-bit little-endian PCM."""
    frame = frame[: len(frame) & ~1]
    samples = array("h")
    samples.frombytes(frame)
    if sys.byteorder == "big":
        samples.byteswap()
    n = len(samples)
    if n == 0:
        return -math.inf, 0.0
    power = math.hypot(*samples) ** 2 / n  # the sum of squares, in C
    level = 10.0 * math.log10(power / 32768.0**2) if power > 0 else -math.inf
    if n < 2:
        return level, 0.0
    # Sign changes counted in C, not per sample in Python (this runs 50 times a second per
    # call, under the GIL): one 0/1 byte per sample's sign, then XOR with itself shifted.
    signs = frame[1::2].translate(_SIGN_BIT)
    crossings = (
        int.from_bytes(signs[:-1], "little") ^ int.from_bytes(signs[1:], "little")
    ).bit_count()
    return level, crossings / (n - 1)


class Endpointer:
    """One utterance's speech detector: feed frames in order, act on the transitions returned.

    ``start`` is returned once, after ``start_seconds`` of speech in a row; then ``end`` (after
    ``end_silence`` without speech) or ``max_length`` (``max_utterance`` after the speech
    began) once, after which the endpointer is done and ignores further audio.
    """

    def __init__(self, config: EndpointConfig, sample_rate: int = 8000) -> None:
        self.config = config
        """The thresholds."""
        self.sample_rate = sample_rate
        """Samples per second of the frames fed."""
        self.audio_seconds = 0.0
        """Audio fed so far."""
        self.speech_at: float | None = None
        """Where the speech that started the utterance began (audio time), once started."""
        self.last_speech_end = 0.0
        """Where the most recent speech frame ended (audio time)."""
        self.done = False
        """``end`` or ``max_length`` was returned."""
        self._run_start: float | None = None

    @property
    def speaking(self) -> bool:
        """Speech started and the utterance has not ended."""
        return self.speech_at is not None and not self.done

    def feed(self, frame: bytes) -> Transition | None:
        """Take one frame of 16-bit PCM; return what it changed."""
        level, zcr = frame_features(frame)
        speech = level >= self.config.level_db and zcr <= self.config.max_zcr
        return self.update(len(frame) // 2 / self.sample_rate, speech=speech)

    def update(self, seconds: float, *, speech: bool) -> Transition | None:
        """Advance by ``seconds`` of audio that was speech or not; return what it changed."""
        if self.done:
            self.audio_seconds += seconds
            return None
        begin = self.audio_seconds
        self.audio_seconds = now = begin + seconds
        if speech:
            self.last_speech_end = now
            if self._run_start is None:
                self._run_start = begin
        else:
            self._run_start = None
        if self.speech_at is None:
            if (
                self._run_start is not None
                and now - self._run_start >= self.config.start_seconds - _EPSILON
            ):
                self.speech_at = self._run_start
                return "start"
            return None
        if now - self.speech_at >= self.config.max_utterance - _EPSILON:
            self.done = True
            return "max_length"
        if now - self.last_speech_end >= self.config.end_silence - _EPSILON:
            self.done = True
            return "end"
        return None
