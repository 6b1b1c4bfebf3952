"""Hostile inputs sent to a running `hotline serve`: SIP datagrams to its SIP port, RTP to the
media port of a live call, raw HTTP requests to its web port, frames on a Twilio Media Stream.
Shared by tests/hostile/test_fuzz_serve.py (the CI-sized run) and bench/fuzz.py (longer runs).

A good neighbour on a shared machine: every seed's Via, Contact and SDP address is rewritten to
this run's own socket before mutation, so the node's answers (and the RTP of the calls that
mutated INVITEs open) come back here, not to ports other programs may use.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.hostile.inputs import (
    hostile,
    http_seeds,
    rtp_seeds,
    seeded,
    sip_seeds,
    twilio_seeds,
)

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Plan:
    """How many inputs of each kind one run sends."""

    sip: int = 1000
    rtp: int = 1000
    http: int = 200
    twilio: int = 300
    pace: float = 0.01
    """Seconds each barrage rests after every 20 inputs (0.01: at most about 2,000 a second
    each; a flood beyond what a node can read only measures the kernel's buffer)."""

    @property
    def total(self) -> int:
        return self.sip + self.rtp + self.http + self.twilio


@dataclass
class Sent:
    """What a run sent and heard back."""

    sip: int = 0
    rtp: int = 0
    http: int = 0
    twilio: int = 0
    sip_answers: int = 0
    http_statuses: dict[int, int] = field(default_factory=dict)
    """HTTP status -> how many (0: the connection closed without an answer)."""

    @property
    def total(self) -> int:
        return self.sip + self.rtp + self.http + self.twilio


def neighbourly(seeds: list[bytes], port: int) -> list[bytes]:
    """Seeds whose addresses (Via, Contact, SDP) point at ``port`` on loopback."""
    out = []
    for seed in seeds:
        ours = re.sub(rb"127\.0\.0\.1:50[0-9]{2}", f"{HOST}:{port}".encode(), seed)
        out.append(re.sub(rb"m=audio [0-9]+ ", f"m=audio {port} ".encode(), ours))
    return out


async def sip_barrage(
    target: tuple[str, int], count: int, rng: random.Random, sent: Sent, *, pace: float = 0.01
) -> None:
    """``count`` hostile datagrams to the SIP port, a little at a time (the node must read them,
    not the kernel drop them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.setblocking(False)
        seeds = neighbourly(sip_seeds(), int(sock.getsockname()[1]))
        for i in range(count):
            sock.sendto(hostile("sip", seeds, rng), target)
            sent.sip += 1
            if i % 20 == 19:
                await asyncio.sleep(pace)
                sent.sip_answers += _drain(sock)
        await asyncio.sleep(0.2)
        sent.sip_answers += _drain(sock)


def _drain(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return got
        got += 1


async def rtp_barrage(
    rtp: socket.socket,
    target: tuple[str, int],
    count: int,
    rng: random.Random,
    sent: Sent,
    *,
    pace: float = 0.01,
) -> None:
    """``count`` hostile RTP datagrams from the call's own RTP socket (the latched source, so
    they are read, not dropped as strangers'), one in ten from a stranger."""
    seeds = rtp_seeds()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind((HOST, 0))
        for i in range(count):
            (stranger if i % 10 == 9 else rtp).sendto(hostile("rtp", seeds, rng), target)
            sent.rtp += 1
            if i % 20 == 19:
                await asyncio.sleep(pace)


async def http_barrage(
    port: int, count: int, rng: random.Random, sent: Sent, *, parallel: int = 8
) -> None:
    """``count`` hostile requests, each on its own connection, ``parallel`` at a time."""
    seeds = http_seeds()
    requests = [hostile("http", seeds, rng) for _ in range(count)]
    lock = asyncio.Semaphore(parallel)

    async def one(data: bytes) -> None:
        async with lock:
            status = await _http(port, data)
        sent.http += 1
        sent.http_statuses[status] = sent.http_statuses.get(status, 0) + 1

    await asyncio.gather(*(one(r) for r in requests))


async def _http(port: int, data: bytes) -> int:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a body shorter than its Content-Length ends here
        line = await asyncio.wait_for(reader.readline(), 5.0)
    except (TimeoutError, ConnectionError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    match = re.match(rb"HTTP/1\.[01] (\d{3})", line)
    return int(match.group(1)) if match else 0


async def twilio_barrage(
    send: Callable[[str | bytes], Awaitable[None]], count: int, rng: random.Random, sent: Sent
) -> None:
    """``count`` hostile frames on a started Media Stream (``send`` writes one frame: text, or
    bytes for a binary frame)."""
    seeds = twilio_seeds()
    for i in range(count):
        frame = hostile("twilio", seeds, rng)
        if i % 25 == 24:
            await send(frame)  # a binary frame: Media Streams speaks text only
        else:
            await send(frame.decode("utf-8", "replace"))
        sent.twilio += 1
        if i % 20 == 19:
            await asyncio.sleep(0.01)


def rngs(seed: int) -> tuple[random.Random, random.Random, random.Random, random.Random]:
    """One generator per barrage, so each one's inputs depend on the seed alone."""
    return seeded(seed), seeded(seed + 1), seeded(seed + 2), seeded(seed + 3)


def elapsed(start: float) -> float:
    return round(time.monotonic() - start, 1)
