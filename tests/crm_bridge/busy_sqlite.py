"""Holding an aiosqlite connection's thread busy, for tests of what queues behind it."""

from __future__ import annotations

import asyncio

import aiosqlite

SLOW_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000)"
    " SELECT count(*) FROM c"
)
"""Counts to three million in SQLite: a fraction of a second on the connection's one thread."""


async def occupy(db: aiosqlite.Connection) -> asyncio.Future[aiosqlite.Cursor]:
    """Start the slow query on `db` and return once its thread is on it; await the result to
    wait for the thread to be free again."""
    busy = asyncio.ensure_future(db.execute(SLOW_QUERY))
    await asyncio.sleep(0.01)  # the thread is on the slow query
    return busy
