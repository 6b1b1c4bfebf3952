"""A minimal blocking SIP peer over real UDP sockets, for tests against a `hotline serve` process:
out-of-dialog requests (OPTIONS, REGISTER) and one call (INVITE with SDP, ACK, BYE) with its own
RTP socket, so a test can hold a call up, learn the hotline's media port and check it hears audio.

Deliberately plain (no transaction layer): each request is sent once and answers are read until
the final one; loopback loses nothing.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"


def bound_udp(host: str = HOST) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


@dataclass
class Reply:
    """One SIP response as text, with its status and headers (lower-case names)."""

    raw: str

    @property
    def status(self) -> int:
        return int(self.raw.split(" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.raw.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self) -> str:
        return self.raw.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in self.raw else ""


@dataclass
class UdpPeer:
    """A SIP user agent on one UDP socket, talking to the hotline at ``target``."""

    target: tuple[str, int]
    host: str = HOST
    """The loopback address this peer sends from (127.0.0.x: another source to the hotline)."""
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = bound_udp(self.host)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def request(
        self,
        method: str,
        *,
        user: str = "95598",
        headers: tuple[str, ...] = (),
        body: str = "",
        call_id: str | None = None,
        cseq: int = 1,
        from_tag: str | None = None,
        to_tag: str | None = None,
        from_user: str = "13800138000",
    ) -> bytes:
        branch = "z9hG4bK" + secrets.token_hex(6)
        to = f"<sip:{user}@{self.target[0]}:{self.target[1]}>"
        lines = [
            f"{method} sip:{user}@{self.target[0]}:{self.target[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{from_user}@{self.host}:{self.port}>"
            f";tag={from_tag or secrets.token_hex(4)}",
            f"To: {to}" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id or secrets.token_hex(8)}@{self.host}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{from_user}@{self.host}:{self.port}>",
            *headers,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def final(self, data: bytes, timeout: float = 5.0) -> Reply:
        """Send ``data`` and return the first final (>= 200) response to it (by CSeq)."""
        self.send(data)
        cseq = re.search(rb"\r\nCSeq: *([^\r]+)\r\n", data)
        return self.read_final(timeout, cseq.group(1).decode() if cseq else None)

    def read_final(self, timeout: float = 5.0, cseq: str | None = None) -> Reply:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                raw, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            text = raw.decode("utf-8", "replace")
            if text.startswith("SIP/2.0 ") and int(text.split(" ", 2)[1]) >= 200:
                reply = Reply(text)
                if cseq is None or reply.header("cseq") == cseq:
                    return reply
        raise AssertionError(f"no final response within {timeout}s")

    def options(self, timeout: float = 5.0) -> Reply:
        return self.final(self.request("OPTIONS"), timeout)


def sdp_offer(rtp_port: int) -> str:
    return (
        "v=0\r\n"
        f"o=peer 1 1 IN IP4 {HOST}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {HOST}\r\n"
        "t=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=sendrecv\r\n"
    )


@dataclass
class Call:
    """One call placed by a :class:`UdpPeer`: its dialog identifiers and RTP socket."""

    peer: UdpPeer
    call_id: str
    from_tag: str
    to_tag: str
    rtp: socket.socket
    remote_rtp: tuple[str, int]
    """Where the hotline receives this call's RTP (from its SDP answer)."""
    cseq: int = 1

    def ack(self) -> None:
        self.peer.send(
            self.peer.request(
                "ACK",
                call_id=self.call_id,
                from_tag=self.from_tag,
                to_tag=self.to_tag,
                cseq=self.cseq,
            )
        )

    def bye(self) -> Reply:
        self.cseq += 1
        return self.peer.final(
            self.peer.request(
                "BYE",
                call_id=self.call_id,
                from_tag=self.from_tag,
                to_tag=self.to_tag,
                cseq=self.cseq,
            )
        )

    def close(self) -> None:
        self.rtp.close()


def place_call(peer: UdpPeer, timeout: float = 5.0) -> Call | Reply:
    """INVITE the hotline; the answered, acknowledged :class:`Call`, or the refusal."""
    rtp = bound_udp()
    call_id, from_tag = secrets.token_hex(8), secrets.token_hex(4)
    invite = peer.request(
        "INVITE", body=sdp_offer(int(rtp.getsockname()[1])), call_id=call_id, from_tag=from_tag
    )
    reply = peer.final(invite, timeout)
    if reply.status != 200:
        rtp.close()
        return reply
    to_tag = re.search(r";tag=([^;>\s]+)", reply.header("to") or "")
    port = re.search(r"^m=audio (\d+) ", reply.body, re.MULTILINE)
    assert to_tag is not None, reply.raw
    assert port is not None, reply.raw
    call = Call(peer, call_id, from_tag, to_tag.group(1), rtp, (HOST, int(port.group(1))))
    call.ack()
    return call
