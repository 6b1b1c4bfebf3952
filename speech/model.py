"""The speech model: a Vosk model folder checked, loaded once per process and described.

`load_model(path)` checks the folder before Kaldi sees it, loads it and returns a `SpeechModel`:
the loaded ``vosk.Model`` plus what the rest of the hotline needs to know about it (sample rate,
whether it takes grammars, its garbage word) and the vocabulary checks grammar authors need
(`missing_words`, `grammar_json`). `shared_model(path)` is the one every call uses: a model
costs 1-3 s and ~500 MB to load, and one loaded ``vosk.Model`` serves any number of recognizers
on any number of threads (it is read-only and reference-counted in libvosk).

Why these choices:

- **Checks before Kaldi.** ``vosk.Model`` answers every failure with the same bare
  ``Exception("Failed to create a model")``. Measured with vosk 0.3.45: an empty folder, no
  ``conf/``, an invalid option in ``conf/model.conf``, a garbage, empty or truncated
  ``am/final.mdl``, garbage i-vector files and truncated or garbage FSTs all raise that exception
  (Kaldi prints its own reason on stderr first); 24 randomly truncated or byte-flipped copies of
  a real ``final.mdl`` never aborted the process. So no subprocess probe is needed; the checks here
  exist to name the problem precisely (missing file, wrong magic number) and to keep Kaldi from
  ever reading something that is not a model. Damage inside the float data of a model is
  undetectable by anyone: Kaldi loads it. Checksums at download time (`speech.download`) catch
  that.
- **Kaldi's log level -1** (errors only): a corrupt model then explains itself on stderr, while
  the informational lines of a normal load stay quiet.
- **The vocabulary comes from libvosk** (``vosk_model_find_word``), not from ``graph/words.txt``:
  small models such as the Korean test model ship no ``words.txt`` at all, and the lookup is
  what the recognizer itself uses. ``words.txt`` only gives `vocabulary_size` when present.
- **Never ``vosk.Model(lang=...)`` or ``model_name=``**: both fetch a model list from the
  internet. Models come from a folder (`HOTLINE_VOSK_MODEL`, ``hotline models download``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

DEFAULT_SAMPLE_RATE = 16000
"""Kaldi's MFCC default when ``conf/mfcc.conf`` sets no ``--sample-frequency``."""

GARBAGE_WORDS = ("[unk]", "<UNK>")
"""The unknown-word tokens Vosk models use, in order of preference. A grammar that ends with
the model's garbage word lets the recognizer answer "something else" instead of forcing the
nearest phrase onto whatever the caller said."""

KALDI_LOG_LEVEL = -1
"""Kaldi errors only: a model that fails to load says why on stderr; a good one loads quietly."""

_FST_MAGIC = 2125659606
"""OpenFst's header magic number (little-endian int32 at offset 0 of every ``.fst`` file)."""

_KALDI_BINARY = b"\x00B"
"""Kaldi binary files start with these two bytes; ``final.mdl`` then has ``<TransitionModel>``."""

_NOT_WORDS = frozenset({"<eps>", "<s>", "</s>"})
"""Symbols of the graph's word table that are not words a caller can say."""


class ModelError(Exception):
    """A speech model cannot be used; the message says which folder and why."""


class ModelNotFoundError(ModelError):
    """The model path does not exist or is not a folder."""


class ModelCorruptError(ModelError):
    """The folder is not a complete Vosk model, or Kaldi could not load it."""


class GrammarError(ModelError):
    """A grammar cannot be built for this model (words it does not know, no phrases)."""

    def __init__(self, message: str, missing: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(missing)
        """The out-of-vocabulary words, in the order they first appear."""


@dataclass(frozen=True, eq=False)
class SpeechModel:
    """A loaded Vosk model and what callers need to know about it. Compared by identity."""

    path: Path
    """The model folder, absolute."""
    vosk: Any = field(repr=False)
    """The loaded ``vosk.Model``; hand it to ``vosk.KaldiRecognizer``."""
    sample_rate: int
    """Audio rate the model was trained on (``--sample-frequency`` in ``conf/mfcc.conf``)."""
    grammar_capable: bool
    """True for a dynamic graph (``graph/HCLr.fst`` + ``graph/Gr.fst``): recognizers accept a
    phrase list; False for a static ``HCLG.fst``, where Vosk ignores grammars."""
    size_bytes: int
    """Bytes of every file in the folder."""
    vocabulary_size: int | None
    """Lines of ``graph/words.txt``, or None when the model ships none (most small models)."""
    garbage_word: str | None
    """``[unk]`` or ``<UNK>``, whichever the vocabulary has; None if neither."""
    load_seconds: float
    """How long ``vosk.Model`` took to load it."""

    def has_word(self, word: str) -> bool:
        """True if the recognizer can output `word` (one word, no spaces)."""
        if word.split() != [word]:
            return False
        # The word table also holds epsilon, sentence marks and #0-style disambiguation symbols.
        if word in _NOT_WORDS or word.startswith("#"):
            return False
        return bool(self.vosk.vosk_model_find_word(word) >= 0)

    def missing_words(self, phrases: Iterable[str]) -> list[str]:
        """Words of `phrases` (split on spaces) the model does not know, each once, in order."""
        missing: dict[str, None] = {}
        for phrase in phrases:
            for word in phrase.split():
                if word not in missing and not self.has_word(word):
                    missing[word] = None
        return list(missing)

    def segment(self, phrase: str) -> str | None:
        """`phrase` as vocabulary words separated by spaces, or None if it cannot be written so.

        Flow phrases are written as callers say them, without spaces (电线落地); a Chinese model
        knows segmented words (电线 落地). Words already separated by spaces are kept when known;
        a run the model does not know as one word is split by forward maximum matching against
        the vocabulary (the longest known word first, down to single characters). Greedy is
        enough here: menu phrases are short, and any split into known words lets the grammar
        accept exactly that sequence of sounds.
        """
        words: list[str] = []
        for run in phrase.split():
            if self.has_word(run):
                words.append(run)
                continue
            start = 0
            while start < len(run):
                for end in range(min(len(run), start + MAX_SEGMENT_CHARS), start, -1):
                    if self.has_word(run[start:end]):
                        words.append(run[start:end])
                        start = end
                        break
                else:
                    return None
        return " ".join(words) if words else None

    def grammar_json(self, phrases: Iterable[str]) -> str:
        """The JSON phrase list for ``KaldiRecognizer(model, rate, grammar)``.

        Phrases are words separated by spaces, each word in the vocabulary (Chinese models know
        segmented words such as ``停电``, not whole sentences). The garbage word is appended when
        the model has one. Raises `GrammarError` naming every missing word, for an empty phrase
        list, or when the model's graph is static and would silently ignore the grammar.
        """
        cleaned = [" ".join(phrase.split()) for phrase in phrases]
        if not self.grammar_capable:
            raise GrammarError(
                f"the model in {self.path} has a static graph (HCLG.fst) and takes no grammar"
            )
        if not cleaned or not all(cleaned):
            raise GrammarError("a grammar needs at least one phrase, and no phrase may be empty")
        missing = self.missing_words(cleaned)
        if missing:
            raise GrammarError(
                f"not in the vocabulary of the model in {self.path}: {', '.join(missing)}", missing
            )
        if self.garbage_word is not None and self.garbage_word not in cleaned:
            cleaned.append(self.garbage_word)
        # Vosk parses the grammar as UTF-8 JSON; \uXXXX escapes would not match its word table.
        return json.dumps(cleaned, ensure_ascii=False)


MAX_SEGMENT_CHARS = 8
"""The longest run of characters tried as one vocabulary word when segmenting a phrase."""


def check_model_folder(path: Path) -> None:
    """Raise `ModelNotFoundError` or `ModelCorruptError` unless `path` looks like a Vosk model.

    Checks what Kaldi needs before it reads anything: ``am/final.mdl`` (a Kaldi binary
    transition model), ``conf/``, and a decoding graph (``graph/HCLG.fst``, or ``graph/HCLr.fst``
    with ``graph/Gr.fst``, or the older ``HCLG.fst`` at the top) whose files carry OpenFst's
    magic number.
    """
    if not path.exists():
        raise ModelNotFoundError(f"speech model {path} does not exist")
    if not path.is_dir():
        hint = " (unpack the archive first)" if path.suffix == ".zip" else ""
        raise ModelNotFoundError(f"speech model {path} is a file, not a model folder{hint}")
    final_mdl = path / "am" / "final.mdl"
    if not final_mdl.is_file():
        raise ModelCorruptError(f"{path} is not a Vosk model: no am/final.mdl{_inner_hint(path)}")
    with final_mdl.open("rb") as f:
        head = f.read(64)
    if not head.startswith(_KALDI_BINARY) or b"<TransitionModel>" not in head:
        raise ModelCorruptError(f"{final_mdl} is not a Kaldi acoustic model (bad header)")
    if not (path / "conf").is_dir():
        raise ModelCorruptError(f"{path} is not a Vosk model: no conf/ folder")
    for fst in _graph_files(path):
        with fst.open("rb") as f:
            magic = int.from_bytes(f.read(4), "little", signed=False)
        if magic != _FST_MAGIC:
            raise ModelCorruptError(f"{fst} is not an OpenFst graph (bad magic number)")


def load_model(path: Path | str) -> SpeechModel:
    """Check and load the Vosk model in folder `path` (1-3 s, ~500 MB for a small model).

    Raises `ModelNotFoundError` or `ModelCorruptError`. Logs one line with the path, the
    load time and the size on disk.
    """
    folder = Path(path).expanduser().absolute()
    check_model_folder(folder)
    # Imported here: `import vosk` takes ~0.2 s (requests, tqdm, dlopen of libvosk), which
    # `hotline models download` and importers of the error types need not pay.
    import vosk  # noqa: PLC0415

    vosk.SetLogLevel(KALDI_LOG_LEVEL)
    started = time.perf_counter()
    try:
        model = vosk.Model(str(folder))
    except Exception as exc:  # vosk raises a bare Exception for every failure
        raise ModelCorruptError(
            f"Kaldi could not load the speech model in {folder} ({exc}; its reason is on stderr)"
        ) from None
    seconds = time.perf_counter() - started

    def knows(word: str) -> bool:
        return bool(model.vosk_model_find_word(word) >= 0)

    speech_model = SpeechModel(
        path=folder,
        vosk=model,
        sample_rate=_sample_rate(folder),
        grammar_capable=_grammar_capable(folder),
        size_bytes=_size_on_disk(folder),
        vocabulary_size=_vocabulary_size(folder),
        garbage_word=next((w for w in GARBAGE_WORDS if knows(w)), None),
        load_seconds=seconds,
    )
    log.info(
        "speech model loaded",
        path=str(folder),
        seconds=round(seconds, 2),
        size_bytes=speech_model.size_bytes,
        sample_rate=speech_model.sample_rate,
        grammar_capable=speech_model.grammar_capable,
    )
    return speech_model


class ModelCache:
    """Models loaded once per process, by folder: the same `SpeechModel` for every caller.

    Loading happens outside the cache-wide lock, under a lock per folder, so two threads asking
    for the same model wait for one load while a third can load another model. A failed load
    is not remembered: the next call tries again (the operator may have fixed the folder).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folder_locks: dict[Path, threading.Lock] = {}
        self._models: dict[Path, SpeechModel] = {}

    def get(self, path: Path | str) -> SpeechModel:
        """The loaded model of folder `path`, loading it on first use."""
        # resolve(): models/x, ./models/x and a symlink to it are one model, loaded once.
        folder = Path(path).expanduser().resolve()
        with self._lock:
            model = self._models.get(folder)
            if model is not None:
                return model
            folder_lock = self._folder_locks.setdefault(folder, threading.Lock())
        with folder_lock:
            with self._lock:
                model = self._models.get(folder)
            if model is None:
                model = load_model(folder)
                with self._lock:
                    self._models[folder] = model
            return model


_shared = ModelCache()


def shared_model(path: Path | str) -> SpeechModel:
    """The process-wide `SpeechModel` for folder `path`: loaded on first use, thread-safe."""
    return _shared.get(path)


# ---------------------------------------------------------------------- folder facts


def _graph_files(path: Path) -> list[Path]:
    """The decoding graph's FST files; `ModelCorruptError` when there is no complete graph."""
    graph = path / "graph"
    dynamic = [graph / "HCLr.fst", graph / "Gr.fst"]
    if all(f.is_file() for f in dynamic):
        return dynamic
    for static in (graph / "HCLG.fst", path / "HCLG.fst"):
        if static.is_file():
            return [static]
    raise ModelCorruptError(
        f"{path} has no decoding graph (graph/HCLG.fst, or graph/HCLr.fst with graph/Gr.fst)"
    )


def _inner_hint(path: Path) -> str:
    """`` (did you mean X?)`` when `path` is a folder holding exactly one model folder."""
    try:
        inner = [p for p in path.iterdir() if (p / "am" / "final.mdl").is_file()]
    except OSError:
        return ""
    return f" (did you mean {inner[0]}?)" if len(inner) == 1 else ""


def _grammar_capable(path: Path) -> bool:
    graph = path / "graph"
    return (graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()


def _sample_rate(path: Path) -> int:
    mfcc = path / "conf" / "mfcc.conf"
    try:
        lines = mfcc.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return DEFAULT_SAMPLE_RATE
    for line in lines:
        option, _, value = line.split("#", 1)[0].strip().partition("=")
        if option == "--sample-frequency":
            try:
                return round(float(value))
            except ValueError:
                break
    return DEFAULT_SAMPLE_RATE


def _vocabulary_size(path: Path) -> int | None:
    words = path / "graph" / "words.txt"
    if not words.is_file():
        return None
    with words.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _size_on_disk(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:  # a dangling link: not part of what loads
                continue
    return total
