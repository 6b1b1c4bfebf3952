"""A delivery worker in a process of its own, for the tests that kill one mid-delivery.

    python worker_proc.py OUTBOX CRM_URL NOW ROUNDS STEP

Runs ``ROUNDS`` rounds of `DeliveryWorker.run_once` over the outbox file against the HTTP CRM,
the first at ``NOW``, each next one ``STEP`` seconds later, then prints the outbox's stats as
one JSON line on stdout (logs go to stderr).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from dataclasses import asdict
from pathlib import Path

import structlog

from crm_bridge.http import HttpCrm
from crm_bridge.outbox import DeliveryWorker, Outbox


async def main(path: Path, url: str, now: float, rounds: int, step: float) -> None:
    crm = HttpCrm(url, timeout=60.0)
    try:
        async with await Outbox.open(path) as outbox:
            worker = DeliveryWorker(
                outbox,
                crm,
                max_attempts=20,
                retry_max_seconds=300.0,
                rng=random.Random(0),  # noqa: S311 — backoff jitter, not a secret
            )
            for n in range(rounds):
                await worker.run_once(now + n * step)
            stats = await outbox.stats(now + rounds * step)
    finally:
        await crm.close()
    print(json.dumps(asdict(stats)), flush=True)  # the test reads it


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    outbox, crm_url, at, count, every = sys.argv[1:6]
    asyncio.run(main(Path(outbox), crm_url, float(at), int(count), float(every)))
