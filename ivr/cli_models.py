"""`hotline models check` and `hotline models download`: the speech model from a terminal.

``check`` loads a Vosk model folder the way the hotline will and describes it; exit 1 with the
reason when it is missing or cannot be loaded. ``download`` fetches a published model (or any
archive from ``--url`` with a checksum), verifies and unpacks it; progress goes to stderr, the
installed folder to stdout; exit 1 when the download fails, 2 when the request itself is wrong
(unknown name, nothing to verify the archive with).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TextIO

from ivr.logs import configure_logging
from ivr.settings import Settings
from speech.download import DownloadError, download_model, plan_download
from speech.model import ModelError, load_model


def _quiet_logs(settings: Settings) -> None:
    # The command prints its own report; log lines only for warnings, unless debugging.
    level = "warning" if settings.log_level == "info" else settings.log_level
    configure_logging(level, settings.log_format, stream=sys.stderr)


def check_command(settings: Settings, path: Path | None, *, out: TextIO | None = None) -> int:
    """Load the model in `path` (default: the configured ``vosk_model``) and describe it."""
    out = out or sys.stdout
    _quiet_logs(settings)
    folder = path if path is not None else settings.vosk_model
    if folder is None:
        print(
            "hotline: no speech model to check: give a PATH or set HOTLINE_VOSK_MODEL "
            "(vosk_model in the settings file)",
            file=sys.stderr,
        )
        return 1
    try:
        model = load_model(folder)
    except ModelError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 1
    if model.grammar_capable:
        grammars = "yes (dynamic graph: graph/HCLr.fst + graph/Gr.fst)"
    else:
        grammars = "no (static graph: HCLG.fst; free speech only)"
    vocabulary = (
        f"{model.vocabulary_size} words (graph/words.txt)"
        if model.vocabulary_size is not None
        else "not listed (no graph/words.txt)"
    )
    rows = [
        ("path", str(model.path)),
        ("size", f"{model.size_bytes / 1_000_000:.1f} MB ({model.size_bytes} bytes)"),
        ("sample rate", f"{model.sample_rate} Hz"),
        ("grammars", grammars),
        ("vocabulary", vocabulary),
        ("garbage word", model.garbage_word or "none (grammars cannot say 'something else')"),
        ("load time", f"{model.load_seconds:.2f} s"),
    ]
    for label, value in rows:
        print(f"{label + ':':<14}{value}", file=out)
    return 0


def download_command(
    settings: Settings,
    name: str,
    *,
    dest: Path,
    url: str | None,
    sha256: str | None,
    md5: str | None,
    out: TextIO | None = None,
) -> int:
    """Download, verify and unpack model `name` into ``dest``."""
    out = out or sys.stdout
    _quiet_logs(settings)
    try:
        plan = plan_download(name, url=url, sha256=sha256, md5=md5)
    except DownloadError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2
    print(f"downloading {plan.url} into {dest}", file=sys.stderr)
    try:
        model = download_model(plan, dest, progress=TerminalProgress(sys.stderr))
    except DownloadError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 1
    print(f"installed {model}", file=out)
    print(
        f"use it with HOTLINE_VOSK_MODEL={model} (check it: hotline models check {model})", file=out
    )
    return 0


class TerminalProgress:
    """Download progress on `stream`: one rewritten line on a terminal, a line per 10 %
    otherwise (logs and CI keep a readable record)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = _isatty(stream)
        self._last_draw = -math.inf
        self._last_step = -1
        self._open_line = False

    def update(self, done: int, total: int | None) -> None:
        finished = total is not None and done >= total
        text = _amount(done, total)
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw < 0.2 and not finished:
                return
            self._last_draw = now
            self._stream.write(f"\r{text}\033[K")
            self._open_line = not finished
            if finished:
                self._stream.write("\n")
        else:
            # Tenths of the archive, or every 10 MB when the server gives no length.
            step = done * 10 // total if total else done // 10_000_000
            if step == self._last_step:
                return
            self._last_step = step
            self._stream.write(f"{text}\n")
        self._stream.flush()

    def note(self, text: str) -> None:
        if self._open_line:
            self._stream.write("\n")
            self._open_line = False
        self._stream.write(f"{text}\n")
        self._stream.flush()


def _amount(done: int, total: int | None) -> str:
    if not total:
        return f"{done / 1_000_000:.1f} MB"
    return f"{done / 1_000_000:.1f} / {total / 1_000_000:.1f} MB ({done * 100 // total} %)"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
