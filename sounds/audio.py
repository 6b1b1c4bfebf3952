"""Small WAV helpers for prompts (16-bit mono PCM), with the stdlib `wave` and `array` only."""

from __future__ import annotations

import math
import sys
import wave
from array import array
from pathlib import Path

_FULL_SCALE = 32768.0


class WavFormatError(ValueError):
    """A file is not a readable 16-bit mono PCM WAV."""


def read_wav(path: Path) -> tuple[bytes, int]:
    """Return (little-endian 16-bit PCM, sample rate); raise WavFormatError for anything else."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            if channels != 1 or width != 2:
                raise WavFormatError(
                    f"{path}: need 16-bit mono PCM, got {channels} channel(s)"
                    f" of {width * 8}-bit samples"
                )
            return wav.readframes(wav.getnframes()), rate
    except (wave.Error, EOFError) as exc:
        raise WavFormatError(f"{path}: not a PCM WAV file: {exc}") from exc


def _samples(pcm: bytes) -> array[int]:
    if len(pcm) % 2:
        raise WavFormatError(f"16-bit PCM must have an even length, got {len(pcm)} bytes")
    samples = array("h", pcm)
    if sys.byteorder == "big":
        samples.byteswap()  # WAV PCM is little-endian
    return samples


def rms_dbfs(pcm: bytes) -> float:
    """RMS level of 16-bit little-endian PCM in dBFS (full-scale square = 0); -inf if silent."""
    samples = _samples(pcm)
    if not samples:
        return -math.inf
    mean_square = math.fsum(s * s for s in samples) / len(samples)
    if mean_square == 0:
        return -math.inf
    return 10 * math.log10(mean_square / (_FULL_SCALE * _FULL_SCALE))


def is_non_silent(path: Path, threshold_dbfs: float = -45.0) -> bool:
    """True when the file's overall RMS level is above `threshold_dbfs`."""
    pcm, _rate = read_wav(path)
    return rms_dbfs(pcm) > threshold_dbfs


def duration_seconds(path: Path) -> float:
    """Length of a WAV file in seconds (any PCM format the `wave` module reads)."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() / wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise WavFormatError(f"{path}: not a PCM WAV file: {exc}") from exc
