"""Blind transfers by REFER (``sip_transfer_mode = "refer"``): the asyncio pump in the server.

For PBX deployments: instead of calling the agent's phone and bridging (the default, the IVR in
the media path), the hotline asks the caller's side to call the agent itself (RFC 5589 §6):

1. an in-dialog REFER to the caller's PBX/SBC, Refer-To the agent's phone (the registrar's
   binding, else the contact routing gave: `SipServer.agent_target`), Referred-By the hotline;
   the caller hears a ringback tone meanwhile;
2. the PBX answers 202 and reports its INVITE to the agent in NOTIFYs (message/sipfrag), each
   answered 200 by the core;
3. sipfrag 2xx: the agent answered. The hotline hangs up its leg (BYE) and tells the dialog
   (`CallTransferred`): routing keeps the call connected until the agent's desktop completes it,
   since the hotline, out of the media path, cannot see the agent hang up; no survey follows.
4. The REFER refused (405/501 from a PBX without REFER, 403/603, Timer F) or the transfer failed
   (sipfrag 486, 480, an ended subscription, no outcome within `REFER_TIMEOUT`): the call falls
   back to the bridge for this call (`SipServer.call_agent`), so the caller is never left alone
   on the line, and an agent really unreachable is reported the way a failed bridge leg is.

`ivr.sip.refer.ReferTransfer` decides; this module carries out: it sends through the core,
feeds the core's ReferAnswered/ReferNotify events in, arms one timer for the earliest deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from ivr import metrics
from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.sip.callbacks import RINGBACK
from ivr.sip.errors import SipError
from ivr.sip.events import CallKey, ReferAnswered, ReferNotify
from ivr.sip.refer import REFER_TIMEOUT, ReferOutcome, ReferTransfer

if TYPE_CHECKING:
    from ivr.sip.server import SipCall, SipServer

log = structlog.get_logger("ivr.sip.refer")

OUTCOMES_KEPT = 100
"""How many decided transfers `ReferTransfers.outcomes` remembers."""

RINGBACK_PLAY_ID = -3
"""The play id of the ringback the caller hears during a REFER (never a dialog's)."""


@dataclass
class _Transfer:
    """A REFER in progress for one call."""

    call: SipCall
    action: act.Transfer
    machine: ReferTransfer


class ReferTransfers:
    """The calls being transferred by REFER, by call key; one per server."""

    def __init__(self, server: SipServer, timeout: float = REFER_TIMEOUT) -> None:
        self.server = server
        self.timeout = timeout
        self.outcomes: deque[tuple[str, ReferOutcome]] = deque(maxlen=OUTCOMES_KEPT)
        """(call id, outcome) of the latest transfers decided (for tests and the log)."""
        self._active: dict[CallKey, _Transfer] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._fallbacks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        """Transfers waiting for their outcome."""
        return len(self._active)

    async def start(self, call: SipCall, action: act.Transfer) -> None:
        """Transfer the caller to the agent by REFER; the bridge if a REFER cannot be sent."""
        server = self.server
        if call.key in self._active:
            log.warning("transfer already in progress", agent_id=action.agent_id)
            return
        target = server.agent_target(action.agent_id, action.contact)
        if target is None or call.ended:
            await server.call_agent(call, action)  # it reports an agent it cannot reach
            return
        uri = target[0]
        try:
            refer_id = server.core.refer(call.key, uri, server.now())
        except SipError as exc:  # not up yet (no ACK), or gone
            log.warning("no refer, bridging", call_id=call.context.call_id, why=str(exc))
            await server.call_agent(call, action)
            return
        machine = ReferTransfer(refer_id, server.now(), self.timeout)
        self._active[call.key] = _Transfer(call, action, machine)
        self._ringback(call)
        log.info("transferring by refer", agent_id=action.agent_id, refer_to=uri)
        server.pump()
        self._arm()

    # -- the core's events --------------------------------------------------------------

    def answered(self, event: ReferAnswered) -> None:
        """The REFER's final response."""
        transfer = self._active.get(event.call_key)
        if transfer is None or transfer.machine.refer_id != event.refer_id:
            return
        if 200 <= event.status < 300:
            log.info("refer accepted", status=event.status)
        self._decided(transfer, transfer.machine.on_response(event.status, event.reason))

    def notified(self, event: ReferNotify) -> None:
        """A NOTIFY of the transfer's subscription."""
        transfer = self._active.get(event.call_key)
        if transfer is None or transfer.machine.refer_id != event.refer_id:
            return  # late news of a transfer already decided (answered 200 by the core)
        outcome = transfer.machine.on_notify(event.subscription_state, event.body)
        if outcome is None:
            log.info("refer progress", status=transfer.machine.progress)
        self._decided(transfer, outcome)

    def forget(self, call_key: CallKey) -> None:
        """The call ended (the caller hung up, or we did): its transfer is moot."""
        if self._active.pop(call_key, None) is not None:
            metrics.SIP_REFERS.labels(outcome="caller_left").inc()
            log.info("call ended during its refer")
            self._arm()

    # -- deciding -----------------------------------------------------------------------

    def _decided(self, transfer: _Transfer, outcome: ReferOutcome | None) -> None:
        if outcome is None:
            return
        call = transfer.call
        self._active.pop(call.key, None)
        self._arm()
        self.outcomes.append((call.context.call_id, outcome))
        metrics.SIP_REFERS.labels(outcome=outcome.kind).inc()
        if call.ended:
            return
        call.media.stop_playback()  # the ringback
        if outcome.succeeded:
            # RFC 5589 §6: the transferor ends its leg once the transferee reached the target.
            log.info("transferred by refer", status=outcome.status, detail=outcome.detail)
            self.server.hangup(call)
            call.session_feed(ev.CallTransferred(transfer.action.request_id))
            return
        log.warning("refer failed, bridging instead", status=outcome.status, detail=outcome.detail)
        task = asyncio.get_running_loop().create_task(self._bridge(call, transfer.action))
        self._fallbacks.add(task)
        task.add_done_callback(self._fallbacks.discard)

    async def _bridge(self, call: SipCall, action: act.Transfer) -> None:
        """The fallback: the agent leg and the bridge, as in bridge mode."""
        try:
            await self.server.call_agent(call, action)
        except Exception:  # as the session treats a failing transport: the call ends
            log.exception("bridging after the refer failed")
            self.server.hangup(call)
            call.session_feed(ev.CallerHungUp())

    def _ringback(self, call: SipCall) -> None:
        """One cadence more while the transfer is pending (the caller must not hear silence)."""
        if call.key in self._active and not call.ended:
            call.media.play(RINGBACK, RINGBACK_PLAY_ID, lambda _pid: self._ringback(call))

    # -- the timer ----------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadlines = [d for t in self._active.values() if (d := t.machine.deadline) is not None]
        if deadlines:
            self._timer = asyncio.get_running_loop().call_at(min(deadlines), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.server.now()
        for transfer in list(self._active.values()):
            self._decided(transfer, transfer.machine.handle_timer(now))
        self._arm()
