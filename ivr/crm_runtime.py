"""The CRM bridge for `hotline serve`: this node's outbox and ticket numbers, the backend
(embedded SQLite store or an external CRM over HTTP), the delivery worker, started and stopped as
one.

Stopping gives the worker a moment to finish the delivery under way; whatever is still queued
stays in the outbox file and goes out when the node starts again (or `hotline tickets retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from crm_bridge.backend import CrmBackend
from crm_bridge.embedded import EmbeddedCrm, store_path
from crm_bridge.http import HttpCrm
from crm_bridge.model import TICKET_TYPES
from crm_bridge.numbers import TicketNumbers
from crm_bridge.outbox import DeliveryWorker, Outbox, OutboxMetrics, outbox_path
from ivr.crm_service import CrmService
from ivr.metrics import REGISTRY
from ivr.settings import Settings

log = structlog.get_logger(__name__)

_METRICS: OutboxMetrics | None = None


def _metrics() -> OutboxMetrics:
    # Prometheus series can be registered once per registry: one set for the process.
    global _METRICS  # noqa: PLW0603 — the process-wide series, made on first use
    if _METRICS is None:
        _METRICS = OutboxMetrics(REGISTRY)
    return _METRICS


class CrmStartError(Exception):
    """The CRM bridge cannot start; the message names the setting or file."""


class CrmRuntime:
    """Everything the CRM bridge needs in one running node."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend: CrmBackend | None = None
        """Where tickets go and lookups are answered."""
        self.embedded: EmbeddedCrm | None = None
        """The embedded store, when it is the backend (for the admin API)."""
        self.outbox: Outbox | None = None
        self.service: CrmService | None = None
        """The calls' `Crm`; set once started."""
        self.worker: DeliveryWorker | None = None
        self.description = "not started"
        """What the health page shows."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> CrmService:
        """Open the outbox and the backend, start delivering."""
        settings = self.settings
        types = TICKET_TYPES + tuple(t for t in settings.crm_ticket_types if t not in TICKET_TYPES)
        try:
            self.outbox = await Outbox.open(outbox_path(settings.var_dir))
            numbers = await TicketNumbers.attach(
                self.outbox.connection, settings.crm_node_code, lock=self.outbox.lock
            )
            if settings.crm_backend == "embedded":
                self.embedded = await EmbeddedCrm.open(
                    store_path(settings.var_dir),
                    extra_ticket_types=settings.crm_ticket_types,
                )
                self.backend = self.embedded
                where = "embedded"
            else:
                if not settings.crm_url:
                    raise CrmStartError("crm_backend is http but HOTLINE_CRM_URL is not set")
                self.backend = HttpCrm(
                    settings.crm_url,
                    settings.crm_auth,
                    settings.crm_secret,
                    settings.crm_timeout_seconds,
                    settings.crm_field_map,
                )
                where = f"http {settings.crm_url}"
        except (OSError, ValueError) as exc:
            await self.stop()
            raise CrmStartError(f"the CRM bridge cannot start: {exc}") from None
        except CrmStartError:
            await self.stop()
            raise
        self.service = CrmService(
            self.backend,
            self.outbox,
            numbers,
            clock=time.time,
            ticket_types=types,
            region=(settings.service_province, settings.service_city),
        )
        self.worker = DeliveryWorker(
            self.outbox,
            self.backend,
            settings.crm_max_attempts,
            settings.crm_retry_max_seconds,
            metrics=_metrics(),
        )
        self._task = asyncio.get_running_loop().create_task(self.worker.serve())
        self.description = where
        log.info("crm bridge started", backend=where, outbox=str(self.outbox.path))
        return self.service

    async def stop(self, grace: float = 2.0) -> None:
        """Stop delivering (after at most ``grace`` seconds), close the files."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, grace)
        if self.backend is not None:
            with contextlib.suppress(Exception):
                await self.backend.close()
            self.backend = self.embedded = None
        if self.outbox is not None:
            await self.outbox.close()
            self.outbox = None
        self.description = "stopped"
