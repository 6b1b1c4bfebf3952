"""The web app: health (`/healthz`), Prometheus metrics (`/metrics`), a status page (`/`), the
agents and queues API (`ivr.web_routing`) and the CRM admin API with the outbox (`ivr.web_crm`).

API errors under `/api/` are JSON with a stable `error_id` (`{"error_id": "not-found", ...}`),
so clients branch on the id, never on the message.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Mapping

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import exposition

import ivr
from crm_bridge.backend import CrmBackend
from crm_bridge.outbox import Outbox
from ivr.crm_service import CrmService
from ivr.metrics import HTTP_MALFORMED, REGISTRY
from ivr.routing_metrics import RoutingMetrics
from ivr.settings import Settings
from ivr.twilio.front import TwilioFrontEnd, add_twilio_routes
from ivr.web_api import API_PREFIX, ApiError, Handler
from ivr.web_auth import access_middleware, add_auth_routes
from ivr.web_crm import CRM_KEY, add_crm_routes, stats_json
from ivr.web_desk import add_desk_routes
from ivr.web_desk_work import DeskWork
from ivr.web_openapi import add_openapi_route
from ivr.web_routing import ROUTING_KEY, add_routing_routes
from ivr.web_wallboard import add_wallboard_routes
from routing.store import RoutingStore

SIP_STATUS = "not started (the serve command starts it)"

log = structlog.get_logger(__name__)

SETTINGS_KEY = web.AppKey("settings", Settings)
STARTED_KEY = web.AppKey("started_monotonic", float)
STATUS_KEY = web.AppKey("status", Mapping[str, object])
ROUTING_METRICS_KEY = web.AppKey("routing_metrics", RoutingMetrics)

# Stable ids for the HTTP errors aiohttp raises itself (unknown path, wrong method, ...).
_ERROR_IDS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "request-too-large",
}


def _error(status: int, error_id: str, message: str) -> web.Response:
    return web.json_response({"error_id": error_id, "message": message}, status=status)


@web.middleware
async def client_gone(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A client that closes its connection before sending the body it announced (a scanner's
    truncated request, a browser tab closed mid-upload): the read fails with
    ConnectionResetError, which is the client's doing, not a fault here. Counted and answered
    400 (nobody reads it) instead of being logged as a handler failure with a traceback."""
    try:
        return await handler(request)
    except ConnectionResetError:
        HTTP_MALFORMED.inc()
        log.debug("client left mid-request", path=request.path, method=request.method)
        return web.Response(status=400, text="incomplete request")


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure under /api/ with JSON `{"error_id", "message"}`."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.error_id, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        error_id = _ERROR_IDS.get(exc.status, f"http-{exc.status}")
        message = exc.reason if exc.status != 404 else f"no API endpoint at {request.path}"
        return _error(exc.status, error_id, message)
    except ConnectionResetError:
        raise  # the client left: `client_gone` answers it
    except Exception:
        log.exception("api handler failed", path=request.path, method=request.method)
        return _error(500, "internal-error", "internal error; see the server log")


async def _health(request: web.Request) -> dict[str, object]:
    app = request.app
    settings = app[SETTINGS_KEY]
    body: dict[str, object] = {
        "status": "ok",
        "node_id": settings.node_id,
        "version": ivr.__version__,
        "uptime_seconds": round(time.monotonic() - app[STARTED_KEY], 3),
        "speech": "vosk" if settings.vosk_model is not None else "dtmf-only",
        "sip": SIP_STATUS,
    }
    crm = app[CRM_KEY]
    if crm.outbox is not None:
        # Three index searches and one row (`Outbox.stats`): cheap enough for every probe.
        # Delivered only grows: the probe shows what may need a person.
        stats = stats_json(await crm.outbox.stats(crm.clock()))
        body["outbox"] = {k: stats[k] for k in ("backlog", "oldest_age_seconds", "dead_letters")}
    # Entries the caller of create_app supplies (a live mapping) add to, or update, the above.
    extra = app[STATUS_KEY]
    body.update(extra)
    return body


MALFORMED_LOG_EVERY = 10.0
"""At most one log line per this many seconds for malformed HTTP requests."""


class MalformedRequestFilter(logging.Filter):
    """Turns aiohttp's error-with-traceback for every request its parser refuses (a scanner or
    garbage on the web port; aiohttp answers 400 and closes) into a count and at most one
    warning per `MALFORMED_LOG_EVERY` seconds. Attach it to the ``aiohttp.server`` logger; any
    other error there (a real fault) still passes as an error."""

    def __init__(self) -> None:
        super().__init__()
        self._last_log = -MALFORMED_LOG_EVERY
        self._since_last = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        HTTP_MALFORMED.inc()
        self._since_last += 1
        now = time.monotonic()
        if now - self._last_log >= MALFORMED_LOG_EVERY:
            self._last_log = now
            reason = " ".join(str(exc.message).split())[:120]
            log.warning(
                "malformed http dropped",
                status=exc.code,
                reason=reason.encode("ascii", "backslashreplace").decode(),
                since_last=self._since_last,
            )
            self._since_last = 0
        return False


async def healthz(request: web.Request) -> web.Response:
    """Liveness and a summary of what runs on this node: 200 while it takes calls, 503 once it
    drains (the first SIGTERM), so a load balancer or orchestrator stops sending it work."""
    health = await _health(request)
    return web.json_response(health, status=200 if health["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of `ivr.metrics.REGISTRY` (OpenMetrics if the scraper asks)."""
    exporter = request.app[ROUTING_METRICS_KEY]
    store = request.app[ROUTING_KEY].store
    if store is not None:  # routing's figures, read at scrape time (ivr.routing_metrics)
        await exporter.refresh(store, request.app[ROUTING_KEY].clock())
    encoder, content_type = exposition.choose_encoder(request.headers.get("Accept", ""))
    response = web.Response(body=encoder(REGISTRY))
    response.headers["Content-Type"] = content_type
    return response


async def index(request: web.Request) -> web.Response:
    """A small human-readable status page."""
    health = await _health(request)
    rows = "\n".join(
        f"      <tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in health.items()
    )
    node = html.escape(str(health["node_id"]))
    page = f"""<!doctype html>
<html lang="zh-CN">
  <head>
    <meta charset="utf-8">
    <title>95598 供电服务热线 · {node}</title>
  </head>
  <body>
    <h1>95598 供电服务热线 <small>95598 power supply service hotline</small></h1>
    <p>Node <strong>{node}</strong> · version {html.escape(ivr.__version__)}</p>
    <table>
{rows}
    </table>
    <p><a href="/healthz">/healthz</a> (JSON) · <a href="/metrics">/metrics</a> (Prometheus)</p>
    <p>No phone line is connected yet. Try <code>hotline call</code> in a terminal
      for a simulated caller (<code>hotline call --script FILE</code> for a scripted one).</p>
  </body>
</html>
"""
    return web.Response(text=page, content_type="text/html", charset="utf-8")


def create_app(
    settings: Settings,
    *,
    status: Mapping[str, object] | None = None,
    routing: RoutingStore | None = None,
    clock: Callable[[], float] = time.time,
    crm: CrmBackend | None = None,
    outbox: Outbox | None = None,
    twilio: TwilioFrontEnd | None = None,
    tickets: CrmService | None = None,
) -> web.Application:
    """Build the web app for `settings`; `status` entries are merged into every /healthz answer.

    `routing` serves the agents and queues API (without it those endpoints answer 503
    ``routing-unavailable``); `crm` serves the tickets and outages API (without it 503
    ``crm-unavailable``; with another backend than the embedded store, only ticket reads);
    `outbox`, this node's CRM outbox, serves `/api/outbox`, answers tickets the CRM does not
    have yet and adds ``outbox`` (backlog, oldest age, dead letters) to /healthz; `clock` gives
    them all their ``now`` (seconds since the epoch). `twilio` answers Twilio's webhooks and
    Media Streams under ``/twilio/`` (without it, or while it is off, they answer 503).
    `tickets` (the calls' CRM service) takes the work orders agents complete on the desk
    (without it ``POST /api/desk/ticket`` answers 503 ``crm-unavailable``).
    """
    # api_errors first: the access rule's refusals are ApiErrors it turns into JSON.
    app = web.Application(middlewares=[client_gone, api_errors, access_middleware(settings)])
    app[SETTINGS_KEY] = settings
    app[STARTED_KEY] = time.monotonic()
    app[STATUS_KEY] = status if status is not None else {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app[ROUTING_METRICS_KEY] = RoutingMetrics()
    app.router.add_get("/", index)
    add_routing_routes(app, routing, clock)
    add_crm_routes(app, crm, clock, outbox)
    add_twilio_routes(app, twilio)
    add_auth_routes(app, settings, clock, routing)
    add_wallboard_routes(app, routing, clock, settings)
    desk = DeskWork(tickets, settings.desk_wrap_codes, settings.desk_transfer_queues)
    add_desk_routes(app, desk)
    add_openapi_route(app)
    return app
