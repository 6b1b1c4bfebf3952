"""Property-based fuzzing of the pure protocol code (hypothesis drawing seeds for
`tests/hostile/inputs.py`): SIP through the UAS core, the registrar and the UAC, SDP through
offer/answer, RTP and RFC 4733 through the call's stream, Twilio frames through the receiver.

The property everywhere: no exception but the parser's own documented one, and the cores'
catch-all ("internal error" in a Malformed event, which hides a bug from the caller but not from
this test) never fires. 8,000 inputs in all (see EXAMPLES); a failing input is reproduced from
the seed hypothesis prints: ``hostile(kind, seeds, seeded(seed))``.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.sip.events import IncomingCall, Malformed, RegisterRequest
from ivr.sip.local_sdp import SdpError, is_hold, parse_body
from ivr.sip.register_throttle import RegisterThrottle
from ivr.sip.registrar import Registrar, digest_ha1
from ivr.sip.rtp_stream import RtpStream
from ivr.sip.sdp import NoCommonCodecError, answer_sdp, negotiate
from ivr.sip.uac import SipClient
from ivr.sip.uas import SipCore
from ivr.twilio import messages as msg
from ivr.twilio.receiver import StreamReceiver
from tests.hostile.inputs import hostile, rtp_seeds, sdp_seeds, seeded, sip_seeds, twilio_seeds

EXAMPLES = {"sip": 3000, "sdp": 1500, "rtp": 2000, "twilio": 1500}
"""Inputs per target in the CI run: 8,000 (the live run adds the rest of the 10,000)."""

SEEDS = st.integers(min_value=0, max_value=2**63)
HOTLINE = ("127.0.0.1", 5060)
PEER = ("127.0.0.1", 5061)
SIP_SEEDS, SDP_SEEDS = sip_seeds(), sdp_seeds()
RTP_SEEDS, TWILIO_SEEDS = rtp_seeds(), twilio_seeds()


def fuzz(kind: str) -> settings:
    return settings(
        max_examples=EXAMPLES[kind],
        deadline=None,
        derandomize=True,  # the same inputs in every CI run; bench/fuzz.py explores further
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


class SipTarget:
    """The UAS core with the registrar and the UAC sharing one address, as in `SipServer`:
    every event handled the way the server handles it, so its code paths are fuzzed too."""

    def __init__(self) -> None:
        self.core = SipCore(local_addr=HOTLINE, registrar=True)
        self.client = SipClient(local_addr=HOTLINE)
        agents = {"1001": digest_ha1("1001", "hotline", "secret")}
        self.registrar = Registrar(agents, throttle=RegisterThrottle())
        self.now = 0.0

    def feed(self, data: bytes) -> None:
        self.now += 0.01
        if not self.client.receive_datagram(data, PEER, self.now):
            self.core.receive_datagram(data, PEER, self.now)
        while (event := self.core.next_event()) is not None:
            if isinstance(event, Malformed):
                assert not event.reason.startswith("internal error"), (event.reason, data)
            elif isinstance(event, RegisterRequest):
                reply = self.registrar.handle(event.request, event.addr, self.now)
                if reply.answered:
                    response = self.core.response_for(
                        event.request, reply.status, reply.reason, event.addr
                    )
                    for name, value in reply.headers:
                        response.headers.append(name, value)
                    self.core.send_response(event.request, response, event.addr, self.now)
            elif isinstance(event, IncomingCall):
                try:
                    negotiate(event.remote_sdp)
                except NoCommonCodecError:
                    self.core.reject(event.call_key, 488, "Not Acceptable Here", self.now)
                else:
                    body = answer_sdp(event.remote_sdp, "127.0.0.1", 40000)
                    self.core.answer(event.call_key, body, self.now)
        while (leg_event := self.client.next_event()) is not None:
            assert hasattr(leg_event, "leg"), leg_event
        self.core.datagrams_to_send(self.now)
        self.client.datagrams_to_send(self.now)
        if (due := self.core.get_timer()) is not None and due <= self.now + 1:
            self.now = max(self.now, due)
            self.core.handle_timer(self.now)


SIP = SipTarget()


@fuzz("sip")
@given(SEEDS)
def test_sip_datagrams_never_break_the_core(seed: int) -> None:
    SIP.feed(hostile("sip", SIP_SEEDS, seeded(seed)))


@fuzz("sdp")
@given(SEEDS)
def test_sdp_bodies_only_ever_fail_as_sdp_errors(seed: int) -> None:
    body = hostile("sdp", SDP_SEEDS, seeded(seed))
    try:
        offer = parse_body(body)
    except SdpError:
        return
    is_hold(offer)
    try:
        negotiate(offer)
    except NoCommonCodecError:
        return
    assert b"m=audio 40000 " in answer_sdp(offer, "127.0.0.1", 40000)


STREAM = RtpStream(payload_type=0, dtmf_payload_type=101)


@fuzz("rtp")
@given(SEEDS)
def test_rtp_and_rfc4733_packets_never_break_the_stream(seed: int) -> None:
    counters = STREAM.counters
    before = counters.received + counters.garbage + counters.rtcp
    STREAM.receive(hostile("rtp", RTP_SEEDS, seeded(seed)), 1.0)
    assert counters.received + counters.garbage + counters.rtcp > before  # each one counted


@fuzz("twilio")
@given(SEEDS)
def test_twilio_frames_only_ever_fail_as_malformed(seed: int) -> None:
    frame = hostile("twilio", TWILIO_SEEDS, seeded(seed))
    with contextlib.suppress(msg.MalformedMessage):
        msg.parse(frame)
    receiver = StreamReceiver()
    for seed_frame in TWILIO_SEEDS[:2]:  # connected, start: media and keys are taken now
        receiver.receive_text(seed_frame)
    receiver.receive_text(frame)
