"""The in-band DTMF detector: every key at realistic levels, never a key from speech or music."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from aiortp.codecs.g711 import PcmaCodec, PcmuCodec
from hypothesis import given, settings
from hypothesis import strategies as st

from sounds.audio import read_wav
from sounds.catalog import shipped_dir
from speech.dtmf import (
    BLOCK_SAMPLES,
    COL_FREQS,
    KEYS,
    ROW_FREQS,
    DtmfDetector,
    goertzel_power,
)

RATE = 8000
ALL_KEYS = "".join(KEYS)  # 123A456B789C*0#D


def seeded(seed: int) -> random.Random:
    """Reproducible test signals (phases, noise)."""
    return random.Random(seed)  # noqa: S311 - test signals, not secrets


def _freqs(key: str) -> tuple[float, float]:
    row = next(i for i, keys in enumerate(KEYS) if key in keys)
    return ROW_FREQS[row], COL_FREQS[KEYS[row].index(key)]


def tone(
    key: str,
    ms: float,
    *,
    dbfs: float = -10.0,
    twist_db: float = 0.0,
    deviation: float = 0.0,
    rng: random.Random | None = None,
) -> list[float]:
    """A key press: the sum of its two sines; `dbfs` is the level of each tone's peak."""
    rng = rng or seeded(0)
    low, high = (f * (1 + deviation) for f in _freqs(key))
    peak = 32767 * 10 ** (dbfs / 20)
    # Positive twist: the high group louder than the low group, split evenly around `dbfs`.
    a_low, a_high = peak / 10 ** (twist_db / 40), peak * 10 ** (twist_db / 40)
    p_low, p_high = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
    n = round(RATE * ms / 1000)
    return [
        a_low * math.sin(2 * math.pi * low * i / RATE + p_low)
        + a_high * math.sin(2 * math.pi * high * i / RATE + p_high)
        for i in range(n)
    ]


def silence(ms: float) -> list[float]:
    return [0.0] * round(RATE * ms / 1000)


def pcm(samples: list[float], *, noise_dbfs: float | None = None, seed: int = 1) -> bytes:
    """16-bit little-endian PCM, optionally with white noise (`noise_dbfs` = its RMS level)."""
    rng = seeded(seed)
    sigma = 32767 * 10 ** (noise_dbfs / 20) if noise_dbfs is not None else 0.0
    out = array("h", (max(-32768, min(32767, round(s + rng.gauss(0, sigma)))) for s in samples))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def detect(audio: bytes, *, chunk: int = 320, detector: DtmfDetector | None = None) -> str:
    detector = detector or DtmfDetector()
    keys: list[str] = []
    for start in range(0, len(audio), chunk):
        keys += detector.feed(audio[start : start + chunk])
    return "".join(keys)


def sequence(keys: str, *, on_ms: float = 80, off_ms: float = 60, **kwargs: float) -> list[float]:
    samples = silence(off_ms)
    rng = seeded(7)
    for key in keys:
        samples += tone(key, on_ms, rng=rng, **kwargs) + silence(off_ms)
    return samples


# --- the measure ---


def test_goertzel_power_of_a_sine_is_its_mean_power() -> None:
    amplitude = 8000.0
    block = [amplitude * math.sin(2 * math.pi * 1209 * i / RATE + 0.3) for i in range(800)]
    assert goertzel_power(block, 1209) == pytest.approx(amplitude**2 / 2, rel=0.01)
    # One row away (1209 vs 1336 Hz) nothing of it is left.
    assert goertzel_power(block, 1336) < amplitude**2 / 2 * 0.001
    assert goertzel_power([], 697) == 0.0


# --- every key is heard ---


def test_every_key_including_star_and_hash_is_heard() -> None:
    assert detect(pcm(sequence(ALL_KEYS))) == ALL_KEYS


@pytest.mark.parametrize("dbfs", [-4.0, -10.0, -20.0, -30.0])
def test_every_key_across_levels(dbfs: float) -> None:
    assert detect(pcm(sequence(ALL_KEYS, dbfs=dbfs))) == ALL_KEYS


@pytest.mark.parametrize("twist_db", [-4.0, -2.0, 2.0, 4.0, 6.0])
def test_every_key_with_twist_within_limits(twist_db: float) -> None:
    assert detect(pcm(sequence(ALL_KEYS, twist_db=twist_db))) == ALL_KEYS


@pytest.mark.parametrize("noise_dbfs", [-40.0, -30.0, -25.0, -20.0])
def test_every_key_in_white_noise(noise_dbfs: float) -> None:
    # Tones at -10 dBFS peak each: -20 dBFS noise is a signal-to-noise ratio of about 10 dB.
    assert detect(pcm(sequence(ALL_KEYS), noise_dbfs=noise_dbfs)) == ALL_KEYS


@pytest.mark.parametrize("codec", [PcmuCodec(), PcmaCodec()], ids=["PCMU", "PCMA"])
def test_every_key_through_g711(codec: PcmuCodec | PcmaCodec) -> None:
    audio = pcm(sequence(ALL_KEYS, dbfs=-20.0), noise_dbfs=-45.0)
    assert detect(codec.decode(codec.encode(audio))) == ALL_KEYS


@pytest.mark.parametrize("deviation", [-0.015, 0.015])
def test_frequency_tolerance_of_one_and_a_half_percent_is_accepted(deviation: float) -> None:
    # ITU-T Q.24: a receiver accepts tones within ±1.5 % of nominal ...
    assert detect(pcm(sequence(ALL_KEYS, deviation=deviation))) == ALL_KEYS


@pytest.mark.parametrize("deviation", [-0.035, 0.035])
def test_frequency_off_by_three_and_a_half_percent_is_rejected(deviation: float) -> None:
    # ... and rejects those ±3.5 % away.
    assert detect(pcm(sequence(ALL_KEYS, deviation=deviation))) == ""


@pytest.mark.parametrize("chunk", [1, 2, 7, 160, 320, 333, 4000])
def test_chunking_does_not_matter(chunk: int) -> None:
    audio = pcm(sequence("95598#"))
    assert detect(audio, chunk=chunk) == "95598#"


# --- durations and gaps ---


@pytest.mark.parametrize("ms", [35.0, 40.0, 50.0])
def test_tones_of_35_ms_or_more_are_heard_at_every_alignment(ms: float) -> None:
    for offset in range(0, BLOCK_SAMPLES, 3):
        audio = pcm([0.0] * offset + tone("5", ms) + silence(60))
        assert detect(audio) == "5", f"{ms} ms tone at offset {offset}"


@pytest.mark.parametrize("ms", [10.0, 15.0, 20.0])
def test_tones_of_20_ms_or_less_are_never_heard(ms: float) -> None:
    for offset in range(0, BLOCK_SAMPLES, 3):
        audio = pcm([0.0] * offset + tone("5", ms) + silence(60))
        assert detect(audio) == "", f"{ms} ms tone at offset {offset}"


def test_a_long_press_is_one_key() -> None:
    assert detect(pcm(silence(20) + tone("8", 1500) + silence(40))) == "8"


def test_the_same_key_twice_after_a_pause_is_two_keys() -> None:
    audio = pcm(tone("1", 60) + silence(40) + tone("1", 60) + silence(40))
    assert detect(audio) == "11"


def test_a_press_is_reported_within_40_ms_of_its_start() -> None:
    detector = DtmfDetector()
    audio = pcm(silence(40) + tone("#", 200) + silence(40))
    reports = [detector.feed(audio[i : i + 320]) for i in range(0, len(audio), 320)]
    assert [key for keys in reports for key in keys] == ["#"]
    # 20 ms frames: the tone starts with frame 2 and is reported by the end of frame 3.
    assert [i for i, keys in enumerate(reports) if keys] == [3]


def test_reset_forgets_a_key_in_progress() -> None:
    detector = DtmfDetector()
    audio = pcm(tone("3", 200))
    assert detector.feed(audio[:1600]) == ["3"]
    detector.reset()
    # The same tone continues: after a reset it is a new press (a re-INVITE, a new leg).
    assert detector.feed(audio[1600:]) == ["3"]


# --- what must not be heard ---


def test_too_quiet_is_not_a_key() -> None:
    assert detect(pcm(sequence(ALL_KEYS, dbfs=-40.0))) == ""


def test_twist_beyond_limits_is_not_a_key() -> None:
    assert detect(pcm(sequence(ALL_KEYS, twist_db=12.0))) == ""
    assert detect(pcm(sequence(ALL_KEYS, twist_db=-10.0))) == ""


def test_a_single_tone_is_not_a_key() -> None:
    for freq in (*ROW_FREQS, *COL_FREQS, 1000.0, 440.0):
        samples = [8000 * math.sin(2 * math.pi * freq * i / RATE) for i in range(4000)]
        assert detect(pcm(samples)) == "", freq


def test_three_tones_are_not_a_key() -> None:
    # Key 5's two tones plus a third as loud: only ~2/3 of the energy is in the pair.
    samples = [
        a + 5000 * math.sin(2 * math.pi * 2000 * i / RATE)
        for i, a in enumerate(tone("5", 500, dbfs=-16.3))
    ]
    assert detect(pcm(samples)) == ""


def test_a_tone_with_its_second_harmonic_is_not_a_key() -> None:
    # A "5" played by something with harmonics (an instrument, a voice) rather than a generator.
    samples = [
        a + 3000 * math.sin(2 * math.pi * 2 * 1336 * i / RATE)
        for i, a in enumerate(tone("5", 500, dbfs=-12.0))
    ]
    assert detect(pcm(samples)) == ""


def _note(midi: int) -> float:
    return float(440.0 * 2 ** ((midi - 69) / 12))


def test_music_chords_are_not_keys() -> None:
    # Triads and sevenths over three octaves, as pure sines and as harmonic-rich tones.
    rng = seeded(3)
    heard: list[tuple[int, tuple[int, ...], int, str]] = []
    for root in range(55, 91, 2):
        for shape in ((0, 4, 7), (0, 3, 7), (0, 4, 7, 10), (0, 5, 9)):
            for harmonics in (1, 4):
                samples = [0.0] * 1600
                for midi in (root + step for step in shape):
                    for h in range(1, harmonics + 1):
                        freq = _note(midi) * h
                        if freq >= 3900:
                            break
                        w, phase = 2 * math.pi * freq / RATE, rng.uniform(0, 2 * math.pi)
                        for i in range(len(samples)):
                            samples[i] += 3000 / h * math.sin(w * i + phase)
                keys = detect(pcm(samples))
                if keys:
                    heard.append((root, shape, harmonics, keys))
    assert heard == []


@settings(max_examples=60, deadline=None)
@given(audio=st.binary(max_size=4000), cuts=st.lists(st.integers(0, 4000), max_size=6))
def test_any_bytes_any_chunking_same_answer_never_a_crash(audio: bytes, cuts: list[int]) -> None:
    whole = DtmfDetector().feed(audio)
    assert all(key in ALL_KEYS for key in whole)
    detector, pieces, start = DtmfDetector(), [], 0
    for cut in sorted(cuts):
        pieces += detector.feed(audio[start:cut])
        start = max(start, cut)
    pieces += detector.feed(audio[start:])
    assert pieces == whole


def test_white_noise_is_not_a_key() -> None:
    assert detect(pcm(silence(5000), noise_dbfs=-12.0)) == ""


def _speech_keys(path: Path) -> str:
    audio, rate = read_wav(path)
    assert rate == RATE, path
    return detect(audio, chunk=320)


def test_no_key_in_any_committed_prompt() -> None:
    """The shipped prompts are real Mandarin speech, five minutes of it: not one key."""
    prompts = sorted(shipped_dir().glob("*.wav"))
    assert len(prompts) > 50
    heard = {p.name: keys for p in prompts if (keys := _speech_keys(p))}
    assert heard == {}


SENTENCES = (
    "您好，欢迎致电国家电网九五五九八服务热线。",
    "请输入您的户号，以井号键结束。",
    "一二三四五六七八九零，星号，井号。",
    "我家停电了，整个小区都没有电，请尽快派人来修理。",
    "电费查询请按一，故障报修请按二，人工服务请按零。",
    "啊，哦，呜，咿，嗯，诶。",
    "今天的天气非常好，我们一起去公园散步吧。",
)


@pytest.mark.tts
@pytest.mark.parametrize(
    ("voice", "pitch", "speed"),
    [
        ("cmn-latn-pinyin", 50, 120),
        ("cmn-latn-pinyin", 50, 175),
        ("cmn-latn-pinyin", 50, 240),
        ("cmn-latn-pinyin+f3", 99, 175),  # a high female voice: sparse, strong harmonics
        ("cmn-latn-pinyin+m3", 20, 175),
        ("cmn-latn-pinyin+klatt", 60, 160),
        ("cmn-latn-pinyin+whisper", 50, 175),
    ],
)
def test_no_key_in_synthesized_mandarin(tmp_path: Path, voice: str, pitch: int, speed: int) -> None:
    heard: dict[str, str] = {}
    for i, sentence in enumerate(SENTENCES):
        raw, wav = tmp_path / f"raw{i}.wav", tmp_path / f"s{i}.wav"
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                voice,
                "-p",
                str(pitch),
                "-s",
                str(speed),
                "-w",
                str(raw),
                sentence,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            ["sox", "-V1", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(wav)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        if keys := _speech_keys(wav):
            heard[sentence] = keys
    assert heard == {}
