"""The upstream REGISTER client on wire bytes with an explicit clock: Timer E/F, digest challenges
answered once per nonce (checked by our own registrar, which verifies nonce counts), refresh
timing, back-off on failures and timeouts, 423, unregistration at stop, and robustness."""

from __future__ import annotations

import random

import pytest
from aiosipua import SipMessage, SipRequest, SipResponse, parse_address, parse_auth, parse_via
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.sip.events import Addr
from ivr.sip.messages import build_response
from ivr.sip.registrar import Registrar, digest_ha1
from ivr.sip.upstream import (
    MAX_CHALLENGES,
    RETRY_MAX,
    Registered,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
    UpstreamEvent,
    UpstreamRegistration,
    hotline_registration,
)

HOTLINE: Addr = ("127.0.0.1", 5060)
REGISTRAR: Addr = ("127.0.0.1", 5070)
AOR = "sip:95598@pbx.test"
CONTACT = "sip:95598@127.0.0.1:5060"
PASSWORD = "s3cret"  # noqa: S105 - a test credential

REGISTER_SENDS = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
"""Timer E: T1 doubling, capped at T2 = 4 s, until Timer F at 64*T1 = 32 s (T1 = 0.5 s)."""


class FixedRng(random.Random):
    """A random source whose ``uniform(a, b)`` is always the same point of the interval."""

    def __init__(self, point: float) -> None:
        super().__init__(0)
        self.point = point

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.point


def make(point: float = 0.5, **kw: object) -> UpstreamRegistration:
    args: dict[str, object] = {"username": "95598", "password": PASSWORD, "rng": FixedRng(point)}
    args.update(kw)
    return UpstreamRegistration(REGISTRAR, AOR, CONTACT, **args)  # type: ignore[arg-type]


def sent(client: UpstreamRegistration, now: float) -> list[SipRequest]:
    out = []
    for data, addr in client.datagrams_to_send(now):
        assert addr == REGISTRAR
        message = SipMessage.parse(data)
        assert isinstance(message, SipRequest)
        out.append(message)
    return out


def one(client: UpstreamRegistration, now: float) -> SipRequest:
    [request] = sent(client, now)
    return request


def events(client: UpstreamRegistration) -> list[UpstreamEvent]:
    out = []
    while (event := client.next_event()) is not None:
        out.append(event)
    return out


def reply(
    client: UpstreamRegistration,
    request: SipRequest,
    status: int,
    reason: str,
    now: float,
    *headers: tuple[str, str],
) -> bool:
    response = build_response(
        request, status, reason, source=HOTLINE, to_tag="reg1", server="test-registrar"
    )
    for name, value in headers:
        response.headers.append(name, value)
    return client.receive_datagram(bytes(response), REGISTRAR, now)


def challenge(nonce: str, *, realm: str = "pbx.test", stale: bool = False) -> str:
    extra = ", stale=true" if stale else ""
    return f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5{extra}'


def credentials(request: SipRequest, header: str = "authorization") -> dict[str, str]:
    raw = request.headers.get_first(header)
    assert raw is not None, f"no {header}"
    return {k.lower(): v for k, v in parse_auth(raw, credentials=True).params.items()}


def registrar(**kw: object) -> Registrar:
    """Our own registrar (ivr.sip.registrar): an independent digest verifier, nc included."""
    agents = {"95598": digest_ha1("95598", "hotline", PASSWORD)}
    return Registrar(agents, realm="hotline", **kw)  # type: ignore[arg-type]


def serve(reg: Registrar, client: UpstreamRegistration, now: float) -> list[int]:
    """Let the registrar answer everything the client sends at ``now``, until it is quiet."""
    statuses = []
    while requests := sent(client, now):
        for request in requests:
            answer = reg.handle(request, HOTLINE, now)
            statuses.append(answer.status)
            reply(client, request, answer.status, answer.reason, now, *answer.headers)
    return statuses


# ------------------------------------------------------------------------------- the request


def test_start_only_queues_the_first_register() -> None:
    client = make()
    assert client.state is RegistrationState.IDLE
    assert client.datagrams_to_send(0.0) == []
    client.start(0.0)
    request = one(client, 0.0)
    assert client.state is RegistrationState.REGISTERING
    assert events(client) == []
    # §10.2: the Request-URI names the registrar's domain, To and From the address-of-record.
    assert request.method == "REGISTER"
    assert request.uri == "sip:pbx.test"
    assert parse_address(request.headers.get_first("to") or "").uri.user == "95598"
    assert parse_address(request.headers.get_first("from") or "").tag
    assert request.headers.get_first("contact") == f"<{CONTACT}>"
    assert request.headers.get_first("expires") == "300"
    assert request.headers.get_first("call-id") == client.call_id
    assert request.headers.get_first("cseq") == "1 REGISTER"
    assert request.headers.get_first("max-forwards") == "70"
    via = parse_via(request.headers.get("via")[0])
    assert (via.host, via.port) == HOTLINE
    assert "rport" in via.params
    assert (via.branch or "").startswith("z9hG4bK")
    assert request.headers.get("authorization") == []
    client.start(1.0)  # a no-op once started
    assert client.datagrams_to_send(1.0) == []


def test_timer_e_then_timer_f_fails_with_408_and_backs_off() -> None:
    client = make(point=1.0)
    client.start(0.0)
    first = one(client, 0.0)
    times = [0.0]
    now = 0.0
    while (deadline := client.get_timer()) is not None and deadline < 32.0:
        now = deadline
        client.handle_timer(now)
        for request in sent(client, now):
            assert bytes(request) == bytes(first)  # retransmissions are byte-identical
            times.append(now)
    assert times == REGISTER_SENDS
    assert client.get_timer() == 32.0
    client.handle_timer(32.0)
    [failed] = events(client)
    assert failed == RegistrationFailed(408, "Request Timeout", 32.0 + 4.0)
    assert client.state is RegistrationState.BACKOFF
    assert sent(client, 32.0) == []
    client.handle_timer(36.0)
    retry = one(client, 36.0)
    assert retry.headers.get_first("call-id") == client.call_id  # §10.2.4: one Call-ID
    assert retry.headers.get_first("cseq") == "2 REGISTER"
    assert (
        parse_via(retry.headers.get("via")[0]).branch
        != parse_via(first.headers.get("via")[0]).branch
    )
    assert retry.headers.get_first("from") == first.headers.get_first("from")


def test_a_provisional_slows_retransmission_to_t2() -> None:
    client = make()
    client.start(0.0)
    request = one(client, 0.0)
    assert reply(client, request, 100, "Trying", 0.1)
    client.handle_timer(0.5)
    assert len(sent(client, 0.5)) == 1
    assert client.get_timer() == 4.5  # every T2 from now on (§17.1.2.2)
    client.handle_timer(4.5)
    assert len(sent(client, 4.5)) == 1
    assert client.get_timer() == 8.5


# ------------------------------------------------------------------------------- digest


def test_challenge_is_answered_and_accepted_by_an_independent_registrar() -> None:
    reg = registrar()
    client = make(expires=600)
    client.start(0.0)
    assert serve(reg, client, 0.0) == [401, 200]
    [event] = events(client)
    assert event == Registered(600, 0.0 + 600 * 0.65)
    assert client.state is RegistrationState.REGISTERED
    assert client.bound_until == 600.0
    [binding] = reg.lookup("95598", 1.0)
    assert binding.contact == CONTACT


def test_answer_carries_qop_auth_nc_and_the_request_uri() -> None:
    client = make()
    client.start(0.0)
    first = one(client, 0.0)
    reply(client, first, 401, "Unauthorized", 0.1, ("WWW-Authenticate", challenge("n1")))
    second = one(client, 0.1)
    params = credentials(second)
    assert params["username"] == "95598"
    assert params["realm"] == "pbx.test"
    assert params["nonce"] == "n1"
    assert params["uri"] == "sip:pbx.test"
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["cnonce"]
    assert second.headers.get_first("cseq") == "2 REGISTER"  # §22.2: a new request


def test_refresh_reuses_the_nonce_with_the_next_nonce_count() -> None:
    reg = registrar(min_expires=60, max_expires=3600)
    client = make(expires=120, point=0.0)  # refresh at 50 % of the interval
    client.start(0.0)
    serve(reg, client, 0.0)
    [first] = events(client)
    assert isinstance(first, Registered)
    assert first.refresh_at == 60.0
    assert client.get_timer() == 60.0
    client.handle_timer(60.0)
    [refresh] = sent(client, 60.0)
    assert credentials(refresh)["nc"] == "00000002"
    answer = reg.handle(refresh, HOTLINE, 60.0)
    assert answer.status == 200  # no new challenge: the registrar accepts nc=2 on its nonce
    reply(client, refresh, answer.status, answer.reason, 60.0, *answer.headers)
    assert events(client) == [Registered(120, 120.0)]
    assert client.bound_until == 180.0


def test_a_replayed_nonce_count_is_refused_by_the_registrar() -> None:
    """The registrar's side of the nc rule: resending an accepted request is a replay."""
    reg = registrar()
    client = make()
    client.start(0.0)
    first = one(client, 0.0)
    answer = reg.handle(first, HOTLINE, 0.0)
    reply(client, first, answer.status, answer.reason, 0.0, *answer.headers)
    second = one(client, 0.0)
    assert reg.handle(second, HOTLINE, 0.0).status == 200
    replay = reg.handle(second, HOTLINE, 0.0)
    assert replay.status == 401  # stale=true: the client would answer with a fresh nonce
    assert "stale=true" in dict(replay.headers)["WWW-Authenticate"]


def test_a_stale_nonce_is_answered_again() -> None:
    reg = registrar(nonce_ttl=30.0)
    client = make(expires=120, point=0.0)
    client.start(0.0)
    serve(reg, client, 0.0)
    events(client)
    client.handle_timer(60.0)  # the nonce is 60 s old: the registrar says stale=true
    assert serve(reg, client, 60.0) == [401, 200]
    assert events(client) == [Registered(120, 120.0)]


def test_a_wrong_password_fails_once_without_a_loop() -> None:
    reg = registrar()
    client = make(password="wrong", point=1.0)  # noqa: S106 - test credential
    client.start(0.0)
    assert serve(reg, client, 0.0) == [401, 403]
    [failed] = events(client)
    assert failed == RegistrationFailed(403, "Forbidden", 4.0)


def test_a_new_non_stale_challenge_after_our_answer_means_refused_credentials() -> None:
    """Kamailio answers a wrong password with a fresh challenge (not stale): no third try."""
    client = make(point=1.0)
    client.start(0.0)
    first = one(client, 0.0)
    reply(client, first, 401, "Unauthorized", 0.0, ("WWW-Authenticate", challenge("n1")))
    second = one(client, 0.0)
    reply(client, second, 401, "Unauthorized", 0.1, ("WWW-Authenticate", challenge("n2")))
    assert sent(client, 0.1) == []
    [failed] = events(client)
    assert isinstance(failed, RegistrationFailed)
    assert failed.status == 401
    assert "credentials refused" in failed.reason
    assert failed.retry_at == 4.1


def test_the_same_nonce_is_never_answered_twice() -> None:
    client = make()
    client.start(0.0)
    first = one(client, 0.0)
    reply(client, first, 401, "Unauthorized", 0.0, ("WWW-Authenticate", challenge("n1")))
    second = one(client, 0.0)
    # Even with stale=true: the same nonce again can only mean our answer was wrong.
    reply(
        client, second, 401, "Unauthorized", 0.1, ("WWW-Authenticate", challenge("n1", stale=True))
    )
    assert sent(client, 0.1) == []
    [failed] = events(client)
    assert isinstance(failed, RegistrationFailed)
    assert "credentials refused" in failed.reason


def test_a_retransmitted_challenge_is_absorbed() -> None:
    client = make()
    client.start(0.0)
    first = one(client, 0.0)
    reply(client, first, 401, "Unauthorized", 0.0, ("WWW-Authenticate", challenge("n1")))
    assert len(sent(client, 0.0)) == 1
    # The 401 again (our ACK-less non-INVITE: the registrar retransmits on our retransmission).
    assert reply(client, first, 401, "Unauthorized", 0.2, ("WWW-Authenticate", challenge("n1")))
    assert sent(client, 0.2) == []
    assert events(client) == []


def test_stale_challenges_are_bounded_per_attempt() -> None:
    client = make()
    client.start(0.0)
    request = one(client, 0.0)
    for index in range(MAX_CHALLENGES + 1):
        stale = index > 0
        header = ("WWW-Authenticate", challenge(f"n{index}", stale=stale))
        reply(client, request, 401, "Unauthorized", 0.0, header)
        requests = sent(client, 0.0)
        if not requests:
            break
        [request] = requests
    assert index == MAX_CHALLENGES
    [failed] = events(client)
    assert isinstance(failed, RegistrationFailed)
    assert "too many challenges" in failed.reason


def test_a_407_is_answered_with_proxy_authorization() -> None:
    client = make()
    client.start(0.0)
    first = one(client, 0.0)
    reply(
        client,
        first,
        407,
        "Proxy Authentication Required",
        0.0,
        ("Proxy-Authenticate", challenge("p1", realm="sbc.test")),
    )
    second = one(client, 0.0)
    assert second.headers.get("authorization") == []
    assert credentials(second, "proxy-authorization")["realm"] == "sbc.test"


def test_a_challenge_of_another_realm_is_not_answered() -> None:
    client = make(realm="pbx.test")
    client.start(0.0)
    first = one(client, 0.0)
    reply(client, first, 401, "Unauthorized", 0.0, ("WWW-Authenticate", challenge("n", realm="x")))
    assert sent(client, 0.0) == []
    [failed] = events(client)
    assert isinstance(failed, RegistrationFailed)
    assert failed.status == 401
    assert "realm x" in failed.reason


def test_the_configured_realm_is_answered_among_several_challenges() -> None:
    client = make(realm="pbx.test")
    client.start(0.0)
    first = one(client, 0.0)
    reply(
        client,
        first,
        401,
        "Unauthorized",
        0.0,
        ("WWW-Authenticate", challenge("a", realm="other")),
        ("WWW-Authenticate", challenge("b", realm="pbx.test")),
    )
    assert credentials(one(client, 0.0))["nonce"] == "b"


# ------------------------------------------------------------------------------- refresh


@pytest.mark.parametrize(("point", "expected"), [(0.0, 150.0), (1.0, 240.0)])
def test_refresh_falls_within_50_to_80_percent_of_the_granted_interval(
    point: float, expected: float
) -> None:
    client = make(point=point)
    client.start(0.0)
    reply(client, one(client, 0.0), 200, "OK", 0.0, ("Contact", f"<{CONTACT}>;expires=300"))
    assert events(client) == [Registered(300, expected)]
    assert client.get_timer() == expected
    client.handle_timer(expected - 0.01)
    assert sent(client, expected - 0.01) == []
    client.handle_timer(expected)
    assert one(client, expected).headers.get_first("cseq") == "2 REGISTER"


def test_random_refresh_points_stay_in_the_window() -> None:
    for seed in range(50):
        client = make(rng=random.Random(seed))  # noqa: S311 - test jitter
        client.start(0.0)
        reply(client, one(client, 0.0), 200, "OK", 0.0, ("Expires", "100"))
        [event] = events(client)
        assert isinstance(event, Registered)
        assert 50.0 <= event.refresh_at <= 80.0


def test_the_granted_interval_is_the_one_of_our_contact() -> None:
    client = make()
    client.start(0.0)
    reply(
        client,
        one(client, 0.0),
        200,
        "OK",
        0.0,
        ("Contact", "<sip:95598@10.9.9.9:5060>;expires=3600, <sip:95598@127.0.0.1:5061>;expires=5"),
        ("Contact", f'<{CONTACT};transport=udp>;expires=90;received="sip:127.0.0.1:5060"'),
        ("Expires", "7200"),
    )
    [event] = events(client)
    assert isinstance(event, Registered)
    assert event.expires == 90


def test_the_expires_header_or_the_request_stand_in() -> None:
    client = make(expires=200)
    client.start(0.0)
    reply(client, one(client, 0.0), 200, "OK", 0.0, ("Expires", "150"))
    client2 = make(expires=200)
    client2.start(0.0)
    reply(client2, one(client2, 0.0), 200, "OK", 0.0)
    [a], [b] = events(client), events(client2)
    assert isinstance(a, Registered)
    assert isinstance(b, Registered)
    assert (a.expires, b.expires) == (150, 200)


def test_the_refresh_interval_is_capped() -> None:
    client = make(expires=86400)
    client.start(0.0)
    reply(client, one(client, 0.0), 200, "OK", 0.0, ("Contact", f"<{CONTACT}>;expires=86400"))
    [event] = events(client)
    assert event == Registered(86400, 3600.0)


def test_423_asks_again_at_once_with_min_expires() -> None:
    reg = registrar(min_expires=600)
    client = make(expires=60)
    client.start(0.0)
    assert serve(reg, client, 0.0) == [401, 423, 200]
    [event] = events(client)
    assert isinstance(event, Registered)
    assert event.expires == 600
    assert client.expires == 600


# ------------------------------------------------------------------------------- back-off


def test_backoff_doubles_to_the_cap_and_resets_after_success() -> None:
    client = make(point=1.0)
    client.start(0.0)
    now = 0.0
    delays = []
    for _ in range(10):
        reply(client, one(client, now), 403, "Forbidden", now)
        [failed] = events(client)
        assert isinstance(failed, RegistrationFailed)
        assert failed.status == 403
        assert failed.retry_at is not None
        delays.append(failed.retry_at - now)
        now = failed.retry_at
        assert client.get_timer() == now
        client.handle_timer(now)
    assert delays == [4, 8, 16, 32, 64, 128, 256, RETRY_MAX, RETRY_MAX, RETRY_MAX]
    assert client.failures == 10
    reply(client, one(client, now), 200, "OK", now)
    assert isinstance(events(client)[0], Registered)
    assert client.failures == 0
    refresh_at = client.get_timer()
    assert refresh_at is not None
    client.handle_timer(refresh_at)
    reply(client, one(client, refresh_at), 500, "Server Error", refresh_at)
    [failed] = events(client)
    assert isinstance(failed, RegistrationFailed)
    assert failed.retry_at == refresh_at + 4.0  # the back-off starts again from its base


def test_backoff_jitter_is_50_to_100_percent() -> None:
    for seed in range(30):
        client = make(rng=random.Random(seed))  # noqa: S311 - test jitter
        client.start(0.0)
        reply(client, one(client, 0.0), 503, "Service Unavailable", 0.0)
        [failed] = events(client)
        assert isinstance(failed, RegistrationFailed)
        assert failed.retry_at is not None
        assert 2.0 <= failed.retry_at <= 4.0


def test_retry_after_is_honoured() -> None:
    client = make(point=1.0)
    client.start(0.0)
    reply(client, one(client, 0.0), 503, "Service Unavailable", 0.0, ("Retry-After", "120"))
    assert events(client) == [RegistrationFailed(503, "Service Unavailable", 120.0)]


def test_timeouts_keep_retrying_while_started() -> None:
    client = make(point=1.0, t1=0.05, retry_base=0.5, retry_max=2.0)
    client.start(0.0)
    failures: list[UpstreamEvent] = []
    now = 0.0
    while len(failures) < 5:
        deadline = client.get_timer()
        assert deadline is not None  # never stuck
        now = deadline
        client.handle_timer(now)
        client.datagrams_to_send(now)
        failures += events(client)
    assert all(isinstance(f, RegistrationFailed) and f.status == 408 for f in failures)
    retry_delays = [
        f.retry_at - (0.0 if i == 0 else failures[i - 1].retry_at) - 3.2  # type: ignore[union-attr, operator]
        for i, f in enumerate(failures)
    ]
    assert retry_delays == pytest.approx([0.5, 1.0, 2.0, 2.0, 2.0])


# ------------------------------------------------------------------------------- stop


def test_stop_unregisters_with_expires_0_and_credentials() -> None:
    reg = registrar()
    client = make()
    client.start(0.0)
    serve(reg, client, 0.0)
    events(client)
    client.stop(10.0)
    [bye] = sent(client, 10.0)
    assert bye.headers.get_first("expires") == "0"
    assert bye.headers.get_first("contact") == f"<{CONTACT}>;expires=0"
    assert bye.headers.get_first("cseq") == "3 REGISTER"
    assert credentials(bye)["nc"] == "00000002"
    assert client.state is RegistrationState.UNREGISTERING
    answer = reg.handle(bye, HOTLINE, 10.0)
    assert answer.status == 200
    reply(client, bye, answer.status, answer.reason, 10.0, *answer.headers)
    assert events(client) == [Unregistered()]
    assert reg.lookup("95598", 10.0) == []
    assert client.state is RegistrationState.IDLE
    assert client.bound_until is None
    assert client.get_timer() is None
    client.stop(11.0)  # twice is fine
    assert sent(client, 11.0) == []


def test_stop_without_a_binding_sends_nothing() -> None:
    client = make(t1=0.05)
    client.start(0.0)
    one(client, 0.0)
    client.handle_timer(3.2)  # Timer F: never bound
    client.datagrams_to_send(3.2)
    assert isinstance(events(client)[0], RegistrationFailed)
    client.stop(4.0)
    assert sent(client, 4.0) == []
    assert client.state is RegistrationState.IDLE
    assert client.get_timer() is None


def test_stop_while_the_first_register_is_in_flight_unregisters() -> None:
    client = make()
    client.start(0.0)
    first = one(client, 0.0)
    client.stop(0.2)
    [bye] = sent(client, 0.2)
    assert bye.headers.get_first("expires") == "0"
    # The first REGISTER's 200 arrives late: it belongs to an abandoned transaction.
    assert reply(client, first, 200, "OK", 0.3, ("Expires", "300"))
    assert events(client) == []
    reply(client, bye, 200, "OK", 0.3)
    assert events(client) == [Unregistered()]


def test_a_failed_unregistration_is_reported_without_retry() -> None:
    client = make(t1=0.05)
    client.start(0.0)
    reply(client, one(client, 0.0), 200, "OK", 0.0, ("Expires", "300"))
    events(client)
    client.stop(1.0)
    one(client, 1.0)
    while (deadline := client.get_timer()) is not None:
        client.handle_timer(deadline)
        client.datagrams_to_send(deadline)
    assert events(client) == [RegistrationFailed(408, "Request Timeout", None)]
    assert client.state is RegistrationState.IDLE


def test_a_client_can_start_again_after_stop() -> None:
    client = make()
    client.start(0.0)
    reply(client, one(client, 0.0), 200, "OK", 0.0)
    client.stop(1.0)
    reply(client, one(client, 1.0), 200, "OK", 1.0)
    client.start(2.0)
    again = one(client, 2.0)
    assert again.headers.get_first("cseq") == "3 REGISTER"
    assert again.headers.get_first("call-id") == client.call_id


# ------------------------------------------------------------------------------- claiming


def test_only_datagrams_with_our_call_id_are_claimed() -> None:
    client = make()
    client.start(0.0)
    request = one(client, 0.0)
    other = (
        b"INVITE sip:95598@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKx\r\n"
        b"Call-ID: someone-else\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    assert not client.receive_datagram(other, REGISTRAR, 0.1)
    assert not client.receive_datagram(b"\x00\xff" * 40, REGISTRAR, 0.1)
    # Ours even when useless: a response on a branch we never used, garbage, a request.
    wrong_branch = bytes(request).replace(b"branch=z9hG4bK", b"branch=z9hG4bKzz")
    message = SipMessage.parse(wrong_branch)
    assert isinstance(message, SipRequest)
    assert reply(client, message, 200, "OK", 0.1)
    assert client.receive_datagram(f"garbage\r\ni: {client.call_id}\r\n\r\n".encode(), HOTLINE, 0.1)
    assert client.receive_datagram(bytes(request), REGISTRAR, 0.1)
    assert events(client) == []
    assert client.state is RegistrationState.REGISTERING


@settings(max_examples=200, deadline=None)
@given(
    status=st.integers(min_value=100, max_value=699),
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                ["Contact", "Expires", "Min-Expires", "Retry-After", "WWW-Authenticate"]
            ),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        ),
        max_size=4,
    ),
)
def test_any_response_leaves_the_client_alive(status: int, headers: list[tuple[str, str]]) -> None:
    """Whatever the registrar answers, a started client always has something scheduled."""
    client = make()
    client.start(0.0)
    request = one(client, 0.0)
    response = SipResponse(status_code=status, reason_phrase="X")
    base = build_response(request, 200, "OK", source=HOTLINE, to_tag="t", server="s")
    for name, values in base.headers.items():
        for value in values:
            response.headers.append(name, value)
    for name, value in headers:
        response.headers.append(name, value)
    assert client.receive_datagram(bytes(response), REGISTRAR, 0.1)
    assert client.get_timer() is not None
    assert client.state is not RegistrationState.IDLE


def test_a_bug_half_way_through_a_response_does_not_end_the_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make(point=1.0)
    client.start(0.0)
    request = one(client, 0.0)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client, "_registered", broken)
    assert reply(client, request, 200, "OK", 0.5)
    assert events(client) == [RegistrationFailed(500, "unusable response", 4.5)]
    assert client.get_timer() == 4.5
    monkeypatch.undo()
    client.stop(1.0)  # never bound, nothing in flight: idle at once
    assert client.state is RegistrationState.IDLE


def test_a_2xx_without_a_binding_for_us_is_a_failure() -> None:
    client = make(point=1.0)
    client.start(0.0)
    reply(client, one(client, 0.0), 200, "OK", 0.0, ("Contact", f"<{CONTACT}>;expires=0"))
    assert events(client) == [RegistrationFailed(200, "no binding granted for our Contact", 4.0)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="expires"):
        make(expires=0)
    with pytest.raises(ValueError, match="retry_base"):
        make(retry_base=10.0, retry_max=5.0)


def test_an_ipv6_contact_gives_a_bracketed_via() -> None:
    client = UpstreamRegistration(
        ("::1", 5070),
        "sip:95598@[::1]:5070",
        "sip:95598@[::1]:5060",
        username="95598",
        password=PASSWORD,
    )
    client.start(0.0)
    [(data, addr)] = client.datagrams_to_send(0.0)
    assert addr == ("::1", 5070)
    assert b"Via: SIP/2.0/UDP [::1]:5060;" in data
    assert data.startswith(b"REGISTER sip:[::1]:5070 SIP/2.0")


@pytest.mark.parametrize(
    ("registrar", "addr", "aor"),
    [
        ("10.0.0.7:5070", ("10.0.0.7", 5070), "sip:95598@10.0.0.7:5070"),
        ("10.0.0.7", ("10.0.0.7", 5060), "sip:95598@10.0.0.7:5060"),
        ("[::1]:5070", ("::1", 5070), "sip:95598@[::1]:5070"),
    ],
)
def test_hotline_registration_from_settings_values(registrar: str, addr: Addr, aor: str) -> None:
    client = hotline_registration(registrar, "95598", PASSWORD, ("192.0.2.1", 5060), expires=120)
    assert client.registrar_addr == addr
    assert client.aor == aor
    assert client.contact == "sip:95598@192.0.2.1:5060"
    assert client.expires == 120
    client.start(0.0)
    [(data, sent_to)] = client.datagrams_to_send(0.0)
    assert sent_to == addr
    assert b"Via: SIP/2.0/UDP 192.0.2.1:5060;" in data
