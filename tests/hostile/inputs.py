"""Hostile inputs for the fuzz tests and `bench/fuzz.py`: captured or well-formed seeds of every
protocol the node reads (SIP, SDP, RTP, RFC 4733, Twilio Media Stream frames, HTTP requests),
mutated by a seeded `random.Random` so any failing input can be made again from its seed.

Mutations are the ones that find parser bugs: bytes flipped, inserted, deleted, repeated and
cut; for the text protocols whole lines dropped, doubled, swapped and their values replaced by
hostile tokens (huge and negative numbers, NULs, bare CRs, non-UTF-8, separators); for RTP the
header's bit fields set at random (padding, extension, CSRC count that lie about the length);
for JSON frames values of the wrong type, missing keys and bad base64.
"""

from __future__ import annotations

import base64
import json
import random
import struct
from collections.abc import Callable
from pathlib import Path

from aiortp.dtmf import DtmfEvent
from aiortp.packet import RtpPacket

SIP_DATA = Path(__file__).resolve().parents[1] / "ivr" / "sip" / "data"
TWILIO_DATA = Path(__file__).resolve().parents[1] / "ivr" / "twilio" / "data"

TOKENS: tuple[bytes, ...] = (
    b"",
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"=",
    b'"',
    b"\\",
    b"%00",
    b"%",
    b"@",
    b"0",
    b"-1",
    b"65536",
    b"4294967296",
    b"99999999999999999999999999",
    b"1e308",
    b"NaN",
    b"sip:",
    b"sips:",
    b"tel:",
    b"[::1",
    b"SIP/2.0",
    b"SIP/3.0",
    b"z9hG4bK",
    b";tag=",
    b";branch=",
    b";rport",
    b";expires=",
    b"Content-Length: 999999",
    b"Content-Length: -5",
    b"m=audio 0 RTP/AVP",
    b"a=rtpmap:101 telephone-event/8000",
    b"c=IN IP6 ::",
    b"\xff\xfe",
    b"\xc3\x28",
    "电力".encode(),
    b"A" * 300,
    b"9" * 40,
)


def seeded(seed: int) -> random.Random:
    """The generator of one input: the same seed, the same bytes."""
    return random.Random(seed)  # noqa: S311 — reproducible test inputs, not secrets


def _tokens(rng: random.Random) -> bytes:
    return rng.choice(TOKENS)


def _crlf(text: bytes) -> bytes:
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sip_seeds() -> list[bytes]:
    """Captured and hand-made SIP messages (tests/ivr/sip/data) plus the dialog's other
    requests and responses made from them, CRLF line ends, the body length right."""
    seeds = [_crlf(p.read_bytes()) for p in sorted(SIP_DATA.glob("*.sip"))]
    invite = _crlf((SIP_DATA / "sipp_invite.sip").read_bytes())
    head = invite.split(b"\r\n\r\n", 1)[0]
    for method in (b"ACK", b"BYE", b"CANCEL", b"INFO", b"UPDATE", b"NOTIFY", b"PRACK", b"REFER"):
        request = head.replace(b"INVITE", method).replace(b"Content-Type: application/sdp\r\n", b"")
        request = request.split(b"Content-Length")[0] + b"Content-Length: 0\r\n\r\n"
        seeds.append(request)
    seeds.append(
        b"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreg;rport\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=r1\r\nTo: <sip:1001@127.0.0.1>\r\n"
        b"Call-ID: reg@127.0.0.1\r\nCSeq: 2 REGISTER\r\nContact: <sip:1001@127.0.0.1:5070>;"
        b"expires=600\r\nExpires: 600\r\n"
        b'Authorization: Digest username="1001", realm="hotline", nonce="abc", '
        b'uri="sip:127.0.0.1", response="0123456789abcdef0123456789abcdef", algorithm=MD5, '
        b'qop=auth, nc=00000001, cnonce="xyz"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    seeds.append(
        b"INFO sip:95598@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKi\r\n"
        b"From: <sip:1@127.0.0.1>;tag=a\r\nTo: <sip:95598@127.0.0.1>;tag=b\r\nCall-ID: x\r\n"
        b"CSeq: 3 INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\n"
        b"Signal=5\r\nDuration=160\r\n"
    )
    seeds.append(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKresp\r\n"
        b"From: <sip:95598@127.0.0.1>;tag=a\r\nTo: <sip:1001@127.0.0.1>;tag=b\r\n"
        b"Call-ID: leg@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:1001@127.0.0.1:5070>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    return seeds


def sdp_seeds() -> list[bytes]:
    """The SDP bodies of the captured INVITEs."""
    bodies = [seed.split(b"\r\n\r\n", 1)[1] for seed in sip_seeds() if b"v=0" in seed]
    return [b for b in bodies if b]


def rtp_seeds() -> list[bytes]:
    """PCMU and PCMA audio, RFC 4733 key packets (progress and end), comfort noise, RTCP."""
    seeds = [
        bytes(RtpPacket(pt, 0, 1000 + i, 160 * i, 0x1234, bytes([0xFF - i]) * 160).serialize())
        for i, pt in enumerate((0, 8))
    ]
    for event, end in ((5, False), (11, True), (16, False), (40, True)):
        payload = DtmfEvent(event=event, end=end, volume=10, duration=480).serialize()
        seeds.append(bytes(RtpPacket(101, 1, 2000, 3200, 0x1234, payload).serialize()))
    seeds.append(bytes(RtpPacket(13, 0, 3000, 6400, 0x1234, b"\x40").serialize()))
    seeds.append(struct.pack("!BBHI", 0x80, 201, 1, 0x1234))
    return seeds


def twilio_seeds() -> list[bytes]:
    """Media Stream frames Twilio sends (tests/ivr/twilio/data), as text."""
    names = ("connected", "start", "media_inbound", "dtmf", "mark", "stop")
    return [json.dumps(json.loads((TWILIO_DATA / f"{n}.json").read_text())).encode() for n in names]


def http_seeds(token: str = "") -> list[bytes]:
    """Requests to the web app: health, metrics, the agents API, the desk login, Twilio."""
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    login = b'{"skills": {"fault_repair": 5}, "ready": true, "contact": "sip:1001@127.0.0.1"}'
    form = b"CallSid=CA0123&From=%2B8613800138000&To=95598&AccountSid=AC0"
    return [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/openmetrics-text\r\n"
        b"Connection: close\r\n\r\n",
        b"GET /api/stats/intervals?since=0&interval=900&sl=20,30&short_abandon=5 HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /api/tickets?status=submitted&limit=50 HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
        b"POST /api/agents/A1/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + auth
        + b"Content-Type: application/json\r\nContent-Length: "
        + str(len(login)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + login,
        b"POST /api/session/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 41\r\nConnection: close\r\n\r\n{"username": "a", "password": "12345678"}',
        b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: AAAA\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
        + str(len(form)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + form,
        b"GET /twilio/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"PUT /api/queues/fault_repair HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Type: application/json\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
        b'{"max_wait": "soon"}',
    ]


# ---------------------------------------------------------------------- mutations


def _flip(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _insert(data: bytearray, rng: random.Random) -> None:
    at = rng.randint(0, len(data))
    data[at:at] = _tokens(rng) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 16))


def _delete(data: bytearray, rng: random.Random) -> None:
    if data:
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 32)]


def _repeat(data: bytearray, rng: random.Random) -> None:
    if data:
        at = rng.randrange(len(data))
        piece = data[at : at + rng.randint(1, 64)]
        data[at:at] = piece * rng.randint(1, 20)


def _truncate(data: bytearray, rng: random.Random) -> None:
    if data:
        del data[rng.randrange(len(data)) :]


def _lines(data: bytearray, rng: random.Random) -> None:
    lines = bytes(data).split(b"\r\n")
    if len(lines) < 2:
        return
    i = rng.randrange(len(lines))
    match rng.randrange(6):
        case 0:
            del lines[i]
        case 1:
            lines.insert(i, lines[i])
        case 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        case 3:  # the value of a header (or an SDP line) replaced by a hostile token
            name, sep, _ = lines[i].partition(b":" if b":" in lines[i] else b"=")
            lines[i] = name + sep + b" " + _tokens(rng)
        case 4:  # a header repeated many times
            lines[i:i] = [lines[i]] * rng.randint(2, 60)
        case _:  # a parameter appended
            lines[i] += _tokens(rng) + _tokens(rng)
    data[:] = b"\r\n".join(lines)


BYTE_MUTATIONS: tuple[Callable[[bytearray, random.Random], None], ...] = (
    _flip,
    _insert,
    _delete,
    _repeat,
    _truncate,
)


def mutate(seed: bytes, rng: random.Random, *, text: bool = True, rounds: int = 3) -> bytes:
    """``seed`` changed 1..``rounds`` times; line mutations too for text protocols."""
    data = bytearray(seed)
    mutations = (*BYTE_MUTATIONS, _lines, _lines) if text else BYTE_MUTATIONS
    for _ in range(rng.randint(1, rounds)):
        rng.choice(mutations)(data, rng)
    return bytes(data[:65535])


def rtp_packet(rng: random.Random) -> bytes:
    """An RTP-looking datagram whose header fields are random (lengths that lie included)."""
    first = 0x80 | rng.getrandbits(6)  # version 2, random padding/extension/CSRC count
    second = rng.getrandbits(8)
    header = struct.pack("!BBHII", first, second, rng.getrandbits(16), rng.getrandbits(32), 7)
    body = rng.randbytes(rng.choice((0, 1, 3, 4, 8, 12, 160, 400)))
    return header + body


def json_frame(seed: bytes, rng: random.Random) -> bytes:
    """A Twilio frame with one value replaced by the wrong type, a key dropped, bad base64."""
    data = json.loads(seed)
    paths: list[tuple[dict[str, object], str]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append((node, key))
                walk(value)

    walk(data)
    if not paths:
        return seed
    node, key = rng.choice(paths)
    weird: list[object] = [
        None, True, 0, -1, 2**70, 1.5, "", "x" * 5000, [], {}, [[[]]], {"a": {"b": None}},
        "%%%%", base64.b64encode(rng.randbytes(rng.randint(0, 400))).decode()[:-1], "电",
    ]  # fmt: skip
    if rng.random() < 0.3:
        del node[key]
    else:
        node[key] = rng.choice(weird)
    return json.dumps(data).encode()


def hostile(kind: str, seeds: list[bytes], rng: random.Random) -> bytes:
    """One hostile input of ``kind`` (sip, sdp, rtp, twilio, http): mostly a mutated seed,
    sometimes a structured oddity, sometimes plain random bytes."""
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randint(0, 1500))
    if kind == "rtp" and roll < 0.35:
        return rtp_packet(rng)
    if kind == "twilio" and roll < 0.5:
        return json_frame(rng.choice(seeds), rng)
    return mutate(rng.choice(seeds), rng, text=kind != "rtp")
