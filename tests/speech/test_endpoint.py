"""The sans-I/O endpointer: start, end after silence, forced end, and what counts as speech."""

from __future__ import annotations

import math
import random
from array import array

from hypothesis import given
from hypothesis import strategies as st

from speech.endpoint import EndpointConfig, Endpointer, Transition, frame_features

RATE = 8000
FRAME = 0.02
CONFIG = EndpointConfig(start_seconds=0.1, end_silence=0.8, max_utterance=15.0)


def run(endpointer: Endpointer, seconds: float, *, speech: bool) -> list[tuple[float, Transition]]:
    """Feed ``seconds`` of 20 ms frames; the transitions with the audio time they happened at."""
    out: list[tuple[float, Transition]] = []
    for _ in range(round(seconds / FRAME)):
        transition = endpointer.update(FRAME, speech=speech)
        if transition is not None:
            out.append((round(endpointer.audio_seconds, 3), transition))
    return out


def pcm(samples: list[float]) -> bytes:
    return array("h", [max(-32768, min(32767, round(s))) for s in samples]).tobytes()


def tone(hz: float, dbfs: float, seconds: float = FRAME) -> bytes:
    """A sine at ``dbfs`` (RMS relative to full scale)."""
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    n = round(seconds * RATE)
    return pcm([amplitude * math.sin(2 * math.pi * hz * i / RATE) for i in range(n)])


def white_noise(dbfs: float, seconds: float = FRAME, seed: int = 1) -> bytes:
    rng = random.Random(seed)  # noqa: S311 - a test signal, not a secret
    sigma = 32768 * 10 ** (dbfs / 20)
    return pcm([rng.gauss(0, sigma) for _ in range(round(seconds * RATE))])


def test_silence_never_starts_or_ends() -> None:
    endpointer = Endpointer(CONFIG)
    assert run(endpointer, 60.0, speech=False) == []
    assert endpointer.speech_at is None
    assert not endpointer.speaking


def test_speech_starts_after_start_seconds_in_a_row() -> None:
    endpointer = Endpointer(CONFIG)
    run(endpointer, 1.0, speech=False)
    # A click (60 ms) and a gap do not start anything: the run must be unbroken.
    assert run(endpointer, 0.06, speech=True) == []
    assert run(endpointer, 0.02, speech=False) == []
    assert run(endpointer, 0.1, speech=True) == [(1.18, "start")]
    assert endpointer.speech_at is not None
    assert math.isclose(endpointer.speech_at, 1.08)
    assert endpointer.speaking


def test_ends_after_end_silence_following_speech() -> None:
    endpointer = Endpointer(CONFIG)
    run(endpointer, 0.5, speech=False)
    run(endpointer, 0.6, speech=True)  # speech until 1.1 s
    # Pauses shorter than end_silence (between words) do not end the utterance.
    assert run(endpointer, 0.7, speech=False) == []
    assert run(endpointer, 0.4, speech=True) == []  # speech until 2.2 s
    assert run(endpointer, 1.0, speech=False) == [(3.0, "end")]
    assert endpointer.done
    assert math.isclose(endpointer.last_speech_end, 2.2)
    # Done: nothing more, whatever comes.
    assert run(endpointer, 2.0, speech=True) == []


def test_forced_end_at_max_utterance() -> None:
    endpointer = Endpointer(EndpointConfig(max_utterance=5.0))
    run(endpointer, 1.0, speech=False)
    events = run(endpointer, 30.0, speech=True)
    assert [t for _, t in events] == ["start", "max_length"]
    assert events[1][0] == 6.0  # speech began at 1.0 s
    assert endpointer.done


@given(st.lists(st.tuples(st.integers(1, 100), st.booleans()), max_size=40))
def test_transitions_are_ordered_and_once(runs: list[tuple[int, bool]]) -> None:
    """Whatever the audio: at most one start, then at most one end, never an end first; an
    end only follows end_silence without speech; a forced end only after max_utterance."""
    config = EndpointConfig(start_seconds=0.1, end_silence=0.3, max_utterance=2.0)
    endpointer = Endpointer(config)
    seen: list[Transition] = []
    for frames, speech in runs:
        for _ in range(frames):
            transition = endpointer.update(FRAME, speech=speech)
            if transition is None:
                continue
            seen.append(transition)
            now = endpointer.audio_seconds
            assert endpointer.speech_at is not None
            if transition == "end":
                assert now - endpointer.last_speech_end >= config.end_silence - 1e-6
            if transition == "max_length":
                assert now - endpointer.speech_at >= config.max_utterance - 1e-6
    assert seen in ([], ["start"], ["start", "end"], ["start", "max_length"])
    assert endpointer.done == (len(seen) == 2)


def test_frame_features_of_a_tone_and_of_silence() -> None:
    level, zcr = frame_features(tone(200, -20))
    assert abs(level - -20) < 0.5
    assert abs(zcr - 2 * 200 / RATE) < 0.02  # a sine crosses zero twice a period
    assert frame_features(bytes(320)) == (-math.inf, 0.0)
    assert frame_features(b"") == (-math.inf, 0.0)
    assert frame_features(b"\x01") == (-math.inf, 0.0)  # half a sample


def test_white_noise_is_not_speech_however_loud() -> None:
    """White noise crosses zero in about half its samples; the endpointer never starts."""
    for dbfs in (-35.0, -25.0, -15.0):
        level, zcr = frame_features(white_noise(dbfs))
        assert abs(level - dbfs) < 1.5
        assert zcr > CONFIG.max_zcr
        endpointer = Endpointer(CONFIG)
        noise = white_noise(dbfs, seconds=3.0, seed=int(-dbfs))
        size = round(FRAME * RATE) * 2
        assert [endpointer.feed(noise[i : i + size]) for i in range(0, len(noise), size)] == [
            None
        ] * 150


def test_voiced_sound_starts_and_quiet_sound_does_not() -> None:
    loud = Endpointer(CONFIG)
    transitions = [loud.feed(tone(150, -25)) for _ in range(10)]
    assert transitions.index("start") == 4  # after 5 frames = 100 ms
    quiet = Endpointer(CONFIG)
    assert [quiet.feed(tone(150, -50)) for _ in range(50)] == [None] * 50
