"""The SIP front end: one UDP socket pumping the sans-I/O core, a media stream and a call session
per call, all on one event loop.

The core (`ivr.sip.uas.SipCore`) decides what SIP says; this module only moves datagrams, arms
the core's timer, opens media and runs the 95598 dialog for each answered call through
:class:`SipCall`, the SIP implementation of the session's ``Transport``. Callbacks that agents
accept are dialed out by `ivr.sip.callbacks` on the same UAC (`place_callback`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from aiosipua import parse_uri

from ivr import metrics
from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import Flow
from ivr.listening import CallListener, Speech
from ivr.routing_redis import CallbackEnd, CallbackOrder
from ivr.services import Crm, Routing
from ivr.session import RECENT_SUMMARIES, CallSession, CallSummary
from ivr.settings import Settings
from ivr.sip import events as sip
from ivr.sip.bridge import Bridge
from ivr.sip.callbacks import CallbackDialer, CallbackLimits
from ivr.sip.dtmf_merge import DtmfMerger, DtmfSource
from ivr.sip.media import MediaConfig, MediaStream, RemoteMedia, RtpPorts
from ivr.sip.prompt_audio import render_play
from ivr.sip.refer_transfers import ReferTransfers
from ivr.sip.register_throttle import RegisterThrottle
from ivr.sip.registrar import Registrar, load_agents
from ivr.sip.rtp_clock import AnyClock, SendClock, ThreadSendClock
from ivr.sip.sdp import Negotiated, NoCommonCodecError, answer_sdp, negotiate
from ivr.sip.transactions import earliest
from ivr.sip.uac import SipClient
from ivr.sip.uac_events import LegAnswered, LegEnded, LegEvent, LegFailed, LegMediaChanged
from ivr.sip.uac_messages import sdp_offer
from ivr.sip.uas import SipCore
from ivr.sip.upstream import (
    RegistrationFailed,
    RegistrationState,
    UpstreamRegistration,
    hotline_registration,
)
from ivr.understanding import load_understander
from sounds.catalog import PromptLibrary
from speech.dtmf import DtmfDetector

log = structlog.get_logger("ivr.sip")

MALFORMED_LOG_EVERY = 10.0
"""At most one log line per this many seconds for malformed datagrams (a scanner must not flood
the log)."""

RETRY_AFTER_SECONDS = 30

SIP_RECEIVE_BUFFER = 4 * 1024 * 1024


@dataclass
class SipCall:
    """One answered SIP call: its media, its key de-duplication and its session."""

    server: SipServer
    key: str
    context: CallContext
    media: MediaStream
    inband: bool
    """Listen for in-band tones: only when the caller offered no RFC 4733 events."""
    session: CallSession | None = None
    task: asyncio.Task[object] | None = None
    agent_leg: str | None = None
    """The outbound leg to the agent's phone, while one exists."""
    agent_media: MediaStream | None = None
    bridge: Bridge | None = None
    transfer_request: int = 0
    transfer_agent: str = ""
    """The agent the agent leg calls (reported back if the leg fails)."""
    merger: DtmfMerger = field(default_factory=DtmfMerger)
    detector: DtmfDetector = field(default_factory=DtmfDetector)
    ended: bool = False
    listener: CallListener | None = None
    """The call's recognizer stream, when the hotline has speech and the pool had room."""
    media_counted: bool = False
    """Its reception figures are in the RTP metrics (once, however often media is closed)."""

    # -- Transport (what the session asks for) -----------------------------------------

    async def play(self, play: act.Play) -> None:
        """Render the prompts and queue them on the shared send clock.

        The IVR speaks to the caller only once the agent is gone: an agent who finished on
        the desktop (routing's word, not a BYE from the phone) is hung up here, before the
        survey, instead of listening in on it.
        """
        if self.agent_leg is not None:
            log.info("agent leg ended: the dialog speaks to the caller again")
            self.server.end_agent_leg(self)
        pcm = render_play(play.items, self.server.library, None)
        if not pcm:
            self._feed(ev.PromptFinished(play.play_id))
            return
        self.media.play(pcm, play.play_id, lambda pid: self._feed(ev.PromptFinished(pid)))

    async def stop_playback(self) -> None:
        """Barge-in: drop queued audio now."""
        self.media.stop_playback()

    async def start_collecting(self, spec: act.StartCollecting) -> None:
        """Keys always reach the dialog; speech is listened for when the collection wants it."""
        if self.listener is not None:
            self.listener.start_collecting(spec)

    async def stop_collecting(self) -> None:
        """Keys always reach the dialog, which ignores what it does not want; speech stops."""
        if self.listener is not None:
            self.listener.stop_collecting()

    async def transfer(self, action: act.Transfer) -> None:
        """Call the agent's phone and bridge the caller to it, the IVR staying in the path; or,
        with ``sip_transfer_mode = "refer"``, REFER the caller's PBX to it (`refer_transfers`)."""
        if self.server.settings.sip_transfer_mode == "refer":
            await self.server.refers.start(self, action)
        else:
            await self.server.call_agent(self, action)

    async def hangup(self, reason: str) -> None:
        """The IVR ends the call: BYE (retransmitted by the core)."""
        self.server.hangup(self)

    # -- inputs -----------------------------------------------------------------------

    def on_key(self, digit: str, source: DtmfSource) -> None:
        """One key report from any source; fed once to the dialog."""
        merged = self.merger.push(digit, source, time.monotonic())
        if merged is not None:
            self._feed(ev.DigitPressed(merged))

    def audio(self, pcm: bytes) -> None:
        """Caller audio: to the recognizer, and in-band DTMF when the caller has no
        telephone-events."""
        if self.listener is not None:
            self.listener.audio(pcm)
        if self.inband:
            for digit in self.detector.feed(pcm):
                self.on_key(digit, DtmfSource.INBAND)

    def close_media(self) -> None:
        """The call is over: its RTP and its recognizer stream go."""
        if not self.media_counted:
            self.media_counted = True
            count_reception(self.media)
        self.media.close()
        if self.listener is not None:
            self.listener.close()

    def _feed(self, event: ev.Event) -> None:
        if self.session is not None:
            self.session.feed(event)

    def session_feed(self, event: ev.Event) -> None:
        """Hand an event to the call's session (agent leg outcomes)."""
        self._feed(event)


def count_reception(media: MediaStream) -> None:
    """Add an ending stream's packets received and lost to the node's RTP metrics."""
    counters = media.counters
    metrics.RTP_PACKETS_RECEIVED.inc(counters.received)
    metrics.RTP_PACKETS_LOST.inc(counters.lost)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self.server = server
        self.errors = 0
        self.last_error_log = -MALFORMED_LOG_EVERY

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.server.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for datagrams sent to spoofed or dead sources: a scanner can cause one per
        # packet, so at most one line per MALFORMED_LOG_EVERY seconds, with a count.
        self.errors += 1
        now = time.monotonic()
        if now - self.last_error_log >= MALFORMED_LOG_EVERY:
            self.last_error_log = now
            log.warning("sip socket error", error=str(exc), since_last=self.errors)
            self.errors = 0


class SipServer:
    """Answers SIP calls with the flow; one per process."""

    def __init__(
        self,
        settings: Settings,
        flow: Flow,
        library: PromptLibrary,
        *,
        crm: Crm,
        routing: Routing,
        session_factory: Callable[[CallContext, SipCall], CallSession] | None = None,
        speech: Speech | None = None,
    ) -> None:
        self.settings = settings
        self.speech = speech
        """Speech recognition for calls (None: DTMF-only)."""
        self.flow = flow
        self.understander = load_understander(settings)
        """The hotline's region and street list, for every call's dialog."""
        self.library = library
        self.crm = crm
        self.routing = routing
        self.clock: AnyClock = (
            ThreadSendClock() if settings.sip_send_clock == "thread" else SendClock()
        )
        """The shared send clock of every call's RTP (and Twilio's Media Streams)."""
        ports = (
            RtpPorts(settings.sip_rtp_port_min, settings.sip_rtp_port_max)
            if settings.sip_rtp_port_max
            else None
        )
        self.media_config = MediaConfig(host=settings.sip_host, ports=ports)
        """Where every media socket of this node binds (one port range, handed out in turn)."""
        self.calls: dict[str, SipCall] = {}
        self.pending: set[str] = set()
        self._answering: set[asyncio.Task[None]] = set()
        """The tasks answering ringing calls (cancelled, their media closed, at stop)."""
        self.draining = False
        self.address: tuple[str, int] = (settings.sip_host, settings.sip_port)
        self._core: SipCore | None = None
        self._client: SipClient | None = None
        self.upstream: UpstreamRegistration | None = None
        self.legs: dict[str, SipCall] = {}
        """Outbound agent legs by leg key, to the caller's call."""
        self.callbacks = CallbackDialer(
            self, CallbackLimits(agent_ring_seconds=settings.sip_agent_ring_seconds)
        )
        """Callbacks being dialed out (their legs are not in ``legs``)."""
        self.refers = ReferTransfers(self)
        """Calls being handed to their agent by REFER (``sip_transfer_mode = "refer"``)."""
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._last_malformed_log = 0.0
        self._malformed = 0
        self._session_factory = session_factory
        self.answered: deque[tuple[str, int]] = deque(maxlen=RECENT_SUMMARIES)
        """(call id, RTP payload type) of the latest answered calls."""
        self._no_calls = asyncio.Event()
        self._no_calls.set()
        self.completed: deque[CallSummary] = deque(maxlen=RECENT_SUMMARIES)
        """Summaries of the latest finished calls (for tests and the shutdown log)."""
        # -- registrar: agent softphones REGISTER here when an agents file is configured --
        self.registrar: Registrar | None = None
        """The built-in registrar (``sip_agents_file`` set), else ``None`` (REGISTER gets 405).
        Its clock is the event loop's: ``registrar.lookup(ext, loop.time())``."""
        if settings.sip_agents_file is not None:
            self.registrar = Registrar(
                load_agents(settings.sip_agents_file, settings.sip_realm),
                realm=settings.sip_realm,
                min_expires=settings.sip_register_min_expires,
                max_expires=settings.sip_register_max_expires,
                throttle=RegisterThrottle(
                    per_source=settings.sip_register_attempts_per_source,
                    per_user=settings.sip_register_attempts_per_user,
                    window=settings.sip_register_window_seconds,
                ),
            )
        # -- end registrar --

    @property
    def core(self) -> SipCore:
        """The protocol core (after start)."""
        assert self._core is not None
        return self._core

    @property
    def client(self) -> SipClient:
        """The outbound (agent leg) side, sharing the socket (after start)."""
        assert self._client is not None
        return self._client

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> tuple[str, int]:
        """Bind the SIP socket and start the send clock; returns the bound address."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.settings.sip_host, self.settings.sip_port)
        )
        # CPython's UDP transport is not a DatagramTransport subclass on 3.11: no isinstance.
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A storm fills the default ~200 KiB buffer in milliseconds; lost INVITEs and ACKs
            # cost retransmissions and silent callers. The kernel caps this at rmem_max.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SIP_RECEIVE_BUFFER)
        host, port = transport.get_extra_info("sockname")[:2]
        self.address = (str(host), int(port))
        advertised = self.settings.sip_advertised_host or str(host)
        self._core = SipCore(
            local_addr=(advertised, int(port)),
            session_expires=self.settings.sip_session_expires,
            registrar=self.registrar is not None,
        )
        self._client = SipClient(local_addr=(advertised, int(port)))
        if (registrar := self.settings.sip_upstream_registrar) is not None:  # never waits
            s = self.settings
            self.upstream = hotline_registration(
                registrar,
                s.sip_upstream_user,
                s.sip_upstream_password,
                (advertised, int(port)),
                expires=s.sip_upstream_expires,
            )
            self.upstream.start(loop.time())
        self.clock.start()
        self._watchdog = loop.create_task(self._watch_rtp())
        log.info("sip listening", host=self.address[0], port=self.address[1])
        self._pump()  # the first REGISTER, if any
        return self.address

    def drain(self) -> None:
        """Stop taking calls now: new INVITEs and out-of-dialog OPTIONS (a dispatcher's probes)
        get 503 with Retry-After; calls in flight go on."""
        self.draining = True
        if self._core is not None:
            self.core.drain(RETRY_AFTER_SECONDS)

    async def stop(self, grace: float) -> None:
        """Stop taking calls (503 + Retry-After, to INVITEs and OPTIONS probes alike), let calls
        end within ``grace``, then hang up."""
        self.drain()
        if self.upstream is not None:
            self.upstream.stop(self._now())  # REGISTER Expires: 0 (nothing if never bound)
            self._pump()
            for _ in range(50):  # up to 1 s for the registrar's 200; the binding lapses anyway
                if self.upstream.state is not RegistrationState.UNREGISTERING:
                    break
                await asyncio.sleep(0.02)
        if self.calls or self.callbacks.active:
            with contextlib.suppress(TimeoutError):
                idle = asyncio.gather(self._no_calls.wait(), self.callbacks.wait_idle())
                await asyncio.wait_for(idle, grace)
        self.callbacks.stop_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.callbacks.wait_idle(), 2.0)
        self._refuse_ringing()
        for call in list(self.calls.values()):
            self.hangup(call)
            if call.session is not None:
                call.session.feed(ev.CallerHungUp())
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        # Give the core a moment to send the BYEs it just queued.
        await asyncio.sleep(0.05)
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.clock.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        log.info("sip stopped", calls_left=len(self.calls))

    def _refuse_ringing(self) -> None:
        """Calls still ringing when the node stops: 503 with Retry-After (the caller's PBX tries
        another node), their media closed, never answered."""
        now = self._now()
        for key in list(self.pending):
            self.core.reject(key, 503, "Service Unavailable", now, retry_after=RETRY_AFTER_SECONDS)
            metrics.SIP_CALLS_REFUSED.labels(reason="draining").inc()
        if self.pending:
            log.info("ringing calls refused at stop", calls=len(self.pending))
        self.pending.clear()
        for task in self._answering:
            task.cancel()  # its media closes on the way out (see _answer)
        self._pump()

    # ------------------------------------------------------------------ the pump

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram from the socket."""
        now = self._now()
        # Agent legs first: the client claims only datagrams of its own legs (by Call-ID).
        if self.upstream is not None and self.upstream.receive_datagram(data, addr, now):
            pass  # a response to our own REGISTER (claimed by Call-ID)
        elif not self.client.receive_datagram(data, addr, now):
            self.core.receive_datagram(data, addr, now)
        self._pump()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def now(self) -> float:
        """The time base of the SIP cores and the registrar: the event loop's clock."""
        return self._now()

    def pump(self) -> None:
        """Handle the cores' events, send what they queued, re-arm the timer (after an action
        taken outside a datagram or timer, e.g. a callback's leg placed)."""
        self._pump()

    def _pump(self) -> None:
        core = self.core
        now = self._now()
        try:
            while (event := core.next_event()) is not None:
                self._handle(event)
            while (leg_event := self.client.next_event()) is not None:
                self._leg_event(leg_event)
            while self.upstream is not None and (up := self.upstream.next_event()) is not None:
                emit = log.warning if isinstance(up, RegistrationFailed) else log.info
                emit("upstream registration", outcome=type(up).__name__, **dataclasses.asdict(up))
        except Exception:  # one bad call must not stop the others
            log.exception("sip event handling failed")
        upstream = self.upstream.datagrams_to_send(now) if self.upstream else []
        for data, addr in [
            *core.datagrams_to_send(now),
            *self.client.datagrams_to_send(now),
            *upstream,
        ]:
            if self._transport is not None:
                self._transport.sendto(data, addr)
        self._arm()

    def _arm(self) -> None:
        upstream_at = self.upstream.get_timer() if self.upstream else None
        when = earliest(self.core.get_timer(), self.client.get_timer(), upstream_at)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._now()
        self.core.handle_timer(now)
        self.client.handle_timer(now)
        if self.upstream is not None:
            self.upstream.handle_timer(now)
        self._pump()

    # ------------------------------------------------------------------ events

    def _handle(self, event: sip.SipEvent) -> None:
        match event:
            case sip.IncomingCall():
                self._incoming(event)
            case sip.CallAcked():
                call = self.calls.get(event.call_key)
                if call is not None and call.task is None:
                    self._start_session(call)
            case sip.CallCancelled():
                self.pending.discard(event.call_key)
                log.info("call cancelled while ringing", sip_call_key=event.call_key)
            case sip.CallEnded():
                self._ended(event)
            case sip.MediaChanged():
                call = self.calls.get(event.call_key)
                if call is not None:
                    with contextlib.suppress(NoCommonCodecError):
                        call.media.update(negotiate(event.remote_sdp))
            case sip.DtmfInfo():
                call = self.calls.get(event.call_key)
                if call is not None:
                    call.on_key(event.digit, DtmfSource.SIP_INFO)
            case sip.RegisterRequest():
                self._register(event)
            case sip.ReferAnswered():
                self.refers.answered(event)
            case sip.ReferNotify():
                self.refers.notified(event)
            case sip.Malformed():
                metrics.SIP_MALFORMED.inc()
                self._malformed += 1
                now = time.monotonic()
                if now - self._last_malformed_log >= MALFORMED_LOG_EVERY:
                    self._last_malformed_log = now
                    log.warning(
                        "malformed sip dropped",
                        source=f"{event.addr[0]}:{event.addr[1]}",
                        reason=event.reason,
                        since_last=self._malformed,
                    )
                    self._malformed = 0
            case _:
                pass

    def _register(self, event: sip.RegisterRequest) -> None:
        """REGISTER from an agent phone: the registrar decides, the core sends (and resends)."""
        if self.registrar is None:  # the core only reports REGISTER when we asked it to
            return
        now = self._now()
        reply = self.registrar.handle(event.request, event.addr, now)
        if not reply.answered:  # throttled: silence (the held transaction absorbs resends)
            metrics.SIP_REGISTERS_DROPPED.inc()
            return
        response = self.core.response_for(event.request, reply.status, reply.reason, event.addr)
        for name, value in reply.headers:
            response.headers.append(name, value)
        self.core.send_response(event.request, response, event.addr, now)

    def _incoming(self, event: sip.IncomingCall) -> None:
        now = self._now()
        if self.draining or len(self.calls) + len(self.pending) >= self.settings.sip_max_calls:
            self.core.reject(
                event.call_key, 503, "Service Unavailable", now, retry_after=RETRY_AFTER_SECONDS
            )
            reason = "draining" if self.draining else "full"
            metrics.SIP_CALLS_REFUSED.labels(reason=reason).inc()
            log.warning("call refused", reason=reason)
            return
        try:
            params = negotiate(event.remote_sdp)
        except NoCommonCodecError as exc:
            self.core.reject(event.call_key, 488, "Not Acceptable Here", now)
            metrics.SIP_CALLS_REFUSED.labels(reason="codec").inc()
            log.warning("call refused", reason="no common codec", detail=str(exc))
            return
        self.core.ring(event.call_key, now)
        self.pending.add(event.call_key)
        task = asyncio.get_running_loop().create_task(self._answer(event, params))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, event: sip.IncomingCall, params: Negotiated) -> None:
        context = CallContext(
            call_id=f"sip-{event.call_id}",
            caller=event.caller,
            dialed=event.dialed,
            channel="sip",
            speech_available=False,
            min_confidence=self.settings.speech_min_confidence,
        )
        holder: dict[str, SipCall] = {}
        listener = (
            # late-bound, like on_audio below: the call object exists only once answered
            self.speech.listener(context.call_id, lambda event: holder["call"].session_feed(event))  # noqa: PLW0108
            if self.speech is not None
            else None
        )
        if listener is not None:
            context = dataclasses.replace(context, speech_available=True)
        try:
            media = await MediaStream.open(
                params,
                clock=self.clock,
                config=self.media_config,
                on_key=lambda digit, _t: holder["call"].on_key(digit, DtmfSource.RFC4733),
                # late-bound: the call object exists only after the media is open. Audio is
                # decoded only for the recognizer and in-band DTMF.
                on_audio=(
                    (lambda pcm: holder["call"].audio(pcm))  # noqa: PLW0108
                    if params.dtmf_payload_type is None or listener is not None
                    else None
                ),
                call_id=context.call_id,
            )
        except OSError as exc:
            self.pending.discard(event.call_key)
            self.core.reject(
                event.call_key,
                503,
                "Service Unavailable",
                self._now(),
                retry_after=RETRY_AFTER_SECONDS,
            )
            self._pump()
            if listener is not None:
                listener.close()
            metrics.SIP_CALLS_REFUSED.labels(reason="no_rtp_port").inc()
            log.error("no rtp port", error=str(exc), **self._port_range())
            return
        try:
            if self.settings.sip_ring_seconds:
                await asyncio.sleep(self.settings.sip_ring_seconds)
        finally:
            # CANCEL while ringing, or the node stopping: never answer, and let the port go.
            if event.call_key not in self.pending:
                media.close()
                if listener is not None:
                    listener.close()
        if event.call_key not in self.pending:
            return
        self.pending.discard(event.call_key)
        self.answered.append((context.call_id, params.payload_type))
        call = SipCall(
            self,
            event.call_key,
            context,
            media,
            inband=params.dtmf_payload_type is None,
            listener=listener,
        )
        holder["call"] = call
        self.calls[event.call_key] = call
        self._no_calls.clear()
        host = self.settings.sip_advertised_host or self.address[0]
        port = media.local_address[1]
        self.core.answer(event.call_key, answer_sdp(event.remote_sdp, host, port), self._now())
        self._pump()

    def _port_range(self) -> dict[str, int]:
        ports = self.media_config.ports
        return {} if ports is None else {"rtp_port_min": ports.first, "rtp_port_max": ports.last}

    def _start_session(self, call: SipCall) -> None:
        if self._session_factory is not None:
            call.session = self._session_factory(call.context, call)
        else:
            call.session = CallSession(
                self.flow,
                call.context,
                call,
                self.crm,
                self.routing,
                understander=self.understander,
            )
        call.task = asyncio.get_running_loop().create_task(self._run(call))

    async def _run(self, call: SipCall) -> None:
        assert call.session is not None
        try:
            summary = await call.session.run()
            self.completed.append(summary)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call session failed", call_key=call.key)
        finally:
            if not call.ended:
                self.hangup(call)

    def _ended(self, event: sip.CallEnded) -> None:
        self.pending.discard(event.call_key)
        self.refers.forget(event.call_key)
        call = self.calls.pop(event.call_key, None)
        if not self.calls:
            self._no_calls.set()
        if call is None:
            return
        call.ended = True
        self._drop_agent_leg(call)
        call.close_media()
        if call.session is not None and event.reason != "local_bye":
            call.session.feed(ev.CallerHungUp())
        elif call.session is None and call.task is None:
            log.info("call ended before it was acknowledged", reason=event.reason)

    def hangup(self, call: SipCall) -> None:
        """End a call from our side (BYE)."""
        if call.ended:
            return
        call.ended = True
        with contextlib.suppress(Exception):
            self.core.hangup(call.key, self._now())
        self._drop_agent_leg(call)
        call.close_media()
        self.calls.pop(call.key, None)
        if not self.calls:
            self._no_calls.set()
        self._pump()

    # ------------------------------------------------------------------ agent legs

    async def call_agent(self, call: SipCall, action: act.Transfer) -> None:
        """Place the agent leg: the registered contact (or the one routing gave), bridged on
        answer, rung at most ``sip_agent_ring_seconds``. A leg that cannot be placed, is
        refused, fails or is not answered is reported to the dialog (`ev.AgentUnreachable`),
        which puts the caller back at their place in line."""
        target = self._agent_target(action)
        if target is None:
            log.warning("agent not reachable", agent_id=action.agent_id, why="not registered")
            unreachable = ev.AgentUnreachable(action.request_id, action.agent_id, "not registered")
            call.session_feed(unreachable)
            return
        uri, addr = target
        try:
            media = await MediaStream.open(
                RemoteMedia(None, 0, 101),
                clock=self.clock,
                config=self.media_config,
                call_id=f"{call.context.call_id}-agent",
            )
        except OSError as exc:
            log.error("no rtp port for the agent leg", error=str(exc))
            unreachable = ev.AgentUnreachable(action.request_id, action.agent_id, "no rtp port")
            call.session_feed(unreachable)
            return
        if call.ended:
            media.close()
            return
        host = self.settings.sip_advertised_host or self.address[0]
        offer = sdp_offer(host, media.local_address[1])
        leg = self.client.invite(
            uri,
            addr,
            offer,
            self._now(),
            from_user=call.context.caller,
            ring_timeout=self.settings.sip_agent_ring_seconds,
        )
        call.agent_leg, call.agent_media, call.transfer_request = leg, media, action.request_id
        call.transfer_agent = action.agent_id
        self.legs[leg] = call
        log.info("calling agent", agent_id=action.agent_id, contact=uri)
        call.session_feed(ev.AgentRinging(action.request_id))  # a hang-up now is an abandon
        self._pump()

    def _agent_target(self, action: act.Transfer) -> tuple[str, tuple[str, int]] | None:
        return self.agent_target(action.agent_id, action.contact)

    def agent_target(self, agent_id: str, contact: str) -> tuple[str, tuple[str, int]] | None:
        """Where to call an agent's phone: its registered binding, else the contact routing
        gave; ``None`` if neither (or the contact is not a SIP URI)."""
        if self.registrar is not None:
            bindings = self.registrar.lookup(agent_id, self._now())
            if bindings:
                return bindings[0].contact, bindings[0].source
        if contact.startswith(("sip:", "sips:")):
            uri = parse_uri(contact)
            if uri.host:
                return contact, (uri.host, uri.port or 5060)
        return None

    async def place_callback(self, order: CallbackOrder) -> CallbackEnd:
        """Dial a callback an agent accepted (`ivr.sip.callbacks`); returns how it ended, for
        routing, once both legs are down. Routing's ``on_callback`` hook."""
        return (await self.callbacks.place(order)).end

    def end_callback(self, call_id: str) -> None:
        """Hang up a callback being dialed that routing ended (its agent completed it).
        Routing's ``on_callback_ended`` hook."""
        self.callbacks.end(call_id, "ended in routing")

    def _leg_event(self, event: LegEvent) -> None:
        if not hasattr(event, "leg"):
            metrics.SIP_MALFORMED.inc()
            return
        if self.callbacks.leg_event(event):
            return
        call = self.legs.get(event.leg)
        if call is None or call.agent_media is None:
            return
        match event:
            case LegAnswered():
                call.agent_media.update(RemoteMedia.from_sdp(event.remote_sdp))
                call.bridge = Bridge(
                    call.media, call.agent_media, self.clock, call_id=call.context.call_id
                )
                call.bridge.start()
                log.info("agent leg answered, caller bridged", call_id=call.context.call_id)
                call.session_feed(ev.AgentAnswered(call.transfer_request))
            case LegMediaChanged():
                call.agent_media.update(
                    RemoteMedia.from_sdp(event.remote_sdp, call.agent_media.rtp.payload_type)
                )
            case LegEnded() | LegFailed():
                request = call.transfer_request
                answered = call.bridge is not None
                self._drop_agent_leg(call, hang_up=False)
                if call.ended:
                    return
                if isinstance(event, LegEnded) and answered:
                    call.session_feed(ev.AgentDisconnected(request))
                else:
                    why = (
                        f"{event.status} {event.reason}"
                        if isinstance(event, LegFailed)
                        else f"ended before answer ({event.reason})"
                    )
                    log.warning("agent leg failed", agent_id=call.transfer_agent, why=why)
                    call.session_feed(ev.AgentUnreachable(request, call.transfer_agent, why))
            case _:
                pass

    def end_agent_leg(self, call: SipCall) -> None:
        """Hang up the call's agent leg (BYE, or CANCEL while it rings) and unbridge."""
        self._drop_agent_leg(call)
        self._pump()

    def _drop_agent_leg(self, call: SipCall, *, hang_up: bool = True) -> None:
        leg = call.agent_leg
        if leg is None:
            return
        if call.bridge is not None:
            call.bridge.stop()
            call.bridge = None
        if hang_up:
            with contextlib.suppress(Exception):
                self.client.hangup(leg, self._now())
        if call.agent_media is not None:
            count_reception(call.agent_media)
            call.agent_media.close()
        call.agent_leg = call.agent_media = None
        self.legs.pop(leg, None)

    def _export_clock(self) -> None:
        stats = self.clock.stats()
        metrics.RTP_STREAMS.set(stats.streams)
        metrics.RTP_TICKS_SKIPPED.set(stats.skipped)
        for name, value in (("p50", stats.p50_ms), ("p99", stats.p99_ms), ("max", stats.max_ms)):
            metrics.RTP_SEND_GAP.labels(stat=name).set(value / 1000)

    def _export_tables(self) -> None:
        """What the node holds per call, for the soak's leak check (bench/soak.py)."""
        sizes = {
            "dialogs": self.core.calls,
            "sessions": len(self.calls),
            "agent_legs": len(self.legs),
            "transactions": self.core.transactions,
        }
        for table, size in sizes.items():
            metrics.SIP_TABLE_SIZE.labels(table=table).set(size)
        metrics.ASYNCIO_TASKS.set(len(asyncio.all_tasks()))

    async def _watch_rtp(self) -> None:
        """Hang up calls whose caller stopped sending RTP (a dead peer, RFC 3550 §6.3.5)."""
        limit = self.settings.rtp_timeout_seconds
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            self._export_clock()
            self._export_tables()
            self.callbacks.watch_rtp(limit)
            for call in list(self.calls.values()):
                if call.task is None and call.media.counters.received and not call.ended:
                    # Answered, the caller sends media, but no ACK arrived (lost in a storm):
                    # the caller is there and must hear the IVR rather than silence.
                    log.warning("ack missing, caller sends media: starting the call")
                    self._start_session(call)
                if call.task is not None and call.media.idle_seconds() > limit:
                    log.warning("rtp timeout", call_id=call.context.call_id)
                    self.hangup(call)
                    if call.session is not None:
                        call.session.feed(ev.CallerHungUp())
