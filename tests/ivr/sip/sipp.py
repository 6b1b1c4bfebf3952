"""Drive SIPp (Debian `sip-tester`) against the hotline: scenarios, DTMF pcaps, runs.

SIPp replays `/usr/share/sip-tester/dtmf_2833_<key>.pcap` for RFC 4733 keys. Every one of those
captures uses the same RTP timestamp, and per RFC 4733 §2.5.1.3 packets with one timestamp are one
event, so each key we send is re-stamped into a copy with its own timestamp.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiortp.codecs.g711 import PcmuCodec

from ivr.flow.model import load_flow
from ivr.services import NotConnectedCrm, NotConnectedRouting
from ivr.settings import Settings, load_settings
from ivr.sip.server import SipServer
from ivr.sip.uas import SipCore
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

PCAP_DIR = Path("/usr/share/sip-tester")
KEY_FILES = {
    **{str(d): f"dtmf_2833_{d}.pcap" for d in range(10)},
    "*": "dtmf_2833_star.pcap",
    "#": "dtmf_2833_pound.pcap",
}


def sipp_available() -> bool:
    """Whether the SIPp binary and its DTMF captures are installed."""
    return shutil.which("sipp") is not None and (PCAP_DIR / "dtmf_2833_0.pcap").exists()


def restamp(src: Path, dst: Path, timestamp: int) -> None:
    """Copy a pcap of RTP packets, setting every packet's RTP timestamp (UDP checksum cleared)."""
    data = bytearray(src.read_bytes())
    link = struct.unpack_from("<I", data, 20)[0]
    l2 = {1: 14, 113: 16}.get(link)
    if l2 is None:
        raise ValueError(f"{src}: unsupported link type {link}")
    off = 24
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        pkt = off + 16
        ihl = (data[pkt + l2] & 0x0F) * 4
        udp = pkt + l2 + ihl
        struct.pack_into("!H", data, udp + 6, 0)  # IPv4 allows "no checksum"
        struct.pack_into("!I", data, udp + 8 + 4, timestamp)
        off = pkt + incl
    dst.write_bytes(bytes(data))


def key_pcaps(keys: str, folder: Path) -> list[Path]:
    """One re-stamped capture per key press, each a distinct RFC 4733 event."""
    out = []
    for i, key in enumerate(keys):
        path = folder / f"key{i:02d}.pcap"
        restamp(PCAP_DIR / KEY_FILES[key], path, 160_000 + i * 8000)
        out.append(path)
    return out


SDP_CODECS = {0: "PCMU/8000", 8: "PCMA/8000"}


def uac_scenario(
    steps: Sequence[str | float],
    *,
    codecs: Sequence[int] = (0, 8),
    pcaps: Sequence[Path] = (),
    hangup: bool = True,
) -> str:
    """A SIPp UAC scenario: INVITE, ACK, then steps (a key to press, or seconds to wait), BYE.

    Keys are taken in order from ``pcaps`` (see key_pcaps).
    """
    body: list[str] = []
    keys = iter(pcaps)
    for step in steps:
        if isinstance(step, str):
            body.append(
                f'  <nop><action><exec play_pcap_audio="{next(keys)}"/></action></nop>\n'
                '  <pause milliseconds="400"/>\n'
            )
        else:
            body.append(f'  <pause milliseconds="{int(step * 1000)}"/>\n')
    bye = (
        """
  <send retrans="500">
    <![CDATA[
      BYE sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:95598@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
"""
        if hangup
        else """
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="hotline caller">
{invite(codecs)}  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:95598@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
{"".join(body)}{bye}
</scenario>
"""


@dataclass
class SippRun:
    """The outcome of one SIPp run."""

    returncode: int
    stdout: str
    stderr: str
    errors: str


def run_sipp(
    scenario: str,
    target: tuple[str, int],
    folder: Path,
    *,
    calls: int = 1,
    rate: float = 10.0,
    timeout: float = 60.0,
    extra: Sequence[str] = (),
) -> SippRun:
    """Run SIPp with a scenario against the target; bounded in calls and time."""
    path = folder / "scenario.xml"
    path.write_text(scenario, encoding="ascii")
    errors = folder / "sipp_errors.log"
    cmd = [
        "sipp",
        "-sf",
        str(path),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        "0",
        "-m",
        str(calls),
        "-l",
        str(calls),
        "-r",
        str(rate),
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-trace_err",
        "-error_file",
        str(errors),
        *extra,
        f"{target[0]}:{target[1]}",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout + 30, cwd=folder, check=False
    )
    return SippRun(
        done.returncode,
        done.stdout,
        done.stderr,
        errors.read_text(errors="replace") if errors.exists() else "",
    )


OPTIONS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="options ping">
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:monitor@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: <sip:95598@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def cancel_scenario(codecs: Sequence[int] = (0,)) -> str:
    """INVITE, wait for 180, CANCEL: expect 200 to the CANCEL and 487 to the INVITE, ACK it."""
    full = uac_scenario([], codecs=codecs)
    head = full[: full.index('  <recv response="100"')]
    # The CANCEL, and the ACK of the 487, carry the INVITE's branch (RFC 3261 §9.1, §17.1.1.3).
    return (
        head
        + """  <recv response="100" optional="true"/>
  <recv response="180"/>
  <send>
    <![CDATA[
      CANCEL sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=@INVITE_BRANCH@
      From: "Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:95598@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv response="487"/>
  <send>
    <![CDATA[
      ACK sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=@INVITE_BRANCH@
      From: "Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:95598@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""
    ).replace("@INVITE_BRANCH@", branch("inv"))


# --------------------------------------------------------------------------------------------
# Scenario building blocks for the edge-case suite (test_sipp_*.py). Each returns XML for one
# scenario element; `scenario()` wraps them. Branches are named (`z9hG4bK-<pid>-<call>-<name>`)
# instead of SIPp's index-relative `[branch-N]`, so a retransmission or an ACK for a non-2xx
# can reuse its INVITE's branch however many elements lie between them.

CALLER_FROM = '"Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]'
HOTLINE_TO = "<sip:95598@[remote_ip]:[remote_port]>"
CODEC_NAMES = {0: "PCMU/8000", 8: "PCMA/8000", 18: "G729/8000"}


def branch(name: str) -> str:
    """A branch unique to this SIPp call and `name`; the same name gives the same branch."""
    return f"z9hG4bK-[pid]-[call_number]-{name}"


def sdp_offer(
    codecs: Sequence[int] = (0, 8),
    *,
    direction: str = "sendrecv",
    version: int = 1,
    telephone_event: bool = True,
) -> str:
    """An SDP offer body for a SIPp message (its media address is SIPp's)."""
    fmts = [str(c) for c in codecs] + (["101"] if telephone_event else [])
    lines = [
        "v=0",
        f"o=caller 53655765 {version} IN IP[local_ip_type] [local_ip]",
        "s=-",
        "c=IN IP[media_ip_type] [media_ip]",
        "t=0 0",
        f"m=audio [media_port] RTP/AVP {' '.join(fmts)}",
        *(f"a=rtpmap:{c} {CODEC_NAMES[c]}" for c in codecs),
        *(["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"] if telephone_event else []),
        f"a={direction}",
    ]
    return "\n".join(lines) + "\n"


def _send(lines: Sequence[str], body: str = "", *, retrans: bool = False) -> str:
    head = "\n".join(f"      {line}" for line in lines)
    attr = ' retrans="500"' if retrans else ""
    return f"""  <send{attr}>
    <![CDATA[
{head}
      Content-Length: [len]

{body}
    ]]>
  </send>
"""


def _request_line(method: str) -> str:
    return f"{method} sip:95598@[remote_ip]:[remote_port] SIP/2.0"


def invite(
    codecs: Sequence[int] = (0, 8),
    *,
    name: str = "inv",
    retrans: bool = True,
    telephone_event: bool = True,
) -> str:
    """The initial INVITE (CSeq 1, branch `name`); sent twice with one name it is a
    retransmission, byte for byte."""
    return _send(
        [
            _request_line("INVITE"),
            f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch(name)}",
            f"From: {CALLER_FROM}",
            f"To: {HOTLINE_TO}",
            "Call-ID: [call_id]",
            "CSeq: 1 INVITE",
            "Contact: <sip:13800138000@[local_ip]:[local_port]>",
            "Max-Forwards: 70",
            "Content-Type: application/sdp",
        ],
        sdp_offer(codecs, telephone_event=telephone_event),
        retrans=retrans,
    )


def in_dialog(
    method: str,
    cseq: int,
    *,
    name: str | None = None,
    headers: Sequence[str] = (),
    content_type: str | None = None,
    body: str = "",
    retrans: bool = True,
) -> str:
    """A request in the dialog (To carries the hotline's tag); branch `name` or `<method><cseq>`."""
    lines = [
        _request_line(method),
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];"
        f"branch={branch(name or f'{method.lower()}{cseq}')}",
        f"From: {CALLER_FROM}",
        f"To: {HOTLINE_TO}[peer_tag_param]",
        "Call-ID: [call_id]",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
        *headers,
    ]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    return _send(lines, body, retrans=retrans and method != "ACK")


def ack(cseq: int = 1, *, name: str | None = None) -> str:
    """ACK: for a 2xx a new transaction (its own branch); for a non-2xx pass the INVITE's
    branch `name` (RFC 3261 §17.1.1.3)."""
    return in_dialog("ACK", cseq, name=name or f"ack{cseq}")


def reinvite(cseq: int, direction: str = "sendrecv", *, version: int = 2) -> str:
    """A re-INVITE with SDP (a session refresh when the SDP is unchanged; hold with sendonly)."""
    return in_dialog(
        "INVITE",
        cseq,
        headers=[
            "Contact: <sip:13800138000@[local_ip]:[local_port]>",
            "Supported: timer",
            "Session-Expires: 1800;refresher=uac",
        ],
        content_type="application/sdp",
        body=sdp_offer(direction=direction, version=version),
    )


def info(cseq: int, content_type: str, body: str) -> str:
    """A SIP INFO, e.g. a DTMF key as application/dtmf-relay or application/dtmf."""
    return in_dialog(
        "INFO", cseq, content_type=content_type, body=body if body.endswith("\n") else body + "\n"
    )


def bye(cseq: int = 2) -> str:
    """The caller's BYE."""
    return in_dialog("BYE", cseq)


def recv(
    code: int | None = None,
    *,
    request: str | None = None,
    optional: bool = False,
    body_has: Sequence[str] = (),
    body_lacks: Sequence[str] = (),
    header_has: Sequence[tuple[str, str]] = (),
    timeout_ms: int | None = None,
    on_timeout: str | None = None,
    next_label: str | None = None,
) -> str:
    """Wait for a response `code` or a `request`; `body_has` regexps must match the body
    (`body_lacks` must not), `header_has` (header, regexp) pairs its headers, otherwise the call
    fails. With `timeout_ms` and `on_timeout`, jump to that label when nothing came."""
    what = f'response="{code}"' if code is not None else f'request="{request}"'
    attrs = what
    if optional:
        attrs += ' optional="true"'
    if timeout_ms is not None:
        attrs += f' timeout="{timeout_ms}"'
    if on_timeout is not None:
        attrs += f' ontimeout="{on_timeout}"'
    if next_label is not None:
        attrs += f' next="{next_label}"'
    ereg = '<ereg regexp="{rx}" {where} {check}="true" assign_to="dummy"/>'
    checks = [
        *(ereg.format(rx=rx, where='search_in="body"', check="check_it") for rx in body_has),
        *(
            ereg.format(rx=rx, where='search_in="body"', check="check_it_inverse")
            for rx in body_lacks
        ),
        *(
            ereg.format(rx=rx, where=f'search_in="hdr" header="{name}:"', check="check_it")
            for name, rx in header_has
        ),
    ]
    if not checks:
        return f"  <recv {attrs}/>\n"
    return f"  <recv {attrs}>\n    <action>{''.join(checks)}</action>\n  </recv>\n"


def ringing() -> str:
    """The provisional responses a call may get before its final one."""
    return recv(100, optional=True) + recv(180, optional=True) + recv(183, optional=True)


def press(pcap: Path, gap: float = 0.4) -> str:
    """Play one RFC 4733 key capture (see key_pcaps), then wait `gap` seconds."""
    return f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n' + pause(gap)


def pause(seconds: float) -> str:
    """Wait."""
    return f'  <pause milliseconds="{int(seconds * 1000)}"/>\n'


def label(name: str) -> str:
    """A jump target for `next=` and `on_timeout=` (not the last element: SIPp counts a jump
    to the very end as a failed call; end with `NOP`)."""
    return f'  <label id="{name}"/>\n'


NOP = "  <nop/>\n"
"""A step that does nothing (a target for a label at the end of a scenario)."""


REPLY_200 = """  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""
"""200 OK to the request just received."""


def answer_bye(timeout_ms: int | None = None) -> str:
    """Take the hotline's BYE and answer it 200."""
    return recv(request="BYE", timeout_ms=timeout_ms) + REPLY_200


def scenario(name: str, *parts: str) -> str:
    """A whole scenario from elements (see `recv` for the checks it can make)."""
    body = "".join(parts)
    # The checks assign `$dummy`, and SIPp refuses a scenario with a variable nothing reads
    # ("Variable $dummy is referenced 1 times!"): read it once at the end.
    used = 'assign_to="dummy"' in body
    tail = '  <nop><action><log message="[$dummy]"/></action></nop>\n' if used else ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
{body}{tail}</scenario>
"""


@dataclass
class Traced:
    """One SIP message in SIPp's `-trace_msg` file."""

    at: float
    """When SIPp sent or received it (epoch seconds)."""
    received: bool
    """Received by SIPp (from the hotline) rather than sent."""
    text: str
    """The message, from its first line."""

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    def header(self, name: str) -> str | None:
        """The first header `name` (case-insensitive), without its name."""
        for line in self.text.split("\n\n", 1)[0].splitlines()[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None

    def is_response(self, status: int, method: str | None = None) -> bool:
        """A response with this status (to `method`, by CSeq)."""
        if not self.first_line.startswith(f"SIP/2.0 {status} "):
            return False
        return method is None or (self.header("CSeq") or "").split()[-1:] == [method]

    def is_request(self, method: str) -> bool:
        return self.first_line.startswith(f"{method} ")


TRACE_SEPARATOR = "----------------------------------------------- "


def trace_args(folder: Path) -> list[str]:
    """SIPp arguments that log every message to `folder`/messages.log (see read_trace)."""
    return ["-trace_msg", "-message_file", str(folder / "messages.log")]


def read_trace(folder: Path) -> list[Traced]:
    """The messages SIPp logged with trace_args(folder), in order."""
    path = folder / "messages.log"
    if not path.exists():
        return []
    out = []
    for chunk in path.read_text(errors="replace").split(TRACE_SEPARATOR)[1:]:
        stamp_line, _, rest = chunk.partition("\n")
        what, _, message = rest.partition("\n")
        stamp = stamp_line.split()
        at = datetime.strptime(" ".join(stamp[:2]), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append(Traced(at, "received" in what, message.strip().replace("\r", "")))
    return out


def hotline_sent(trace: Sequence[Traced], predicate: Callable[[Traced], bool]) -> list[Traced]:
    """The messages SIPp received from the hotline that match."""
    return [m for m in trace if m.received and predicate(m)]


# --------------------------------------------------------------------------------------------
# The hotline under test: an in-process SipServer on 127.0.0.1, port 0.


def make_server(**overrides: Any) -> SipServer:
    """A SipServer with the shipped 95598 flow and prompts; settings overridden by keyword."""
    base = load_settings()
    settings = Settings(**{**base.model_dump(), "sip_port": 0, **overrides})
    return SipServer(
        settings,
        load_flow(settings.resolved_flow_file()),
        PromptLibrary(Catalog.shipped(), [shipped_dir()]),
        crm=NotConnectedCrm(),
        routing=NotConnectedRouting(),
    )


def fast_timers(server: SipServer, *, t1: float, t4: float = 5.0) -> None:
    """Give a started server's SIP core a short T1 (and T4) so 64*T1 fits a test.

    SipServer builds its SipCore inside `start()` with RFC 3261's default T1 = 0.5 s and takes
    no timer values (no setting, no core factory): this swaps in an identical core, built with
    the same arguments (read back from the old one) plus `t1`/`t4`, before any datagram has
    arrived. A test seam the server lacks; replace this with it once it exists.
    """
    old = server.core
    assert old.calls == 0, "swap the core before any traffic"
    assert old.transactions == 0, "swap the core before any traffic"
    server._core = SipCore(
        local_addr=old._local,
        user_agent=old._ua,
        t1=t1,
        t4=t4,
        session_expires=old._session_expires,
        min_se=old._min_se,
        ring_timeout=old._ring_timeout,
        registrar=old._registrar,
    )


@asynccontextmanager
async def serving(*, t1: float | None = None, **overrides: Any) -> AsyncIterator[SipServer]:
    """A started server (with `fast_timers` when `t1` is given), stopped afterwards."""
    server = make_server(**overrides)
    await server.start()
    if t1 is not None:
        fast_timers(server, t1=t1, t4=min(5.0, 10 * t1))
    try:
        yield server
    finally:
        await server.stop(0)


async def sipp(scenario: str, target: tuple[str, int], folder: Path, **kw: Any) -> SippRun:
    """`run_sipp` in a worker thread, so the server keeps running on the event loop."""
    return await asyncio.to_thread(run_sipp, scenario, target, folder, **kw)


async def wait_until(condition: Callable[[], bool], within: float) -> float:
    """Poll until `condition()` holds; the seconds it took. TimeoutError after `within`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (server state has no change notification)
            await asyncio.sleep(0.02)
    return loop.time() - start


# --------------------------------------------------------------------------------------------
# SIPp as the called side: an agent phone or a trunk (the customer) the hotline dials out to.
# A UAS scenario runs in the background on a port the test knows, one call, then SIPp exits.

G711A_PCAP = PCAP_DIR / "g711a.pcap"
"""7.08 s of PCMA (payload type 8) SIPp can play as a called party's audio."""

UAS_TAG = "[pid]SIPpTag01[call_number]"
"""The To-tag SIPp answers with (and its From-tag when it sends the BYE)."""

_UAS_HEADERS = f"""      [last_Via:]
      [last_From:]
      [last_To:];tag={UAS_TAG}
      [last_Call-ID:]
      [last_CSeq:]"""

_UAS_INVITE = """  <recv request="INVITE">
    <action>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="peer_contact"/>
      <ereg regexp="[^ ].*" search_in="hdr" header="From:" assign_to="peer_from"/>
      <ereg regexp="[^ ].*" search_in="hdr" header="To:" assign_to="own_to"/>
    </action>
  </recv>
"""


def _uas_response(status: str, *, sdp: bool = False) -> str:
    body = (
        """
      v=0
      o=callee 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=sendrecv
"""
        if sdp
        else ""
    )
    content = (
        "      Content-Type: application/sdp\n      Content-Length: [len]\n"
        if sdp
        else "      Content-Length: 0\n"
    )
    retrans = ' retrans="500"' if status.startswith("200") and sdp else ""
    return f"""  <send{retrans}>
    <![CDATA[
      SIP/2.0 {status}
{_UAS_HEADERS}
      Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>
{content}{body}
    ]]>
  </send>
"""


def uas_scenario(
    answer: str,
    *,
    hold: float | None = None,
    ring: float = 0.2,
    play: Path | None = G711A_PCAP,
) -> str:
    """SIPp called by the hotline: ``answer`` = ``"answer"`` (180, then 200 after ``ring``
    seconds; ``play`` a PCMA capture; then hang up with BYE after ``hold`` seconds, or wait for
    the hotline's BYE when ``hold`` is None), ``"busy"`` (486 Busy Here) or ``"no_answer"``
    (180, then wait for the CANCEL: 200 to it and 487 to the INVITE)."""
    parts = [_UAS_INVITE, _uas_response("100 Trying")]
    if answer == "busy":
        parts += [_uas_response("486 Busy Here"), recv(request="ACK")]
    elif answer == "no_answer":
        parts += [
            _uas_response("180 Ringing"),
            """  <recv request="CANCEL">
    <action>
      <ereg regexp="([0-9]+) CANCEL" search_in="hdr" header="CSeq:"
            assign_to="cancel_cseq,invite_cseq"/>
    </action>
  </recv>
""",
            REPLY_200,
            f"""  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag={UAS_TAG}
      [last_Call-ID:]
      CSeq: [$invite_cseq] INVITE
      Content-Length: 0

    ]]>
  </send>
""",
            recv(request="ACK"),
        ]
    elif answer == "answer":
        parts += [_uas_response("180 Ringing"), pause(ring), _uas_response("200 OK", sdp=True)]
        parts.append(recv(request="ACK", optional=False))
        if play is not None:
            parts.append(f'  <nop><action><exec play_pcap_audio="{play}"/></action></nop>\n')
        if hold is None:
            parts.append(answer_bye())
        else:
            parts += [
                pause(hold),
                f"""  <send retrans="500">
    <![CDATA[
      BYE [$peer_contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$own_to];tag={UAS_TAG}
      To: [$peer_from]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
""",
                recv(200),
            ]
    else:
        raise ValueError(f"unknown answer {answer!r}")
    used = "peer_contact peer_from own_to" + (" cancel_cseq" if answer == "no_answer" else "")
    tail = "".join(f"[${name}]" for name in used.split())
    parts.append(f'  <nop><action><log message="{tail}"/></action></nop>\n')
    return scenario(f"hotline dials out ({answer})", *parts)


def _write_scenario(scenario_xml: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scenario.xml"
    path.write_text(scenario_xml, encoding="ascii")
    return path


def free_udp_port() -> int:
    """An even UDP port free on loopback, with the next three free too (SIPp's media port is
    RTP, +1 RTCP, +2 video RTP)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port % 2 or port > 65000:
            continue
        try:
            for p in (port, port + 1, port + 2, port + 3):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as check:
                    check.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free UDP port")


@dataclass
class SippPeer:
    """A SIPp UAS running in the background (see `sipp_uas`)."""

    address: tuple[str, int]
    """Where it takes SIP."""
    folder: Path
    """Its scenario, error log and message trace."""
    process: asyncio.subprocess.Process

    async def finished(self, within: float = 30.0) -> SippRun:
        """Wait for SIPp to end (after its one call); its exit code and output."""
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), within)
        errors = self.folder / "sipp_errors.log"
        return SippRun(
            self.process.returncode if self.process.returncode is not None else -1,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
            errors.read_text(errors="replace") if errors.exists() else "",
        )

    def trace(self) -> list[Traced]:
        """The messages it sent and received so far."""
        return read_trace(self.folder)


@asynccontextmanager
async def sipp_uas(
    scenario_xml: str, folder: Path, *, limit: float = 60.0, extra: Sequence[str] = ()
) -> AsyncIterator[SippPeer]:
    """SIPp answering one call with ``scenario_xml`` on a free loopback port (its own media port
    too); ready when this yields, killed on exit if it is still running. SIPp gives up its call
    after ``limit`` seconds."""
    path = _write_scenario(scenario_xml, folder)
    port, media_port = free_udp_port(), free_udp_port()
    process = await asyncio.create_subprocess_exec(
        "sipp",
        "-sf",
        str(path),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(port),
        "-mp",
        str(media_port),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        f"{int(limit)}s",
        "-trace_err",
        "-error_file",
        str(folder / "sipp_errors.log"),
        *trace_args(folder),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=folder,
    )
    peer = SippPeer(("127.0.0.1", port), folder, process)
    try:
        # Ready once SIPp holds its SIP port: binding it ourselves then fails.
        async with asyncio.timeout(10.0):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"SIPp exited at once: {await peer.finished()}")
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    try:
                        probe.bind(peer.address)
                    except OSError:
                        break
                await asyncio.sleep(0.02)
        yield peer
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def write_rtp_pcap(path: Path, pcm: bytes) -> None:
    """A libpcap file of PCMU RTP packets, 20 ms apart, carrying ``pcm`` (8 kHz 16-bit)."""
    codec = PcmuCodec()
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    frame = 320
    for i in range(0, len(pcm) - frame + 1, frame):
        payload = codec.encode(pcm[i : i + frame])
        rtp = struct.pack("!BBHII", 0x80, 0, i // frame, (i // frame) * 160, 0x1234) + payload
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        ip = (
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                0,
                0,
                64,
                17,
                0,
                bytes([127, 0, 0, 1]),
                bytes([127, 0, 0, 1]),
            )
            + udp
        )
        eth = b"\x00" * 12 + b"\x08\x00" + ip
        t = (i // frame) * 0.020
        out += struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(eth), len(eth)) + eth
    path.write_bytes(bytes(out))
