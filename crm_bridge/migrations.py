"""Schema migrations for the bridge's SQLite databases, counted by ``PRAGMA user_version``.

A database's schema is a list of steps; step N (from 1) brings version N-1 to N. Each step runs
in one ``BEGIN IMMEDIATE`` transaction together with the new ``user_version`` (SQLite's DDL and
the header's version are both transactional), so a crash leaves the database at the old version
or the new one, never half-way. ``IMMEDIATE`` takes the write lock before the version is read
again, so two processes opening one database at once cannot apply a step twice.

A database newer than the code (a downgrade) is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite
import structlog

from crm_bridge.errors import CrmError

log = structlog.get_logger(__name__)

Step = Sequence[str]
"""One migration: SQL statements run in order in one transaction."""


class SchemaTooNewError(CrmError):
    """The database was made by a newer version of the hotline than this one."""

    error_id = "crm-store-too-new"


async def schema_version(db: aiosqlite.Connection) -> int:
    """The database's ``user_version`` (0 for a new file)."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(
    db: aiosqlite.Connection, steps: Sequence[Step], *, target: int | None = None
) -> int:
    """Apply the steps ``db`` lacks, up to ``target`` (default: all); returns the version now.

    ``db`` must be in autocommit mode (``isolation_level=None``): the steps manage their own
    transactions.
    """
    goal = len(steps) if target is None else target
    if not 0 <= goal <= len(steps):
        raise ValueError(f"target {goal} is not in 0..{len(steps)}")
    while True:
        await db.execute("BEGIN IMMEDIATE")
        try:
            version = await schema_version(db)
            if version > len(steps):
                raise SchemaTooNewError(
                    f"the database is at schema version {version}, this hotline knows "
                    f"{len(steps)}: run the newer hotline, or restore a backup"
                )
            if version >= goal:
                await db.execute("COMMIT")
                return version
            for statement in steps[version]:
                await db.execute(statement)
            # PRAGMA takes no parameters; the value is an int we computed.
            await db.execute(f"PRAGMA user_version = {version + 1:d}")
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
        log.info("crm store migrated", version=version + 1)
