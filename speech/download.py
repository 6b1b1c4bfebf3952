"""Downloading a published Vosk model: resumable, checksum-verified, unpacked atomically.

`hotline models download small-cn --dest models/` fetches the archive into
``models/vosk-model-small-cn-0.22.zip.part``, verifies it, unpacks it next to it and renames the
model folder into place as ``models/vosk-model-small-cn-0.22``. Nothing here runs at start-up
or in tests against the internet: the hotline loads models from a folder (`HOTLINE_VOSK_MODEL`).

How, and why:

- **Resumable.** An interrupted transfer keeps its ``.part`` file; the next attempt (up to
  `attempts` in one run, and any later run) asks for the rest with ``Range: bytes=N-``
  (RFC 9110 §14.2). A ``206 Partial Content`` whose ``Content-Range`` starts at N is appended;
  a ``200`` (a server or mirror without range support) restarts the file from zero, so two
  copies are never spliced; a ``416`` means the ``.part`` already holds the whole file.
  A response that ends before its announced length counts as an interruption, because
  ``http.client`` reports such an early close as a normal end of body.
- **Verified before unpacking.** The archive's size, MD5 and SHA-256 (whichever are known) are
  checked on the complete file. A mismatch deletes the ``.part`` (resuming a wrong file cannot
  make it right) and nothing is unpacked. The catalog's MD5 and size are the ones Vosk publishes
  in its ``model-list.json`` (the list the ``vosk`` package's own downloader reads). Vosk
  publishes no SHA-256; the catalog carries one only where several independent projects
  computed the same value from the same archive (``small-cn``). MD5 detects corruption, not
  tampering; the archive comes over HTTPS. A model without any known checksum is refused unless
  the operator gives ``--sha256`` or ``--md5``, and those replace the catalog's values (and
  size): the operator is then vouching for a different archive.
- **Atomic.** The archive is unpacked into a hidden temporary folder in the destination folder
  (same file system), the result is checked to be a Vosk model (`check_model_folder`) and its
  folder is renamed into place: the model folder either does not exist or is complete. A
  failed unpack removes the temporary folder; one left by a killed process is removed by the
  next download of the same model. Two downloads of the same model into the same folder at
  once are not supported.
- **urllib, not aiohttp.** This is a one-shot blocking command with no event loop to share; the
  standard library streams the body, sends ``Range``, verifies certificates and follows the
  ``HTTPS_PROXY`` variables that a utility's network usually needs, without an event loop.
  The tests serve archives from a real aiohttp server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import structlog

from speech.model import ModelError, check_model_folder

log = structlog.get_logger(__name__)

VOSK_MODELS_URL = "https://alphacephei.com/vosk/models/"
"""Where the Vosk project publishes its models, one ``<name>.zip`` each."""

USER_AGENT = "hotline95598-models/0.1"
CHUNK_BYTES = 256 * 1024

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class CatalogEntry:
    """One published model `hotline models download` knows by a short name."""

    name: str
    """Short name on the command line (``small-cn``)."""
    folder: str
    """The model's own name: its archive's top folder and the folder made under ``--dest``."""
    url: str
    """The published ``.zip``."""
    size: int | None
    """Archive bytes, as published."""
    md5: str | None
    """Archive MD5, as published in Vosk's model-list.json."""
    sha256: str | None
    """Archive SHA-256, where independent sources agree on it (Vosk publishes none)."""
    about: str
    """One line for the operator."""


def _published(name: str) -> str:
    return f"{VOSK_MODELS_URL}{name}.zip"


CATALOG: Mapping[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="small-cn",
            folder="vosk-model-small-cn-0.22",
            url=_published("vosk-model-small-cn-0.22"),
            size=43_898_754,
            md5="d1a8e82933dcc7632667c036b0bb3dbb",
            sha256="3af8b0e7e0f835ae9d414ce5df580237a3cfb08d586c9fbbb0f7ff29ad5b14ba",
            about="Mandarin, small (42 MB): dynamic graph, takes grammars; for menus",
        ),
        CatalogEntry(
            name="cn",
            folder="vosk-model-cn-0.22",
            url=_published("vosk-model-cn-0.22"),
            size=1_358_736_686,
            md5="c050f6849398ceecfa723cca69b8c67d",
            # No SHA-256 that more than one source agrees on: verified by size and MD5.
            sha256=None,
            about="Mandarin, big (1.3 GB, ~2 GB unpacked): static graph, no grammars; servers",
        ),
    )
}


class DownloadError(ModelError):
    """A model could not be downloaded or installed; the message says what to do."""


class ChecksumMismatchError(DownloadError):
    """The downloaded archive is not the expected one (size or checksum); it was deleted."""


class ArchiveError(DownloadError):
    """The archive cannot be unpacked, or does not hold a Vosk model."""


@dataclass(frozen=True)
class Expected:
    """What the complete archive must be. At least one checksum is needed to download."""

    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        for kind, value, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if value is not None and not (len(value) == length and _HEX.fullmatch(value)):
                raise ValueError(f"{kind} must be {length} lower-case hex digits, not {value!r}")

    @property
    def verifiable(self) -> bool:
        return self.sha256 is not None or self.md5 is not None


@dataclass(frozen=True)
class DownloadPlan:
    """What to fetch, where it goes, and how to check it."""

    url: str
    folder: str
    expected: Expected


def plan_download(
    name: str, *, url: str | None = None, sha256: str | None = None, md5: str | None = None
) -> DownloadPlan:
    """The download for `name`: a catalog entry, optionally from a mirror (`url`), or any
    archive given by `url` with a checksum (then `name` is the folder it is installed as).

    Operator checksums replace the catalog's checksums and size. Raises `DownloadError` for an
    unknown name without a URL or for a download no checksum can verify.
    """
    sha256 = sha256.lower() if sha256 else None
    md5 = md5.lower() if md5 else None
    entry = CATALOG.get(name)
    if entry is None:
        if url is None:
            known = ", ".join(CATALOG)
            raise DownloadError(
                f"unknown model {name!r} (known: {known}); for another archive give --url "
                "and --sha256 or --md5"
            )
        if not _FOLDER_NAME.fullmatch(name) or name.endswith("."):
            raise DownloadError(f"{name!r} cannot be a folder name")
        folder = name
    else:
        folder = entry.folder
    try:
        if sha256 or md5:
            expected = Expected(sha256=sha256, md5=md5)
        elif entry is not None:
            expected = Expected(sha256=entry.sha256, md5=entry.md5, size=entry.size)
        else:
            expected = Expected()
    except ValueError as exc:
        raise DownloadError(str(exc)) from None
    if not expected.verifiable:
        raise DownloadError(
            f"no checksum is known for {name}: give --sha256 or --md5 (from the publisher) "
            "so the archive can be verified before it is unpacked"
        )
    chosen_url = url if url is not None else entry.url if entry is not None else ""
    return DownloadPlan(url=chosen_url, folder=folder, expected=expected)


class Progress(Protocol):
    """Where a download reports how far it is."""

    def update(self, done: int, total: int | None) -> None:
        """`done` bytes of the archive are on disk, of `total` (None: unknown)."""

    def note(self, text: str) -> None:
        """Something the operator should know (resuming, restarting)."""


class _Silent:
    def update(self, done: int, total: int | None) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class _CutShortError(Exception):
    """The transfer stopped early; what is in the ``.part`` file can be resumed."""


def download_model(
    plan: DownloadPlan,
    dest: Path,
    *,
    progress: Progress | None = None,
    attempts: int = 3,
    timeout: float = 30.0,
    retry_delay: float = 1.0,
) -> Path:
    """Download, verify and unpack `plan` into ``dest/<folder>``; return that folder.

    Raises `DownloadError` (the folder already exists, HTTP errors, still interrupted after
    `attempts` tries: the ``.part`` file stays for the next run), `ChecksumMismatchError`
    (nothing unpacked, the ``.part`` deleted) or `ArchiveError` (likewise).
    """
    report = progress or _Silent()
    if not plan.expected.verifiable:
        raise DownloadError(f"refusing to download {plan.url} without a checksum to verify it")
    target = dest / plan.folder
    if target.exists():
        raise DownloadError(f"{target} already exists: remove it to download the model again")
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / f"{plan.folder}.zip.part"
    fetch(
        plan.url,
        part,
        expected_size=plan.expected.size,
        progress=report,
        attempts=attempts,
        timeout=timeout,
        retry_delay=retry_delay,
    )
    try:
        verify(part, plan.expected)
    except ChecksumMismatchError:
        part.unlink(missing_ok=True)
        raise
    try:
        model = unpack(part, dest, plan.folder)
    except ArchiveError:
        part.unlink(missing_ok=True)  # verified yet unusable: downloading it again cannot help
        raise
    part.unlink()
    log.info("speech model downloaded", url=plan.url, path=str(model))
    return model


def fetch(
    url: str,
    part: Path,
    *,
    expected_size: int | None = None,
    progress: Progress | None = None,
    attempts: int = 3,
    timeout: float = 30.0,
    retry_delay: float = 1.0,
) -> None:
    """Bring `part` to the complete content of `url`, resuming what it already holds."""
    report = progress or _Silent()
    for attempt in range(1, attempts + 1):
        try:
            _fetch_once(url, part, expected_size, report, timeout)
        except _CutShortError as exc:
            have = part.stat().st_size if part.exists() else 0
            log.warning("model download interrupted", url=url, bytes=have, error=str(exc))
            if attempt == attempts:
                raise DownloadError(
                    f"download of {url} interrupted ({exc}) after {attempts} attempt(s); "
                    f"{have} bytes are kept in {part}: run the command again to resume"
                ) from None
            report.note(f"interrupted ({exc}); resuming at {_mb(have)}")
            time.sleep(retry_delay * attempt)
        else:
            return


def _fetch_once(
    url: str, part: Path, expected_size: int | None, report: Progress, timeout: float
) -> None:
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        report.note(f"{part.name} is longer than the archive: starting over")
        part.unlink()
        have = 0
    if have and have == expected_size:
        return  # complete from an earlier run; verify() decides whether it is right
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - operator's URL
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            # RFC 9110 §15.5.17: "bytes */TOTAL" — nothing left after what we hold.
            _, _, whole = _content_range(exc.headers.get("Content-Range", ""))
            if whole == have:
                return
            part.unlink()
            raise _CutShortError("the server refused to resume; starting over") from None
        if exc.code >= 500:
            raise _CutShortError(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
        raise _CutShortError(str(getattr(e, "reason", e)) or type(e).__name__) from None

    with response:
        total: int | None
        if response.status == 206:
            start, _, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:
                part.unlink()
                raise _CutShortError(f"the server resumed at byte {start}, not {have}")
            mode = "ab"
        else:
            if have:
                report.note("the server does not resume downloads: starting over")
                log.info("model download restarted", url=url, reason="no range support")
            have = 0
            mode = "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(
                f"{url} is {total} bytes, not the {expected_size} expected: not this archive"
            )
        done = have
        report.update(done, total)
        try:
            with part.open(mode) as out:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    done += len(chunk)
                    report.update(done, total)
        except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            raise _CutShortError(str(exc) or type(exc).__name__) from None
        # http.client ends the body quietly when the peer closes early: compare with the length.
        if total is not None and done < total:
            raise _CutShortError(f"connection closed at {done} of {total} bytes")


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, total) of a ``Content-Range`` header (RFC 9110 §14.4)."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None, None, None
    first, last, total = match.groups()

    def number(text: str | None) -> int | None:
        return int(text) if text is not None and text.isdigit() else None

    return number(first), number(last), number(total)


def verify(archive: Path, expected: Expected) -> None:
    """Raise `ChecksumMismatchError` unless `archive` has the expected size and checksums."""
    size = archive.stat().st_size
    if expected.size is not None and size != expected.size:
        raise ChecksumMismatchError(
            f"{archive.name} is {size} bytes, not the {expected.size} expected; it was deleted"
        )
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)  # the checksum Vosk publishes, against corruption
    with archive.open("rb") as f:
        while block := f.read(1024 * 1024):
            sha256.update(block)
            md5.update(block)
    for kind, want, got in (
        ("sha256", expected.sha256, sha256.hexdigest()),
        ("md5", expected.md5, md5.hexdigest()),
    ):
        if want is not None and got != want:
            raise ChecksumMismatchError(
                f"{archive.name}: {kind} is {got}, expected {want}; the download is corrupt or "
                "not this model, so it was deleted and nothing was unpacked"
            )


def unpack(archive: Path, dest: Path, folder: str) -> Path:
    """Unpack the zip `archive` as ``dest/<folder>``, all or nothing; return that folder.

    Vosk archives hold one top folder with the model; an archive with the model files at its
    root works too. Raises `ArchiveError` for a broken or unsafe archive, or one without a
    Vosk model, and `DownloadError` when the folder exists.
    """
    target = dest / folder
    if target.exists():
        raise DownloadError(f"{target} already exists: remove it to install the model again")
    for stale in dest.glob(f".{folder}.unpacking-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.unpacking-", dir=dest))
    try:
        try:
            with zipfile.ZipFile(archive) as zipped:
                for name in zipped.namelist():
                    pure = PurePosixPath(name.replace("\\", "/"))
                    if pure.is_absolute() or ".." in pure.parts or ":" in name:
                        raise ArchiveError(f"{archive.name}: unsafe path in the archive: {name}")
                zipped.extractall(staging)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise ArchiveError(f"{archive.name} is not a valid zip archive: {exc}") from None
        root = _model_root(staging)
        try:
            check_model_folder(root)
        except ModelError as exc:
            raise ArchiveError(f"{archive.name} does not hold a usable Vosk model: {exc}") from None
        # Same parent, same file system: the rename is atomic, the folder appears complete.
        os.rename(root, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _model_root(staging: Path) -> Path:
    """The single top folder of an unpacked archive, or the staging folder itself."""
    entries = [p for p in staging.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return staging


def _mb(count: int) -> str:
    return f"{count / 1_000_000:.1f} MB"
