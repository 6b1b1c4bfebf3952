"""Run baresip 1.0.0 (Debian) headless on loopback and drive it through its UDP console.

What was learnt making it work (see also /work/shared/notes/sip-test-peers.md):

- ``-n 127.0.0.1`` binds it to loopback (``net_interface lo`` does not work); ``-t SECONDS`` is
  a hard lifetime, so a test that dies cannot leave a phone running for long.
- A console command is one UDP datagram **ending in a newline**; without it the line editor of
  the ``menu`` module only echoes the keystrokes. Replies go back to the sender.
- ``sip_listen 127.0.0.1:P`` also listens on TCP P and on TCP P+1 (TLS), so ``cons_listen``
  must not be P+1 (the console then fails with "Address already in use" and the ``cons``
  module is not loaded at all).
- stdout is a pipe here, fully buffered by stdio: ``stdbuf -oL`` makes the log readable live.
- The ``sndfile`` filter writes what the phone heard (``*-dec.wav``) and what it sent
  (``*-enc.wav``) into ``snd_path``, 8 kHz mono 16-bit with ``audio_srate 8000``.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import wave
from array import array
from dataclasses import dataclass, field
from pathlib import Path

MODULE_DIR = Path("/usr/lib/baresip/modules")
READY = "baresip is ready."


def baresip_available() -> bool:
    """Whether the baresip binary and the modules the tests load are installed."""
    return shutil.which("baresip") is not None and (MODULE_DIR / "cons.so").exists()


def write_tone(path: Path, frequency: float, seconds: float, amplitude: float = 0.3) -> Path:
    """An 8 kHz mono 16-bit WAV of a sine (``frequency`` 0: silence) for ``audio_source``."""
    rate = 8000
    samples = array(
        "h",
        (
            round(amplitude * 32767 * math.sin(2 * math.pi * frequency * n / rate))
            for n in range(round(seconds * rate))
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return path


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports free on loopback for both UDP and TCP, each with its successor free too
    (baresip's TLS listener takes SIP port + 1)."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        taken = {p for q in found for p in (q, q + 1)}
        if port < 65535 and {port, port + 1}.isdisjoint(taken) and _free(port) and _free(port + 1):
            found.append(port)
    return found


@dataclass
class Baresip:
    """One headless baresip with its own config folder; start, drive, read its log, stop."""

    folder: Path
    account: str
    """One line of the ``accounts`` file, e.g. ``<sip:caller@127.0.0.1>;regint=0``."""
    audio_source: Path | None = None
    """An 8 kHz mono 16-bit WAV the phone sends as its microphone (``aufile``); silence if None."""
    record: bool = False
    """Load ``sndfile``: WAVs of what it heard and sent, in ``folder/rec``."""
    lifetime: int = 60
    """Seconds after which baresip quits by itself (``-t``), whatever the test does."""
    sip_port: int = 0
    cons_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.folder / "baresip.log"

    @property
    def recordings(self) -> Path:
        return self.folder / "rec"

    def _write_config(self) -> Path:
        config = self.folder / "config"
        config.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        source_wav = self.audio_source or write_tone(self.folder / "silence.wav", 0.0, 1.0)
        lines = [
            ("poll_method", "epoll"),
            ("sip_listen", f"127.0.0.1:{self.sip_port}"),
            ("audio_player", "aufile,/dev/null"),
            ("audio_source", f"aufile,{source_wav}"),
            ("audio_alert", "aufile,/dev/null"),
            ("audio_srate", "8000"),
            ("audio_channels", "1"),
            ("module_path", str(MODULE_DIR)),
            ("module", "cons.so"),
            ("module", "g711.so"),
            ("module", "aufile.so"),
            *(
                [("module", "sndfile.so"), ("snd_path", str(self.recordings))]
                if self.record
                else []
            ),
            ("module_app", "account.so"),
            ("module_app", "menu.so"),
            ("cons_listen", f"127.0.0.1:{self.cons_port}"),
        ]
        (config / "config").write_text("".join(f"{k}\t\t{v}\n" for k, v in lines))
        (config / "accounts").write_text(self.account + "\n")
        return config

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait for "baresip is ready"; retried on a port taken meanwhile."""
        for _attempt in range(3):
            self.sip_port, self.cons_port = free_ports(2)
            config = self._write_config()
            self.log_path.write_bytes(b"")
            command = ["baresip", "-f", str(config), "-n", "127.0.0.1", "-t", str(self.lifetime)]
            if shutil.which("stdbuf"):
                command = ["stdbuf", "-oL", "-eL", *command]
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            try:
                self.wait_for(re.escape(READY), timeout)
            except TimeoutError:
                self.stop()
                raise
            if "Address already in use" not in self.log():
                return
            self.stop()
        raise RuntimeError(f"baresip could not bind its ports:\n{self.log()[-2000:]}")

    def log(self) -> str:
        """Everything baresip printed so far (ANSI colours removed)."""
        text = self.log_path.read_text(errors="replace")
        return re.sub(r"\x1b\[[0-9;]*m", "", text)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Block until the log matches ``pattern`` (a regex); TimeoutError with the log tail."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log())
            if match is not None:
                return match
            if self.process is not None and self.process.poll() is not None:
                raise TimeoutError(f"baresip exited waiting for {pattern!r}:\n{self.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {pattern!r} within {timeout} s:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def command(self, text: str) -> None:
        """One console command (``/dial sip:…``, ``/sndcode 2``, ``/hangup``, ``/quit``)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(text.encode() + b"\n", ("127.0.0.1", self.cons_port))

    def stop(self, grace: float = 5.0) -> int | None:
        """``/quit`` (it unregisters and hangs up), then terminate, then kill; the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(OSError):
                self.command("/quit")
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(2.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(2.0)
        return process.returncode

    def recorded(self, kind: str) -> list[Path]:
        """The sndfile WAVs of one direction: ``dec`` (heard) or ``enc`` (sent)."""
        return sorted(self.recordings.glob(f"*-{kind}.wav"))
