"""`hotline serve`: run this node (SIP front end and web app) until SIGTERM or SIGINT.

The first signal stops accepting work (new INVITEs get 503 with Retry-After), lets calls and
requests in flight finish for up to `shutdown_grace_seconds`, then hangs up the rest; a second
signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import structlog
from aiohttp import web

import ivr
from ivr.crm_runtime import CrmRuntime, CrmStartError
from ivr.flow.model import FlowLoadError, load_flow
from ivr.heap import freeze_startup_heap
from ivr.logs import configure_logging
from ivr.malloc import HeapTrimmer, Malloc
from ivr.routing_runtime import RoutingRuntime, RoutingStartError
from ivr.settings import Settings
from ivr.sip.errors import SipError
from ivr.sip.server import SipServer
from ivr.speech_runtime import SpeechRuntime
from ivr.twilio.config import TwilioSettingsError
from ivr.twilio.front import TwilioFrontEnd
from ivr.web import MalformedRequestFilter, create_app
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# aiohttp's default access-log format repeats the timestamp our processors add.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'


def run_serve(settings: Settings) -> int:
    """Configure logging, serve until signalled; 0 after a stop, 1 if the server cannot start."""
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(_serve(settings))


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _log_startup(settings: Settings) -> None:
    log.info(
        "hotline starting",
        version=ivr.__version__,
        node_id=settings.node_id,
        flow_file=str(settings.resolved_flow_file()),
        var_dir=str(settings.var_dir),
        event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        send_clock=settings.sip_send_clock,
    )


async def _serve(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen: list[signal.Signals] = []
    cleanup: asyncio.Task[None] | None = None
    status: dict[str, object] = {"sip": "starting", "routing": "starting"}
    sip: SipServer | None = None

    def drain() -> None:
        # At once, in the signal handler: a dispatcher probe or health check that arrives a
        # moment later must already see the node going.
        if sip is not None:
            sip.drain()
        # /healthz answers 503 from now on (ivr.web): load balancers and the image's health
        # check see the node going, while calls in flight finish.
        status["status"] = status["sip"] = "draining"

    def on_signal(signum: signal.Signals) -> None:
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            log.info(
                "stopping",
                signal=signum.name,
                grace_seconds=settings.shutdown_grace_seconds,
            )
            drain()
            stop.set()
        else:
            log.warning("second signal, stopping now", signal=signum.name)
            stop.set()
            if cleanup is not None:
                cleanup.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        _log_startup(settings)
        dirs = [settings.sounds_dir] if settings.sounds_dir is not None else []
        try:
            flow = load_flow(settings.resolved_flow_file())
        except FlowLoadError as exc:
            log.error("cannot start", error=str(exc))
            return 1
        routing = RoutingRuntime(settings)
        try:
            node_routing = await routing.start()
        except RoutingStartError as exc:
            log.error("routing cannot start", error=str(exc))
            return 1
        status["routing"] = routing.description
        crm = CrmRuntime(settings)
        try:
            crm_service = await crm.start()
        except CrmStartError as exc:
            log.error("crm bridge cannot start", error=str(exc))
            await routing.stop()
            return 1
        status["crm"] = crm.description
        speech_runtime = SpeechRuntime(settings)
        speech = await speech_runtime.start()
        status["speech"] = speech_runtime.description

        async def stop_services() -> None:
            await speech_runtime.stop()
            await crm.stop()
            await routing.stop()

        library = PromptLibrary(Catalog.shipped(), [*dirs, shipped_dir()])
        try:
            sip = SipServer(
                settings, flow, library, crm=crm_service, routing=node_routing, speech=speech
            )
        except SipError as exc:
            log.error("cannot start", error=str(exc))
            await stop_services()
            return 1
        try:
            sip_host, sip_port = await sip.start()
        except OSError as exc:
            log.error(
                "sip cannot listen", host=settings.sip_host, port=settings.sip_port, error=str(exc)
            )
            await stop_services()
            return 1
        status["sip"] = f"listening on udp {sip_host}:{sip_port}"
        # Callbacks agents accept are dialed by SIP; stopping SIP hangs them up, and routing
        # (stopped last) hears each one end before this node leaves.
        node_routing.on_callback = sip.place_callback
        node_routing.on_callback_ended = sip.end_callback
        try:  # Twilio calls share the SIP send clock and speech; off (and said so) until set
            twilio = TwilioFrontEnd(
                settings,
                flow,
                library,
                crm=crm_service,
                routing=node_routing,
                clock=sip.clock,
                speech=speech,
            )
        except TwilioSettingsError as exc:
            log.error("twilio front end cannot start", error=str(exc))
            await sip.stop(0)
            await stop_services()
            return 1
        status["twilio"] = twilio.start()
        runner = web.AppRunner(
            create_app(
                settings,
                status=status,
                routing=routing.store,
                crm=crm.backend,
                outbox=crm.outbox,
                twilio=twilio,
                tickets=crm_service,
            ),
            handle_signals=False,
            # aiohttp waits this long for running handlers, then cancels them and waits as long
            # again; 2 x 40% leaves a fifth of the grace for the app's cleanup hooks.
            shutdown_timeout=settings.shutdown_grace_seconds * 0.4,
            access_log_format=ACCESS_LOG_FORMAT,
        )
        # Garbage on the web port is counted and summarised, not logged as an error per request.
        server_log = logging.getLogger("aiohttp.server")
        bad_requests = MalformedRequestFilter()
        server_log.addFilter(bad_requests)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.web_host, settings.web_port)
            await site.start()
        except OSError as exc:
            log.error(
                "web server cannot listen",
                host=settings.web_host,
                port=settings.web_port,
                error=str(exc),
            )
            await runner.cleanup()
            await sip.stop(0)
            await twilio.stop(0)
            await stop_services()
            return 1
        for address in runner.addresses:
            host, port = address[0], address[1]
            log.info("web listening", url=_url(host, port), host=host, port=port)
        # Start-up is over: its objects never again cost a full garbage collection (a stall of
        # the send clock that every call hears; see ivr/heap.py).
        log.info("heap frozen", objects=freeze_startup_heap())
        # Memory glibc keeps free after bursts of calls goes back to the OS (ivr/malloc.py).
        trimmer = HeapTrimmer(settings.heap_trim_seconds, Malloc.load())
        trimmer.start()

        await stop.wait()
        await trimmer.stop()

        async def shut_down() -> None:
            try:
                grace = settings.shutdown_grace_seconds * 0.5
                await asyncio.gather(sip.stop(grace), twilio.stop(grace))
                status["twilio"] = twilio.description
                await runner.cleanup()
            finally:
                # Last: calls hung up above leave their tickets in the outbox and their
                # queues through routing first.
                status["routing"] = status["crm"] = "stopping"
                await stop_services()

        cleanup = asyncio.create_task(shut_down())
        # A second signal cancels the task (immediate stop); so does running out of grace.
        await asyncio.wait({cleanup}, timeout=settings.shutdown_grace_seconds)
        forced = not cleanup.done() or cleanup.cancelled()
        if not cleanup.done():
            cleanup.cancel()
            await asyncio.wait({cleanup}, timeout=1.0)
        elif not cleanup.cancelled() and cleanup.exception() is not None:
            log.error("web server cleanup failed", exc_info=cleanup.exception())
        # Idempotent; after a forced stop it makes sure the embedded Redis is told to stop
        # (it runs in its own process group and would otherwise outlive us).
        await stop_services()
        log.info("stopped", forced=forced)
        return 0
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
