"""`hotline models check` on the real Korean model and broken paths; `hotline models download`
from a real aiohttp server on a loopback port."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web

from ivr.cli import main
from ivr.cli_models import TerminalProgress

FST_MAGIC = (2125659606).to_bytes(4, "little")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads HOTLINE_* settings; none from the test's environment."""
    for name in ("HOTLINE_CONFIG", "HOTLINE_VOSK_MODEL", "HOTLINE_LOG_LEVEL", "HOTLINE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The commands configure logging process-wide (onto the captured stderr); undo it."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


# ---------------------------------------------------------------------- check


def test_check_the_korean_model(
    korean_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "check", str(korean_model_path)]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    report = {label: value.strip() for label, value in lines.items()}
    assert report["path"] == str(korean_model_path)
    assert report["size"].endswith(" bytes)")
    assert report["sample rate"] == "16000 Hz"
    assert report["grammars"].startswith("yes (dynamic graph")
    assert report["vocabulary"] == "not listed (no graph/words.txt)"
    assert report["garbage word"] == "<UNK>"
    assert report["load time"].endswith(" s")
    assert float(report["load time"].removesuffix(" s")) > 0


def test_check_a_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "check", str(tmp_path / "nowhere")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"hotline: speech model {tmp_path / 'nowhere'} does not exist\n"


def test_check_defaults_to_the_configured_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOTLINE_VOSK_MODEL", str(tmp_path / "configured"))
    assert main(["models", "check"]) == 1
    assert f"{tmp_path / 'configured'} does not exist" in capsys.readouterr().err


def test_check_without_any_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "check"]) == 1
    assert "give a PATH or set HOTLINE_VOSK_MODEL" in capsys.readouterr().err


def test_check_a_corrupt_model(
    tmp_path: Path, korean_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "am").mkdir()
    (tmp_path / "am" / "final.mdl").write_bytes(b"\x00B<TransitionModel> " + b"\x07" * 5000)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mfcc.conf").write_bytes(
        (korean_model_path / "conf/mfcc.conf").read_bytes()
    )
    (tmp_path / "graph").mkdir()
    for name in ("HCLr.fst", "Gr.fst"):
        (tmp_path / "graph" / name).write_bytes(FST_MAGIC + b"\x00" * 100)

    assert main(["models", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hotline: Kaldi could not load the speech model in {tmp_path}")


# ---------------------------------------------------------------------- download


def tiny_model_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("tiny/am/final.mdl", b"\x00B<TransitionModel> " + b"\x01" * 100_000)
        zipped.writestr("tiny/conf/mfcc.conf", "--sample-frequency=8000\n")
        zipped.writestr("tiny/graph/HCLG.fst", FST_MAGIC + b"\x00" * 100)
    return buffer.getvalue()


@pytest.fixture
async def archive_url() -> AsyncIterator[tuple[str, bytes]]:
    body = tiny_model_zip()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/zip")

    app = web.Application()
    app.router.add_get("/tiny.zip", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/tiny.zip", body
    await runner.cleanup()


async def test_download_from_a_url(
    archive_url: tuple[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, body = archive_url
    sha256 = hashlib.sha256(body).hexdigest()
    argv = ["models", "download", "tiny-cn", "--url", url, "--sha256", sha256]
    argv += ["--dest", str(tmp_path / "models")]

    assert await asyncio.to_thread(main, argv) == 0

    model = tmp_path / "models" / "tiny-cn"
    assert (model / "am" / "final.mdl").is_file()
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"installed {model}"
    assert f"HOTLINE_VOSK_MODEL={model}" in captured.out
    assert captured.err.splitlines()[0] == f"downloading {url} into {tmp_path / 'models'}"
    assert captured.err.splitlines()[-1].endswith("(100 %)")  # progress, one line per tenth


async def test_download_refuses_a_wrong_checksum(
    archive_url: tuple[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = archive_url
    argv = ["models", "download", "tiny-cn", "--url", url, "--md5", "0" * 32]
    argv += ["--dest", str(tmp_path)]

    assert await asyncio.to_thread(main, argv) == 1

    assert "md5 is" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - a check after the work, not I/O in it


def test_download_of_an_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "download", "tw", "--dest", str(tmp_path)]) == 2
    assert "unknown model 'tw' (known: small-cn, cn)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    screen = Terminal()
    progress = TerminalProgress(screen)
    progress.update(0, 2_000_000)
    progress.update(1_000, 2_000_000)  # within 0.2 s of the last draw: not drawn
    progress.note("interrupted; resuming at 0.0 MB")
    progress.update(2_000_000, 2_000_000)  # the end is always drawn
    assert screen.getvalue() == (
        "\r0.0 / 2.0 MB (0 %)\033[K\n"
        "interrupted; resuming at 0.0 MB\n"
        "\r2.0 / 2.0 MB (100 %)\033[K\n"
    )


def test_progress_in_a_log_is_one_line_per_tenth() -> None:
    log = io.StringIO()
    progress = TerminalProgress(log)
    for done in range(0, 1_000_001, 50_000):
        progress.update(done, 1_000_000)
    assert len(log.getvalue().splitlines()) == 11
