"""render_play: the PCM of a Play from the shipped prompts, studio recordings and TTS."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ivr.dialog.actions import PromptRef, SpokenText
from ivr.sip import prompt_audio
from ivr.sip.prompt_audio import clear_prompt_cache, prompt_pcm, render_play
from sounds.audio import read_wav
from sounds.catalog import Catalog, PromptLibrary, shipped_dir


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_prompt_cache()
    yield
    clear_prompt_cache()


@pytest.fixture
def shipped() -> PromptLibrary:
    return PromptLibrary(Catalog.shipped(), [shipped_dir()])


def write_wav(path: Path, pcm: bytes, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


def fake_tts(text: str) -> bytes:
    return b"\x01\x00" * len(text)  # one sample per character, easy to recognise


def test_prompts_are_concatenated_in_order(shipped: PromptLibrary) -> None:
    pcm = render_play([PromptRef("digit_9"), PromptRef("digit_5")], shipped, None)
    nine, _ = read_wav(shipped_dir() / "digit_9.wav")
    five, _ = read_wav(shipped_dir() / "digit_5.wav")
    assert pcm == nine + five
    assert len(nine) > 1000


def test_spoken_text_goes_to_the_tts(shipped: PromptLibrary) -> None:
    pcm = render_play([SpokenText("幸福路"), PromptRef("digit_1")], shipped, fake_tts)
    one, _ = read_wav(shipped_dir() / "digit_1.wav")
    assert pcm == b"\x01\x00" * 3 + one


def test_spoken_text_without_tts_is_skipped_with_a_warning(shipped: PromptLibrary) -> None:
    with capture_logs() as logs:
        pcm = render_play([SpokenText("幸福路"), PromptRef("digit_1")], shipped, None)
    assert pcm == read_wav(shipped_dir() / "digit_1.wav")[0]
    assert [(e["event"], e["log_level"]) for e in logs] == [("play_item_skipped", "warning")]


def test_a_failing_tts_costs_one_item_not_the_call(shipped: PromptLibrary) -> None:
    def broken(text: str) -> bytes:
        raise RuntimeError("espeak-ng crashed")

    with capture_logs() as logs:
        pcm = render_play([SpokenText("x"), PromptRef("digit_2")], shipped, broken)
    assert pcm == read_wav(shipped_dir() / "digit_2.wav")[0]
    assert "espeak-ng crashed" in logs[0]["reason"]


def test_studio_recordings_come_first(tmp_path: Path) -> None:
    write_wav(tmp_path / "digit_3.wav", b"\x05\x00" * 400)
    library = PromptLibrary(Catalog.shipped(), [tmp_path, shipped_dir()])
    assert render_play([PromptRef("digit_3")], library, None) == b"\x05\x00" * 400


def test_a_prompt_without_a_file_is_spoken_from_its_catalog_text(tmp_path: Path) -> None:
    library = PromptLibrary(Catalog.shipped(), [tmp_path])  # no WAV at all
    text = Catalog.shipped().text("digit_4")
    assert render_play([PromptRef("digit_4")], library, fake_tts) == b"\x01\x00" * len(text)
    with capture_logs() as logs:
        assert render_play([PromptRef("digit_4")], library, None) == b""
    assert logs[0]["item"] == "prompt:digit_4"


@pytest.mark.parametrize(
    ("name", "content"),
    [("16k", None), ("garbage", b"RIFF nonsense")],
)
def test_an_unusable_wav_falls_back_like_a_missing_one(
    tmp_path: Path, name: str, content: bytes | None
) -> None:
    path = tmp_path / "digit_6.wav"
    if content is None:
        write_wav(path, b"\x07\x00" * 1600, rate=16000)
    else:
        path.write_bytes(content)
    library = PromptLibrary(Catalog.shipped(), [tmp_path])
    with capture_logs() as logs:
        assert prompt_pcm("digit_6", library) is None
    assert logs[0]["event"] == "prompt_unreadable"
    assert render_play([PromptRef("digit_6")], library, fake_tts) == b"\x01\x00" * 1


def test_an_unknown_prompt_id_is_logged_and_skipped(shipped: PromptLibrary) -> None:
    with capture_logs() as logs:
        pcm = render_play([PromptRef("no_such_prompt"), PromptRef("digit_7")], shipped, None)
    assert pcm == read_wav(shipped_dir() / "digit_7.wav")[0]
    assert [(e["event"], e["log_level"]) for e in logs] == [("prompt_unknown", "error")]


def test_decoded_prompts_are_cached_and_a_replaced_file_is_reread(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "digit_8.wav", b"\x08\x00" * 100)
    library = PromptLibrary(Catalog.shipped(), [tmp_path])
    for _ in range(3):
        assert render_play([PromptRef("digit_8")], library, None) == b"\x08\x00" * 100
    info = prompt_audio._decoded.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    write_wav(path, b"\x09\x00" * 120)  # re-recorded: new size (and mtime)
    assert render_play([PromptRef("digit_8")], library, None) == b"\x09\x00" * 120
