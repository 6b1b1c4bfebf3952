"""The REGISTER brute-force throttle: per source and per user, silence over the limit, the same
for extensions that exist and those that do not, an agent's own phone never locked out."""

from __future__ import annotations

import itertools

import pytest
from aiosipua import (
    SipDigestAuth,
    SipMessage,
    SipRequest,
    build_credentials,
    parse_auth,
    stringify_auth,
)
from structlog.testing import capture_logs

from ivr.sip.events import Addr
from ivr.sip.register_throttle import RegisterThrottle
from ivr.sip.registrar import Registrar, digest_ha1

AGENTS = {"1001": digest_ha1("1001", "hotline", "right-password")}
_branch = itertools.count(1)


def request(ext: str, authorization: str | None = None, *, to_ext: str | None = None) -> SipRequest:
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK-t{next(_branch)}",
        f"From: <sip:{ext}@127.0.0.1>;tag=t{ext}",
        f"To: <sip:{to_ext or ext}@127.0.0.1>",
        f"Call-ID: throttle-{ext}",
        f"CSeq: {next(_branch)} REGISTER",
        f"Contact: <sip:{ext}@10.0.0.9:5070>",
        "Expires: 600",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    message = SipMessage.parse(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
    assert isinstance(message, SipRequest)
    return message


def attempt(
    registrar: Registrar,
    ext: str,
    password: str,
    addr: Addr,
    now: float,
    *,
    to_ext: str | None = None,
) -> int:
    """One guess: challenge, then the digest answer; the final status (0 = no answer)."""
    first = registrar.handle(request(ext, to_ext=to_ext), addr, now)
    if first.status != 401:
        return first.status
    challenge = parse_auth(dict(first.headers)["WWW-Authenticate"])
    creds = build_credentials(
        SipDigestAuth(ext, password), challenge, "REGISTER", "sip:127.0.0.1", nonce_count=1
    )
    assert creds is not None
    return registrar.handle(request(ext, stringify_auth(creds), to_ext=to_ext), addr, now).status


def make(per_source: int = 5, per_user: int = 3, window: float = 60.0) -> Registrar:
    throttle = RegisterThrottle(per_source=per_source, per_user=per_user, window=window)
    return Registrar(AGENTS, throttle=throttle)


@pytest.mark.parametrize("ext", ["1001", "9999"])
def test_a_source_over_its_limit_is_dropped_unanswered_the_same_for_any_extension(ext):
    registrar = make(per_source=5, per_user=100)
    scanner: Addr = ("203.0.113.7", 5060)
    with capture_logs() as logs:
        statuses = [attempt(registrar, ext, f"guess{i}", scanner, float(i)) for i in range(8)]
    assert statuses == [403] * 5 + [0] * 3  # then silence, whether the extension exists or not
    (line,) = [entry for entry in logs if entry["event"] == "register throttled"]
    assert line["limit"] == "source"
    assert line["source"] == "203.0.113.7"
    assert line["log_level"] == "warning"
    assert registrar.dropped == 3
    # Another port of the same address is the same source (scanners pick a new port per run).
    assert attempt(registrar, ext, "x", ("203.0.113.7", 40000), 9.0) == 0
    # A dropped attempt restarts the source's window: still silent long after the 5th failure.
    assert attempt(registrar, ext, "x", scanner, 65.0) == 0
    assert attempt(registrar, ext, "x", scanner, 120.0) == 0
    # Quiet for a whole window: heard again.
    assert attempt(registrar, ext, "x", scanner, 191.0) == 403
    # Another source was never affected.
    assert attempt(registrar, "1001", "right-password", ("10.0.0.9", 5070), 9.0) == 200


def test_a_user_guessed_from_many_sources_is_dropped_but_its_phone_keeps_registering():
    registrar = make(per_source=100, per_user=3)
    phone: Addr = ("10.0.0.9", 5070)
    assert attempt(registrar, "1001", "right-password", phone, 0.0) == 200
    with capture_logs() as logs:
        statuses = [
            attempt(registrar, "1001", "guess", (f"198.51.100.{i}", 5060), float(i))
            for i in range(1, 6)
        ]
    assert statuses == [403, 403, 403, 0, 0]
    (line,) = [entry for entry in logs if entry["event"] == "register throttled"]
    assert line["limit"] == "user"
    assert line["user"] == "1001"
    # Even the right password from elsewhere waits out the window ...
    assert attempt(registrar, "1001", "right-password", ("198.51.100.99", 5060), 10.0) == 0
    # ... but the phone that holds the binding refreshes as before.
    assert attempt(registrar, "1001", "right-password", phone, 10.0) == 200
    # A window after the last failure, the extension is open again.
    assert attempt(registrar, "1001", "right-password", ("198.51.100.99", 5060), 66.0) == 200


def test_an_unknown_user_is_throttled_exactly_like_a_known_one():
    known, unknown = make(per_source=100), make(per_source=100)
    guesses = [(f"192.0.2.{i}", 5060) for i in range(6)]
    assert [attempt(known, "1001", "g", a, 1.0) for a in guesses] == [
        attempt(unknown, "1234", "g", a, 1.0) for a in guesses
    ]


def test_a_guess_with_another_users_name_counts_for_both_names():
    registrar = make(per_source=100, per_user=2)
    for i in range(2):
        assert attempt(registrar, "7777", "g", (f"192.0.2.{i}", 5060), 1.0, to_ext="1001") == 403
    # Both the To extension and the digest username reached their limit.
    assert attempt(registrar, "1001", "right-password", ("192.0.2.50", 5060), 2.0) == 0
    assert attempt(registrar, "7777", "g", ("192.0.2.51", 5060), 2.0) == 0


def test_the_throttle_forgets_the_least_recent_beyond_its_bound():
    throttle = RegisterThrottle(per_source=2, per_user=2, window=60.0, max_tracked=100)
    for i in range(1000):
        throttle.failed(f"10.1.{i // 256}.{i % 256}", (f"user{i}",), float(i) / 100)
    assert throttle.tracked == 200
    assert throttle.failures("user", "user999", 10.0) == 1
    assert throttle.failures("user", "user0", 10.0) == 0


def test_challenges_are_not_failures():
    registrar = make(per_source=2, per_user=2)
    for i in range(50):
        assert registrar.handle(request("1001"), ("192.0.2.1", 5060), float(i)).status == 401
    assert attempt(registrar, "1001", "right-password", ("192.0.2.1", 5060), 60.0) == 200
