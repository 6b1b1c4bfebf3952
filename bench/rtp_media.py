"""Benchmark: the media path alone — N MediaStreams on the shared send clock, callers streaming.

What `bench/sip_load.py` measures minus SIP, the dialog and SIPp: this process opens N real
:class:`ivr.sip.media.MediaStream` sockets on loopback (the hotline's code, no SDP) and one
child process plays every caller from one socket: A-law in 30 ms packets (33 a second per call,
like SIPp's g711a.pcap), one RFC 4733 key per call, and it drains what the streams send back
(symmetric RTP latches every stream onto it). Over ``--seconds`` after a warm-up it reports the
process's CPU time (user + system, so the kernel's share of each sendto and recvfrom counts),
as % of a core and in µs per packet handled (in + out), and the send clock's gaps.

CPU time per packet moves much less than wall-clock figures when the machine is shared, so it
is the figure to compare between two versions of the code, run back to back:

    python bench/rtp_media.py --streams 200 400
    PYTHONPATH=/path/to/other/checkout python bench/rtp_media.py --streams 200 400
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import sys
import textwrap
import time
from dataclasses import dataclass

import structlog

import ivr
from ivr.sip.media import MediaConfig, MediaStream, RemoteMedia
from ivr.sip.rtp_clock import SendClock
from ivr.sip.rtp_stream import PCMA

CALLER = textwrap.dedent(
    """
    import socket, struct, sys, time
    ports = [int(p) for p in sys.argv[1].split(",")]
    seconds = float(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.setblocking(False)
    print(sock.getsockname()[1], flush=True)
    sys.stdin.readline()  # the streams know where we are
    payload = bytes([0xD5]) * 240  # 30 ms of A-law silence
    n = len(ports)
    period = 0.030 / n
    key_at = 1.0  # one RFC 4733 key per call, one second in
    t0 = time.monotonic()
    sent = keys = received = 0
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) / period)
        while sent < due:
            i = sent % n
            seq = sent // n
            header = struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, 240 * seq, 1000 + i)
            sock.sendto(header + payload, ("127.0.0.1", ports[i]))
            sent += 1
        if keys < n and now - t0 >= key_at:
            for i in range(n):
                event = struct.pack("!BBHII", 0x80, 101, 1, 80000, 1000 + i)
                sock.sendto(event + bytes([5, 0x80 | 10, 3, 0x20]), ("127.0.0.1", ports[i]))
            keys = n
        while True:
            try:
                sock.recv(2048)
            except BlockingIOError:
                break
            received += 1
        time.sleep(0.002)
    print(sent, received, flush=True)
    """
)


@dataclass
class Result:
    streams: int
    cpu_percent: float
    us_per_packet: float
    packets_in: int
    packets_out: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    keys: int


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(streams: int, seconds: float, warmup: float) -> Result:
    clock = SendClock()
    clock.start()
    keys = 0

    def on_key(digit: str, at: float) -> None:
        nonlocal keys
        keys += 1

    opened: list[MediaStream] = []
    config = MediaConfig(silence_when_idle=True)
    # The caller's address is not known before it starts, and it needs our ports: the SDP
    # names a placeholder and symmetric RTP latches onto the caller's first packet.
    for _ in range(streams):
        stream = await MediaStream.open(
            RemoteMedia(("127.0.0.1", 9), PCMA, 101), clock=clock, config=config, on_key=on_key
        )
        opened.append(stream)
    ports = ",".join(str(s.local_address[1]) for s in opened)
    caller = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CALLER,
        ports,
        str(warmup + seconds + 1.0),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert caller.stdin is not None
    assert caller.stdout is not None
    await caller.stdout.readline()
    caller.stdin.write(b"go\n")
    await caller.stdin.drain()
    await asyncio.sleep(warmup)
    counters_in = sum(s.counters.received for s in opened)
    counters_out = sum(s.counters.sent for s in opened)
    clock.reset_stats()
    start_cpu, start = cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = cpu_seconds() - start_cpu, time.monotonic() - start
    packets_in = sum(s.counters.received for s in opened) - counters_in
    packets_out = sum(s.counters.sent for s in opened) - counters_out
    stats = clock.stats()
    for stream in opened:
        stream.close()
    await clock.stop()
    await caller.communicate()
    handled = max(1, packets_in + packets_out)
    return Result(
        streams,
        100 * cpu / wall,
        1e6 * cpu / handled,
        packets_in,
        packets_out,
        stats.p50_ms,
        stats.p99_ms,
        stats.max_ms,
        keys,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[200, 400])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    # One "rtp_latched" line per stream would be most of the output: warnings and up only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"ivr from {ivr.__file__}; load average {' '.join(load)}")
    print(
        "| streams | CPU % of a core | µs CPU per packet | packets in/s | packets out/s "
        "| send-gap p50 / p99 / max ms | keys |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.streams:
        r = asyncio.run(run(n, args.seconds, args.warmup))
        print(
            f"| {r.streams} | {r.cpu_percent:.0f} | {r.us_per_packet:.1f} "
            f"| {r.packets_in / args.seconds:.0f} | {r.packets_out / args.seconds:.0f} "
            f"| {r.p50_ms:.1f} / {r.p99_ms:.1f} / {r.max_ms:.1f} | {r.keys}/{r.streams} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
