"""Drive the sans-I/O UAS core like a UDP peer: captured INVITEs, a fake clock, parsed output.

`Harness` owns a `SipCore` and the clock; every datagram the core emits is parsed and logged with
its send time, so tests assert exact responses and retransmission schedules. `Caller` plays the
UAC of one call: it builds the ACK, CANCEL, BYE, re-INVITE, UPDATE and INFO that SIPp or baresip
would send, from the INVITE it sent and the To-tag we answered with.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiosipua import SipMessage, SipRequest, SipResponse

from ivr.sip.events import Addr, CallEnded, IncomingCall, Malformed, SipEvent
from ivr.sip.messages import tag_of
from ivr.sip.uas import SipCore
from tests.conftest import RedisServer, Servers

DATA = Path(__file__).parent / "data"
HOTLINE: Addr = ("127.0.0.1", 5060)
SIPP: Addr = ("127.0.0.1", 5061)

ANSWER_SDP = (
    b"v=0\r\n"
    b"o=hotline 1000 1000 IN IP4 127.0.0.1\r\n"
    b"s=hotline95598\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 20000 RTP/AVP 0 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
"""What the application answers the SIPp offer with (PCMU + telephone-event)."""

E = TypeVar("E")


def load(name: str) -> bytes:
    """A captured-style message from tests/ivr/sip/data, byte for byte."""
    return (DATA / name).read_bytes()


def sdp(
    port: int = 6000,
    direction: str = "sendrecv",
    address: str = "127.0.0.1",
    version: int = 1,
    formats: str = "0 8 101",
) -> bytes:
    """An SDP offer like SIPp's, with the knobs re-INVITE tests turn."""
    rtpmaps = {"0": "PCMU/8000", "8": "PCMA/8000", "101": "telephone-event/8000"}
    lines = [
        "v=0",
        f"o=caller 53655765 {version} IN IP4 127.0.0.1",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *(f"a=rtpmap:{f} {rtpmaps[f]}" for f in formats.split()),
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Sent:
    """One datagram the core emitted, parsed."""

    at: float
    data: bytes
    addr: Addr

    @property
    def message(self) -> SipRequest | SipResponse:
        return SipMessage.parse(self.data)

    @property
    def status(self) -> int:
        message = self.message
        assert isinstance(message, SipResponse), self.data
        return message.status_code

    @property
    def method(self) -> str:
        message = self.message
        assert isinstance(message, SipRequest), self.data
        return message.method

    def header(self, name: str) -> str | None:
        return self.message.headers.get_first(name)

    @property
    def to_tag(self) -> str | None:
        return tag_of(self.header("to"))


class Harness:
    """A SipCore on a fake clock; output parsed, events collected."""

    def __init__(self, **options: Any) -> None:
        self.core = SipCore(local_addr=HOTLINE, **options)
        self.now = 0.0
        self.events: list[SipEvent] = []

    def _collect(self) -> list[Sent]:
        sent = [Sent(self.now, d, a) for d, a in self.core.datagrams_to_send(self.now)]
        while (event := self.core.next_event()) is not None:
            self.events.append(event)
        return sent

    def feed(self, data: bytes, addr: Addr = SIPP) -> list[Sent]:
        """Deliver a datagram now; what the core sent in reply."""
        self.core.receive_datagram(data, addr, self.now)
        return self._collect()

    def at(self, t: float) -> list[Sent]:
        """Move the clock to ``t``, firing every timer on the way at its own time."""
        assert t >= self.now
        sent: list[Sent] = []
        while (due := self.core.get_timer()) is not None and due <= t:
            self.now = max(due, self.now)
            self.core.handle_timer(self.now)
            sent += self._collect()
        self.now = t
        return sent

    def run_out(self, limit: int = 10_000) -> list[Sent]:
        """Fire timers until none is left (bounded: a timer that never clears fails the test)."""
        sent: list[Sent] = []
        for _ in range(limit):
            due = self.core.get_timer()
            if due is None:
                return sent
            sent += self.at(max(due, self.now))
        raise AssertionError("timers never ran out")

    def do(self, action: Callable[..., None], *args: Any) -> list[Sent]:
        """Run an application decision (ring, answer, …) now."""
        action(*args, self.now)
        return self._collect()

    def take(self, kind: type[E]) -> list[E]:
        """Remove and return the collected events of one type."""
        found = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return found

    def incoming(self) -> IncomingCall:
        (call,) = self.take(IncomingCall)
        return call

    # --- the kit tests use (conftest helpers reach tests only through fixtures) ---

    HOTLINE = HOTLINE
    SIPP = SIPP
    ANSWER_SDP = ANSWER_SDP
    load = staticmethod(load)
    sdp = staticmethod(sdp)

    def caller(self, invite: bytes | str = "sipp_invite.sip", addr: Addr = SIPP) -> Caller:
        """The UAC of a call whose INVITE is given as bytes or a data file name."""
        return Caller(load(invite) if isinstance(invite, str) else invite, addr)

    def answered(
        self, invite: bytes | str = "sipp_invite.sip", addr: Addr = SIPP
    ) -> tuple[Caller, IncomingCall]:
        """An INVITE fed, answered and ACKed; the setup's output and events consumed."""
        caller = self.caller(invite, addr)
        caller.learn(self.feed(caller.invite, addr))
        call = self.incoming()
        caller.learn(self.do(self.core.answer, call.call_key, ANSWER_SDP))
        self.feed(caller.ack(), addr)
        self.events.clear()
        return caller, call

    def ended(self) -> list[str]:
        """Reasons of the CallEnded events collected (removed from the list)."""
        return [e.reason for e in self.take(CallEnded)]

    def assert_clean(self) -> None:
        """Every timer has run: no call, no transaction, no internal error."""
        self.run_out()
        assert self.core.calls == 0
        assert self.core.transactions == 0
        assert self.core.get_timer() is None
        internal = [e for e in self.events if isinstance(e, Malformed) and "internal" in e.reason]
        assert not internal


def _crlf(lines: Iterable[str], body: bytes = b"") -> bytes:
    return ("\r\n".join([*lines, f"Content-Length: {len(body)}", "", ""])).encode() + body


class Caller:
    """The UAC of one call: builds what SIPp/baresip send after their INVITE."""

    def __init__(self, invite: bytes, addr: Addr = SIPP) -> None:
        self.invite = invite
        self.addr = addr
        parsed = SipMessage.parse(invite)
        assert isinstance(parsed, SipRequest)
        self.parsed = parsed
        self.uri = parsed.uri
        self.via = parsed.headers.get("via")[0]
        self.from_ = parsed.headers.get_first("from") or ""
        self.to = parsed.headers.get_first("to") or ""
        self.call_id = parsed.headers.get_first("call-id") or ""
        self.cseq = int((parsed.headers.get_first("cseq") or "1 INVITE").split()[0])
        self.to_tag: str | None = None
        self.next_cseq = self.cseq + 1
        # Unique per call (as RFC 3261 §8.1.1.7 wants) yet identical on hypothesis reruns.
        self._branch_base = re.sub(r"\W", "", self.call_id)
        self._branches = itertools.count(1)

    def learn(self, sent: list[Sent]) -> None:
        """Take our To-tag from the responses received."""
        for s in sent:
            if isinstance(s.message, SipResponse) and s.to_tag:
                self.to_tag = s.to_tag

    def _via(self, branch: str | None) -> str:
        branch = branch or f"z9hG4bK-{self._branch_base}-{next(self._branches):04d}"
        return re.sub(r"branch=[^;,\s]+", f"branch={branch}", self.via)

    def _to(self, tag: str | None) -> str:
        return f"{self.to};tag={tag}" if tag else self.to

    @property
    def invite_branch(self) -> str:
        match = re.search(r"branch=([^;,\s]+)", self.via)
        assert match
        return match.group(1)

    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
        headers: Iterable[str] = (),
        branch: str | None = None,
        to_tag: str | None = None,
        no_tag: bool = False,
    ) -> bytes:
        """An in-dialog request (new CSeq unless given)."""
        if cseq is None:
            cseq = self.next_cseq
            self.next_cseq += 1
        tag = None if no_tag else (to_tag or self.to_tag)
        lines = [
            f"{method} {self.uri} SIP/2.0",
            f"Via: {self._via(branch)}",
            f"From: {self.from_}",
            f"To: {self._to(tag)}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            "Contact: <sip:13800138000@127.0.0.1:5061>",
            "Max-Forwards: 70",
            *headers,
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        return _crlf(lines, body)

    def ack(self, *, cseq: int | None = None, body: bytes = b"") -> bytes:
        """The ACK for a 2xx: a new transaction (§17.1.1.3), CSeq of the INVITE it acks."""
        return self.request(
            "ACK",
            cseq=cseq if cseq is not None else self.cseq,
            body=body,
            content_type="application/sdp" if body else None,
        )

    def ack_failure(self) -> bytes:
        """The ACK for a non-2xx: part of the INVITE transaction, same branch (§17.1.1.3)."""
        return self.request("ACK", cseq=self.cseq, branch=self.invite_branch)

    def cancel(self) -> bytes:
        """CANCEL: same branch, Request-URI, From, To (no tag) and CSeq number (§9.1)."""
        return self.request("CANCEL", cseq=self.cseq, branch=self.invite_branch, no_tag=True)

    def reinvite(
        self,
        body: bytes | None,
        *,
        headers: Iterable[str] = (),
        branch: str | None = None,
        cseq: int | None = None,
    ) -> bytes:
        return self.request(
            "INVITE",
            body=body or b"",
            content_type="application/sdp" if body else None,
            headers=headers,
            branch=branch,
            cseq=cseq,
        )


@pytest.fixture
def uas() -> Iterator[Harness]:
    """A core with default settings at t=0; after the test, every timer runs and it must be
    empty (the call table is always cleaned, whatever path the test took)."""
    harness = Harness()
    yield harness
    harness.assert_clean()


@pytest.fixture
def make_uas() -> Iterator[Callable[..., Harness]]:
    """Cores with options (t1, session_expires, registrar, …) at t=0, checked clean afterwards."""
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        made.append(Harness(**options))
        return made[-1]

    yield make
    for harness in made:
        harness.assert_clean()


@pytest.fixture(scope="session")
def fresh_uas() -> Callable[..., Harness]:
    """A new core per call, for hypothesis tests (which check cleanliness themselves)."""
    return Harness


@pytest.fixture
def redis_server(redis_servers: Servers) -> RedisServer:
    """SIP tests that route through Redis run on the embedded server only (Redis 6.2, the one
    `hotline serve` starts and the older of the two): what differs between servers is routing's,
    and tests/routing runs all of it on both. This halves the slowest SIP tests' CI time."""
    return redis_servers.get("embedded")
