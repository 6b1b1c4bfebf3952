"""Render the prompt catalog to 8 kHz 16-bit mono WAVs with Debian's espeak-ng and sox."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from sounds.audio import WavFormatError, is_non_silent, read_wav
from sounds.catalog import PROMPT_ID_PATTERN, Catalog, UnknownPromptError

log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
SAMPLE_RATE = 8000
DEFAULT_VOICE = "cmn-latn-pinyin"
"""espeak-ng's plain `cmn` voice reads many hanzi as English letters; this one speaks pinyin."""

_TIMEOUT_SECONDS = 60.0
# Trim what is quieter than this at both ends, so readback units (digits, 元, 年) concatenate
# without espeak-ng's ~0.3 s tail; low enough to keep soft onsets like s- and f-.
_TRIM_THRESHOLD = "-50d"


class BuildError(Exception):
    """Rendering a prompt failed (the tool exited non-zero, timed out, or wrote silence)."""


class TtsUnavailable(BuildError):  # noqa: N818 - the name states the condition the caller handles
    """espeak-ng or sox is not on PATH (Debian: `apt-get install espeak-ng sox`)."""


@dataclass(frozen=True)
class BuildReport:
    """What one `build_prompts` run did, by prompt id."""

    rendered: list[str] = field(default_factory=list)
    """Prompts rendered this run (missing, changed, or forced)."""
    unchanged: list[str] = field(default_factory=list)
    """Prompts whose WAV was already rendered from the same text and voice."""
    removed: list[str] = field(default_factory=list)
    """Previously rendered prompts deleted because their id left the catalog."""


def text_digest(text: str, voice: str) -> str:
    """The manifest fingerprint: a prompt is re-rendered when its text or voice changes."""
    return hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()


def build_prompts(
    catalog: Catalog,
    out_dir: Path,
    *,
    only: Collection[str] | None = None,
    force: bool = False,
    voice: str = DEFAULT_VOICE,
) -> BuildReport:
    """Render `catalog` (or the `only` ids) into `out_dir/<id>.wav`, incrementally.

    `out_dir/manifest.json` maps each rendered id to `text_digest(text, voice)`; a prompt is
    rendered when its file is missing, its digest differs, or `force`. Files of ids that left
    the catalog are removed, but only those the manifest lists (never a hand-placed file).
    """
    tools = _find_tools()
    targets = list(catalog.texts) if only is None else list(dict.fromkeys(only))
    for prompt_id in targets:
        if prompt_id not in catalog:
            raise UnknownPromptError(f"cannot build unknown prompt id {prompt_id!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out_dir)
    report = BuildReport()
    try:
        for prompt_id in targets:
            digest = text_digest(catalog.text(prompt_id), voice)
            wav = out_dir / f"{prompt_id}.wav"
            if not force and wav.is_file() and manifest.get(prompt_id) == digest:
                report.unchanged.append(prompt_id)
                continue
            _render(catalog.text(prompt_id), wav, voice=voice, tools=tools)
            manifest[prompt_id] = digest
            report.rendered.append(prompt_id)
        for prompt_id in sorted(set(manifest) - set(catalog.texts)):
            (out_dir / f"{prompt_id}.wav").unlink(missing_ok=True)
            del manifest[prompt_id]
            report.removed.append(prompt_id)
    finally:
        # Written even after a failure, so the prompts already rendered are not redone.
        _write_manifest(out_dir, manifest)
    log.info(
        "sounds.build",
        out_dir=str(out_dir),
        rendered=len(report.rendered),
        unchanged=len(report.unchanged),
        removed=len(report.removed),
    )
    return report


@dataclass(frozen=True)
class _Tools:
    espeak: str
    sox: str


def _find_tools() -> _Tools:
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    missing = [name for name, found in (("espeak-ng", espeak), ("sox", sox)) if found is None]
    if espeak is None or sox is None:
        raise TtsUnavailable(
            f"{' and '.join(missing)} not found on PATH; install Debian's espeak-ng and sox"
            " to render prompts"
        )
    return _Tools(espeak=espeak, sox=sox)


def _read_manifest(out_dir: Path) -> dict[str, str]:
    path = out_dir / MANIFEST_NAME
    try:
        data: object = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("sounds.manifest_unreadable", path=str(path), error=str(exc))
        return {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and PROMPT_ID_PATTERN.fullmatch(k) and isinstance(v, str)
        for k, v in data.items()
    ):
        # Re-rendering everything is safe; trusting a mangled manifest could delete files.
        log.warning("sounds.manifest_unreadable", path=str(path), error="not an id -> digest map")
        return {}
    return dict(data)


def _write_manifest(out_dir: Path, manifest: dict[str, str]) -> None:
    path = out_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _run(args: list[str], what: str) -> None:
    try:
        result = subprocess.run(
            args,
            capture_output=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{what}: {args[0]} timed out after {_TIMEOUT_SECONDS:.0f} s") from exc
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace").strip()[-500:]
        raise BuildError(f"{what}: {args[0]} exited with {result.returncode}: {stderr}")


def _render(text: str, wav: Path, *, voice: str, tools: _Tools) -> None:
    what = f"prompt {wav.stem!r}"
    with tempfile.TemporaryDirectory(prefix="prompt-") as scratch:
        text_file, raw, converted = (Path(scratch) / n for n in ("text.txt", "raw.wav", "out.wav"))
        # Text goes through a UTF-8 file (-b 1 -f): no argv quoting or leading-dash surprises.
        # -w writes a file, so espeak-ng never opens an audio device.
        text_file.write_text(text, encoding="utf-8")
        _run([tools.espeak, "-v", voice, "-b", "1", "-w", str(raw), "-f", str(text_file)], what)
        _run(
            [
                tools.sox,
                "-D",  # no dither: byte-identical re-renders keep committed WAVs stable
                "-G",  # guard against clipping in the resampler
                str(raw),
                "-b", "16", "-e", "signed-integer", "-c", "1", str(converted),
                "remix", "-",
                # Trim the start, fade in; reversed, trim the end and fade "in" again, which
                # is a fade-out: espeak-ng stops on a hard cut that clicks when concatenated.
                # (A direct fade-out needs the length, which `silence` makes unknown.)
                "silence", "1", "0.01", _TRIM_THRESHOLD, "fade", "h", "0.005",
                "reverse", "silence", "1", "0.01", _TRIM_THRESHOLD, "fade", "h", "0.015",
                "reverse",
                "rate", str(SAMPLE_RATE),
                "gain", "-n", "-3",
            ],
            what,
        )  # fmt: skip
        try:
            _pcm, rate = read_wav(converted)
        except WavFormatError as exc:
            raise BuildError(f"{what}: sox wrote an unexpected file: {exc}") from exc
        if rate != SAMPLE_RATE or not is_non_silent(converted):
            raise BuildError(f"{what}: rendered audio is silent or not {SAMPLE_RATE} Hz")
        # Replace atomically so a player never reads a half-written prompt.
        tmp = wav.with_suffix(".wav.tmp")
        shutil.copyfile(converted, tmp)
        os.replace(tmp, wav)
