"""Benchmark: a send clock in its own thread beside a busy thread, with and without the GIL held.

Why `ivr.sip.udp_send` exists. A thread sends ``--streams`` datagrams every 20 ms (one per RTP
stream, each from its own non-blocking UDP socket on loopback, to one sink a third thread
drains), while the main thread computes without pause (a busy event loop). Measured per mode,
for ``--seconds``: the gap between the starts of two rounds (ideal 20 ms) and the time one round
takes, p50/p99/max.

- ``python``: ``socket.sendto``, which lets go of the GIL around each system call; the busy
  thread takes it at once and the clock waits a switch interval to get it back, per packet.
- ``libc``: `ivr.sip.udp_send.UdpSender`, libc's ``sendto`` through ``ctypes.PyDLL``: the GIL
  is held for the call, a round runs as one piece (but for the busy thread's forced switches).

Both modes in one run, so compare them as a ratio. ``--switch-interval`` sets
``sys.setswitchinterval`` (CPython's default is 5 ms).

    python bench/send_clock.py [--streams 400] [--seconds 10] [--switch-interval 0.005]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ivr.sip.udp_send import UdpSender

PERIOD = 0.020
PAYLOAD = bytes(172)  # a G.711 20 ms frame with its RTP header


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def run(mode: str, streams: int, seconds: float) -> tuple[list[float], list[float]]:
    """One mode's gaps and round times, in seconds."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(0.1)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(streams)]
    for s in socks:
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
    sender = UdpSender(use_libc=mode == "libc")
    to = sender.address(*sink.getsockname()[:2])
    stop = threading.Event()
    gaps: list[float] = []
    rounds: list[float] = []

    def drain() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                sink.recv(2048)

    def clock() -> None:
        origin = time.monotonic()
        last: float | None = None
        tick = 0
        while not stop.is_set():
            tick += 1
            stop.wait(max(0.0, origin + tick * PERIOD - time.monotonic()))
            start = time.monotonic()
            if last is not None:
                gaps.append(start - last)
            last = start
            for s in socks:
                sender.send(s, PAYLOAD, to)
            rounds.append(time.monotonic() - start)

    threads = [threading.Thread(target=drain), threading.Thread(target=clock)]
    for t in threads:
        t.start()
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:  # the busy "event loop"
        total += sum(i * i for i in range(1000))
    stop.set()
    for t in threads:
        t.join()
    for s in [sink, *socks]:
        s.close()
    return gaps, rounds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--switch-interval", type=float, default=0.005)
    args = parser.parse_args()
    sys.setswitchinterval(args.switch_interval)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        f"; {args.streams} streams, switch interval {1000 * args.switch_interval:g} ms"
    )
    print("| sends | gap p50 / p99 / max ms | round p50 / p99 / max ms |")
    print("|---|---:|---:|")
    for mode in ("python", "libc"):
        if mode == "libc" and not UdpSender().keeps_gil:
            print("| libc | (not on this platform) | |")
            continue
        gaps, rounds = run(mode, args.streams, args.seconds)

        def fmt(values: list[float]) -> str:
            return " / ".join(
                f"{1000 * v:.1f}"
                for v in (percentile(values, 0.5), percentile(values, 0.99), max(values, default=0))
            )

        print(f"| {mode} | {fmt(gaps)} | {fmt(rounds)} |")


if __name__ == "__main__":
    main()
