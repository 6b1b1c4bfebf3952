"""One utterance on a Vosk recognizer, and the speech events it produces.

Synchronous: a worker of the recognizer pool (speech/recognizer.py) makes an `Utterance` for
each ``listen()``, feeds it the stream's audio in order and carries the events it returns to
the event loop. Nothing here knows about asyncio; `Vocabulary` and `FreeRecognizers` are shared
by the workers and lock what they share.

Two modes:

- **grammar**: a recognizer built for the phrases of one menu (0.4 ms to build). Results come
  as Vosk's n-best list; the text is the best hypothesis, and it counts only if it is exactly
  one phrase: its confidence is its posterior over the n-best list (the list's likelihoods,
  softmax-normalised: the sentence-level counterpart of Kaldi's MBR word confidence, which Vosk
  does not return together with alternatives). Off-grammar speech comes back as the model's
  garbage word or as a string of phrases, with confidence 0.
- **free**: the model's own language model, for addresses and free descriptions. A fresh
  free-form recognizer spends its first seconds filling the cache of its lazily composed
  decoding graph (3.3 s of CPU for the first 5 s of audio, against 0.6 s warm), so they are
  kept warm and shared (`FreeRecognizers`) and recycled after an amount of audio, which bounds
  the memory the cache grows to. Confidence is the mean MBR word confidence.

In both, Vosk gets the audio only from shortly before the endpointer hears speech.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import vosk

from speech.endpoint import Endpointer

Mode = Literal["grammar", "free"]
"""Which kind of recognizer an utterance runs on."""

FinalReason = Literal["endpoint", "max_length", "stopped"]
"""Why an utterance ended: the caller stopped speaking, spoke too long, or the transport asked."""

UnavailableReason = Literal["free_form_busy", "no_valid_phrases", "error"]
"""Why a ``listen()`` got no recognizer."""

PRE_ROLL_SECONDS = 0.5
"""Audio before the detected start of speech that Vosk gets (the onset is 0.1 s before the
detection; more context helps its first word and its i-vector)."""

GARBAGE_WORDS = ("[unk]", "<UNK>", "<unk>")
"""How models spell their garbage word (Vosk's own models ``[unk]``, the Korean one ``<UNK>``)."""


# ---------------------------------------------------------------------- events


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started speaking: the transport stops the prompt (barge-in)."""

    audio_seconds: float
    """Audio since ``listen()`` when speech was detected."""


@dataclass(frozen=True)
class PartialResult:
    """What the recognizer has heard so far (after speech started, when it changes)."""

    text: str
    """The current best hypothesis."""


@dataclass(frozen=True)
class FinalResult:
    """The utterance ended; the stream stops listening until the next ``listen()``."""

    text: str
    """The best hypothesis as the recognizer returned it; empty when no speech was heard."""
    confidence: float
    """0..1; 0 when the text is not exactly one phrase of the grammar."""
    alternatives: tuple[str, ...] = ()
    """Other phrases of the grammar in the n-best list, best first (grammar mode only)."""
    reason: FinalReason = "endpoint"
    """Why the utterance ended."""
    audio_seconds: float = 0.0
    """Audio the utterance took, from ``listen()`` to its end."""


@dataclass(frozen=True)
class SpeechUnavailable:
    """``listen()`` got no recognizer: the transport collects DTMF instead."""

    reason: UnavailableReason
    """All free-form recognizers busy, no phrase of the grammar known to the model, or a
    recognizer failure."""


SpeechEvent = SpeechStarted | PartialResult | FinalResult | SpeechUnavailable
"""What a speech stream reports to its transport."""


# ---------------------------------------------------------------------- results (pure)


def _posteriors(alternatives: Iterable[dict[str, Any]]) -> list[tuple[str, float]]:
    """(text, posterior) of an n-best list, in Vosk's order (best first), same texts merged."""
    hypotheses = [
        (" ".join(str(a.get("text", "")).split()), float(a.get("confidence", 0.0)))
        for a in alternatives
    ]
    if not hypotheses:
        return []
    top = max(likelihood for _, likelihood in hypotheses)
    weights: dict[str, float] = {}
    for text, likelihood in hypotheses:
        weights[text] = weights.get(text, 0.0) + math.exp(likelihood - top)
    total = sum(weights.values())
    return [(text, weight / total) for text, weight in weights.items()]


def grammar_result(raw: str, phrases: Iterable[str]) -> tuple[str, float, tuple[str, ...]]:
    """(text, confidence, alternatives) of a grammar recognizer's n-best JSON."""
    allowed = set(phrases)
    ranked = _posteriors(json.loads(raw).get("alternatives") or [])
    if not ranked:
        return "", 0.0, ()
    best, posterior = ranked[0]
    confidence = posterior if best in allowed else 0.0
    others = tuple(text for text, _ in ranked[1:] if text in allowed)
    return best, confidence, others


def free_result(raw: str) -> tuple[str, float]:
    """(text, confidence) of a free-form recognizer's MBR JSON (mean word confidence)."""
    data = json.loads(raw)
    text = " ".join(str(data.get("text", "")).split())
    confidences = [float(word.get("conf", 0.0)) for word in data.get("result") or []]
    if not text or not confidences:
        return text, 0.0
    return text, sum(confidences) / len(confidences)


# ---------------------------------------------------------------------- the model's words


class Vocabulary:
    """Which words a model knows (``vosk_model_find_word``), remembered; safe across threads.

    Vosk drops a grammar word it does not know without a word, which would turn 상담원 연결
    into 상담원 and accept it; phrases with missing words are refused instead.
    """

    MAX_REMEMBERED = 100_000
    """Words remembered before the memory is cleared (flows have a few hundred)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._known: dict[str, bool] = {}
        self._lock = threading.Lock()
        self.garbage = next((w for w in GARBAGE_WORDS if self.knows(w)), None)
        """The model's garbage word, added to every grammar to soak up off-grammar speech."""

    def knows(self, word: str) -> bool:
        """Whether the model's vocabulary has ``word``."""
        with self._lock:
            known = self._known.get(word)
        if known is None:
            known = self._model.vosk_model_find_word(word) != -1
            with self._lock:
                if len(self._known) >= self.MAX_REMEMBERED:
                    self._known.clear()
                self._known[word] = known
        return known

    def missing(self, phrase: str) -> list[str]:
        """The words of ``phrase`` the model does not know."""
        return [word for word in phrase.split() if not self.knows(word)]


def grammar_json(phrases: Sequence[str], garbage: str | None) -> str:
    """The grammar Vosk takes: a JSON list of phrases, in UTF-8 (not ``\\uXXXX`` escapes)."""
    return json.dumps([*phrases, *([garbage] if garbage else [])], ensure_ascii=False)


# ---------------------------------------------------------------------- memory


def _load_malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: gives freed recognizer memory back to the system (without
    it the process keeps the peak); a no-op where the C library has no such function."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def malloc_trim() -> None:
        trim(0)

    return malloc_trim


malloc_trim = _load_malloc_trim()
"""Return free heap memory to the operating system (glibc), or do nothing."""


@dataclass
class WarmRecognizer:
    """A free-form recognizer and the audio it has decoded since it was made."""

    recognizer: Any
    """The ``vosk.KaldiRecognizer``."""
    audio_seconds: float = 0.0
    """Audio decoded so far, over all the utterances it served."""


class FreeRecognizers:
    """Warm free-form recognizers shared by all streams: at most ``limit`` in use at once, each
    recycled (freed, then ``malloc_trim``) after ``reuse_seconds`` of audio; 0 = after every
    utterance. A recognizer carries nothing of a caller into the next utterance: Vosk's
    ``FinalResult`` deletes its decoder and feature pipeline (i-vector state included); what
    stays is the graph cache, which is the point of keeping it."""

    def __init__(self, model: Any, sample_rate: int, limit: int, reuse_seconds: float) -> None:
        self.model = model
        self.sample_rate = sample_rate
        self.limit = limit
        """Free-form utterances allowed at once."""
        self.reuse_seconds = reuse_seconds
        """Audio after which a recognizer is freed and later replaced by a new one."""
        self.created = 0
        """Recognizers made so far."""
        self.recycled = 0
        """Recognizers freed so far."""
        self._idle: list[WarmRecognizer] = []
        self._in_use = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        """Free-form utterances running now."""
        return self._in_use

    def acquire(self) -> WarmRecognizer | None:
        """A recognizer for one utterance, or None when ``limit`` are in use."""
        with self._lock:
            if self._closed or self._in_use >= self.limit:
                return None
            self._in_use += 1
            warm = self._idle.pop() if self._idle else None
            if warm is None:
                self.created += 1
        if warm is None:
            recognizer = vosk.KaldiRecognizer(self.model, self.sample_rate)
            recognizer.SetWords(True)
            warm = WarmRecognizer(recognizer)
        return warm

    def release(self, warm: WarmRecognizer, audio_seconds: float) -> None:
        """Take back a recognizer whose utterance ended (its ``FinalResult`` was read)."""
        warm.audio_seconds += audio_seconds
        with self._lock:
            self._in_use -= 1
            keep = not self._closed and warm.audio_seconds < self.reuse_seconds
            if keep:
                self._idle.append(warm)
            else:
                self.recycled += 1
        if not keep:
            warm.recognizer = None
            malloc_trim()

    def close(self) -> None:
        """Free the idle recognizers; those in use are freed when released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self.recycled += len(idle)
        if idle:
            for warm in idle:
                warm.recognizer = None
            malloc_trim()


# ---------------------------------------------------------------------- one utterance


class Utterance:
    """From ``listen()`` to its final: endpointing, Vosk, partials, the result.

    ``feed`` takes frames and returns events; when the utterance ends, ``final`` is set and
    the recognizer has been handed back (``release``). ``stop`` ends it now; ``abandon``
    hands the recognizer back without a result.
    """

    def __init__(
        self,
        *,
        generation: int,
        mode: Mode,
        recognizer: Any,
        phrases: Sequence[str],
        endpointer: Endpointer,
        release: Callable[[float], None],
        partial_interval: float,
    ) -> None:
        self.generation = generation
        """The ``listen()`` this utterance answers (stale events are dropped by it)."""
        self.mode: Mode = mode
        """Grammar or free-form."""
        self.phrases = tuple(phrases)
        """The phrases a grammar result must match exactly (empty in free-form)."""
        self.endpointer = endpointer
        """The utterance's speech detector; its clock is the utterance's audio."""
        self.final: FinalResult | None = None
        """The result, once the utterance ended."""
        self.cpu_seconds = 0.0
        """CPU time the utterance cost its worker thread."""
        self.dropped_frames = 0
        """Frames the stream dropped during this utterance (its backlog was full)."""
        self._recognizer = recognizer
        self._release = release
        self._partial_interval = partial_interval
        self._last_partial_at = 0.0
        self._partial = ""
        self._pre_roll: deque[bytes] = deque()
        self._pre_roll_bytes = 0
        self._pre_roll_limit = round(PRE_ROLL_SECONDS * endpointer.sample_rate) * 2

    def feed(self, frames: Sequence[bytes]) -> list[SpeechEvent]:
        """Take frames of 16-bit PCM in order; return the events they caused.

        Until the endpointer hears speech, frames only fill a short pre-roll: Vosk decodes
        nothing while the caller is silent (most of the time a prompt plays), and what it
        would make of it is dropped anyway. When speech starts, the pre-roll (the onset and
        some silence before it) goes to Vosk, and then everything until the end.
        """
        if self.final is not None or not frames:
            return []
        started = time.thread_time()
        events: list[SpeechEvent] = []
        pending: list[bytes] = []
        for frame in frames:
            transition = self.endpointer.feed(frame)
            if transition is None and self.endpointer.speech_at is None:
                self._hold(frame)
                continue
            if transition == "start":
                pending.extend(self._pre_roll)
                self._pre_roll.clear()
                self._pre_roll_bytes = 0
                events.append(SpeechStarted(round(self.endpointer.audio_seconds, 3)))
            pending.append(frame)
            if transition in ("end", "max_length"):
                self._recognizer.AcceptWaveform(b"".join(pending))
                events.append(self._finish("endpoint" if transition == "end" else "max_length"))
                self.cpu_seconds += time.thread_time() - started
                return events
        if pending and self._recognizer.AcceptWaveform(b"".join(pending)):
            events.append(self._finish("endpoint"))  # Vosk's own endpoint, after speech
        if self.final is None and self.endpointer.speaking:
            events.extend(self._partial_result())
        self.cpu_seconds += time.thread_time() - started
        return events

    def stop(self) -> FinalResult:
        """End the utterance now and return its result."""
        if self.final is None:
            started = time.thread_time()
            self._finish("stopped")
            self.cpu_seconds += time.thread_time() - started
        assert self.final is not None
        return self.final

    def abandon(self) -> None:
        """End the utterance without a result (stream closed, or a newer ``listen()``)."""
        if self.final is None and self._recognizer is not None:
            self._recognizer.FinalResult()  # frees the decoder; a shared one starts clean
            self._hand_back()

    def _hold(self, frame: bytes) -> None:
        self._pre_roll.append(frame)
        self._pre_roll_bytes += len(frame)
        while self._pre_roll_bytes - len(self._pre_roll[0]) >= self._pre_roll_limit:
            self._pre_roll_bytes -= len(self._pre_roll.popleft())

    def _partial_result(self) -> list[SpeechEvent]:
        now = self.endpointer.audio_seconds
        if now - self._last_partial_at < self._partial_interval:
            return []
        self._last_partial_at = now
        text = " ".join(
            str(json.loads(self._recognizer.PartialResult()).get("partial", "")).split()
        )
        if not text or text == self._partial:
            return []
        self._partial = text
        return [PartialResult(text)]

    def _result(self, *, flush: bool) -> str:
        """Vosk's result. ``FinalResult`` pushes the audio still in the feature pipeline
        through the network first (about 16 ms of CPU, as much as 0.6 s of grammar decoding)
        and frees the decoder; ``Result`` does neither (0.6 ms). A grammar utterance that ends
        in silence loses nothing by not flushing; a shared free-form recognizer is always
        flushed, so that its next caller starts with a new decoder and feature pipeline."""
        if flush or self.mode == "free":
            return str(self._recognizer.FinalResult())
        return str(self._recognizer.Result())

    def _finish(self, reason: FinalReason) -> FinalResult:
        raw = self._result(flush=reason != "endpoint")
        alternatives: tuple[str, ...] = ()
        if self.endpointer.speech_at is None:
            text, confidence = "", 0.0  # noise or silence: whatever Vosk made of it is dropped
        elif self.mode == "grammar":
            text, confidence, alternatives = grammar_result(raw, self.phrases)
        else:
            text, confidence = free_result(raw)
        self.final = FinalResult(
            text, confidence, alternatives, reason, round(self.endpointer.audio_seconds, 3)
        )
        self._hand_back()
        return self.final

    def _hand_back(self) -> None:
        self._recognizer = None
        self._release(self.endpointer.audio_seconds)
