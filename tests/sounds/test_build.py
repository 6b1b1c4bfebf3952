"""Rendering prompts with the real espeak-ng and sox, and the WAV helpers that check them."""

from __future__ import annotations

import json
import math
import wave
from array import array
from pathlib import Path

import pytest

from sounds.audio import WavFormatError, duration_seconds, is_non_silent, read_wav, rms_dbfs
from sounds.build import MANIFEST_NAME, TtsUnavailable, build_prompts
from sounds.catalog import Catalog, UnknownPromptError

CATALOG = Catalog({"digit_3": "三", "unit_yuan": "元", "welcome": "您好，欢迎致电九五五九八"})


def assert_prompt_wav(path: Path) -> None:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (8000, 2, 1)
    assert is_non_silent(path)
    assert 0.05 < duration_seconds(path) < 10


@pytest.mark.tts
def test_build_renders_8khz_mono_and_is_incremental(tmp_path: Path) -> None:
    report = build_prompts(CATALOG, tmp_path)
    assert sorted(report.rendered) == ["digit_3", "unit_yuan", "welcome"]
    assert (report.unchanged, report.removed) == ([], [])
    for prompt_id in CATALOG:
        assert_prompt_wav(tmp_path / f"{prompt_id}.wav")
    # Trimmed: a single syllable, without espeak-ng's trailing silence.
    assert duration_seconds(tmp_path / "digit_3.wav") < 0.5
    assert set(json.loads((tmp_path / MANIFEST_NAME).read_text())) == set(CATALOG)

    again = build_prompts(CATALOG, tmp_path)
    assert again.rendered == []
    assert sorted(again.unchanged) == ["digit_3", "unit_yuan", "welcome"]


@pytest.mark.tts
def test_changed_text_missing_file_and_force_rerender(tmp_path: Path) -> None:
    build_prompts(CATALOG, tmp_path)
    changed = Catalog({**CATALOG.texts, "digit_3": "叁"})
    (tmp_path / "unit_yuan.wav").unlink()
    report = build_prompts(changed, tmp_path)
    assert sorted(report.rendered) == ["digit_3", "unit_yuan"]
    assert build_prompts(changed, tmp_path, force=True, only=["welcome"]).rendered == ["welcome"]


@pytest.mark.tts
def test_ids_leaving_the_catalog_are_removed_but_foreign_files_kept(tmp_path: Path) -> None:
    build_prompts(CATALOG, tmp_path)
    (tmp_path / "studio_take.wav").write_bytes(b"not ours")
    smaller = Catalog({"digit_3": "三"})
    report = build_prompts(smaller, tmp_path)
    assert sorted(report.removed) == ["unit_yuan", "welcome"]
    assert report.unchanged == ["digit_3"]
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["digit_3.wav", "studio_take.wav"]
    assert set(json.loads((tmp_path / MANIFEST_NAME).read_text())) == {"digit_3"}


@pytest.mark.tts
def test_only_renders_the_named_prompts(tmp_path: Path) -> None:
    report = build_prompts(CATALOG, tmp_path, only=["digit_3"])
    assert report.rendered == ["digit_3"]
    assert not (tmp_path / "welcome.wav").exists()
    with pytest.raises(UnknownPromptError):
        build_prompts(CATALOG, tmp_path, only=["nope"])


@pytest.mark.tts
def test_corrupt_manifest_means_rerender(tmp_path: Path) -> None:
    only = ["digit_3"]
    build_prompts(CATALOG, tmp_path, only=only)
    (tmp_path / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    assert build_prompts(CATALOG, tmp_path, only=only).rendered == ["digit_3"]


@pytest.mark.tts
def test_rendered_pcm_is_readable(tmp_path: Path) -> None:
    build_prompts(CATALOG, tmp_path, only=["welcome"])
    pcm, rate = read_wav(tmp_path / "welcome.wav")
    assert rate == 8000
    assert len(pcm) % 2 == 0


@pytest.mark.tts
def test_missing_tools_raise_tts_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TtsUnavailable, match="espeak-ng and sox not found"):
        build_prompts(CATALOG, tmp_path / "out")


def write_wav(path: Path, samples: list[int], *, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(8000)
        data = array("h", samples).tobytes() if width == 2 else bytes(len(samples))
        wav.writeframes(data)
    return path


def test_rms_dbfs() -> None:
    assert rms_dbfs(b"") == -math.inf
    assert rms_dbfs(bytes(160)) == -math.inf
    square = array("h", [32767, -32768] * 80).tobytes()
    assert rms_dbfs(square) == pytest.approx(0.0, abs=0.01)
    half = array("h", [16384, -16384] * 80).tobytes()
    assert rms_dbfs(half) == pytest.approx(-6.02, abs=0.01)
    with pytest.raises(WavFormatError, match="even length"):
        rms_dbfs(b"\x00")


def test_wav_helpers_on_written_files(tmp_path: Path) -> None:
    loud = write_wav(tmp_path / "loud.wav", [8000, -8000] * 4000)
    quiet = write_wav(tmp_path / "quiet.wav", [10, -10] * 4000)
    assert read_wav(loud)[1] == 8000
    assert duration_seconds(loud) == pytest.approx(1.0)
    assert is_non_silent(loud)
    assert not is_non_silent(quiet)
    assert is_non_silent(quiet, threshold_dbfs=-80.0)


@pytest.mark.parametrize(("channels", "width"), [(2, 2), (1, 1)])
def test_read_wav_requires_16_bit_mono(tmp_path: Path, channels: int, width: int) -> None:
    path = write_wav(tmp_path / "x.wav", [0] * 80, channels=channels, width=width)
    with pytest.raises(WavFormatError, match="need 16-bit mono"):
        read_wav(path)


def test_read_wav_rejects_non_wav(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"hello, not a wav")
    with pytest.raises(WavFormatError, match="not a PCM WAV"):
        read_wav(path)
    with pytest.raises(WavFormatError, match="not a PCM WAV"):
        duration_seconds(path)
