"""One Twilio call: the session's ``Transport``, over whichever Media Stream the call has now.

A call outlives its streams. It is registered when Twilio posts the voice webhook, starts its
session on the first stream's ``start``, leaves the stream while Twilio bridges it to an agent
(the REST update replaces the call's TwiML, which ends the stream), and comes back on a second
stream for the survey. What it plays waits in its :class:`ivr.twilio.playout.Playout` while it
has no stream. A stream that ends while the call is *not* with an agent means the caller hung up
(for a bidirectional stream, Twilio's only way to end it is to end the call).

:class:`StreamLink` is one WebSocket: a writer task sends what the playout produces on the shared
send clock's ticks, in order, without ever blocking the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import StrEnum

import structlog
from aiohttp import web
from aiortp.codecs.g711 import PcmuCodec

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.listening import CallListener
from ivr.session import CallSession
from ivr.sip.prompt_audio import render_play
from ivr.sip.rtp_clock import AnyClock
from ivr.twilio import messages as msg
from ivr.twilio import receiver as rx
from ivr.twilio.playout import Playout, encode_frames
from sounds.catalog import PromptLibrary

log = structlog.get_logger("ivr.twilio")

MAX_BACKLOG = 150
"""Messages waiting for a slow WebSocket (3 s of frames): beyond this, media frames are dropped
(marks and clears never are), so a stalled peer cannot grow our memory."""

_PCMU = PcmuCodec()


class CallPhase(StrEnum):
    """Where a Twilio call is, as far as its streams are concerned."""

    WAITING = "waiting"
    """The voice webhook was answered; the first stream has not started yet."""
    IVR = "ivr"
    """A stream is up and the dialog runs on it."""
    TRANSFERRING = "transferring"
    """The REST update to ``<Dial>`` the agent is on its way: the stream will end, expectedly."""
    WITH_AGENT = "with_agent"
    """Twilio bridged the caller to the agent; no stream until the Dial's action."""
    RETURNING = "returning"
    """The Dial's action was answered with a new stream; it has not started yet."""
    ENDED = "ended"
    """The session is over."""


Handoff = Callable[["TwilioCall", act.Transfer], Awaitable[None]]
"""Hands the caller to the agent (the front end's REST update)."""


class StreamLink:
    """One Media Streams WebSocket: the receiver's state and an ordered, non-blocking sender."""

    def __init__(self, ws: web.WebSocketResponse, *, max_backlog: int = MAX_BACKLOG) -> None:
        self.ws = ws
        self.receiver = rx.StreamReceiver()
        self.call: TwilioCall | None = None
        """The call this stream belongs to, once its ``start`` was accepted."""
        self.max_backlog = max_backlog
        self.finished = False
        """No more frames are read (``stop`` came, or we are closing)."""
        self.dropped_frames = 0
        """Media frames dropped because the peer did not keep up."""
        self.opened = time.monotonic()
        self._out: deque[str] = deque()
        self._wake = asyncio.Event()
        self._close_code: int | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Messages queued, not yet written to the socket."""
        return len(self._out)

    @property
    def stream_sid(self) -> str:
        """The stream's sid (empty before ``start``)."""
        start = self.receiver.start
        return start.stream_sid if start is not None else ""

    def start_writer(self) -> None:
        """Start the task that sends queued messages in order."""
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def send(self, texts: list[str]) -> None:
        """Queue messages for the peer (from the send clock: never blocks)."""
        if not texts or self._close_code is not None:
            return
        for text in texts:
            if len(self._out) >= self.max_backlog and msg.is_media(text):
                self.dropped_frames += 1
                continue
            self._out.append(text)
        self._wake.set()

    def close(self, code: int = 1000) -> None:
        """Close the WebSocket once what is queued has been sent; stop reading frames."""
        self.finished = True
        if self._close_code is None:
            self._close_code = code
            self._wake.set()

    async def stop_writer(self) -> None:
        """Flush, close the socket, end the writer (when the read loop is over)."""
        self.close(self._close_code or 1000)
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), 2.0)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _write(self) -> None:
        ws = self.ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out and not ws.closed:
                    await ws.send_str(self._out.popleft())
                if self._close_code is not None:
                    if not ws.closed:
                        await ws.close(code=self._close_code)
                    return
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-send: the read loop sees the socket close and ends the
            # stream; nothing here may take the event loop's other calls down.
            log.info("twilio stream send failed", error=str(exc))
            self.finished = True


class TwilioCall:
    """A call that came in through Twilio; the session's ``Transport``."""

    def __init__(
        self,
        call_sid: str,
        *,
        caller: str,
        dialed: str,
        library: PromptLibrary,
        clock: AnyClock,
        handoff: Handoff,
    ) -> None:
        self.call_sid = call_sid
        self.call_id = f"twilio-{call_sid}"
        """The hotline's id of the call (logs, routing, tickets)."""
        self.caller = caller
        self.dialed = dialed
        self.library = library
        self.clock = clock
        self.handoff = handoff
        self.phase = CallPhase.WAITING
        self.playout = Playout()
        self.link: StreamLink | None = None
        """The stream the call is on now, if any."""
        self.streams = 0
        """Streams the call has had."""
        self.session: CallSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.listener: CallListener | None = None
        """The call's recognizer stream (`ivr.listening`, shared with SIP), when the hotline
        has speech and the pool had room at the start of the call."""
        self.hung_up = False
        """The IVR ended the call: a stream that starts later is closed at once."""
        self.transfer_request = 0
        """The Enqueue request of the agent handoff (reported back against it)."""
        self.agent_id = ""
        self.expiry: asyncio.TimerHandle | None = None
        """Drops the call if its first stream never starts."""
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- Transport (what the session asks for) -----------------------------------------

    async def play(self, play: act.Play) -> None:
        """Render the prompts and queue them on the playout; marks report the end."""
        pcm = render_play(play.items, self.library, None)
        frames = encode_frames(pcm) if pcm else ()
        if not frames:
            self.feed(ev.PromptFinished(play.play_id))
            return
        self.playout.play(frames, play.play_id)

    async def stop_playback(self) -> None:
        """Barge-in: drop queued audio here and, with ``clear``, what Twilio buffered."""
        texts = self.playout.stop_playback()
        if self.link is not None:
            self.link.send(texts)

    async def start_collecting(self, spec: act.StartCollecting) -> None:
        """Keys always reach the dialog; speech is listened for when the collection wants it."""
        if self.listener is not None:
            self.listener.start_collecting(spec)

    async def stop_collecting(self) -> None:
        """Speech stops (keys keep coming; the dialog ignores what it does not want)."""
        if self.listener is not None:
            self.listener.stop_collecting()

    async def transfer(self, action: act.Transfer) -> None:
        """Hand the caller to the agent: a REST update to ``<Dial>`` (in the background, so a
        slow API never holds up the dialog)."""
        self.phase = CallPhase.TRANSFERRING
        self.transfer_request = action.request_id
        self.agent_id = action.agent_id
        self.spawn(self.handoff(self, action))

    async def hangup(self, reason: str) -> None:
        """End the call from the IVR: close the stream; Twilio goes on with the ``<Hangup/>``
        that follows ``<Connect>`` in the TwiML."""
        self.hung_up = True
        if self.link is not None:
            log.info("ivr hangs up", reason=reason, stream_sid=self.link.stream_sid)
            self.link.close()

    # -- the send clock ---------------------------------------------------------------

    def send_tick(self, tick: int) -> None:
        """One tick of the shared clock: the frames (and marks) due now go to the stream."""
        if self.link is not None:
            self.link.send(self.playout.tick())

    # -- streams ----------------------------------------------------------------------

    def attach(self, link: StreamLink) -> None:
        """A stream started for this call: audio flows on it from the next tick."""
        self.link = link
        self.streams += 1
        link.call = self
        self.playout.attach(link.stream_sid)
        self.clock.add(self)
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.phase in (CallPhase.WAITING, CallPhase.RETURNING):
            self.phase = CallPhase.IVR

    def detach(self, link: StreamLink) -> bool:
        """The stream ended; True when that means the caller hung up."""
        if self.link is not link:
            return False
        self.link = None
        self.clock.remove(self)
        self.playout.detach()
        if self.listener is not None:
            self.listener.stop_collecting()  # no audio comes while the call has no stream
        expected = self.phase in (CallPhase.TRANSFERRING, CallPhase.WITH_AGENT)
        return not (expected or self.hung_up or self.phase is CallPhase.ENDED)

    def on_stream_event(self, event: rx.StreamEvent) -> None:
        """Caller audio, keys and mark echoes from the stream."""
        match event:
            case rx.CallerAudio():
                if self.listener is not None and self.listener.listening:
                    self.listener.audio(_PCMU.decode(event.ulaw))
            case rx.KeyPressed():
                self.feed(ev.DigitPressed(event.digit))
            case rx.MarkEchoed():
                play_id = self.playout.marked(event.name)
                if play_id is not None:
                    self.feed(ev.PromptFinished(play_id))
            case _:
                pass

    # -- helpers ----------------------------------------------------------------------

    def feed(self, event: ev.Event) -> None:
        """Hand an event to the call's session (ignored before it starts or after it ends)."""
        if self.session is not None:
            self.session.feed(event)

    def spawn(self, work: Awaitable[None]) -> None:
        """Run background work for this call; its failure is logged, never raised."""

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("twilio call task failed", call_id=self.call_id)

        task = self._loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def finish(self) -> None:
        """The session is over: close the stream and the recognizer, leave the clock."""
        self.phase = CallPhase.ENDED
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.link is not None:
            self.link.close()
        self.clock.remove(self)
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def stream_parameters(self) -> dict[str, str]:
        """The ``<Parameter>``\\ s of the call's ``<Stream>``: its context, echoed at start."""
        return {"call_id": self.call_id, "caller": self.caller, "dialed": self.dialed}
