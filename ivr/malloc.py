"""The node's native memory: glibc's allocator (mallinfo2), SQLite's heap, and free pages back.

CPython hands large objects (over 512 bytes: SIP datagrams, RTP payload buffers, JSON bodies,
SQLite's page caches, the Redis client's replies) to the C library's `malloc`. glibc keeps what
is freed for later: a free chunk below the top of its heap, or in one of the per-thread arenas
that the node's threads (SQLite store, outbox, speech, the Redis client) create, only goes back
to the OS when `malloc_trim` is called. A node that carries 100 calls for hours holds tens of
MiB that no one uses and that only ever grow in steps (glibc(3) `malloc_trim`,
`mallinfo2`; docs/operations.md "Memory"). `trim_heap` returns them; `HeapTrimmer` does it
every `heap_trim_seconds` from a worker thread, so the event loop never waits for it.

SQLite's page caches (the CRM store's and the outbox's connections, up to 2,000 KiB each by
SQLite's default `cache_size`) come from the same malloc, on the connections' threads; they fill
as the files grow and then hold. `sqlite_memory_used` reads SQLite's own count, so the
`hotline_memory_bytes{kind="sqlite"}` gauge tells that warm-up from a leak.

Not glibc (musl, macOS): `Malloc.load()` returns None and nothing is trimmed.
"""

from __future__ import annotations

import _sqlite3
import asyncio
import ctypes
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import cast

import structlog

from ivr import metrics

log = structlog.get_logger(__name__)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc 2.33+): every field a size_t in bytes or a count."""

    _fields_ = [
        ("arena", ctypes.c_size_t),
        ("ordblks", ctypes.c_size_t),
        ("smblks", ctypes.c_size_t),
        ("hblks", ctypes.c_size_t),
        ("hblkhd", ctypes.c_size_t),
        ("usmblks", ctypes.c_size_t),
        ("fsmblks", ctypes.c_size_t),
        ("uordblks", ctypes.c_size_t),
        ("fordblks", ctypes.c_size_t),
        ("keepcost", ctypes.c_size_t),
    ]


@dataclasses.dataclass(frozen=True)
class MallocInfo:
    """What glibc's allocator holds, in bytes, over all its arenas."""

    arena: int
    """Taken from the OS for the arenas (brk and their heaps), free chunks included."""
    mmapped: int
    """Large blocks (128 KiB and up by default) mapped on their own; unmapped when freed."""
    in_use: int
    """Handed out by malloc and not freed yet (Python's own arenas of small objects included)."""
    free: int
    """Free chunks the allocator keeps: what malloc_trim can give back (whole pages of it)."""


@dataclasses.dataclass(frozen=True)
class TrimReport:
    """One `trim_heap`: resident memory before and after."""

    rss_before: int
    """The process's resident set, bytes."""
    rss_after: int
    malloc_free: int
    """`MallocInfo.free` before the trim, bytes. A trim leaves it as it is: the free chunks stay
    the allocator's, only their whole pages stop being resident (madvise)."""
    seconds: float
    """How long malloc_trim took (it locks each arena in turn)."""

    @property
    def released(self) -> int:
        """Resident bytes the trim gave back (0 if other threads allocated more meanwhile)."""
        return max(0, self.rss_before - self.rss_after)


class Malloc:
    """glibc's `mallinfo2` and `malloc_trim` through ctypes."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._trim = libc.malloc_trim
        self._trim.argtypes = [ctypes.c_size_t]
        self._trim.restype = ctypes.c_int
        self._info = libc.mallinfo2
        self._info.argtypes = []
        self._info.restype = _MallInfo2

    @classmethod
    def load(cls) -> Malloc | None:
        """The running process's glibc allocator; None when the C library is not glibc 2.33+."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            # The process's own symbols: the C library Python itself is linked against.
            return cls(ctypes.CDLL(None))
        except (OSError, AttributeError):  # musl has neither function; glibc < 2.33 no mallinfo2
            return None

    def info(self) -> MallocInfo:
        """The allocator's totals now (walks its free lists: not for every packet)."""
        m = self._info()
        return MallocInfo(arena=m.arena, mmapped=m.hblkhd, in_use=m.uordblks, free=m.fordblks)

    def trim(self) -> bool:
        """`malloc_trim(0)`: give every whole free page of every arena back to the OS; True if
        any memory was released."""
        return bool(self._trim(0))


SQLITE_STATUS_MEMORY_USED = 0
"""sqlite3_status64's operation: bytes SQLite holds from its allocator now (sqlite3.h)."""


def _load_sqlite_status() -> Callable[..., int] | None:
    # The SQLite library that Python's sqlite3 module runs on: dlsym on the extension module's
    # handle searches the libraries it is linked against too. None if nothing exports it.
    try:
        status = ctypes.CDLL(_sqlite3.__file__).sqlite3_status64
    except (OSError, AttributeError):
        return None
    status.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int64),
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_int,
    ]
    status.restype = ctypes.c_int
    return cast("Callable[..., int]", status)


_SQLITE_STATUS = _load_sqlite_status()


def sqlite_memory_used() -> int | None:
    """Bytes SQLite holds now over every connection of the process (page caches, schemas,
    prepared statements); None if SQLite's status cannot be read."""
    if _SQLITE_STATUS is None:
        return None
    current, highwater = ctypes.c_int64(), ctypes.c_int64()
    if _SQLITE_STATUS(SQLITE_STATUS_MEMORY_USED, ctypes.byref(current), ctypes.byref(highwater), 0):
        return None  # not SQLITE_OK
    return current.value


def resident_bytes() -> int:
    """This process's resident set size (Linux /proc), bytes; 0 where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def trim_heap(malloc: Malloc) -> TrimReport:
    """Trim once and say what it did. Blocking (milliseconds): call it off the event loop."""
    rss_before, free = resident_bytes(), malloc.info().free
    started = time.perf_counter()
    malloc.trim()
    seconds = time.perf_counter() - started
    return TrimReport(
        rss_before=rss_before, rss_after=resident_bytes(), malloc_free=free, seconds=seconds
    )


def export(info: MallocInfo, rss: int) -> None:
    """Set the `hotline_memory_bytes` gauges."""
    metrics.MEMORY_BYTES.labels(kind="rss").set(rss)
    metrics.MEMORY_BYTES.labels(kind="malloc_arena").set(info.arena)
    metrics.MEMORY_BYTES.labels(kind="malloc_mmapped").set(info.mmapped)
    metrics.MEMORY_BYTES.labels(kind="malloc_in_use").set(info.in_use)
    metrics.MEMORY_BYTES.labels(kind="malloc_free").set(info.free)
    metrics.MEMORY_BYTES.labels(kind="sqlite").set(sqlite_memory_used() or 0)
    metrics.PYTHON_BLOCKS.set(sys.getallocatedblocks())


class HeapTrimmer:
    """Every `every` seconds, trim glibc's heap on a worker thread and log what came back."""

    def __init__(self, every: float, malloc: Malloc | None) -> None:
        self.every = every
        self.malloc = malloc
        self.reports: list[TrimReport] = []
        """The latest trims (at most `KEEP`), for tests and the shutdown log."""
        self._task: asyncio.Task[None] | None = None

    KEEP = 10

    @property
    def description(self) -> str:
        if self.malloc is None:
            return "off: the C library is not glibc 2.33+"
        if self.every <= 0:
            return "off: heap_trim_seconds is 0"
        return f"every {self.every:g} s"

    def start(self) -> None:
        """Start the periodic trim (nothing without glibc or with `every` 0); log either way."""
        log.info("heap trimmer", trim=self.description)
        if self.malloc is not None:
            export(self.malloc.info(), resident_bytes())
        if self.malloc is not None and self.every > 0:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run_once(self) -> TrimReport | None:
        """One trim now, off the loop, logged and exported; None without glibc."""
        if self.malloc is None:
            return None
        report = await asyncio.to_thread(trim_heap, self.malloc)
        self.reports = [*self.reports[-(self.KEEP - 1) :], report]
        log.info(
            "heap trimmed",
            released_bytes=report.released,
            rss_bytes=report.rss_after,
            malloc_free_bytes=report.malloc_free,
            python_blocks=sys.getallocatedblocks(),
            sqlite_bytes=sqlite_memory_used(),
            milliseconds=round(report.seconds * 1000, 1),
        )
        export(self.malloc.info(), report.rss_after)
        return report

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.run_once()
            except Exception:  # housekeeping must never end the node; the log line says why
                log.exception("heap trim failed")
