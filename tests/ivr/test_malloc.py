"""ivr.malloc: glibc's free pages go back to the OS, the trim is logged and exported, and it is
off when the setting says 0 or the C library is not glibc."""

from __future__ import annotations

import asyncio
import ctypes
import platform
import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ivr import metrics
from ivr.malloc import (
    HeapTrimmer,
    Malloc,
    MallocInfo,
    resident_bytes,
    sqlite_memory_used,
    trim_heap,
)

MIB = 2**20

glibc = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim and mallinfo2 are glibc's"
)


def strand_free_memory(libc: ctypes.CDLL, mib: int) -> None:
    """Leave ``mib`` MiB free but resident inside the heap, below a block still in use: free()
    cannot give it back (only the top of a heap shrinks on free); malloc_trim can."""
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024  # under glibc's mmap threshold (128 KiB): from the arena, not mmap
    blocks = []
    for _ in range(mib * MIB // size):
        block = libc.malloc(size)
        assert block
        ctypes.memset(block, 1, size)  # touched: resident
        blocks.append(block)
    pin = libc.malloc(size)  # above them all, still in use
    for block in blocks:
        libc.free(block)
    strand_free_memory.pins.append(pin)  # type: ignore[attr-defined]


strand_free_memory.pins = []  # type: ignore[attr-defined]


@glibc
def test_trim_gives_stranded_free_pages_back_to_the_os() -> None:
    malloc = Malloc.load()
    assert malloc is not None
    strand_free_memory(ctypes.CDLL(None), 32)
    held = resident_bytes()
    assert malloc.info().free >= 32 * MIB

    report = trim_heap(malloc)

    assert report.rss_before >= held - MIB
    assert report.malloc_free >= 32 * MIB
    # Without the trim nothing would come back (free() already ran): at least 24 of the 32 MiB.
    assert report.released >= 24 * MIB
    assert report.rss_after <= report.rss_before - 24 * MIB
    assert 0 <= report.seconds < 1


@glibc
def test_info_sees_what_is_allocated() -> None:
    malloc = Malloc.load()
    assert malloc is not None
    before = malloc.info()
    kept = [b"x" * 10_000 for _ in range(1000)]  # 10 MB through malloc (over 512 B each)
    after = malloc.info()
    assert after.in_use - before.in_use >= 9 * MIB
    assert after.arena + after.mmapped >= after.in_use
    del kept


@glibc
def test_run_once_logs_the_trim_and_sets_the_gauges() -> None:
    trimmer = HeapTrimmer(300, Malloc.load())
    strand_free_memory(ctypes.CDLL(None), 16)
    with capture_logs() as logs:
        report = asyncio.run(trimmer.run_once())
    assert report is not None
    assert report.released >= 12 * MIB
    assert trimmer.reports == [report]
    (line,) = [e for e in logs if e["event"] == "heap trimmed"]
    assert line["log_level"] == "info"
    assert line["released_bytes"] == report.released
    assert line["rss_bytes"] == report.rss_after
    assert line["malloc_free_bytes"] >= 16 * MIB
    assert line["python_blocks"] > 0
    assert line["milliseconds"] >= 0
    assert isinstance(line["sqlite_bytes"], int)
    sample = metrics.REGISTRY.get_sample_value
    assert abs((sample("hotline_memory_bytes", {"kind": "rss"}) or 0) - resident_bytes()) < 8 * MIB
    assert (sample("hotline_memory_bytes", {"kind": "malloc_in_use"}) or 0) > MIB
    assert (sample("hotline_python_allocated_blocks") or 0) > 1000


def test_sqlite_memory_is_the_page_cache_up_to_cache_size() -> None:
    before = sqlite_memory_used()
    assert before is not None
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA cache_size = -1000")  # KiB: an on-disk file's cache would stop here
    db.execute("CREATE TABLE t (x)")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,) for _ in range(3000)])
    held = sqlite_memory_used()
    assert held is not None
    # An in-memory database keeps every page (3 MB of rows), whatever cache_size says.
    assert held - before > 3_000_000
    db.close()
    after = sqlite_memory_used()
    assert after is not None
    assert after - before < 100_000  # a closed connection gives its cache back


def test_an_on_disk_cache_holds_at_cache_size(tmp_path: Path) -> None:
    before = sqlite_memory_used()
    assert before is not None
    db = sqlite3.connect(tmp_path / "t.sqlite3")
    db.execute("PRAGMA cache_size = -500")  # 500 KiB
    db.execute("CREATE TABLE t (x)")
    for _ in range(10):
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,) for _ in range(300)])
        db.commit()
    held = sqlite_memory_used()
    assert held is not None
    assert (tmp_path / "t.sqlite3").stat().st_size > 3_000_000
    assert 300_000 < held - before < 800_000  # the cache filled to about 500 KiB, then held
    db.close()


class FakeMalloc(Malloc):
    """Counts trims; no C library involved."""

    def __init__(self) -> None:
        self.trims = 0

    def info(self) -> MallocInfo:
        return MallocInfo(arena=4 * MIB, mmapped=0, in_use=3 * MIB, free=MIB)

    def trim(self) -> bool:
        self.trims += 1
        return True


def test_the_trimmer_trims_every_period_until_stopped() -> None:
    fake = FakeMalloc()

    async def scenario() -> int:
        trimmer = HeapTrimmer(0.01, fake)
        trimmer.start()
        await asyncio.sleep(0.2)
        await trimmer.stop()
        trims = fake.trims
        await asyncio.sleep(0.05)
        assert fake.trims == trims  # stopped means stopped
        return trims

    with capture_logs() as logs:
        trims = asyncio.run(scenario())
    assert trims >= 3
    assert logs[0] == {"event": "heap trimmer", "trim": "every 0.01 s", "log_level": "info"}
    assert sum(e["event"] == "heap trimmed" for e in logs) == trims


@pytest.mark.parametrize(
    ("every", "malloc", "said"),
    [
        (0.0, FakeMalloc(), "off: heap_trim_seconds is 0"),
        (300.0, None, "off: the C library is not glibc 2.33+"),
    ],
)
def test_the_trimmer_is_off_when_set_to_0_or_without_glibc(
    every: float, malloc: FakeMalloc | None, said: str
) -> None:
    async def scenario() -> HeapTrimmer:
        trimmer = HeapTrimmer(every, malloc)
        trimmer.start()
        await asyncio.sleep(0.05)
        await trimmer.stop()
        return trimmer

    with capture_logs() as logs:
        trimmer = asyncio.run(scenario())
    assert logs == [{"event": "heap trimmer", "trim": said, "log_level": "info"}]
    assert malloc is None or malloc.trims == 0
    assert trimmer.reports == []
