"""Drive SIPp (Debian `sip-tester`) against the hotline: scenarios, DTMF pcaps, runs.

SIPp replays `/usr/share/sip-tester/dtmf_2833_<key>.pcap` for RFC 4733 keys. Every one of those
captures uses the same RTP timestamp, and per RFC 4733 §2.5.1.3 packets with one timestamp are one
event, so each key we send is re-stamped into a copy with its own timestamp.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    fmts = " ".join(str(c) for c in codecs) + " 101"
    rtpmaps = "".join(f"a=rtpmap:{c} {SDP_CODECS[c]}\n" for c in codecs)
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
  <send retrans="500">
    <![CDATA[
      INVITE sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:13800138000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:95598@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:13800138000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP {fmts}
{rtpmaps}      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
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
    return (
        head
        + """  <recv response="100" optional="true"/>
  <recv response="180"/>
  <send>
    <![CDATA[
      CANCEL sip:95598@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
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
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-6]
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
    )
