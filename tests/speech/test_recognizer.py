"""The recognizer pool on the real Korean model, with espeak-ng callers through G.711 µ-law.

Audio is fed faster than real time (paced only by the stream's backlog), and timings are
asserted on audio time; one test plays in real time to check barge-in latency on the clock.
The menu words are ones this model and espeak-ng agree on at 110-190 words a minute (measured;
정전 and 요금, the obvious choices, are not).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from array import array
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiortp.codecs.g711 import PcmuCodec
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from speech.recognizer import (
    FinalResult,
    PartialResult,
    RecognizerPool,
    SpeechEvent,
    SpeechStarted,
    SpeechStream,
    SpeechUnavailable,
)
from speech.utterance import Utterance
from tests.speech.conftest import SAMPLE_RATE, frames, silence

YES_NO = ("네", "아니요")
MENU = ("단전", "미납", "상담원", "계량기")
LOUD = 1000
"""A sample this loud (-30 dBFS peak) is speech when the tests measure where speech is."""

pytestmark = pytest.mark.tts


Phone = Callable[..., bytes]


@pytest.fixture(scope="session")
def phone(speaker: Callable[..., bytes]) -> Phone:
    """``phone(text, speed=150)``: spoken by espeak-ng, carried over a PCMU (G.711 µ-law) leg."""

    @functools.cache
    def say(text: str, speed: int = 150) -> bytes:
        return g711(speaker(text, speed=speed))

    return say


def g711(pcm: bytes) -> bytes:
    codec = PcmuCodec()
    return codec.decode(codec.encode(pcm))


def speech_span(pcm: bytes) -> tuple[float, float]:
    """(first, last) loud sample of ``pcm``, in seconds."""
    samples = array("h", pcm)
    loud = [i for i, s in enumerate(samples) if abs(s) > LOUD]
    return loud[0] / SAMPLE_RATE, loud[-1] / SAMPLE_RATE


def white_noise(seconds: float, sigma: float, seed: int = 95598) -> bytes:
    rng = random.Random(seed)  # noqa: S311 - a test signal, not a secret
    n = round(seconds * SAMPLE_RATE)
    return array(
        "h", [max(-32768, min(32767, round(rng.gauss(0, sigma)))) for _ in range(n)]
    ).tobytes()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Caller:
    """A transport's side of a stream: collects its events, plays audio into it."""

    def __init__(self) -> None:
        self.events: list[SpeechEvent] = []
        self.stream: SpeechStream | None = None
        self.on_final: Callable[[], None] | None = None
        self._seen = 0  # events before this index were looked at by ended()
        self._arrived = asyncio.Event()

    def __call__(self, event: SpeechEvent) -> None:
        self.events.append(event)
        self._arrived.set()
        if isinstance(event, FinalResult | SpeechUnavailable) and self.on_final is not None:
            self.on_final()

    def open(self, pool: RecognizerPool, call_id: str = "call-1") -> SpeechStream:
        stream = pool.open(call_id, self)
        assert stream is not None
        self.stream = stream
        return stream

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def mark(self) -> None:
        """Forget the results so far: ``ended`` waits for a new one."""
        self._seen = len(self.events)

    def _end(self) -> FinalResult | SpeechUnavailable | None:
        for i in range(self._seen, len(self.events)):
            event = self.events[i]
            if isinstance(event, FinalResult | SpeechUnavailable):
                self._seen = i + 1
                return event
        self._seen = len(self.events)
        return None

    async def ended(self) -> FinalResult | SpeechUnavailable:
        """The next final (or unavailable) event."""
        async with asyncio.timeout(20):
            while (end := self._end()) is None:
                self._arrived.clear()
                await self._arrived.wait()
        return end

    async def play(self, pcm: bytes, *, until_final: bool = True) -> None:
        """Feed ``pcm`` as 20 ms frames as fast as the stream's backlog allows."""
        assert self.stream is not None
        for frame in frames(pcm):
            if until_final and any(
                isinstance(e, FinalResult | SpeechUnavailable) for e in self.events[self._seen :]
            ):
                return
            self.stream.feed(frame)
            # The backlog has no event to wait on: a test paces itself by polling it.
            while self.stream.backlog_seconds > 0.4:  # noqa: ASYNC110
                await asyncio.sleep(0.002)

    async def recognize(self, grammar: tuple[str, ...] | None, pcm: bytes) -> FinalResult:
        """One utterance: listen, play, stop if nothing ended it, return the result."""
        assert self.stream is not None
        self.mark()
        self.stream.listen(grammar)
        await self.play(pcm)
        if not any(isinstance(e, FinalResult) for e in self.events[self._seen :]):
            self.stream.stop()
        final = await self.ended()
        assert isinstance(final, FinalResult)
        return final


def trimmed(pcm: bytes) -> bytes:
    """``pcm`` from its first to its last loud sample (espeak-ng pads its speech)."""
    first, last = speech_span(pcm)
    return pcm[round(first * SAMPLE_RATE) * 2 : round(last * SAMPLE_RATE) * 2]


@pytest.fixture
async def pools(korean_model: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start pools on the real model with the settings given; all are stopped afterwards."""
    started: list[RecognizerPool] = []

    async def make(**settings: Any) -> RecognizerPool:
        pool = RecognizerPool(korean_model, **settings)
        await pool.start()
        started.append(pool)
        return pool

    yield make
    for pool in started:
        await pool.stop()


@pytest.fixture
async def pool(pools: Callable[..., Any]) -> RecognizerPool:
    made: RecognizerPool = await pools()
    return made


@pytest.mark.parametrize("speed", [130, 170])
@pytest.mark.parametrize("word", YES_NO)
async def test_yes_and_no(pool: RecognizerPool, word: str, speed: int, phone: Phone) -> None:
    caller = Caller()
    caller.open(pool)
    final = await caller.recognize(YES_NO, silence(0.5) + phone(word, speed) + silence(1.5))
    assert final.text == word
    assert final.confidence >= 0.5
    assert final.reason == "endpoint"
    assert isinstance(caller.events[0], SpeechStarted)


@pytest.mark.parametrize("speed", [130, 150, 190])
async def test_menu_words(pool: RecognizerPool, speed: int, phone: Phone) -> None:
    caller = Caller()
    caller.open(pool)
    for word in MENU:
        final = await caller.recognize(MENU, silence(0.4) + phone(word, speed) + silence(1.5))
        assert (final.text, final.reason) == (word, "endpoint")
        assert final.confidence >= 0.5


async def test_barge_in_and_end_of_speech_on_audio_time(pool: RecognizerPool, phone: Phone) -> None:
    caller = Caller()
    caller.open(pool)
    audio = silence(1.0) + phone("상담원") + silence(2.0)
    onset, end = speech_span(audio)
    final = await caller.recognize(MENU, audio)
    started = caller.of(SpeechStarted)
    assert len(started) == 1
    assert 0.0 < started[0].audio_seconds - onset <= 0.3
    # Vosk's rule (0.5 s of trailing silence) or ours (end_silence = 0.8 s), whichever first.
    assert 0.3 <= final.audio_seconds - end <= pool.endpoint.end_silence + 0.3
    assert caller.of(PartialResult)[-1] == PartialResult("상담원")
    assert (final.text, final.reason) == ("상담원", "endpoint")


async def test_barge_in_on_the_clock(pool: RecognizerPool, phone: Phone) -> None:
    """Played in real time, SpeechStarted reaches the loop soon after the speech did."""
    loop = asyncio.get_running_loop()
    caller = Caller()
    stream = caller.open(pool)
    heard: list[float] = []
    caller.on_final = None
    stream.listen(YES_NO)
    audio = silence(0.6) + phone("아니요")
    onset, _ = speech_span(audio)
    t0 = loop.time()
    for i, frame in enumerate(frames(audio)):
        await asyncio.sleep(max(0.0, t0 + i * 0.02 - loop.time()))
        stream.feed(frame)
        if not heard and caller.of(SpeechStarted):
            heard.append(loop.time())
    while not heard:
        await asyncio.sleep(0.005)
        if caller.of(SpeechStarted):
            heard.append(loop.time())
    assert heard[0] - (t0 + onset) < 0.5  # 0.1 s of speech to start + queueing, on a busy box


async def test_silence_starts_nothing_until_stopped(pool: RecognizerPool) -> None:
    caller = Caller()
    stream = caller.open(pool)
    stream.listen(YES_NO)
    # Longer than Kaldi's own end-of-silence rule (5 s): its empty endpoint is not a result.
    await caller.play(g711(silence(6.0)))
    await asyncio.sleep(0.2)
    assert caller.events == []
    assert stream.listening
    with capture_logs() as logs:
        stream.stop()
        final = await caller.ended()
    assert final == FinalResult("", 0.0, (), "stopped", 6.0)
    assert not stream.listening
    # Silence is not decoded at all: the endpointer alone (Vosk would take about 0.2 s).
    (line,) = [e for e in logs if e["event"] == "speech utterance"]
    assert line["cpu_ms"] < 60


@pytest.mark.parametrize("sigma", [1000, 4000])  # -30 and -18 dBFS
async def test_white_noise_gives_no_confident_result(pool: RecognizerPool, sigma: int) -> None:
    caller = Caller()
    caller.open(pool)
    final = await caller.recognize(
        YES_NO, silence(0.5) + g711(white_noise(3.0, sigma)) + silence(1.5)
    )
    assert caller.of(SpeechStarted) == []
    assert final.confidence < 0.5
    assert final.text == ""


async def test_off_grammar_speech_has_no_confidence(pool: RecognizerPool, phone: Phone) -> None:
    caller = Caller()
    caller.open(pool)
    final = await caller.recognize(
        MENU, silence(0.5) + phone("전기 요금이 얼마예요") + silence(1.5)
    )
    assert caller.of(SpeechStarted)
    assert final.text  # something was said ...
    assert final.confidence == 0.0  # ... but not one phrase of the menu


async def test_unknown_words_drop_their_phrase(pool: RecognizerPool, phone: Phone) -> None:
    caller = Caller()
    caller.open(pool)
    with capture_logs() as logs:
        final = await caller.recognize(
            ("네", "네 쀍쀍", "아니요"), silence(0.4) + phone("네") + silence(1.5)
        )
    assert final.text == "네"
    assert {
        "event": "speech grammar phrase dropped",
        "phrase": "네 쀍쀍",
        "missing": ["쀍쀍"],
        "call_id": "call-1",
        "log_level": "warning",
    } in logs
    caller.mark()
    assert caller.stream is not None
    caller.stream.listen(("쀍쀍",))
    assert await caller.ended() == SpeechUnavailable("no_valid_phrases")
    assert not caller.stream.listening


@pytest.mark.slow
async def test_a_caller_talking_for_two_minutes(pool: RecognizerPool, phone: Phone) -> None:
    """Forced finals every max_utterance; the transport listens again after each one."""
    caller = Caller()
    stream = caller.open(pool)
    caller.on_final = lambda: stream.listen(YES_NO)
    talk = trimmed(phone("네 아니요", 170)) + silence(0.15)
    stream.listen(YES_NO)
    seconds = 0.0
    while seconds < 120.0:
        await caller.play(talk, until_final=False)
        seconds += len(talk) / 2 / SAMPLE_RATE
    caller.on_final = None
    caller.mark()
    stream.stop()
    await caller.ended()
    finals = caller.of(FinalResult)
    assert [f.reason for f in finals[:-1]] == ["max_length"] * (len(finals) - 1)
    assert len(finals) >= 7
    assert finals[-1].reason == "stopped"
    for final in finals[:-1]:
        # From listen(): the speech (already going) starts within the first frames.
        assert 15.0 <= final.audio_seconds <= 15.5
    assert len(caller.of(SpeechStarted)) == len(finals)


@pytest.mark.slow
async def test_free_form_recognizers_are_recycled(pools: Callable[..., Any], phone: Phone) -> None:
    """Free-form memory is bounded: recognizers serve several utterances, then are freed."""
    pool: RecognizerPool = await pools(workers=1, max_utterance=3.0, free_reuse_seconds=5.0)
    caller = Caller()
    stream = caller.open(pool)
    caller.on_final = lambda: stream.listen(None)
    talk = b"".join(
        trimmed(phone(w)) + silence(0.15) for w in ("전력 사용량", "영수증 번호", "서울 시청")
    )
    before = rss_mib()
    stream.listen(None)
    await caller.play(talk + talk, until_final=False)
    caller.on_final = None
    caller.mark()
    stream.stop()
    await caller.ended()
    peak = rss_mib()
    finals = caller.of(FinalResult)
    assert [f.reason for f in finals] == ["max_length", "max_length", "stopped"]
    assert pool.free.created >= 2
    assert pool.free.recycled >= 1
    await pool.stop()
    assert pool.free.in_use == 0
    # Each recognizer's graph cache is tens of MiB; freed and trimmed, it goes back.
    assert peak - before < 200
    assert rss_mib() - before < 50


async def test_free_form_is_limited(pools: Callable[..., Any]) -> None:
    pool: RecognizerPool = await pools(max_free_streams=1)
    first, second = Caller(), Caller()
    a, b = first.open(pool, "call-a"), second.open(pool, "call-b")
    a.listen(None)
    await first.play(g711(silence(0.2)))
    with capture_logs() as logs:
        b.listen(None)
        assert await second.ended() == SpeechUnavailable("free_form_busy")
    assert [e["call_id"] for e in logs if e["event"] == "speech free-form unavailable"] == [
        "call-b"
    ]
    b.listen(YES_NO)  # grammars are not limited
    await second.play(g711(silence(0.2)))
    a.stop()
    assert (await first.ended()).reason == "stopped"
    b.stop()
    await second.ended()
    b.listen(None)  # the free-form recognizer is back
    await second.play(g711(silence(0.2)))
    await asyncio.sleep(0.1)
    assert second.events[-1] != SpeechUnavailable("free_form_busy")
    assert b.listening


async def test_saturated_pool_refuses_and_logs(pools: Callable[..., Any]) -> None:
    registry = CollectorRegistry()
    pool: RecognizerPool = await pools(max_streams=2, registry=registry)
    first = pool.open("call-1", Caller())
    assert first is not None
    assert pool.open("call-2", Caller()) is not None
    with capture_logs() as logs:
        assert pool.open("call-3", Caller()) is None
    assert logs == [
        {
            "event": "speech pool saturated",
            "call_id": "call-3",
            "streams": 2,
            "max_streams": 2,
            "log_level": "warning",
        }
    ]
    assert registry.get_sample_value("hotline_speech_pool_saturated_total") == 1
    first.close()
    assert pool.open("call-3", Caller()) is not None


async def test_backlog_is_bounded_and_dropping_is_logged_once(pools: Callable[..., Any]) -> None:
    registry = CollectorRegistry()
    pool: RecognizerPool = await pools(workers=1, max_backlog=0.2, registry=registry)
    caller = Caller()
    stream = caller.open(pool)
    stream.listen(YES_NO)
    with capture_logs() as logs:
        for frame in frames(g711(silence(2.0))):  # 2 s at once, the loop never yielding
            stream.feed(frame)
            assert stream.backlog_seconds <= 0.2
    dropped = [e for e in logs if e["event"] == "speech frames dropped"]
    assert len(dropped) == 1
    assert dropped[0]["call_id"] == "call-1"
    assert (registry.get_sample_value("hotline_speech_frames_dropped_total") or 0) > 0


async def test_stop_while_listening(pool: RecognizerPool, phone: Phone) -> None:
    caller = Caller()
    stream = caller.open(pool)
    stream.listen(MENU)
    await caller.play(silence(0.5) + phone("미납"))  # no trailing silence: not ended yet
    stream.stop()
    final = await caller.ended()
    assert final.reason == "stopped"
    assert final.text == "미납"
    assert not stream.listening
    count = len(caller.events)
    await caller.play(phone("미납") + silence(1.0), until_final=False)  # not listening: ignored
    stream.stop()  # nothing to stop
    await asyncio.sleep(0.2)
    assert len(caller.events) == count


async def test_close_while_frames_are_queued(pools: Callable[..., Any], phone: Phone) -> None:
    pool: RecognizerPool = await pools(workers=1)
    caller, free_caller = Caller(), Caller()
    stream = caller.open(pool)
    free = free_caller.open(pool, "call-free")
    stream.listen(MENU)
    free.listen(None)  # free-form: its shared recognizer must come back
    for frame in frames(silence(0.3) + phone("상담원")):
        stream.feed(frame)
        free.feed(frame)
    assert stream.backlog_seconds > 0
    stream.close()
    stream.close()  # idempotent
    free.close()
    assert stream.closed
    assert pool.streams == 0
    stream.feed(bytes(320))  # ignored
    stream.listen(YES_NO)  # ignored
    async with asyncio.timeout(10):  # the worker may be inside a batch of the free-form stream
        while pool.free.in_use:  # noqa: ASYNC110 - the pool has no event for this
            await asyncio.sleep(0.01)
    other = Caller()
    other.open(pool, "call-2")
    final = await other.recognize(YES_NO, silence(0.4) + phone("네") + silence(1.5))
    assert final.text == "네"
    assert caller.events == []
    assert free_caller.events == []


async def test_a_new_listen_replaces_the_current_utterance(
    pool: RecognizerPool, phone: Phone
) -> None:
    caller = Caller()
    stream = caller.open(pool)
    stream.listen(MENU)
    await caller.play(silence(0.3) + phone("단전"), until_final=False)
    final = await caller.recognize(YES_NO, silence(0.3) + phone("아니요") + silence(1.5))
    assert final.text == "아니요"
    assert caller.of(FinalResult) == [final]  # none for the replaced menu


async def test_stop_the_pool_with_active_streams(pool: RecognizerPool, phone: Phone) -> None:
    talking, idle = Caller(), Caller()
    a = talking.open(pool, "call-a")
    b = idle.open(pool, "call-b")
    a.listen(MENU)
    await talking.play(silence(0.3) + phone("계량기"), until_final=False)
    await pool.stop()
    finals = talking.of(FinalResult)
    assert [f.reason for f in finals] == ["stopped"]
    assert finals[0].text == "계량기"
    assert idle.events == []
    assert a.closed
    assert b.closed
    assert pool.streams == 0
    a.feed(bytes(320))
    a.listen(MENU)
    await pool.stop()  # idempotent
    assert pool.open("call-c", Caller()) is None
    assert len(talking.events) == len(talking.of(SpeechStarted)) + 1 + len(
        talking.of(PartialResult)
    )


async def test_a_failing_handler_does_not_stop_the_stream(
    pool: RecognizerPool, phone: Phone
) -> None:
    caller = Caller()
    calls: list[SpeechEvent] = []

    def handler(event: SpeechEvent) -> None:
        calls.append(event)
        if isinstance(event, SpeechStarted):
            raise RuntimeError("transport bug")
        caller(event)

    stream = pool.open("call-1", handler)
    assert stream is not None
    caller.stream = stream
    with capture_logs() as logs:
        final = await caller.recognize(YES_NO, silence(0.4) + phone("네") + silence(1.5))
    assert final.text == "네"
    assert any(e["event"] == "speech event handler failed" for e in logs)


async def test_utterance_summary_line_and_metrics(pools: Callable[..., Any], phone: Phone) -> None:
    registry = CollectorRegistry()
    pool: RecognizerPool = await pools(registry=registry)
    caller = Caller()
    caller.open(pool)
    started = time.perf_counter()
    with capture_logs() as logs:
        await caller.recognize(YES_NO, silence(0.4) + phone("네") + silence(1.5))
    assert time.perf_counter() - started < 10
    (line,) = [e for e in logs if e["event"] == "speech utterance"]
    assert line["call_id"] == "call-1"
    assert (line["mode"], line["reason"], line["text"]) == ("grammar", "endpoint", "네")
    assert line["cpu_ms"] > 0
    utterances = {"mode": "grammar", "reason": "endpoint"}
    assert registry.get_sample_value("hotline_speech_utterances_total", utterances) == 1
    assert registry.get_sample_value("hotline_speech_streams") == 1
    assert registry.get_sample_value("hotline_speech_real_time_factor_count", {"mode": "grammar"})
    assert registry.get_sample_value("hotline_speech_lag_seconds_count")


async def test_a_recognizer_failure_is_reported_and_the_stream_goes_on(
    pool: RecognizerPool, phone: Phone, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = Caller()
    stream = caller.open(pool)
    real_feed = Utterance.feed

    def broken(self: Utterance, frames: Any) -> Any:
        raise RuntimeError("vosk crashed")

    monkeypatch.setattr(Utterance, "feed", broken)
    with capture_logs() as logs:
        stream.listen(YES_NO)
        await caller.play(g711(silence(0.1)))
        assert await caller.ended() == SpeechUnavailable("error")
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["speech recognition failed"]
    assert not stream.listening
    monkeypatch.setattr(Utterance, "feed", real_feed)
    final = await caller.recognize(YES_NO, silence(0.4) + phone("아니요") + silence(1.5))
    assert final.text == "아니요"
