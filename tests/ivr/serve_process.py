"""A real `hotline serve` process for tests: started on free ports with JSON logs, its log
lines read on a thread (shared by tests/ivr/test_serve.py and the Twilio serve tests)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

STOP_TIMEOUT = 8.0


class ServeProcess:
    """A running `hotline serve` whose JSON log lines (stderr) are read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for raw in stream:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                line = {"event": raw.rstrip("\n"), "not_json": True}
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, event: str, timeout: float, nth: int = 1) -> dict[str, Any]:
        """Return the first (``nth``) log line with this event, reading at most `timeout`
        seconds."""
        deadline = time.monotonic() + timeout
        found = [line for line in self.lines if line.get("event") == event]
        if len(found) >= nth:
            return found[nth - 1]
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                break
            self.lines.append(item)
            if item.get("event") == event:
                found.append(item)
                if len(found) == nth:
                    return item
        seen = [line.get("event") for line in self.lines]
        raise AssertionError(f"no {event!r} log line #{nth} within {timeout}s; saw {seen}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait (the node stops its embedded Redis, which a kill would leave
        running in its own process group), then `finish`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.finish()

    def finish(self) -> None:
        """Kill the process if it still runs; close its log pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def drain(self, timeout: float) -> None:
        """Collect the remaining lines once the process has exited."""
        self._reader.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.lines.append(line)


def hotline_command() -> list[str]:
    script = Path(sys.executable).with_name("hotline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ivr"]


def start_serve(
    workdir: Path,
    *,
    node_id: str = "serve-test",
    ignore: tuple[str, ...] = ("HOTLINE_",),
    **extra: str,
) -> ServeProcess:
    """Start `hotline serve` in ``workdir`` on free ports with JSON logs (plus ``extra`` env;
    this environment's variables starting with ``ignore`` are left out)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ignore)}
    env |= {
        "HOTLINE_WEB_PORT": "0",
        "HOTLINE_SIP_PORT": "0",
        "HOTLINE_LOG_FORMAT": "json",
        "HOTLINE_NODE_ID": node_id,
        "HOTLINE_SHUTDOWN_GRACE_SECONDS": "2",
    }
    env |= extra
    proc = subprocess.Popen(
        [*hotline_command(), "serve"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    return ServeProcess(proc)
