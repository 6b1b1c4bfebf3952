"""Routing for `hotline serve`: the Redis connection (configured or embedded), the store, this
node's `RedisRouting` and its pump, started and stopped as one.

Start-up waits a bounded time for Redis (a compose file may start the hotline first) and then
fails with a message naming the URL; once running, a Redis outage is the pump's business (it logs
and retries) and callers who need a queue meanwhile hear the flow's error path.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ivr.redis_embedded import EmbeddedRedis, EmbeddedRedisError
from ivr.routing_redis import RedisRouting
from ivr.services import ServiceError
from ivr.settings import Settings
from routing.store import RoutingStore

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 15.0
"""Seconds start-up waits for a configured Redis to answer."""

LEAVE_TIMEOUT = 5.0
"""Seconds a stopping node gives routing to take its calls and callbacks over."""


class RoutingStartError(Exception):
    """Routing cannot start; the message says why and which setting to look at."""


def redact_url(url: str) -> str:
    """The URL without its password, for logs and the health page."""
    return re.sub(r"(?<=://)([^:@/]*):[^@/]*@", r"\1:***@", url)


class RoutingRuntime:
    """Everything routing needs in one running node."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedRedis | None = None
        """The embedded server, when no redis_url is configured."""
        self.redis: Redis | None = None
        self.store: RoutingStore | None = None
        """The routing store (for the web API); set once started."""
        self.routing: RedisRouting | None = None
        """This node's routing for its calls; set once started."""
        self.description = "not started"
        """What the health page shows."""
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> RedisRouting:
        """Connect (starting the embedded server if needed), then start the pump."""
        settings = self.settings
        url = settings.redis_url
        if url is None:
            self.embedded = EmbeddedRedis(settings.var_dir / "redis")
            try:
                url = await self.embedded.start()
            except EmbeddedRedisError as exc:
                self.embedded = None
                raise RoutingStartError(str(exc)) from None
        try:
            self.redis = Redis.from_url(url, decode_responses=True)
        except ValueError as exc:
            await self.stop()
            raise RoutingStartError(f"HOTLINE_REDIS_URL is not a Redis URL: {exc}") from None
        version = await self._wait_for_redis(url)
        self.store = RoutingStore(
            self.redis, tenant=settings.routing_tenant, events_max=settings.routing_events_max
        )
        try:
            self.routing = RedisRouting(
                self.store,
                settings.node_id,
                clock=time.time,
                heartbeat_interval=settings.routing_heartbeat_seconds,
                node_timeout=settings.routing_node_timeout_seconds,
            )
        except ValueError as exc:
            await self.stop()
            raise RoutingStartError(
                f"{exc} (HOTLINE_ROUTING_HEARTBEAT_SECONDS, HOTLINE_ROUTING_NODE_TIMEOUT_SECONDS)"
            ) from None
        self._pump = asyncio.get_running_loop().create_task(self.routing.serve())
        where = "embedded" if self.embedded is not None else redact_url(url)
        self.description = f"redis {version} ({where}), tenant {settings.routing_tenant}"
        log.info(
            "routing started",
            redis=where,
            redis_version=version,
            tenant=settings.routing_tenant,
            node_id=settings.node_id,
        )
        return self.routing

    async def _wait_for_redis(self, url: str) -> str:
        assert self.redis is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        said = False
        while True:
            try:
                info = await self.redis.info("server")
                version = str(info["redis_version"])
                break
            except (RedisError, OSError) as exc:
                if loop.time() > deadline:
                    await self.stop()
                    raise RoutingStartError(
                        f"Redis at {redact_url(url)} does not answer ({exc}); check "
                        "HOTLINE_REDIS_URL, or unset it to use the embedded Redis"
                    ) from None
                if not said:
                    log.warning("waiting for redis", redis=redact_url(url), error=str(exc))
                    said = True
                await asyncio.sleep(0.5)
        if tuple(int(p) for p in re.findall(r"\d+", version)[:2]) < (6, 2):
            await self.stop()
            raise RoutingStartError(f"Redis {version} at {redact_url(url)} is too old: 6.2+")
        return version

    async def stop(self) -> None:
        """Stop the pump, leave routing (this node's callbacks move to a live node at once),
        close the connection, stop the embedded server."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
            if self.routing is not None:
                try:
                    await asyncio.wait_for(self.routing.leave(), LEAVE_TIMEOUT)
                except (ServiceError, TimeoutError) as exc:
                    # Redis is gone: the other nodes reclaim this one after the node timeout.
                    log.warning("could not leave routing", error=str(exc))
        if self.redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.aclose()
            self.redis = None
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None
        self.description = "stopped"
