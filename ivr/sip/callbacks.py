"""Callbacks dialed out: when an agent accepts a callback, the hotline calls the agent's phone,
then the customer through the trunk, and bridges the two.

Two legs from the hotline's UAC, the IVR in the media path (a B2BUA, as for transfers):

1. the agent's phone (the registrar's binding, else the contact routing gave), showing the
   customer's number; when it answers, the agent hears a ringback tone while
2. the customer is dialed as ``sip:<number>@<sip_callback_trunk>`` from the hotline's number;
   when the customer answers, the two legs' media are bridged (`ivr.sip.bridge.Bridge`).

Either side hanging up ends the other. The agent's phone failing or not answering, the customer
busy or not answering, no trunk configured, a number that cannot be dialed, the node stopping,
or routing ending the callback (its agent completed it through the API: `CallbackDialer.end`)
end the callback with an outcome that is counted (``hotline_callbacks_total``) and logged once
with the number masked. Routing is told by the caller of `CallbackDialer.place`
(`ivr.routing_redis.RedisRouting` when the call returns), through the outcome's
`CallbackOutcome.end`: an unreachable agent phone or an unanswered customer put the callback
back in its place (the latter until its last attempt).

`CallbackDial` is the state machine, pure (leg events in, actions out, no I/O);
`CallbackDialer` is its pump inside the SIP server: it opens the media, places the legs,
routes the UAC's leg events to the right callback and carries out the actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import sys
from array import array
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

import structlog
from aiosipua import SdpMessage
from aiosipua.auth import SipDigestAuth

from ivr import metrics
from ivr.logs import bind_call, mask_phone
from ivr.routing_redis import CallbackEnd, CallbackOrder
from ivr.sip.bridge import Bridge
from ivr.sip.events import Addr
from ivr.sip.media import MediaStream, RemoteMedia
from ivr.sip.messages import hostport
from ivr.sip.uac_events import (
    LegAnswered,
    LegEnded,
    LegEvent,
    LegFailed,
    LegKey,
    LegMediaChanged,
)
from ivr.sip.uac_messages import sdp_offer

if TYPE_CHECKING:
    from ivr.sip.server import SipServer

log = structlog.get_logger("ivr.sip.callbacks")

Role = Literal["agent", "customer"]
"""Which leg of a callback: the agent's phone or the customer's."""

_ROLES: tuple[Role, ...] = ("customer", "agent")
"""Both legs, in the order they are hung up."""

_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")
"""What the trunk is asked to dial: digits, an optional leading + (E.164)."""

RINGBACK_PLAY_ID = -2
"""The play id of the ringback tone the agent hears (never a dialog's, never the bridge's)."""


class CallbackOutcome(StrEnum):
    """How a callback ended (the ``outcome`` label of ``hotline_callbacks_total``)."""

    CONNECTED = "connected"
    """The customer answered and talked to the agent."""
    AGENT_UNREACHABLE = "agent_unreachable"
    """The agent's phone is not registered, refused, failed or did not answer."""
    CUSTOMER_UNANSWERED = "customer_unanswered"
    """The customer was busy, did not answer in time, or the trunk refused the call (or the
    agent hung up first)."""
    NO_TRUNK = "no_trunk"
    """No ``sip_callback_trunk`` is configured: nothing was dialed."""
    INVALID_NUMBER = "invalid_number"
    """The number is not something a trunk can dial: nothing was dialed."""
    STOPPED = "stopped"
    """The node stopped before the customer answered."""
    CANCELLED = "cancelled"
    """Routing ended the callback before the customer answered (its agent completed it)."""

    @property
    def end(self) -> CallbackEnd:
        """What routing makes of it."""
        return _ROUTING_END.get(self, CallbackEnd.DONE)


_ROUTING_END = {
    CallbackOutcome.AGENT_UNREACHABLE: CallbackEnd.AGENT_UNREACHABLE,
    CallbackOutcome.CUSTOMER_UNANSWERED: CallbackEnd.NO_ANSWER,
    CallbackOutcome.NO_TRUNK: CallbackEnd.CANNOT_DIAL,
    CallbackOutcome.INVALID_NUMBER: CallbackEnd.CANNOT_DIAL,
}
"""Outcomes routing does more with than completing the callback."""


@dataclass(frozen=True)
class CallbackLimits:
    """How long each leg may ring before it is given up."""

    agent_ring_seconds: float = 20.0
    """The agent accepted the callback a moment ago: the phone should be answered at once."""
    customer_ring_seconds: float = 45.0
    """Public networks give up on an unanswered call after about a minute; do so first."""


# ------------------------------------------------------------------------ the state machine


class Phase(StrEnum):
    """Where a callback is."""

    CALLING_AGENT = "calling_agent"
    CALLING_CUSTOMER = "calling_customer"
    TALKING = "talking"
    ENDED = "ended"


@dataclass(frozen=True)
class UseMedia:
    """A leg's remote media is known (its answer) or changed (a re-INVITE)."""

    role: Role
    """The leg."""
    sdp: SdpMessage
    """Its SDP."""
    answer: bool
    """The leg's answer (take its first codec) rather than a change (keep ours if offered)."""


@dataclass(frozen=True)
class DialCustomer:
    """The agent answered: call the customer through the trunk."""


@dataclass(frozen=True)
class Connect:
    """The customer answered: bridge the two legs' media."""


@dataclass(frozen=True)
class HangUp:
    """End a leg (BYE when up, CANCEL while it rings)."""

    role: Role
    """The leg."""


@dataclass(frozen=True)
class Finish:
    """The callback is over."""

    outcome: CallbackOutcome
    """How it ended."""
    detail: str
    """What happened, for the log line (a status and reason, who hung up)."""


Action = UseMedia | DialCustomer | Connect | HangUp | Finish


class CallbackDial:
    """One callback's legs, as a state machine: ``handle(role, leg_event)`` and ``end(...)``
    return the actions to carry out, in order. No I/O, no clock."""

    def __init__(self) -> None:
        self.phase = Phase.CALLING_AGENT
        self.live: set[Role] = {"agent"}
        """Legs placed and not known to be over (the agent's is placed with the machine)."""
        self.outcome: CallbackOutcome | None = None
        """How it ended, once it has."""

    def handle(self, role: Role, event: LegEvent) -> list[Action]:
        """A leg event from the UAC, for the leg `role`."""
        if self.phase is Phase.ENDED:
            return []
        if isinstance(event, LegFailed | LegEnded):
            self.live.discard(role)
        match self.phase, role, event:
            case _, _, LegMediaChanged():
                return [UseMedia(role, event.remote_sdp, answer=False)]
            case Phase.CALLING_AGENT, "agent", LegAnswered():
                self.phase = Phase.CALLING_CUSTOMER
                self.live.add("customer")
                return [UseMedia("agent", event.remote_sdp, answer=True), DialCustomer()]
            case Phase.CALLING_AGENT, "agent", LegFailed():
                return self.end(
                    CallbackOutcome.AGENT_UNREACHABLE, f"agent leg {event.status} {event.reason}"
                )
            case Phase.CALLING_CUSTOMER, "customer", LegAnswered():
                self.phase = Phase.TALKING
                return [UseMedia("customer", event.remote_sdp, answer=True), Connect()]
            case Phase.CALLING_CUSTOMER, "customer", LegFailed():
                return self.end(
                    CallbackOutcome.CUSTOMER_UNANSWERED,
                    f"customer leg {event.status} {event.reason}",
                )
            case Phase.CALLING_CUSTOMER, "agent", LegEnded():
                return self.end(
                    CallbackOutcome.CUSTOMER_UNANSWERED, "the agent hung up while it rang"
                )
            case Phase.TALKING, _, LegEnded():
                return self.end(CallbackOutcome.CONNECTED, f"the {role} hung up")
            case _:
                return []

    def end(self, outcome: CallbackOutcome, detail: str) -> list[Action]:
        """End from our side (the node stops, a leg cannot be placed): hang up what is live.

        Once the customer has answered, the outcome stays ``connected`` whatever ends it."""
        if self.phase is Phase.ENDED:
            return []
        if self.phase is Phase.TALKING:
            outcome = CallbackOutcome.CONNECTED
        self.phase = Phase.ENDED
        self.outcome = outcome
        live = [role for role in _ROLES if role in self.live]
        hang_ups: list[Action] = [HangUp(role) for role in live]
        self.live.clear()
        return [*hang_ups, Finish(outcome, detail)]


# ------------------------------------------------------------------------ the pump


def ringback_pcm(seconds_on: float = 1.0, seconds_off: float = 4.0) -> bytes:
    """One cadence of the ringback tone (GB/T 15279: 450 Hz, 1 s on, 4 s off), 16-bit PCM."""
    on = round(8000 * seconds_on)
    samples = array("h", (round(3000 * math.sin(2 * math.pi * 450 * i / 8000)) for i in range(on)))
    samples.extend([0] * round(8000 * seconds_off))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


RINGBACK = ringback_pcm()
"""Played to the agent while the customer's phone rings (one shared buffer: encoded once)."""


@dataclass(frozen=True)
class CallbackSummary:
    """One finished callback (the summary log line, for tests and the shutdown log)."""

    call_id: str
    """The callback's id in routing."""
    agent_id: str
    """The agent who made it."""
    outcome: CallbackOutcome
    """How it ended."""
    detail: str
    """What happened."""
    talk_seconds: float
    """From the customer answering to the end (0 if never)."""
    to_customer_frames: int
    """20 ms frames of the agent's audio the bridge forwarded to the customer."""
    to_agent_frames: int
    """20 ms frames of the customer's audio the bridge forwarded to the agent."""


@dataclass
class _Callback:
    """A callback in progress: its machine, its two media streams, its legs."""

    order: CallbackOrder
    dial: CallbackDial
    media: dict[Role, MediaStream]
    done: asyncio.Future[Finish]
    legs: dict[Role, LegKey] = field(default_factory=dict)
    bridge: Bridge | None = None
    answered_at: float | None = None


class CallbackDialer:
    """Dials the callbacks of one SIP server (see the module doc)."""

    def __init__(self, server: SipServer, limits: CallbackLimits | None = None) -> None:
        self.server = server
        self.limits = limits or CallbackLimits()
        """Ring limits of the two legs (tests shorten them)."""
        self.active: dict[str, _Callback] = {}
        """Callbacks in progress, by call id."""
        self._by_leg: dict[LegKey, tuple[_Callback, Role]] = {}
        self.finished: list[CallbackSummary] = []
        """Summaries of finished callbacks."""
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the server's side -------------------------------------------------------------

    async def place(self, order: CallbackOrder) -> CallbackOutcome:
        """Dial one callback and return how it ended, once both legs are down."""
        with bind_call(order.call_id):
            refused = self._refusal(order)
            if refused is not None:
                return self._record(order, refused, 0.0, None)
            target = self.server.agent_target(order.agent_id, order.contact)
            if target is None:
                log.warning("agent not reachable", agent_id=order.agent_id, why="not registered")
                finish = Finish(CallbackOutcome.AGENT_UNREACHABLE, "no registered phone or contact")
                return self._record(order, finish, 0.0, None)
            try:
                media = await self._open_media(order)
            except OSError as exc:
                log.error("no rtp port for a callback", error=str(exc))
                finish = Finish(CallbackOutcome.AGENT_UNREACHABLE, f"no rtp port: {exc}")
                return self._record(order, finish, 0.0, None)
            loop = asyncio.get_running_loop()
            callback = _Callback(order, CallbackDial(), media, loop.create_future())
            self.active[order.call_id] = callback
            self._idle.clear()
            try:
                self._call_agent(callback, target)
                finish = await asyncio.shield(callback.done)
            except asyncio.CancelledError:
                self._apply(callback, callback.dial.end(CallbackOutcome.STOPPED, "cancelled"))
                self.server.pump()
                raise
            finally:
                self._close(callback)
            talk = loop.time() - callback.answered_at if callback.answered_at else 0.0
            return self._record(order, finish, talk, callback.bridge)

    def leg_event(self, event: LegEvent) -> bool:
        """An event of the server's UAC: handled here if it is about a callback's leg."""
        leg = getattr(event, "leg", None)
        found = self._by_leg.get(leg) if isinstance(leg, str) else None
        if found is None:
            return False
        callback, role = found
        with bind_call(callback.order.call_id):
            self._apply(callback, callback.dial.handle(role, event))
        return True

    def end(self, call_id: str, detail: str) -> bool:
        """Routing ended a callback in progress (its agent completed it): hang up its legs. It
        ends ``connected`` if the customer had answered, else ``cancelled``. False when no such
        callback is in progress."""
        callback = self.active.get(call_id)
        if callback is None:
            return False
        with bind_call(call_id):
            self._apply(callback, callback.dial.end(CallbackOutcome.CANCELLED, detail))
        self.server.pump()
        return True

    def stop_all(self) -> None:
        """The node stops: hang up every callback in progress (talking ones end connected)."""
        if not self.active:
            return
        for callback in list(self.active.values()):
            self._apply(callback, callback.dial.end(CallbackOutcome.STOPPED, "the node stopped"))
        self.server.pump()

    def watch_rtp(self, limit: float) -> None:
        """Hang up talking callbacks a side of which sent no RTP for ``limit`` seconds (a dead
        phone or trunk that will never send its BYE, RFC 3550 §6.3.5)."""
        hung_up = False
        for callback in list(self.active.values()):
            if callback.dial.phase is not Phase.TALKING:
                continue
            for role, stream in callback.media.items():
                if stream.idle_seconds() > limit:
                    with bind_call(callback.order.call_id):
                        log.warning("rtp timeout", role=role)
                        end = callback.dial.end(CallbackOutcome.CONNECTED, f"no rtp from {role}")
                        self._apply(callback, end)
                    hung_up = True
                    break
        if hung_up:
            self.server.pump()

    async def wait_idle(self) -> None:
        """Until no callback is in progress."""
        await self._idle.wait()

    # -- placing ---------------------------------------------------------------------------

    def _refusal(self, order: CallbackOrder) -> Finish | None:
        if self.server.draining:
            return Finish(CallbackOutcome.STOPPED, "the node is stopping")
        if not _NUMBER.match(order.number):
            log.warning("callback number cannot be dialed", number=mask_phone(order.number))
            return Finish(CallbackOutcome.INVALID_NUMBER, "not a dialable number")
        if self.server.settings.sip_callback_trunk is None:
            log.warning(
                "callback not dialed: no trunk configured",
                setting="sip_callback_trunk",
                env="HOTLINE_SIP_CALLBACK_TRUNK",
            )
            return Finish(CallbackOutcome.NO_TRUNK, "sip_callback_trunk is not set")
        return None

    async def _open_media(self, order: CallbackOrder) -> dict[Role, MediaStream]:
        config = self.server.media_config
        opened: dict[Role, MediaStream] = {}
        try:
            for role in ("agent", "customer"):
                opened[role] = await MediaStream.open(
                    RemoteMedia(None, 0, 101),
                    clock=self.server.clock,
                    config=config,
                    call_id=f"{order.call_id}-{role}",
                )
        except OSError:
            for stream in opened.values():
                stream.close()
            raise
        return opened

    def _offer(self, callback: _Callback, role: Role) -> bytes:
        server = self.server
        host = server.settings.sip_advertised_host or server.address[0]
        return sdp_offer(host, callback.media[role].local_address[1])

    def _call_agent(self, callback: _Callback, target: tuple[str, Addr]) -> None:
        uri, addr = target
        order = callback.order
        try:
            leg = self.server.client.invite(
                uri,
                addr,
                self._offer(callback, "agent"),
                self.server.now(),
                from_user=order.number,  # the agent's phone shows whom they call back
                ring_timeout=self.limits.agent_ring_seconds,
            )
        except ValueError as exc:  # an offer or Call-ID the UAC refuses
            failed = LegFailed("", 0, f"not placed: {exc}")
            self._apply(callback, callback.dial.handle("agent", failed))
            return
        self._register(callback, "agent", leg)
        log.info("callback: calling the agent", agent_id=order.agent_id, contact=uri)
        self.server.pump()

    def _dial_customer(self, callback: _Callback) -> None:
        settings = self.server.settings
        trunk = _split_trunk(settings.sip_callback_trunk or "")
        number = callback.order.number
        password = settings.sip_upstream_password
        try:
            leg = self.server.client.invite(
                f"sip:{number}@{hostport(trunk)}",
                trunk,
                self._offer(callback, "customer"),
                self.server.now(),
                from_user=settings.sip_upstream_user,  # the hotline's number, 95598
                ring_timeout=self.limits.customer_ring_seconds,
                credentials=SipDigestAuth(settings.sip_upstream_user, password)
                if password
                else None,
            )
        except ValueError as exc:
            failed = LegFailed("", 0, f"not placed: {exc}")
            self._apply(callback, callback.dial.handle("customer", failed))
            return
        self._register(callback, "customer", leg)
        agent_media = callback.media["agent"]
        agent_media.play(RINGBACK, RINGBACK_PLAY_ID, lambda _pid: self._ringback(callback))
        log.info("callback: dialing the customer", number=mask_phone(number), trunk=hostport(trunk))

    def _ringback(self, callback: _Callback) -> None:
        """One cadence played: another while the customer's phone still rings."""
        if callback.dial.phase is Phase.CALLING_CUSTOMER:
            callback.media["agent"].play(
                RINGBACK, RINGBACK_PLAY_ID, lambda _pid: self._ringback(callback)
            )

    def _register(self, callback: _Callback, role: Role, leg: LegKey) -> None:
        callback.legs[role] = leg
        self._by_leg[leg] = (callback, role)

    # -- carrying out the machine's actions --------------------------------------------

    def _apply(self, callback: _Callback, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case UseMedia():
                    self._use_media(callback, action)
                case DialCustomer():
                    self._dial_customer(callback)
                case Connect():
                    self._connect(callback)
                case HangUp(role=role):
                    leg = callback.legs.get(role)
                    if leg is not None:
                        with contextlib.suppress(Exception):  # a leg already gone: nothing to do
                            self.server.client.hangup(leg, self.server.now())
                case Finish():
                    if callback.bridge is not None:
                        callback.bridge.stop()
                    if not callback.done.done():
                        callback.done.set_result(action)

    def _use_media(self, callback: _Callback, action: UseMedia) -> None:
        stream = callback.media[action.role]
        keep = None if action.answer else stream.rtp.payload_type
        try:
            stream.update(RemoteMedia.from_sdp(action.sdp, keep))
        except ValueError as exc:  # no G.711 in an answer to our G.711 offer: hang that leg up
            log.warning("callback leg media unusable", role=action.role, error=str(exc))
            leg = callback.legs.get(action.role)
            if leg is not None:
                with contextlib.suppress(Exception):
                    self.server.client.hangup(leg, self.server.now())

    def _connect(self, callback: _Callback) -> None:
        agent = callback.media["agent"]
        agent.stop_playback()  # the ringback: the bridge forwards nothing into a playing stream
        callback.bridge = Bridge(
            callback.media["customer"], agent, self.server.clock, call_id=callback.order.call_id
        )
        callback.bridge.start()
        callback.answered_at = asyncio.get_running_loop().time()
        log.info("callback: customer answered, bridged to the agent")

    # -- ending --------------------------------------------------------------------------

    def _close(self, callback: _Callback) -> None:
        if callback.bridge is not None:
            callback.bridge.stop()
        for stream in callback.media.values():
            stream.close()
        for leg in callback.legs.values():
            self._by_leg.pop(leg, None)
        self.active.pop(callback.order.call_id, None)
        if not self.active:
            self._idle.set()

    def _record(
        self, order: CallbackOrder, finish: Finish, talk: float, bridge: Bridge | None
    ) -> CallbackOutcome:
        summary = CallbackSummary(
            call_id=order.call_id,
            agent_id=order.agent_id,
            outcome=finish.outcome,
            detail=finish.detail,
            talk_seconds=round(talk, 3),
            to_customer_frames=bridge.to_caller.stats.frames if bridge else 0,
            to_agent_frames=bridge.to_agent.stats.frames if bridge else 0,
        )
        self.finished.append(summary)
        metrics.CALLBACKS.labels(outcome=finish.outcome.value).inc()
        emit = log.info if finish.outcome is CallbackOutcome.CONNECTED else log.warning
        emit(
            "callback finished",
            outcome=finish.outcome.value,
            detail=finish.detail,
            agent_id=order.agent_id,
            number=mask_phone(order.number),
            talk_seconds=summary.talk_seconds,
        )
        return finish.outcome


def _split_trunk(text: str) -> Addr:
    """``"10.0.0.5:5060"`` or ``"[2001:db8::5]:5060"`` (the setting's pattern) → (host, port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)
