"""The built-in registrar on bytes: REGISTER through the real core, digest answers computed by
aiosipua's client code (an independent implementation), responses parsed from the wire.

RFC 3261 §10.3 (registrar), §22 (digest), RFC 2617 (qop=auth, nonce-count, stale).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosipua import (
    AuthChallenge,
    SipDigestAuth,
    SipMessage,
    SipRequest,
    SipResponse,
    build_credentials,
    parse_auth,
    stringify_auth,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.sip.events import Addr, RegisterRequest
from ivr.sip.registrar import (
    AgentsFileError,
    Registrar,
    digest_ha1,
    load_agents,
)
from ivr.sip.server import SipServer

sys.path.insert(0, str(Path(__file__).parent))
from sipp import make_server

PHONE: Addr = ("127.0.0.1", 5070)
PASSWORDS = {"1001": "s3cret-1001", "1002": "s3cret-1002"}
AGENTS = {ext: digest_ha1(ext, "hotline", pw) for ext, pw in PASSWORDS.items()}
_branches = itertools.count(1)


def register(
    ext: str = "1001",
    *,
    cseq: int = 1,
    call_id: str = "reg-1@127.0.0.1",
    contacts: tuple[str, ...] = ("<sip:1001@127.0.0.1:5070>",),
    expires: str | None = "3600",
    authorization: str | None = None,
    to_ext: str | None = None,
    uri: str = "sip:127.0.0.1",
) -> bytes:
    """A REGISTER like baresip's, a new transaction (branch) each time."""
    lines = [
        f"REGISTER {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-reg{next(_branches)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{ext}@127.0.0.1>;tag=phone{ext}",
        f"To: <sip:{to_ext or ext}@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: test-phone",
        *(f"Contact: {c}" for c in contacts),
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


class Phone:
    """One agent phone: sends REGISTERs through the core and answers challenges."""

    def __init__(self, uas: Any, registrar: Registrar, ext: str = "1001") -> None:
        self.uas = uas
        self.registrar = registrar
        self.ext = ext
        self.password = PASSWORDS.get(ext, "guess")
        self.cseq = 0
        self.challenge: AuthChallenge | None = None
        self.nc = 0

    def send(self, data: bytes, addr: Addr = PHONE) -> SipResponse:
        """Deliver a REGISTER; the registrar answers through the core; the wire reply parsed."""
        assert self.uas.feed(data, addr) == []  # held for the registrar: nothing sent yet
        (event,) = self.uas.take(RegisterRequest)
        reply = self.registrar.handle(event.request, event.addr, self.uas.now)
        response = self.uas.core.response_for(event.request, reply.status, reply.reason, addr)
        for name, value in reply.headers:
            response.headers.append(name, value)
        (sent,) = self.uas.do(
            lambda now: self.uas.core.send_response(event.request, response, addr, now)
        )
        assert sent.addr == addr
        message = SipMessage.parse(sent.data)
        assert isinstance(message, SipResponse)
        if message.status_code == 401:
            self.challenge = parse_auth(message.headers.get_first("www-authenticate") or "")
            self.nc = 0
        return message

    def authorization(self, *, nc: int | None = None, guess: str | None = None) -> str:
        """Answer the last challenge (with ``guess`` instead of the password, if given)."""
        assert self.challenge is not None
        if nc is None:
            self.nc += 1
            nc = self.nc
        creds = build_credentials(
            SipDigestAuth(self.ext, guess or self.password),
            self.challenge,
            "REGISTER",
            "sip:127.0.0.1",
            nonce_count=nc,
        )
        assert creds is not None
        return stringify_auth(creds)

    def register(self, **kw: Any) -> SipResponse:
        """REGISTER, answer the 401 if there is one; the final response."""
        self.cseq += 1
        first = self.send(register(self.ext, cseq=self.cseq, **kw))
        if first.status_code != 401:
            return first
        self.cseq += 1
        return self.send(
            register(self.ext, cseq=self.cseq, authorization=self.authorization(), **kw)
        )


@pytest.fixture
def make_phone(make_uas: Callable[..., Any]) -> Callable[..., Phone]:
    """Phones sharing one core (registrar=True) and one registrar; the core is checked clean."""
    uas = make_uas(registrar=True)
    registrar = Registrar(AGENTS)

    def make(ext: str = "1001", **options: Any) -> Phone:
        nonlocal registrar
        if options:
            registrar = Registrar(AGENTS, **options)
        return Phone(uas, registrar, ext)

    return make


def contacts_of(response: SipResponse) -> list[str]:
    return list(response.headers.get("contact"))


# ---------------------------------------------------------------------- challenge and proof


def test_register_without_credentials_gets_401_with_a_digest_challenge(make_phone):
    phone = make_phone()
    response = phone.send(register())
    assert response.status_code == 401
    challenge = phone.challenge
    assert challenge is not None
    assert challenge.scheme == "Digest"
    assert challenge.params["realm"] == "hotline"
    assert challenge.params["qop"] == "auth"
    assert challenge.params["algorithm"] == "MD5"
    assert len(challenge.params["nonce"]) >= 32
    assert "stale" not in challenge.params
    assert phone.registrar.lookup("1001", phone.uas.now) == []


def test_a_retransmitted_register_gets_the_same_401_from_the_core(make_phone):
    phone = make_phone()
    data = register()
    first = phone.send(data)
    resent = phone.uas.feed(data, PHONE)  # same branch: absorbed, answered from the core
    assert [s.data for s in resent] == [bytes(first)]
    assert phone.uas.take(RegisterRequest) == []


def test_correct_digest_registers_the_contact(make_phone):
    phone = make_phone()
    with structlog.testing.capture_logs() as logs:
        ok = phone.register()
    assert ok.status_code == 200
    assert contacts_of(ok) == ["<sip:1001@127.0.0.1:5070>;expires=3600"]
    (binding,) = phone.registrar.lookup("1001", phone.uas.now)
    assert binding.contact == "sip:1001@127.0.0.1:5070"
    assert binding.source == PHONE
    assert binding.user_agent == "test-phone"
    assert binding.expires_in(phone.uas.now) == 3600
    registered = [e for e in logs if e["event"] == "agent registered"]
    assert registered == [
        {
            "event": "agent registered",
            "log_level": "info",
            "extension": "1001",
            "contact": "sip:1001@127.0.0.1:5070",
            "source": "127.0.0.1:5070",
            "expires": 3600,
        }
    ]


def test_the_source_address_is_kept_for_a_phone_behind_nat(make_phone):
    phone = make_phone()
    nat: Addr = ("127.0.0.1", 40001)
    phone.send(register(), nat)
    ok = phone.send(register(cseq=2, authorization=phone.authorization()), nat)
    assert ok.status_code == 200
    assert [b.source for b in phone.registrar.lookup("1001", phone.uas.now)] == [nat]


def test_wrong_password_gets_403(make_phone):
    phone = make_phone()
    phone.send(register())
    with structlog.testing.capture_logs() as logs:
        refused = phone.send(register(cseq=2, authorization=phone.authorization(guess="no")))
    assert refused.status_code == 403
    assert phone.registrar.lookup("1001", phone.uas.now) == []
    assert {"event": "register refused", "status": 403, "reason": "wrong-password"}.items() <= (
        logs[0].items()
    )
    # The nonce of a wrong guess is spent: the right password needs a fresh challenge.
    retry = phone.send(register(cseq=3, authorization=phone.authorization()))
    assert retry.status_code == 401
    assert phone.challenge is not None
    assert phone.challenge.params["stale"] == "true"


def test_unknown_extension_is_challenged_then_403_not_404(make_phone):
    """No enumeration: an unknown extension looks exactly like a wrong password."""
    phone = make_phone("4040")
    first = phone.send(register("4040", contacts=("<sip:4040@127.0.0.1:5070>",)))
    assert first.status_code == 401
    auth = phone.authorization()
    with structlog.testing.capture_logs() as logs:
        refused = phone.send(register("4040", cseq=2, authorization=auth))
    assert refused.status_code == 403
    assert refused.reason_phrase == "Forbidden"
    assert logs[0]["reason"] == "unknown-extension"


def test_an_agent_cannot_register_another_extension(make_phone):
    phone = make_phone()  # 1001's credentials, To: 1002
    phone.send(register(to_ext="1002"))
    refused = phone.send(register(cseq=2, to_ext="1002", authorization=phone.authorization()))
    assert refused.status_code == 403
    assert phone.registrar.lookup("1002", phone.uas.now) == []


def test_a_digest_uri_for_another_resource_gets_400(make_phone):
    phone = make_phone()
    phone.send(register(uri="sip:127.0.0.1"))
    auth = phone.authorization()  # computed for sip:127.0.0.1
    refused = phone.send(register(cseq=2, uri="sip:10.9.9.9", authorization=auth))
    assert refused.status_code == 400


def test_credentials_for_another_realm_get_a_challenge(make_phone):
    phone = make_phone()
    phone.send(register())
    other = phone.authorization().replace('realm="hotline"', 'realm="elsewhere"')
    assert phone.send(register(cseq=2, authorization=other)).status_code == 401


@pytest.mark.parametrize(
    ("mutation", "status"),
    [
        (lambda a: a.replace("qop=auth", "qop=auth-int"), 400),
        (lambda a: a.replace("nc=00000001", "nc=1"), 400),
        (lambda a: a.replace(", cnonce=", ", x-cnonce="), 400),
        (lambda a: a.replace(", response=", ", x-response="), 400),
        (lambda a: a.replace("algorithm=MD5", "algorithm=SHA-256"), 401),
        (lambda a: a.replace("Digest", "Basic"), 401),
    ],
)
def test_malformed_credentials_are_refused(make_phone, mutation, status):
    phone = make_phone()
    phone.send(register())
    assert phone.send(
        register(cseq=2, authorization=mutation(phone.authorization()))
    ).status_code == (status)


# ---------------------------------------------------------------------- nonces


def test_an_expired_nonce_gets_401_stale_then_the_fresh_nonce_works(make_phone):
    phone = make_phone(nonce_ttl=30.0)
    phone.send(register())
    phone.uas.at(31.0)
    stale = phone.send(register(cseq=2, authorization=phone.authorization()))
    assert stale.status_code == 401
    assert phone.challenge is not None
    assert phone.challenge.params["stale"] == "true"  # the password was right: retry silently
    ok = phone.send(register(cseq=3, authorization=phone.authorization()))
    assert ok.status_code == 200


def test_an_unknown_nonce_with_a_wrong_password_is_403_not_stale(make_phone):
    phone = make_phone(nonce_ttl=30.0)
    phone.send(register())
    phone.uas.at(31.0)
    auth = phone.authorization(guess="wrong")
    assert phone.send(register(cseq=2, authorization=auth)).status_code == 403


def test_a_replayed_nonce_count_is_refused_as_stale(make_phone):
    phone = make_phone()
    phone.send(register())
    auth = phone.authorization(nc=1)
    assert phone.send(register(cseq=2, authorization=auth)).status_code == 200
    # A captured REGISTER sent again as a new transaction: same nonce, same nc.
    replay = phone.send(register(cseq=3, authorization=auth))
    assert replay.status_code == 401
    assert phone.challenge is not None
    assert phone.challenge.params["stale"] == "true"


def test_increasing_nonce_counts_reuse_the_nonce(make_phone):
    """A refresh with nc=2 on the same nonce (as baresip does) needs no new challenge."""
    phone = make_phone()
    phone.send(register())
    assert phone.send(register(cseq=2, authorization=phone.authorization(nc=1))).status_code == 200
    phone.uas.at(60.0)
    refresh = phone.send(register(cseq=3, authorization=phone.authorization(nc=2)))
    assert refresh.status_code == 200
    assert contacts_of(refresh) == ["<sip:1001@127.0.0.1:5070>;expires=3600"]


def test_a_nonce_without_qop_is_single_use(make_phone):
    """RFC 2069-style answers (pyVoIP 1.6.8) have no nonce-count: one use per nonce."""
    phone = make_phone()
    phone.send(register())
    assert phone.challenge is not None
    nonce = phone.challenge.params["nonce"]
    ha1 = digest_ha1("1001", "hotline", PASSWORDS["1001"])
    # pyVoIP's digest-uri carries ;transport=UDP: the same resource as the Request-URI.
    uri = "sip:127.0.0.1;transport=UDP"
    ha2 = _md5(f"REGISTER:{uri}")
    auth = (
        f'Digest username="1001",realm="hotline",nonce="{nonce}",uri="{uri}",'
        f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}",algorithm=MD5'
    )
    assert phone.send(register(cseq=2, authorization=auth)).status_code == 200
    again = phone.send(register(cseq=3, authorization=auth))
    assert again.status_code == 401
    assert phone.challenge is not None
    assert phone.challenge.params["stale"] == "true"


def test_the_nonce_table_is_bounded():
    registrar = Registrar(AGENTS, max_nonces=8)
    for n in range(50):
        request = SipMessage.parse(register())
        assert isinstance(request, SipRequest)
        assert registrar.handle(request, PHONE, float(n)).status == 401
    assert registrar.nonces == 8


def _md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------- expiry and bindings


def test_expires_below_the_minimum_gets_423_with_min_expires(make_phone):
    phone = make_phone()
    refused = phone.register(expires="30")
    assert refused.status_code == 423
    assert refused.reason_phrase == "Interval Too Brief"
    assert refused.headers.get_first("min-expires") == "60"
    assert phone.registrar.lookup("1001", phone.uas.now) == []


def test_expires_above_the_maximum_is_cut_down(make_phone):
    phone = make_phone()
    ok = phone.register(expires="999999")
    assert contacts_of(ok) == ["<sip:1001@127.0.0.1:5070>;expires=3600"]


def test_a_contact_expires_parameter_wins_over_the_header(make_phone):
    phone = make_phone()
    ok = phone.register(contacts=("<sip:1001@127.0.0.1:5070>;expires=120",), expires="3600")
    assert contacts_of(ok) == ["<sip:1001@127.0.0.1:5070>;expires=120"]


def test_no_expiry_anywhere_gets_the_default(make_phone):
    phone = make_phone(default_expires=600)
    ok = phone.register(expires=None)
    assert contacts_of(ok) == ["<sip:1001@127.0.0.1:5070>;expires=600"]


def test_bindings_expire(make_phone):
    phone = make_phone()
    phone.register(expires="120")
    registrar = phone.registrar
    assert len(registrar.lookup("1001", 100.0)) == 1
    assert registrar.lookup("1001", phone.uas.now + 120.0) == []  # lazily, at the boundary
    assert registrar.get_timer() is not None
    with structlog.testing.capture_logs() as logs:
        (lapsed,) = registrar.handle_timer(phone.uas.now + 121.0)
    assert lapsed.contact == "sip:1001@127.0.0.1:5070"
    assert logs[0]["event"] == "agent binding expired"
    assert registrar.get_timer() is not None  # the nonce is still outstanding...
    registrar.handle_timer(phone.uas.now + 1000.0)
    assert registrar.get_timer() is None  # ...and then nothing is left


def test_a_refresh_moves_the_expiry(make_phone):
    phone = make_phone()
    phone.register(expires="120")
    phone.uas.at(100.0)
    phone.cseq += 1
    ok = phone.send(register(cseq=phone.cseq, expires="120", authorization=phone.authorization()))
    assert ok.status_code == 200
    (binding,) = phone.registrar.lookup("1001", 200.0)
    assert binding.expires_at == pytest.approx(220.0)


def test_expires_zero_unregisters_one_contact(make_phone):
    phone = make_phone()
    both = ("<sip:1001@127.0.0.1:5070>", "<sip:1001@127.0.0.1:5072>")
    ok = phone.register(contacts=both)
    assert len(contacts_of(ok)) == 2
    phone.cseq += 1
    with structlog.testing.capture_logs() as logs:
        ok = phone.send(
            register(
                cseq=phone.cseq,
                contacts=("<sip:1001@127.0.0.1:5072>",),
                expires="0",
                authorization=phone.authorization(),
            )
        )
    assert contacts_of(ok) == ["<sip:1001@127.0.0.1:5070>;expires=3600"]
    assert [b.contact for b in phone.registrar.lookup("1001", phone.uas.now)] == [
        "sip:1001@127.0.0.1:5070"
    ]
    assert logs[0]["event"] == "agent unregistered"


def test_star_with_expires_zero_removes_every_binding(make_phone):
    phone = make_phone()
    phone.register(contacts=("<sip:1001@127.0.0.1:5070>", "<sip:1001@127.0.0.1:5072>"))
    phone.cseq += 1
    ok = phone.send(
        register(cseq=phone.cseq, contacts=("*",), expires="0", authorization=phone.authorization())
    )
    assert ok.status_code == 200
    assert contacts_of(ok) == []
    assert phone.registrar.lookup("1001", phone.uas.now) == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(("*",), "3600"), (("*",), None), (("*", "<sip:1001@127.0.0.1:5070>"), "0")],
)
def test_star_needs_expires_zero_and_no_other_contact(make_phone, contacts, expires):
    phone = make_phone()
    assert phone.register(contacts=contacts, expires=expires).status_code == 400


def test_register_without_contact_lists_the_bindings(make_phone):
    phone = make_phone()
    phone.register()
    phone.uas.at(10.0)
    phone.cseq += 1
    listing = phone.send(
        register(cseq=phone.cseq, contacts=(), authorization=phone.authorization())
    )
    assert listing.status_code == 200
    assert contacts_of(listing) == ["<sip:1001@127.0.0.1:5070>;expires=3590"]


def test_an_older_cseq_on_the_same_call_id_is_refused(make_phone):
    """§10.3 step 7: a REGISTER overtaken by a newer one must not undo it."""
    phone = make_phone()
    phone.register()  # CSeq 1 (401), then 2 (200)
    late = phone.send(register(cseq=1, authorization=phone.authorization(), expires="0"))
    assert late.status_code == 500
    assert len(phone.registrar.lookup("1001", phone.uas.now)) == 1


def test_a_contact_that_is_not_sip_gets_400(make_phone):
    phone = make_phone()
    assert phone.register(contacts=("<tel:+861234>",)).status_code == 400


def test_too_many_contacts_are_refused(make_phone):
    phone = make_phone(max_bindings=2)
    many = tuple(f"<sip:1001@127.0.0.1:{5070 + i}>" for i in range(3))
    assert phone.register(contacts=many).status_code == 403
    assert phone.registrar.lookup("1001", phone.uas.now) == []


def test_to_without_an_extension_gets_400(make_phone):
    phone = make_phone()
    data = register().replace(b"To: <sip:1001@127.0.0.1>", b"To: <sip:127.0.0.1>")
    assert phone.send(data).status_code == 400


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    auth=st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=200),
    contact=st.text(st.characters(codec="ascii", exclude_characters="\r\n,"), max_size=80),
    expires=st.one_of(st.none(), st.text("0123456789x -", max_size=12)),
)
def test_the_registrar_never_raises(auth, contact, expires):
    """Whatever the Authorization, Contact and Expires say: a 2xx-4xx/500 answer, no exception."""
    registrar = Registrar(AGENTS)
    data = register(contacts=(contact,) if contact.strip() else (), expires=expires)
    data = data.replace(b"Content-Length", f"Authorization: {auth}\r\nContent-Length".encode())
    try:
        request = SipMessage.parse(data)
    except ValueError:
        return  # the core drops what the parser refuses; the registrar never sees it
    assert isinstance(request, SipRequest)
    reply = registrar.handle(request, PHONE, 0.0)
    assert reply.status in (200, 400, 401, 403, 423, 500)


# ---------------------------------------------------------------------- the agents file


def test_agents_file_prefers_ha1_and_accepts_passwords(tmp_path: Path):
    path = tmp_path / "agents.toml"
    ha1 = digest_ha1("1001", "hotline", "from-ha1")
    path.write_text(
        'realm = "hotline"\n'
        f'[agents.1001]\nha1 = "{ha1.upper()}"\npassword = "ignored"\n'
        '[agents.1002]\npassword = "plain"\n'
    )
    agents = load_agents(path, "hotline")
    assert agents == {"1001": ha1, "1002": digest_ha1("1002", "hotline", "plain")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agents.1001\n", "not valid TOML"),
        ('[agents.1001]\npasword = "x"\n', "unknown keys ['pasword']"),
        ('[agents.1001]\nha1 = "abc"\n', "32 hex digits"),
        ("[agents.1001]\n", "needs ha1"),
        ('[agents."10 01"]\npassword = "x"\n', "letters, digits"),
        ('realm = "other"\n[agents.1001]\npassword = "x"\n', "realm 'other'"),
        ('agents = "x"\n', "table of extensions"),
        ("agent = {}\n", "unknown keys ['agent']"),
    ],
)
def test_agents_file_errors_say_what_is_wrong(tmp_path: Path, text: str, message: str):
    path = tmp_path / "agents.toml"
    path.write_text(text)
    with pytest.raises(AgentsFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_agents(path, "hotline")


def test_a_missing_agents_file_is_an_agents_file_error(tmp_path: Path):
    with pytest.raises(AgentsFileError, match="cannot be read"):
        load_agents(tmp_path / "nope.toml", "hotline")


def test_min_expires_above_max_is_refused():
    with pytest.raises(ValueError, match="min_expires"):
        Registrar(AGENTS, min_expires=100, max_expires=50)


# ---------------------------------------------------------------------- wired into the server


@pytest.fixture
async def registrar_server(tmp_path: Path) -> AsyncIterator[SipServer]:
    agents = tmp_path / "agents.toml"
    agents.write_text(f'[agents.1001]\nha1 = "{AGENTS["1001"]}"\n')
    server = make_server(sip_agents_file=agents)
    await server.start()
    yield server
    await server.stop(0)


async def udp_exchange(sock: socket.socket, data: bytes, to: Addr) -> SipResponse:
    loop = asyncio.get_running_loop()
    sock.sendto(data, to)
    async with asyncio.timeout(3.0):
        reply = await loop.sock_recv(sock, 65535)
    message = SipMessage.parse(reply)
    assert isinstance(message, SipResponse)
    return message


@pytest.fixture
def phone_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


async def test_the_server_answers_register_when_agents_are_configured(
    registrar_server: SipServer, phone_socket: socket.socket
):
    server = registrar_server
    assert server.registrar is not None
    port = phone_socket.getsockname()[1]
    contact = (f"<sip:1001@127.0.0.1:{port}>",)
    challenge = await udp_exchange(phone_socket, register(contacts=contact), server.address)
    assert challenge.status_code == 401
    creds = build_credentials(
        SipDigestAuth("1001", PASSWORDS["1001"]),
        parse_auth(challenge.headers.get_first("www-authenticate") or ""),
        "REGISTER",
        "sip:127.0.0.1",
    )
    assert creds is not None
    auth = stringify_auth(creds)
    ok = await udp_exchange(
        phone_socket, register(cseq=2, contacts=contact, authorization=auth), server.address
    )
    assert ok.status_code == 200
    now = asyncio.get_running_loop().time()
    (binding,) = server.registrar.lookup("1001", now)
    assert binding.source == ("127.0.0.1", port)
    options = await udp_exchange(
        phone_socket,
        register()
        .replace(b"REGISTER sip", b"OPTIONS sip")
        .replace(b"REGISTER\r\n", b"OPTIONS\r\n"),
        server.address,
    )
    assert "REGISTER" in options.headers.get("allow")


async def test_without_agents_file_register_gets_405(phone_socket: socket.socket):
    server = make_server()
    await server.start()
    try:
        assert server.registrar is None
        refused = await udp_exchange(phone_socket, register(), server.address)
        assert refused.status_code == 405
    finally:
        await server.stop(0)


def test_a_broken_agents_file_fails_at_construction(tmp_path: Path):
    agents = tmp_path / "agents.toml"
    agents.write_text("[agents.1001]\n")
    with pytest.raises(AgentsFileError, match="needs ha1"):
        make_server(sip_agents_file=agents)
