"""speech.download against a real aiohttp server on a loopback port serving a small model zip."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from speech.download import (
    CATALOG,
    VOSK_MODELS_URL,
    ArchiveError,
    ChecksumMismatchError,
    DownloadError,
    DownloadPlan,
    Expected,
    download_model,
    plan_download,
)

FST_MAGIC = (2125659606).to_bytes(4, "little")
TOP = "vosk-model-tiny-0.1"

Serve = Callable[["ArchiveServer"], Awaitable[str]]
"""The `serve` fixture: start a server for an `ArchiveServer`, answer its base URL."""


def model_files() -> dict[str, bytes]:
    """A model-shaped folder that passes `check_model_folder` (a few hundred kB)."""
    return {
        "am/final.mdl": b"\x00B<TransitionModel> " + os.urandom(300_000),
        "conf/mfcc.conf": b"--sample-frequency=8000\n",
        "conf/model.conf": b"--beam=10.0\n",
        "graph/HCLr.fst": FST_MAGIC + os.urandom(1000),
        "graph/Gr.fst": FST_MAGIC + os.urandom(1000),
        "README": "小模型\n".encode(),
    }


def build_zip(files: dict[str, bytes], top: str | None = TOP) -> bytes:
    buffer = io.BytesIO()
    # Stored, not deflated: random bytes do not compress, and the body stays large enough to cut.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zipped:
        for name, data in files.items():
            zipped.writestr(f"{top}/{name}" if top else name, data)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ArchiveServer:
    """Serves `body` at /model.zip; honours ``Range: bytes=N-`` when `ranges`; the first
    `cuts` responses close the connection halfway through their body."""

    body: bytes
    ranges: bool = True
    cuts: int = 0
    seen: list[tuple[str | None, int]] = field(default_factory=list)
    """(Range header, status) of every request."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        asked = request.headers.get("Range")
        start = 0
        if self.ranges and asked is not None:
            start = request.http_range.start or 0
            if start >= len(self.body):
                self.seen.append((asked, 416))
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{len(self.body)}"}
                )
        status = 206 if start else 200
        self.seen.append((asked, status))
        rest = self.body[start:]
        response = web.StreamResponse(status=status)
        response.content_length = len(rest)
        response.content_type = "application/zip"
        if status == 206:
            response.headers["Content-Range"] = (
                f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
            )
        await response.prepare(request)
        if self.cuts:
            self.cuts -= 1
            await response.write(rest[: len(rest) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-body
            return response
        await response.write(rest)
        await response.write_eof()
        return response


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(server: ArchiveServer) -> str:
        app = web.Application()
        app.router.add_get("/model.zip", server.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@dataclass
class Recorder:
    updates: list[tuple[int, int | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def update(self, done: int, total: int | None) -> None:
        self.updates.append((done, total))

    def note(self, text: str) -> None:
        self.notes.append(text)


async def download(plan: DownloadPlan, dest: Path, **options: Any) -> Path:
    """The blocking download on a worker thread, so the server keeps running on this loop."""
    options.setdefault("retry_delay", 0.0)
    options.setdefault("timeout", 5.0)
    return await asyncio.to_thread(download_model, plan, dest, **options)


def assert_installed(dest: Path, files: dict[str, bytes], folder: str = "tiny") -> None:
    model = dest / folder
    for name, data in files.items():
        assert (model / name).read_bytes() == data, name
    assert sorted(p.name for p in dest.iterdir()) == [folder]  # no .part, no staging folder


def assert_nothing_installed(dest: Path) -> None:
    assert not dest.exists() or list(dest.iterdir()) == []


# ---------------------------------------------------------------------- downloads


async def test_full_download(serve: Serve, tmp_path: Path) -> None:
    files = model_files()
    body = build_zip(files)
    server = ArchiveServer(body)
    url = await serve(server)
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256=sha256(body))
    progress = Recorder()

    model = await download(plan, tmp_path / "models", progress=progress)

    assert model == tmp_path / "models" / "tiny"
    assert_installed(tmp_path / "models", files)
    assert server.seen == [(None, 200)]
    assert progress.updates[0] == (0, len(body))
    assert progress.updates[-1] == (len(body), len(body))
    assert progress.notes == []


async def test_resumes_after_the_connection_drops(serve: Serve, tmp_path: Path) -> None:
    files = model_files()
    body = build_zip(files)
    server = ArchiveServer(body, cuts=1)
    url = await serve(server)
    plan = plan_download(
        "tiny", url=f"{url}/model.zip", md5=hashlib.md5(body, usedforsecurity=False).hexdigest()
    )
    progress = Recorder()

    await download(plan, tmp_path, progress=progress)

    assert_installed(tmp_path, files)
    half = len(body) // 2
    assert server.seen == [(None, 200), (f"bytes={half}-", 206)]
    assert progress.notes == [f"interrupted (connection closed at {half} of {len(body)} bytes); "
                              f"resuming at {half / 1e6:.1f} MB"]  # fmt: skip


async def test_resumes_in_a_later_run(serve: Serve, tmp_path: Path) -> None:
    files = model_files()
    body = build_zip(files)
    server = ArchiveServer(body, cuts=1)
    url = await serve(server)
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256=sha256(body))

    with pytest.raises(DownloadError, match="run the command again to resume"):
        await download(plan, tmp_path, attempts=1)
    part = tmp_path / "tiny.zip.part"
    assert part.read_bytes() == body[: len(body) // 2]
    assert not (tmp_path / "tiny").exists()

    await download(plan, tmp_path, attempts=1)
    assert_installed(tmp_path, files)
    assert server.seen == [(None, 200), (f"bytes={len(body) // 2}-", 206)]


async def test_server_without_range_support_restarts(serve: Serve, tmp_path: Path) -> None:
    files = model_files()
    body = build_zip(files)
    server = ArchiveServer(body, ranges=False, cuts=1)
    url = await serve(server)
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256=sha256(body))
    progress = Recorder()

    await download(plan, tmp_path, progress=progress)

    # The second request asked for the rest, got the whole file, and started the file over.
    assert server.seen == [(None, 200), (f"bytes={len(body) // 2}-", 200)]
    assert "the server does not resume downloads: starting over" in progress.notes
    assert_installed(tmp_path, files)


async def test_complete_part_from_an_earlier_run(serve: Serve, tmp_path: Path) -> None:
    """A .part that already holds everything: the server answers 416, the file is used."""
    files = model_files()
    body = build_zip(files)
    server = ArchiveServer(body)
    url = await serve(server)
    (tmp_path / "tiny.zip.part").write_bytes(body)
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256=sha256(body))

    await download(plan, tmp_path)

    assert server.seen == [(f"bytes={len(body)}-", 416)]
    assert_installed(tmp_path, files)


async def test_checksum_mismatch_is_refused(serve: Serve, tmp_path: Path) -> None:
    body = build_zip(model_files())
    url = await serve(ArchiveServer(body))
    wrong = sha256(body + b"x")
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256=wrong)

    with pytest.raises(ChecksumMismatchError, match=f"sha256 is {sha256(body)}, expected {wrong}"):
        await download(plan, tmp_path / "models")

    assert_nothing_installed(tmp_path / "models")  # the .part is deleted, nothing unpacked


async def test_size_other_than_the_catalog_stops_early(serve: Serve, tmp_path: Path) -> None:
    body = build_zip(model_files())
    server = ArchiveServer(body)
    url = await serve(server)
    plan = DownloadPlan(f"{url}/model.zip", "tiny", Expected(md5="0" * 32, size=len(body) + 1))

    with pytest.raises(DownloadError, match=f"is {len(body)} bytes, not the {len(body) + 1}"):
        await download(plan, tmp_path)
    assert_nothing_installed(tmp_path)


async def test_not_found(serve: Serve, tmp_path: Path) -> None:
    url = await serve(ArchiveServer(b""))
    plan = plan_download("tiny", url=f"{url}/missing.zip", sha256="0" * 64)

    with pytest.raises(DownloadError, match=r"/missing.zip: HTTP 404 Not Found"):
        await download(plan, tmp_path)
    assert_nothing_installed(tmp_path)


async def test_archive_without_a_model(serve: Serve, tmp_path: Path) -> None:
    files = model_files()
    del files["am/final.mdl"]
    body = build_zip(files)
    url = await serve(ArchiveServer(body))
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256=sha256(body))

    with pytest.raises(
        ArchiveError, match=r"does not hold a usable Vosk model: .*no am/final\.mdl"
    ):
        await download(plan, tmp_path)
    assert_nothing_installed(tmp_path)


async def test_archive_with_an_unsafe_path(serve: Serve, tmp_path: Path) -> None:
    files = model_files()
    body = build_zip({**{f"{TOP}/{k}": v for k, v in files.items()}, "../evil": b"x"}, top=None)
    url = await serve(ArchiveServer(body))
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256=sha256(body))

    with pytest.raises(ArchiveError, match=r"unsafe path in the archive: \.\./evil"):
        await download(plan, tmp_path / "models")
    assert not (tmp_path / "evil").exists()
    assert_nothing_installed(tmp_path / "models")


async def test_archive_with_files_at_its_root(serve: Serve, tmp_path: Path) -> None:
    files = model_files()
    body = build_zip(files, top=None)
    url = await serve(ArchiveServer(body))
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256=sha256(body))

    await download(plan, tmp_path)
    assert_installed(tmp_path, files)


async def test_existing_model_folder_is_left_alone(serve: Serve, tmp_path: Path) -> None:
    server = ArchiveServer(build_zip(model_files()))
    url = await serve(server)
    (tmp_path / "tiny").mkdir()
    plan = plan_download("tiny", url=f"{url}/model.zip", sha256="0" * 64)

    with pytest.raises(DownloadError, match="already exists"):
        await download(plan, tmp_path)
    assert server.seen == []


# ---------------------------------------------------------------------- the catalog


def test_catalog_small_cn() -> None:
    plan = plan_download("small-cn")
    assert plan.url == f"{VOSK_MODELS_URL}vosk-model-small-cn-0.22.zip"
    assert plan.folder == "vosk-model-small-cn-0.22"
    assert plan.expected == Expected(
        sha256=CATALOG["small-cn"].sha256, md5=CATALOG["small-cn"].md5, size=43_898_754
    )


def test_mirror_keeps_the_catalog_checksums() -> None:
    plan = plan_download("cn", url="http://mirror.example/vosk-model-cn-0.22.zip")
    assert plan.url == "http://mirror.example/vosk-model-cn-0.22.zip"
    assert plan.expected == Expected(md5=CATALOG["cn"].md5, size=CATALOG["cn"].size)


def test_operator_checksum_replaces_the_catalog() -> None:
    plan = plan_download("small-cn", sha256="AB" * 32)
    assert plan.expected == Expected(sha256="ab" * 32)


def test_unknown_name_needs_a_url() -> None:
    with pytest.raises(DownloadError, match=r"unknown model 'tw' \(known: small-cn, cn\)"):
        plan_download("tw")


def test_unknown_archive_needs_a_checksum() -> None:
    with pytest.raises(DownloadError, match="no checksum is known for other: give --sha256"):
        plan_download("other", url="http://mirror.example/other.zip")


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "x."])
def test_folder_name_must_be_plain(name: str) -> None:
    with pytest.raises(DownloadError, match="cannot be a folder name"):
        plan_download(name, url="http://mirror.example/x.zip", md5="0" * 32)


def test_checksum_must_be_hex() -> None:
    with pytest.raises(DownloadError, match="sha256 must be 64 lower-case hex digits"):
        plan_download("small-cn", sha256="abc")
