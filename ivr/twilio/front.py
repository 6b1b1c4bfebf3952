"""The Twilio front end: webhooks, Media Streams and handoffs for every Twilio call of this node.

Four endpoints, each refusing (403) anything Twilio did not sign (`ivr.twilio.signatures`):

- ``POST /twilio/voice``: a new call. It is registered and answered with ``<Connect><Stream>``;
  nothing else happens until its stream starts (a call whose stream never comes is dropped).
- ``GET /twilio/stream``: the Media Stream WebSocket. Its ``start`` must name a call registered
  here, with the parameters we gave it; then the call's session runs (`ivr.twilio.call`).
- ``POST /twilio/status``: status callbacks. The caller's call ending (``completed``, ``busy``,
  ``no-answer``, ``canceled``, ``failed``) reaches the dialog as ``CallerHungUp`` wherever the
  caller was (menu, queue, with the agent, survey), so routing and statistics hear it; the agent
  leg's callbacks are logged.
- ``POST /twilio/dial``: the ``<Dial>`` action. The agent leg ended: the caller comes back on a
  new stream and the dialog goes on with ``AgentDisconnected`` (the survey), or, when the
  agent's phone never answered, ``AgentUnreachable`` as on SIP (back to their place in line).

The front end is off until the account SID, Auth Token and public URL are set; then the
endpoints answer 503 and create nothing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

import structlog
from aiohttp import WSMsgType, web
from prometheus_client import Counter

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext
from ivr.flow.model import Flow
from ivr.listening import Speech
from ivr.metrics import REGISTRY
from ivr.services import Crm, Routing
from ivr.session import RECENT_SUMMARIES, CallSession, CallSummary
from ivr.settings import Settings
from ivr.sip.rtp_clock import AnyClock, SendClock
from ivr.twilio import messages as msg
from ivr.twilio import receiver as rx
from ivr.twilio import twiml
from ivr.twilio.call import CallPhase, StreamLink, TwilioCall
from ivr.twilio.config import (
    DIAL_PATH,
    STATUS_PATH,
    STREAM_PATH,
    VOICE_PATH,
    TwilioConfig,
    missing,
)
from ivr.twilio.rest import CallUpdater, HandoffError
from ivr.twilio.signatures import SignatureChecker
from ivr.understanding import load_understander
from sounds.catalog import PromptLibrary

log = structlog.get_logger("ivr.twilio")

STREAM_START_TIMEOUT = 30.0
"""Seconds a registered call waits for its stream to start before it is dropped."""

ENDED_REMEMBERED = 10_000
"""Call SIDs of ended calls remembered, so a replayed voice webhook cannot revive one."""

MAX_FRAME_BYTES = 64 * 1024
"""The largest WebSocket message accepted (Twilio's are a few hundred bytes)."""

PROTOCOL_LOG_EVERY = 10.0
"""At most one log line per stream and kind of bad frame in this many seconds."""

FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "canceled", "failed"})
"""``CallStatus`` values of a call that is over."""

AGENT_ANSWERED = frozenset({"completed", "answered"})
"""``DialCallStatus`` values of an agent leg that was answered (and has ended)."""

_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")

REQUESTS_REFUSED = Counter(
    "hotline_twilio_requests_refused",
    "Twilio webhooks and stream handshakes refused, by endpoint and reason (unsigned, "
    "bad_signature, shared_key, other_account, off).",
    ["endpoint", "reason"],
    registry=REGISTRY,
)
FRAMES_DROPPED = Counter(
    "hotline_twilio_frames_dropped",
    "Media Streams frames dropped, by kind (malformed, before_start, wrong_stream, ...).",
    ["kind"],
    registry=REGISTRY,
)
HANDOFFS = Counter(
    "hotline_twilio_handoffs",
    "Callers handed to agents by a REST update, by result (ok, rejected, unreachable, "
    "bad_contact).",
    ["result"],
    registry=REGISTRY,
)

SessionFactory = Callable[[CallContext, TwilioCall], CallSession]


class TwilioFrontEnd:
    """Every Twilio call of this node, and the endpoints Twilio talks to."""

    def __init__(
        self,
        settings: Settings,
        flow: Flow,
        library: PromptLibrary,
        *,
        crm: Crm,
        routing: Routing,
        clock: AnyClock | None = None,
        speech: Speech | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.settings = settings
        self.config = TwilioConfig.from_settings(settings)  # TwilioSettingsError: contradictory
        self.missing = missing(settings)
        """Settings still needed to switch the front end on."""
        self.flow = flow
        self.library = library
        self.crm = crm
        self.routing = routing
        self.speech = speech
        """Speech recognition for calls, shared with SIP (None: DTMF-only)."""
        self.understander = load_understander(settings)
        """The hotline's region and street list, for every call's dialog."""
        self._own_clock = clock is None
        # Not `clock or ...`: a clock with no streams has len() 0 and is falsy.
        self.clock: AnyClock = SendClock() if clock is None else clock
        self._session_factory = session_factory
        self.checker = SignatureChecker(self.config) if self.config else None
        self.updater: CallUpdater | None = None
        self.calls: dict[str, TwilioCall] = {}
        """Calls by CallSid, from the voice webhook until their session ends."""
        self.completed: deque[CallSummary] = deque(maxlen=RECENT_SUMMARIES)
        """Summaries of the latest finished calls (tests, the shutdown log)."""
        self.draining = False
        self.description = "not started"
        """What /healthz shows for ``twilio``."""
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._last_protocol_log: dict[tuple[int, str], float] = {}

    @property
    def enabled(self) -> bool:
        """Whether the front end answers calls (its settings are complete)."""
        return self.config is not None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Say at start-up whether the front end is on; start its clock; returns the
        description for /healthz."""
        if self.config is None:
            self.description = f"off: set {', '.join(self.missing)}"
            log.info("twilio front end off", missing=self.missing)
            return self.description
        self.updater = CallUpdater(self.config)
        if self._own_clock:
            self.clock.start()
        voice = self.config.url(VOICE_PATH)
        self.description = f"on: voice webhook {voice}"
        log.info(
            "twilio front end on",
            voice_url=voice,
            status_url=self.config.url(STATUS_PATH),
            stream_url=self.config.stream_url,
            rest=self.config.api_base,
            rest_auth="api_key" if self.config.api_key else "auth_token",
            speech="recognizer pool" if self.speech is not None else "dtmf-only",
        )
        return self.description

    async def stop(self, grace: float) -> None:
        """Take no new calls, let calls end within ``grace``, then hang up the rest."""
        self.draining = True
        if self.enabled:
            self.description = "draining"
        running = [c.task for c in self.calls.values() if c.task is not None and not c.task.done()]
        if running:
            await asyncio.wait(running, timeout=grace)
        for call in list(self.calls.values()):
            call.hung_up = True
            if call.link is not None:
                call.link.close(1001)
            call.feed(ev.CallerHungUp())
            if call.session is None:
                self._forget(call)
        tasks = [c.task for c in self.calls.values() if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self.updater is not None:
            await self.updater.close()
        if self._own_clock:
            await self.clock.stop()
        log.info("twilio front end stopped", calls_left=len(self.calls))

    # ------------------------------------------------------------------ webhooks

    async def _signed(self, request: web.Request, endpoint: str) -> Mapping[str, str]:
        """The POST parameters of a request Twilio signed; 403 (or 503 when off) otherwise."""
        if self.checker is None or self.config is None:
            REQUESTS_REFUSED.labels(endpoint=endpoint, reason="off").inc()
            log.warning("twilio request refused", endpoint=endpoint, reason="off")
            raise web.HTTPServiceUnavailable(text="the Twilio front end is off")
        params = await request.post()
        reason = self.checker.refusal(request, params)
        if reason is None and params.get("AccountSid") != self.config.account_sid:
            reason = "other_account"
        if reason is not None:
            REQUESTS_REFUSED.labels(endpoint=endpoint, reason=reason).inc()
            log.warning(
                "twilio request refused", endpoint=endpoint, reason=reason, peer=request.remote
            )
            raise web.HTTPForbidden(text="not signed by Twilio for this account")
        return {k: v for k, v in params.items() if isinstance(v, str)}

    async def voice(self, request: web.Request) -> web.Response:
        """A new call: register it, answer ``<Connect><Stream>``."""
        params = await self._signed(request, "voice")
        assert self.config is not None
        call_sid = params.get("CallSid", "")
        if not _SID.match(call_sid):
            raise web.HTTPBadRequest(text="no valid CallSid")
        if call_sid in self._ended:
            log.warning("voice webhook for an ended call", call_sid=call_sid)
            return _xml(twiml.reject())
        call = self.calls.get(call_sid)
        if call is None:
            if self.draining:
                log.warning("twilio call refused", reason="draining", call_sid=call_sid)
                return _xml(twiml.reject())
            call = TwilioCall(
                call_sid,
                caller=params.get("From", ""),
                dialed=params.get("To", ""),
                library=self.library,
                clock=self.clock,
                handoff=self._handoff,
            )
            self.calls[call_sid] = call
            call.expiry = asyncio.get_running_loop().call_later(
                STREAM_START_TIMEOUT, self._expire, call
            )
            log.info(
                "twilio call answered",
                call_id=call.call_id,
                caller=call.caller,
                dialed=call.dialed,
            )
        return _xml(twiml.connect_stream(self.config, call.stream_parameters()))

    async def status(self, request: web.Request) -> web.Response:
        """A status callback: the caller's call (or an agent leg) changed state."""
        params = await self._signed(request, "status")
        call_status = params.get("CallStatus", "")
        parent = params.get("ParentCallSid")
        if parent:
            call = self.calls.get(parent)
            log.info(
                "agent leg status",
                call_id=call.call_id if call else f"twilio-{parent}",
                agent_id=call.agent_id if call else "",
                status=call_status,
                duration=params.get("CallDuration"),
            )
            if call is not None and call_status == "in-progress" and not call.hung_up:
                call.feed(ev.AgentAnswered(call.transfer_request))  # the agent picked up
            return web.Response(status=204)
        call = self.calls.get(params.get("CallSid", ""))
        if call is None:
            return web.Response(status=204)
        if call_status in FINAL_STATUSES:
            log.info(
                "twilio call ended",
                call_id=call.call_id,
                status=call_status,
                phase=str(call.phase),
                duration=params.get("CallDuration"),
            )
            self._caller_gone(call)
        return web.Response(status=204)

    async def dial(self, request: web.Request) -> web.Response:
        """The ``<Dial>`` action: the agent leg is over; bring the caller back (or not)."""
        params = await self._signed(request, "dial")
        assert self.config is not None
        call = self.calls.get(params.get("CallSid", ""))
        dial_status = params.get("DialCallStatus", "")
        if call is None or call.hung_up or call.session is None or call.phase is CallPhase.ENDED:
            return _xml(twiml.hangup())
        log.info(
            "agent leg ended",
            call_id=call.call_id,
            agent_id=call.agent_id,
            dial_status=dial_status,
            duration=params.get("DialCallDuration"),
        )
        if params.get("CallStatus", "") in FINAL_STATUSES:  # the caller hung up on the agent
            self._caller_gone(call)
            return _xml(twiml.empty())
        call.phase = CallPhase.RETURNING
        if dial_status in AGENT_ANSWERED:
            call.feed(ev.AgentDisconnected(call.transfer_request))
        else:  # busy, no-answer, failed, canceled: back to the caller's place in line
            call.feed(ev.AgentUnreachable(call.transfer_request, call.agent_id, dial_status))
        return _xml(twiml.connect_stream(self.config, call.stream_parameters()))

    # ------------------------------------------------------------------ the stream

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """The Media Stream WebSocket (signed handshake), pumped until it ends."""
        if self.checker is None:
            REQUESTS_REFUSED.labels(endpoint="stream", reason="off").inc()
            raise web.HTTPServiceUnavailable(text="the Twilio front end is off")
        reason = self.checker.stream_refusal(request)
        if reason is not None:
            REQUESTS_REFUSED.labels(endpoint="stream", reason=reason).inc()
            log.warning("twilio stream refused", reason=reason, peer=request.remote)
            raise web.HTTPForbidden(text="not signed by Twilio")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES)
        await ws.prepare(request)
        link = StreamLink(ws)
        link.start_writer()
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    event = link.receiver.receive_text(message.data)
                elif message.type is WSMsgType.BINARY:
                    event = link.receiver.receive_binary(len(message.data))
                else:
                    continue
                if event is not None:
                    self._stream_event(link, event)
                if link.finished:
                    break
        finally:
            await self._stream_closed(link)
        return ws

    def _stream_event(self, link: StreamLink, event: rx.StreamEvent) -> None:
        match event:
            case rx.Started():
                self._attach(link, event.start)
            case rx.Stopped():
                link.finished = True
                if not event.started:
                    log.warning("twilio stream stopped before it started")
            case rx.ProtocolError():
                FRAMES_DROPPED.labels(kind=event.kind).inc()
                self._log_protocol_error(link, event)
            case _:
                if link.call is not None:
                    link.call.on_stream_event(event)

    def _attach(self, link: StreamLink, start: msg.Start) -> None:
        assert self.config is not None
        call = self.calls.get(start.call_sid)
        refusal = None
        if call is None:
            refusal = "unknown call"
        elif start.account_sid != self.config.account_sid:
            refusal = "other account"
        elif start.custom_parameters.get("call_id") != call.call_id:
            refusal = "parameters not ours"
        elif call.hung_up or call.phase is CallPhase.ENDED:
            refusal = "call is over"
        elif call.link is not None:
            refusal = "call has a stream already"
        elif (start.encoding, start.sample_rate, start.channels) != ("audio/x-mulaw", 8000, 1):
            refusal = f"media format {start.encoding}/{start.sample_rate}/{start.channels}"
        if refusal is not None or call is None:
            log.warning(
                "twilio stream refused",
                reason=refusal,
                call_sid=start.call_sid,
                stream_sid=start.stream_sid,
            )
            link.close(1008)  # policy violation; a call the IVR ended ends with it
            return
        call.attach(link)
        log.info(
            "twilio stream started",
            call_id=call.call_id,
            stream_sid=start.stream_sid,
            stream=call.streams,
        )
        if call.session is None:
            self._start_session(call)

    def _start_session(self, call: TwilioCall) -> None:
        if self.speech is not None:
            # The pool logs (and counts) a saturated call; the call goes on keypad-only, as it
            # does when the pool itself fails.
            try:
                call.listener = self.speech.listener(call.call_id, call.feed)
            except Exception:
                log.exception("speech listener failed, keypad only", call_id=call.call_id)
        context = CallContext(
            call_id=call.call_id,
            caller=call.caller,
            dialed=call.dialed,
            channel="twilio",
            speech_available=call.listener is not None,
            min_confidence=self.settings.speech_min_confidence,
        )
        if self._session_factory is not None:
            call.session = self._session_factory(context, call)
        else:
            call.session = CallSession(
                self.flow,
                context,
                call,
                self.crm,
                self.routing,
                understander=self.understander,
            )
        call.task = asyncio.get_running_loop().create_task(self._run(call))

    async def _run(self, call: TwilioCall) -> None:
        assert call.session is not None
        try:
            self.completed.append(await call.session.run())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call session failed", call_id=call.call_id)
        finally:
            call.finish()
            self._forget(call)

    async def _stream_closed(self, link: StreamLink) -> None:
        await link.stop_writer()
        call = link.call
        received = link.receiver.counters
        log.info(
            "twilio stream closed",
            call_id=call.call_id if call else None,
            stream_sid=link.stream_sid or None,
            seconds=round(time.monotonic() - link.opened, 3),
            media_in=received.media,
            keys=received.keys,
            marks=received.marks,
            dropped_in=received.dropped,
            dropped_out=link.dropped_frames,
            frames_out=call.playout.counters.frames if call else 0,
        )
        for key in [k for k in self._last_protocol_log if k[0] == id(link)]:
            del self._last_protocol_log[key]
        if call is not None and call.detach(link):
            call.feed(ev.CallerHungUp())

    def _log_protocol_error(self, link: StreamLink, error: rx.ProtocolError) -> None:
        now = time.monotonic()
        key = (id(link), error.kind)
        last = self._last_protocol_log.get(key)
        if last is None or now - last >= PROTOCOL_LOG_EVERY:
            self._last_protocol_log[key] = now
            log.warning(
                "twilio frame dropped",
                kind=error.kind,
                detail=error.detail[:200],
                call_id=link.call.call_id if link.call else None,
                dropped=link.receiver.counters.dropped,
            )

    # ------------------------------------------------------------------ calls

    async def _handoff(self, call: TwilioCall, action: act.Transfer) -> None:
        """Move the caller from our stream to a ``<Dial>`` of the agent (REST update)."""
        assert self.config is not None
        assert self.updater is not None
        try:
            document = twiml.dial_agent(self.config, action.agent_id, action.contact)
        except twiml.UnreachableContactError as exc:
            HANDOFFS.labels(result="bad_contact").inc()
            self._handoff_failed(call, action, "bad_contact", str(exc))
            return
        # From now until the agent leg answers the caller has reached nobody: a hang-up is an
        # abandon (routing takes the call back from the answered), as on SIP. Said before the
        # REST request, whose answer may come after the leg's own "answered" callback.
        call.feed(ev.AgentRinging(action.request_id))
        try:
            answer = await self.updater.redirect(call.call_sid, document)
        except HandoffError as exc:
            HANDOFFS.labels(result=exc.reason).inc()
            self._handoff_failed(call, action, exc.reason, str(exc))
            return
        HANDOFFS.labels(result="ok").inc()
        if call.phase is CallPhase.TRANSFERRING:
            call.phase = CallPhase.WITH_AGENT
        log.info(
            "caller handed to agent",
            call_id=call.call_id,
            agent_id=action.agent_id,
            contact=action.contact,
            twilio_status=answer.get("status"),
        )

    def _handoff_failed(
        self, call: TwilioCall, action: act.Transfer, reason: str, detail: str
    ) -> None:
        log.warning(
            "agent handoff failed",
            call_id=call.call_id,
            agent_id=action.agent_id,
            reason=reason,
            detail=detail,
        )
        if call.phase is CallPhase.TRANSFERRING:
            call.phase = CallPhase.IVR if call.link is not None else CallPhase.WITH_AGENT
        # As on SIP: the caller goes back to their place in line, still on our stream.
        call.feed(ev.AgentUnreachable(action.request_id, action.agent_id, reason))

    def _caller_gone(self, call: TwilioCall) -> None:
        """Twilio says the call is over: the dialog hears the caller hang up."""
        if call.session is None:
            log.info("twilio call ended before its stream started", call_id=call.call_id)
            call.finish()
            self._forget(call)
            return
        if call.link is not None:
            call.hung_up = True  # the stream is ending with the call; nothing more to send
            call.link.close()
        call.feed(ev.CallerHungUp())

    def _expire(self, call: TwilioCall) -> None:
        call.expiry = None
        if call.session is None and self.calls.get(call.call_sid) is call:
            log.warning("twilio stream never started", call_id=call.call_id)
            call.finish()
            self._forget(call)

    def _forget(self, call: TwilioCall) -> None:
        if self.calls.get(call.call_sid) is call:
            del self.calls[call.call_sid]
        self._ended[call.call_sid] = None
        while len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)


def _xml(document: str) -> web.Response:
    return web.Response(text=document, content_type="text/xml", charset="utf-8")


async def _off(request: web.Request) -> web.Response:
    REQUESTS_REFUSED.labels(endpoint=request.path.rsplit("/", 1)[-1], reason="off").inc()
    raise web.HTTPServiceUnavailable(text="the Twilio front end is off")


def add_twilio_routes(app: web.Application, front: TwilioFrontEnd | None) -> None:
    """Mount ``/twilio/*``; without a front end (or with one that is off) they answer 503."""
    if front is None:
        for path in (VOICE_PATH, STATUS_PATH, DIAL_PATH):
            app.router.add_post(path, _off)
        app.router.add_get(STREAM_PATH, _off)
        return
    app.router.add_post(VOICE_PATH, front.voice)
    app.router.add_post(STATUS_PATH, front.status)
    app.router.add_post(DIAL_PATH, front.dial)
    app.router.add_get(STREAM_PATH, front.stream)


# Known label values start at 0, so rate() and alerts see the series before the first handoff.
for _result in ("ok", "rejected", "unreachable", "bad_contact"):
    HANDOFFS.labels(result=_result)
