"""pyVoIP 1.6.8 as a second, independent SIP client: it registers to the hotline's registrar
(it sends everything to its configured server, so it needs one) and calls 95598.

pyVoIP quirks handled here (see /work/shared/notes/sip-test-peers.md):

- ``import pyVoIP.VoIP`` first (``pyVoIP.SIP`` first is a circular import), inside
  ``warnings.catch_warnings``: it imports ``audioop``, deprecated on 3.11, and pytest turns
  warnings into errors.
- Its API blocks (``start`` registers, ``call`` waits for 100/180, ``stop`` unregisters) and it
  runs its own threads, so every call goes through ``asyncio.to_thread`` with a timeout, and the
  fixture always stops the phone, closing its socket if ``stop`` itself hangs.
- Its digest answer has no ``qop`` (RFC 2069 style) and a digest-uri with ``;transport=UDP``:
  the registrar accepts both (single-use nonce; same resource).
- **Its ACK for our 200 carries a made-up To-tag** (``gen_ack`` appends ``gen_tag()``), against
  RFC 3261 §13.2.2.4. The core accepts an ACK that names our Call-ID, the caller's From-tag
  and a CSeq awaiting its ACK (one dialog per INVITE makes that unambiguous), so pyVoIP as
  shipped gets through; the flow test below runs it unmodified.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ivr.sip.registrar import digest_ha1
from ivr.sip.server import SipServer

sys.path.insert(0, str(Path(__file__).parent))
from baresip import free_ports
from sipp import make_server


def _import_pyvoip() -> ModuleType | None:
    try:
        with warnings.catch_warnings():
            # pyVoIP imports audioop (deprecated since 3.11, gone in 3.13); not our warning.
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("pyVoIP.VoIP")  # never pyVoIP.SIP first
    except ImportError:
        return None


VoIP = _import_pyvoip()

pytestmark = [
    pytest.mark.slow,
    # pyVoIP is in the dev extra; CI installs it, only a bare environment may skip.
    pytest.mark.skipif(VoIP is None and not os.environ.get("CI"), reason="needs pyVoIP==1.6.8"),
]

EXTENSION, PASSWORD = "1002", "agent-1002-pw"
STEP_TIMEOUT = 10.0
"""Bound on every blocking pyVoIP call (its own register timeout is 30 s; we set 5)."""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SipServer]:
    agents = tmp_path / "agents.toml"
    ha1 = digest_ha1(EXTENSION, "hotline", PASSWORD)
    agents.write_text(f'[agents.{EXTENSION}]\nha1 = "{ha1}"\n')
    srv = make_server(sip_agents_file=agents)
    await srv.start()
    yield srv
    await srv.stop(0)


async def blocking(function: Callable[..., Any], *args: Any) -> Any:
    """A blocking pyVoIP call in a thread, bounded in time."""
    return await asyncio.wait_for(asyncio.to_thread(function, *args), STEP_TIMEOUT)


PhoneFactory = Callable[[], Awaitable[Any]]


@pytest.fixture
async def pyvoip_phone(server: SipServer) -> AsyncIterator[PhoneFactory]:
    """Start a registered pyVoIP phone (extension 1002) on free loopback ports; always stopped."""
    assert VoIP is not None
    phones: list[Any] = []

    async def start() -> Any:
        host, port = server.address
        sip_port, rtp_low = free_ports(2)
        phone = VoIP.VoIPPhone(
            host,
            port,
            EXTENSION,
            PASSWORD,
            myIP="127.0.0.1",
            sipPort=sip_port,
            rtpPortLow=rtp_low,
            rtpPortHigh=rtp_low + 1,
        )
        phone.sip.register_timeout = 5  # not 30 s per step if something goes wrong
        phones.append(phone)
        await blocking(phone.start)
        return phone

    yield start
    for phone in phones:
        try:
            await blocking(phone.stop)
        except TimeoutError:
            # Its threads loop while NSD is set and block on its socket: end both.
            phone.sip.NSD = False
            phone.sip._close_sockets()


async def wait_until(predicate: Callable[[], bool], within: float = STEP_TIMEOUT) -> None:
    async with asyncio.timeout(within):
        # The server and pyVoIP's threads change state as datagrams arrive: poll.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def now() -> float:
    return asyncio.get_running_loop().time()


def answered(call: Any) -> bool:
    assert VoIP is not None
    return bool(call.state == VoIP.CallState.ANSWERED)


async def test_pyvoip_registers_with_rfc2069_digest_and_unregisters_on_stop(
    server: SipServer, pyvoip_phone: PhoneFactory
) -> None:
    registrar = server.registrar
    assert registrar is not None
    assert VoIP is not None
    started = time.monotonic()
    phone = await pyvoip_phone()
    assert time.monotonic() - started < 2.0  # not the 30 s it waits without a registrar
    assert phone.get_status() == VoIP.PhoneStatus.REGISTERED
    (binding,) = registrar.lookup(EXTENSION, now())
    assert binding.contact == f"sip:{EXTENSION}@127.0.0.1:{phone.sip.myPort};transport=UDP"
    assert binding.source == ("127.0.0.1", phone.sip.myPort)
    assert binding.user_agent == "pyVoIP 1.6.8"
    await blocking(phone.stop)
    assert registrar.lookup(EXTENSION, now()) == []


async def test_pyvoip_calls_95598_and_the_flow_starts(
    server: SipServer, pyvoip_phone: PhoneFactory
) -> None:
    """Answered, the session starts with the welcome prompt, pyVoIP hears it, hangs up, and the
    server keeps nothing of the call."""
    phone = await pyvoip_phone()
    call = await blocking(phone.call, "95598")
    await wait_until(lambda: answered(call))
    await wait_until(lambda: any(c.session is not None for c in server.calls.values()))

    # What pyVoIP hears: unsigned 8-bit PCM, 0x80 is silence; the welcome prompt is not.
    heard = bytearray()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        heard += call.read_audio(160, False)
        await asyncio.sleep(0.02)
    assert max(abs(b - 0x80) for b in heard) > 20

    await blocking(call.hangup)
    await wait_until(lambda: len(server.completed) == 1)
    [summary] = server.completed
    assert summary.path[0] == "welcome"
    assert summary.caller == EXTENSION
    assert summary.outcomes[-1].kind == "abandoned"  # pyVoIP's BYE ended it
    await wait_until(lambda: not server.calls and not server.pending)
    assert server.core.calls == 0


@pytest.fixture(autouse=True)
def _no_lingering_threads() -> Iterator[None]:
    """pyVoIP threads are not daemons: one left running would hang the test run at exit."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while (left := [t.name for t in set(threading.enumerate()) - before if t.is_alive()]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not left, f"threads still running after the test: {left}"
