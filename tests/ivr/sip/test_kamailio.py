"""Kamailio (Debian 5.6) as the upstream registrar and proxy in front of the hotline, on loopback.

(a) the hotline registers itself as 95598 with digest (qop=auth, nonce counts checked by
Kamailio), refreshes and unregisters at stop; (b) a SIPp caller dials 95598 at Kamailio, which
looks up the hotline's binding and relays; the hotline answers through the proxy (Record-Route
honoured), the caller presses 2 then #, the caller's ACK and BYE come through the proxy;
(c) with no registrar listening the server starts at once, answers a direct call while the
REGISTERs time out and back off, and registers as soon as Kamailio appears.

The server under test is a SipServer subclass with the upstream registration wired in the way
`ivr/sip/upstream.py`'s report proposes for server.py itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from ivr.flow.model import load_flow
from ivr.services import NotConnectedCrm, NotConnectedRouting
from ivr.settings import Settings, load_settings
from ivr.sip.server import SipServer
from ivr.sip.transactions import earliest
from ivr.sip.upstream import (
    Registered,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
    UpstreamEvent,
    UpstreamRegistration,
    hotline_registration,
)
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

sys.path.insert(0, str(Path(__file__).parent))
from kamailio import Kamailio, KamailioAuth, free_udp_port, kamailio_available, running_kamailio
from sipp import (
    invite,
    key_pcaps,
    read_trace,
    run_sipp,
    sipp_available,
    trace_args,
    uac_scenario,
)

pytestmark = [
    pytest.mark.slow,
    # CI installs Kamailio and SIPp (scripts/test); only a developer without them may skip.
    pytest.mark.skipif(
        not (kamailio_available() and sipp_available()) and not os.environ.get("CI"),
        reason="needs Debian kamailio and sip-tester",
    ),
]

log = structlog.get_logger("ivr.sip")

AUTH = KamailioAuth(user="95598", password="hotline-upstream-secret")  # noqa: S106 - test only

UpstreamFactory = Callable[[tuple[str, int]], UpstreamRegistration]


class UpstreamSipServer(SipServer):
    """SipServer with an UpstreamRegistration on its socket, wired like the SipClient:
    claims datagrams by Call-ID first, its events are read and its datagrams sent in the pump,
    its timer joins the server's one timer."""

    def __init__(self, *args: Any, upstream: UpstreamFactory, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._make_upstream = upstream
        self.upstream: UpstreamRegistration | None = None
        self.upstream_events: list[tuple[float, UpstreamEvent]] = []
        """(loop time, event) of every upstream event."""
        self.received: list[tuple[tuple[str, int], bytes]] = []
        """(source, first line) of every datagram: who the requests came through."""

    async def start(self) -> tuple[str, int]:
        address = await super().start()
        self.upstream = self._make_upstream(address)
        self.upstream.start(self._now())  # queues the first REGISTER, waits for nothing
        self._pump()
        return address

    async def stop(self, grace: float) -> None:
        if self.upstream is not None:
            self.upstream.stop(self._now())  # REGISTER Expires: 0 (nothing if never bound)
            self._pump()
            for _ in range(50):  # up to 1 s for the registrar's 200; the binding lapses anyway
                if self.upstream.state is not RegistrationState.UNREGISTERING:
                    break
                await asyncio.sleep(0.02)
        await super().stop(grace)

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((addr, data.split(b"\r\n", 1)[0]))
        if self.upstream is not None and self.upstream.receive_datagram(data, addr, self._now()):
            self._pump()
            return
        super().datagram(data, addr)

    def _pump(self) -> None:
        upstream = self.upstream
        if upstream is not None:
            now = self._now()
            while (event := upstream.next_event()) is not None:
                self.upstream_events.append((now, event))
                log.info("upstream registration", detail=repr(event))
            for data, addr in upstream.datagrams_to_send(now):
                if self._transport is not None:
                    self._transport.sendto(data, addr)
        super()._pump()

    def _arm(self) -> None:
        upstream_at = self.upstream.get_timer() if self.upstream is not None else None
        when = earliest(self.core.get_timer(), self.client.get_timer(), upstream_at)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        if self.upstream is not None:
            self.upstream.handle_timer(self._now())
        super()._on_timer()

    def events_of(self, kind: type[UpstreamEvent]) -> list[tuple[float, Any]]:
        return [(at, e) for at, e in self.upstream_events if isinstance(e, kind)]


def make_server(upstream: UpstreamFactory, **overrides: Any) -> UpstreamSipServer:
    base = load_settings()
    settings = Settings(**{**base.model_dump(), "sip_port": 0, **overrides})
    return UpstreamSipServer(
        settings,
        load_flow(settings.resolved_flow_file()),
        PromptLibrary(Catalog.shipped(), [shipped_dir()]),
        crm=NotConnectedCrm(),
        routing=NotConnectedRouting(),
        upstream=upstream,
    )


def registration_to(
    registrar: tuple[str, int], *, password: str = AUTH.password, **kw: Any
) -> UpstreamFactory:
    """The hotline registers itself as 95598 at ``registrar``, its socket as the Contact
    (built as the server would, from settings-like strings)."""

    def make(local: tuple[str, int]) -> UpstreamRegistration:
        where = f"{registrar[0]}:{registrar[1]}"
        return hotline_registration(where, AUTH.user, password, local, realm=AUTH.realm, **kw)

    return make


@contextlib.contextmanager
def kamailio(folder: Path, **kw: Any) -> Iterator[Kamailio]:
    with running_kamailio(folder, auth=AUTH, **kw) as running:
        try:
            yield running
        except BaseException:
            print(running.log()[-4000:])  # the proxy's view, on failure only
            raise


@contextlib.asynccontextmanager
async def serving(server: UpstreamSipServer) -> AsyncIterator[UpstreamSipServer]:
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def wait_until(condition: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (server state has no change notification)
            await asyncio.sleep(0.02)


async def sipp(scenario: str, target: tuple[str, int], folder: Path, **kw: Any) -> Any:
    return await asyncio.to_thread(run_sipp, scenario, target, folder, **kw)


# ------------------------------------------------------------------------------- (a)


async def test_the_hotline_registers_itself_with_digest_refreshes_and_unregisters(
    tmp_path: Path,
) -> None:
    with kamailio(tmp_path / "kamailio") as proxy:
        server = make_server(registration_to(proxy.address, expires=3))
        async with serving(server):
            await wait_until(lambda: len(server.events_of(Registered)) >= 2, within=10)
            upstream = server.upstream
            assert upstream is not None
            assert upstream.state is RegistrationState.REGISTERED
            [(_, first), (_, refresh)] = server.events_of(Registered)[:2]
            assert first.expires == refresh.expires == 3
            assert server.events_of(RegistrationFailed) == []
            contact = f"sip:95598@{server.address[0]}:{server.address[1]}"
        assert server.events_of(Unregistered), server.upstream_events
        text = proxy.log()
    # Kamailio's view: one challenge (no credentials), then our answer (nc=1) and a refresh on
    # the same nonce with nc=2 that it accepted without a new challenge (nonce_count is on).
    assert len(re.findall(r"register challenged 95598 rc=-5 cseq=1\b", text)) == 1
    assert "register challenged 95598 rc=-2" not in text
    registered = re.findall(r"registered 95598 contact <([^>]+)>(;expires=0)? .*nc=(\w+)", text)
    assert registered[0] == (contact, "", "00000001")
    assert registered[1] == (contact, "", "00000002")
    assert registered[-1][1] == ";expires=0"


async def test_a_wrong_password_is_reported_and_retried_without_a_loop(tmp_path: Path) -> None:
    with kamailio(tmp_path / "kamailio") as proxy:
        factory = registration_to(proxy.address, password="wrong", retry_base=30.0)  # noqa: S106
        server = make_server(factory)
        async with serving(server):
            await wait_until(lambda: bool(server.events_of(RegistrationFailed)), within=5)
            await asyncio.sleep(0.5)
            [(at, failed)] = server.events_of(RegistrationFailed)
            assert failed.status == 401
            assert "credentials refused" in failed.reason
            assert 15.0 <= failed.retry_at - at <= 30.0
        text = proxy.log()
    # The challenge and one answer, nothing more until the back-off ends.
    assert len(re.findall(r"register challenged 95598", text)) == 2


# ------------------------------------------------------------------------------- (b)

PROXIED_CALL = (
    """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="caller through the upstream proxy">
"""
    + invite((0, 8))
    + """  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <!-- rrs: keep the Record-Route of the 2xx as the route set of ACK and BYE -->
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:95598@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
@KEYS@
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:95598@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""
)


def proxied_call(steps: list[str | float], pcaps: list[Path]) -> str:
    keys = iter(pcaps)
    body = []
    for step in steps:
        if isinstance(step, str):
            body.append(
                f'  <nop><action><exec play_pcap_audio="{next(keys)}"/></action></nop>\n'
                '  <pause milliseconds="400"/>\n'
            )
        else:
            body.append(f'  <pause milliseconds="{int(step * 1000)}"/>\n')
    return PROXIED_CALL.replace("@KEYS@", "".join(body))


async def test_a_caller_reaches_the_hotline_through_kamailio(tmp_path: Path) -> None:
    with kamailio(tmp_path / "kamailio") as proxy:
        server = make_server(registration_to(proxy.address))
        async with serving(server):
            await wait_until(lambda: bool(server.events_of(Registered)), within=5)
            pcaps = key_pcaps("2#", tmp_path)
            scenario = proxied_call([6.0, "2", 1.5, "#", 2.0], pcaps)
            run = await sipp(
                scenario, proxy.address, tmp_path, timeout=40, extra=trace_args(tmp_path)
            )
            assert run.returncode == 0, run.stdout[-2000:] + run.errors + proxy.log()[-3000:]
            await wait_until(lambda: len(server.completed) == 1, within=10)
            [summary] = server.completed
            assert summary.path[:4] == ["welcome", "main_menu", "fault_account", "fault_address"]
            assert summary.slots["intent"] == "fault"
            assert summary.caller == "13800138000"
            assert summary.outcomes[-1].kind == "abandoned"  # the caller's BYE ended it
            assert server.calls == {}
        received = list(server.received)
    # Every request of the call reached the hotline from Kamailio, not from SIPp directly.
    requests = {line.split(b" ", 1)[0]: addr for addr, line in received if b"SIP/2.0" in line[-7:]}
    assert requests[b"INVITE"] == proxy.address
    assert requests[b"ACK"] == proxy.address
    assert requests[b"BYE"] == proxy.address
    # The hotline's 200 carried Kamailio's Record-Route (RFC 3261 §12.1.1), so SIPp routed the
    # ACK and BYE through it; the INVITE's Request-URI was the registered Contact.
    trace = read_trace(tmp_path)
    [ok] = [m for m in trace if m.received and m.is_response(200, "INVITE")]
    record_route = ok.header("Record-Route") or ""
    assert f"sip:{proxy.address[0]}:{proxy.address[1]};lr" in record_route
    bye = next(m for m in trace if not m.received and m.is_request("BYE"))
    assert (bye.header("Route") or "") == record_route
    text = proxy.log()
    assert "relay INVITE" in text
    assert f"to sip:95598@{server.address[0]}:{server.address[1]}" in text
    assert re.search(r"in-dialog BYE .* to sip:", text)


# ------------------------------------------------------------------------------- (c)


async def test_start_is_not_blocked_when_the_registrar_is_down(tmp_path: Path) -> None:
    port = free_udp_port()  # nothing listens here yet
    registrar = ("127.0.0.1", port)
    factory = registration_to(registrar, t1=0.02, retry_base=0.2, retry_max=0.8)
    server = make_server(factory)
    stopped = False
    async with asyncio.timeout(10.0):  # only a guard against a hang
        await server.start()
    try:
        # start() did not wait on the registrar: its first REGISTER is still in flight, not yet
        # failed by Timer F (proven by state, not by how fast this machine ran start()).
        assert server.upstream is not None
        assert server.upstream.state is RegistrationState.REGISTERING
        assert server.events_of(RegistrationFailed) == []
        # A direct call is answered while the REGISTERs go unanswered.
        run = await sipp(uac_scenario([1.5]), server.address, tmp_path, timeout=20)
        assert run.returncode == 0, run.stdout[-2000:] + run.errors
        assert len(server.answered) == 1
        await wait_until(lambda: len(server.events_of(RegistrationFailed)) >= 3, within=15)
        failures = server.events_of(RegistrationFailed)[:3]
        for _, failed in failures:
            assert failed.status == 408  # Timer F: 64*T1 = 1.28 s without an answer
            assert failed.retry_at is not None
        # Exponential back-off with 50-100 % jitter: 0.1-0.2 s, 0.2-0.4 s, 0.4-0.8 s.
        delays = [failed.retry_at - at for at, failed in failures]
        for delay, ceiling in zip(delays, (0.2, 0.4, 0.8), strict=True):
            assert ceiling / 2 - 0.05 <= delay <= ceiling + 0.05, delays
        # The registrar comes up on that port: the next retry registers.
        with contextlib.ExitStack() as stack:
            await asyncio.to_thread(stack.enter_context, kamailio(tmp_path / "kamailio", port=port))
            await wait_until(lambda: bool(server.events_of(Registered)), within=5)
            assert server.upstream.failures == 0
            stopped = True
            await server.stop(0)
            assert server.events_of(Unregistered)
    finally:
        if not stopped:
            await server.stop(0)


# ------------------------------------------------------------------------- the server's wiring


async def test_settings_alone_make_the_server_register_upstream(tmp_path: Path) -> None:
    """What an operator does: HOTLINE_SIP_UPSTREAM_* settings; the plain SipServer registers,
    answers calls meanwhile, and unregisters when it stops."""
    with kamailio(tmp_path / "kamailio") as proxy:
        base = load_settings()
        settings = Settings(
            **{
                **base.model_dump(),
                "sip_port": 0,
                "sip_upstream_registrar": f"{proxy.address[0]}:{proxy.address[1]}",
                "sip_upstream_user": AUTH.user,
                "sip_upstream_password": AUTH.password,
                "sip_upstream_expires": 60,
            }
        )
        server = SipServer(
            settings,
            load_flow(settings.resolved_flow_file()),
            PromptLibrary(Catalog.shipped(), [shipped_dir()]),
            crm=NotConnectedCrm(),
            routing=NotConnectedRouting(),
        )
        await server.start()
        try:
            upstream = server.upstream
            assert upstream is not None
            await wait_until(lambda: upstream.state is RegistrationState.REGISTERED, within=10)
        finally:
            await server.stop(0)
        text = proxy.log()
    contact = f"sip:95598@{server.address[0]}:{server.address[1]}"
    registered = re.findall(r"registered 95598 contact <([^>]+)>(;expires=0)?", text)
    assert registered[0] == (contact, "")
    assert registered[-1] == (contact, ";expires=0")
