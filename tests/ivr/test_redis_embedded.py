"""The embedded Redis server: data kept across restarts, a crashed owner's server replaced, a
folder in use refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from ivr.redis_embedded import EmbeddedRedis, EmbeddedRedisError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "redis"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _client(server: EmbeddedRedis) -> Redis:
    return Redis.from_url(server.url, decode_responses=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_data_survives_a_restart(folder: Path) -> None:
    first = EmbeddedRedis(folder)
    url = await first.start()
    assert url == f"unix://{first.folder}/redis.sock"
    client = _client(first)
    await client.set("queued", "call-1")
    await client.aclose()
    await first.stop()
    assert not (folder / "owner.pid").exists()

    second = EmbeddedRedis(folder)
    await second.start()
    client = _client(second)
    try:
        assert await client.get("queued") == "call-1"
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        assert await client.config_get("port") == {"port": "0"}  # no TCP listener
    finally:
        await client.aclose()
        await second.stop()


async def test_server_left_by_a_killed_owner_is_replaced(folder: Path) -> None:
    orphan = EmbeddedRedis(folder)
    await orphan.start()
    old_pid = orphan.pid
    client = _client(orphan)
    await client.set("agent:a1", "available")
    await client.aclose()
    # The owning hotline died without stopping its server.
    _write(folder / "owner.pid", f"{_dead_pid()}\n")

    fresh = EmbeddedRedis(folder)
    await fresh.start()
    client = _client(fresh)
    try:
        assert fresh.pid != old_pid
        assert await client.get("agent:a1") == "available"
    finally:
        await client.aclose()
        await fresh.stop()
        await orphan.stop()  # reaps the old process object (already exited)


async def test_folder_of_a_running_hotline_is_refused(folder: Path) -> None:
    running = EmbeddedRedis(folder)
    await running.start()
    other_owner = _sleeper()
    try:
        _write(folder / "owner.pid", f"{other_owner.pid}\n")
        with pytest.raises(EmbeddedRedisError, match="in use by another running hotline"):
            await EmbeddedRedis(folder).start()
        client = _client(running)
        assert await client.ping()  # the running one was left alone
        await client.aclose()
    finally:
        other_owner.kill()
        other_owner.wait()
        await running.stop()


async def test_stale_socket_file_is_removed(folder: Path) -> None:
    _write(folder / "redis.sock", "")  # a plain file where the socket was
    server = EmbeddedRedis(folder)
    await server.start()
    try:
        client = _client(server)
        assert await client.ping()
        await client.aclose()
    finally:
        await server.stop()


async def test_too_long_socket_path_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    with pytest.raises(EmbeddedRedisError, match="too long for a Unix socket"):
        await EmbeddedRedis(deep).start()
