"""SIP wire helpers for the UAS core: response building, Via routing, header reading, INFO DTMF.

Parsing and serialization are aiosipua's (`SipMessage.parse`, `bytes(msg)`); this module holds
the RFC 3261 rules about *which* headers go where, so `uas.py` can stay about state.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import unquote

from aiosipua import (
    SipMessage,
    SipRequest,
    SipResponse,
    Via,
    parse_address,
    parse_uri,
    parse_via,
    stringify_uri,
)
from aiosipua.headers import stringify_via

Addr = tuple[str, int]

Headers = Iterable[tuple[str, str]]
"""Extra (name, value) header pairs for a message we build."""

MAX_DATAGRAM = 64 * 1024
"""Larger datagrams are dropped unread: UDP SIP never needs them (RFC 3261 §18.1.1)."""

MAGIC_COOKIE = "z9hG4bK"
"""Branch prefix of RFC 3261 transactions (§8.1.1.7); without it, RFC 2543 matching applies."""

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "INFO", "PRACK")
"""Methods the UAS core handles itself (the Allow header; REGISTER is added with a registrar)."""

ACCEPTED_BODIES = ("application/sdp", "application/dtmf-relay", "application/dtmf")
"""Body types we understand (the Accept header, RFC 3261 §20.1)."""

SUPPORTED_EXTENSIONS = frozenset({"timer"})
"""Option tags we implement: only session timers (RFC 4028). No 100rel (RFC 3262)."""

DTMF_DIGITS = "0123456789*#ABCD"

# RFC 4733 §3.2 event codes, which some gateways put in Signal= instead of the character.
_EVENT_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}

REQUIRED_HEADERS = ("via", "from", "to", "call-id", "cseq")
"""Mandatory request headers (RFC 3261 §8.1.1); Max-Forwards is left out on purpose, UAs omit it."""


_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE | re.M)


def frame(data: bytes) -> tuple[bytes, bool]:
    """The datagram cut to its Content-Length, and whether its body is shorter than declared.

    RFC 3261 §18.3: bytes past Content-Length are discarded; a body shorter than declared is an
    error (400 for a request, drop a response). Done before aiosipua parses, so its parser has
    nothing to log: a peer must not be able to write unlimited log lines (Malformed events are
    rate-limited upstream instead). A lying Content-Length is replaced by the real one.
    """
    for separator in (b"\r\n\r\n", b"\n\n"):  # the same split as aiosipua's parser
        head, found, body = data.partition(separator)
        if found:
            break
    else:
        head, separator, body = data, b"", b""  # all headers (a cut datagram): no body
    match = _CONTENT_LENGTH.search(head)
    value = match.group(1).strip() if match else b""
    if match is None or not value.isdigit():
        return data, False  # absent (allowed on UDP) or garbage (the core answers 400)
    declared = int(value)
    if declared <= len(body):
        return head + separator + body[:declared], False
    head = head[: match.start(1)] + str(len(body)).encode() + head[match.end(1) :]
    return head + separator + body, True


def cseq_of(message: SipMessage) -> tuple[int, str] | None:
    """CSeq number and method, or ``None`` unless it is ``<0..2**31-1> <method>`` (§8.1.1.5)."""
    parts = (message.headers.get_first("cseq") or "").split()
    if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()):
        return None
    seq = int(parts[0])
    return (seq, parts[1]) if seq < 2**31 else None


def request_problem(
    request: SipRequest, data: bytes, *, short_body: bool
) -> tuple[int, str] | None:
    """Why a request cannot be handled (status to answer, reason), or ``None`` if it can.

    Mandatory headers (§8.1.1), SIP/2.0 (§8.2.2 → 505), a CSeq whose method is the request's,
    a numeric Content-Length that the datagram holds (§18.3; ``short_body`` from `frame`).
    """
    missing = [name for name in REQUIRED_HEADERS if not request.headers.get(name)]
    if missing:
        return 400, f"missing {', '.join(missing)}"
    version = data.split(b"\n", 1)[0].split()
    if len(version) != 3 or version[2].upper() != b"SIP/2.0":
        return 505, "unsupported SIP version"
    cseq = cseq_of(request)
    if cseq is None or cseq[1] != request.method:
        return 400, "bad CSeq"
    length = (request.headers.get_first("content-length") or "0").strip()
    if short_body or not (length.isascii() and length.isdigit()):
        return 400, "bad Content-Length"
    return None


def printable(text: str, limit: int = 60) -> str:
    """Peer text for a Malformed reason: escaped to ASCII and cut short (it ends in a log)."""
    return ascii(text)[1:-1][:limit]


def next_hop(
    remote_target: str, route_set: list[str], fallback: Addr
) -> tuple[str, list[str], Addr]:
    """Request-URI, Route headers and destination of an in-dialog request (§12.2.1.1).

    The destination is the first route, or the remote target without routes, when its host is
    an IP literal; for a host name (no DNS here) it is ``fallback``, where the INVITE came from.
    """
    if not route_set:
        return remote_target, [], uri_hostport(remote_target) or fallback
    first = parse_address(route_set[0]).uri
    hop = uri_hostport(stringify_uri(first)) or fallback
    if "lr" in first.params:
        return remote_target, list(route_set), hop
    # A strict router (RFC 2543): it becomes the Request-URI, the target the last route.
    return stringify_uri(first), [*route_set[1:], f"<{remote_target}>"], hop


def media_type(content_type: str | None) -> str:
    """``"Application/SDP; charset=x"`` → ``"application/sdp"``; ``""`` when absent."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def header_tokens(values: list[str]) -> list[str]:
    """Lower-cased option tags or method names of list headers (Supported, Require, Allow)."""
    tokens: list[str] = []
    for value in values:
        tokens.extend(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def bare_host(host: str) -> str:
    """Host without IPv6 brackets, lower-cased."""
    return host.strip().strip("[]").lower()


def is_ip_literal(host: str) -> bool:
    """Whether a host is an IPv4/IPv6 literal (we cannot resolve names: no I/O here)."""
    try:
        ipaddress.ip_address(bare_host(host))
    except ValueError:
        return False
    return True


def stamp_via(raw_via: str, source: Addr) -> str:
    """The top Via of a response: ``received``/``rport`` filled from where the request came from.

    RFC 3261 §18.2.1: add ``received`` when the sent-by host is not the source IP.
    RFC 3581 §4: when the request asked for ``rport``, fill it with the source port and always
    add ``received``.
    """
    via = parse_via(raw_via)
    ip, port = source
    if "rport" in via.params:
        via.params["received"] = ip
        via.params["rport"] = str(port)
    elif bare_host(via.host) != bare_host(ip):
        via.params["received"] = ip
    return stringify_via(via)


def response_addr(via: Via, source: Addr) -> Addr:
    """Where to send a response over UDP (RFC 3261 §18.2.2, RFC 3581 §4).

    The IP is always the source IP: it equals the sent-by host, or we add it as ``received``.
    The port is the source port when ``rport`` was asked for, else the sent-by port (5060);
    an impossible sent-by port falls back to the source port rather than to a failed send.
    """
    ip, port = source
    if "rport" in via.params or not 0 < (via.port or 5060) < 65536:
        return (ip, port)
    return (ip, via.port or 5060)


def tag_of(raw_address: str | None) -> str | None:
    """The ``tag`` parameter of a From/To header value."""
    if not raw_address:
        return None
    return parse_address(raw_address).tag


def uri_user(raw: str) -> str:
    """User part of a URI or a From/To header value; ``tel:`` URIs give their number."""
    text = raw.strip()
    if "<" in text and ">" in text:
        text = text[text.find("<") + 1 : text.find(">")]
    if text.lower().startswith("tel:"):
        return unquote(text[4:].split(";", 1)[0].strip())
    return unquote(parse_uri(text).user or "")


def uri_hostport(raw_uri: str) -> Addr | None:
    """(host, port) of a SIP URI when its host is an IP literal, else ``None``."""
    uri = parse_uri(raw_uri.strip().strip("<>"))
    port = uri.port or 5060
    if not is_ip_literal(uri.host) or not 0 < port < 65536:  # no sendto to a port that cannot be
        return None
    return (bare_host(uri.host), port)


def display_name(raw_address: str | None) -> str:
    """The display name of a From header, ``""`` if there is none."""
    if not raw_address:
        return ""
    return parse_address(raw_address).display_name or ""


def with_tag(raw_to: str, tag: str | None) -> str:
    """The To header value with our tag appended, unless it already has one (§8.2.6.2)."""
    if tag is None or tag_of(raw_to) is not None:
        return raw_to
    return f"{raw_to};tag={tag}"


def build_response(
    request: SipRequest,
    status: int,
    reason: str,
    *,
    source: Addr,
    to_tag: str | None,
    server: str,
) -> SipResponse:
    """A response with the headers RFC 3261 §8.2.6.2 copies from the request.

    Vias in order with the top one stamped (``received``/``rport``), From, To (with our tag),
    Call-ID and CSeq, plus a Server header. Callers add Contact, bodies and the rest.
    """
    response = SipResponse(status_code=status, reason_phrase=reason)
    vias = request.headers.get("via")
    for index, raw in enumerate(vias):
        response.headers.append("Via", stamp_via(raw, source) if index == 0 else raw)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get_first(name)
        if value is None:
            continue
        if name == "To":
            value = with_tag(value, to_tag)
        response.headers.set_single(name, value)
    if status == 100:
        # §8.2.6.1: a 100 Trying echoes the Timestamp so the UAC can measure the RTT.
        timestamp = request.headers.get_first("timestamp")
        if timestamp is not None:
            response.headers.set_single("Timestamp", timestamp)
    response.headers.set_single("Server", server)
    return response


def via_for(local: Addr, branch: str) -> str:
    """Our Via for a request we send, asking for ``rport`` (RFC 3581 §3)."""
    return f"SIP/2.0/UDP {hostport(local)};branch={branch};rport"


def hostport(addr: Addr) -> str:
    """``host:port``, IPv6 literals bracketed (RFC 3261 §19.1.1)."""
    host, port = addr
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def contact_for(local: Addr) -> str:
    """Our Contact header value."""
    return f"<sip:{hostport(local)}>"


def dtmf_digit(content_type: str | None, body: bytes) -> str | None:
    """The key of an INFO DTMF body, or ``None`` if it is not one we understand.

    ``application/dtmf-relay`` carries ``Signal=5`` (and ``Duration=160``) lines;
    ``application/dtmf`` carries the key alone. Some gateways send RFC 4733 event codes (10 = *,
    11 = #) instead of the character; flash (16) and unknown signals are not keys.
    """
    kind = media_type(content_type)
    text = body.decode("ascii", errors="replace").strip()
    if kind == "application/dtmf-relay":
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().lower() == "signal":
                return _digit(value.strip())
        return None
    if kind == "application/dtmf":
        return _digit(text)
    return None


def _digit(value: str) -> str | None:
    value = value.upper()
    if len(value) == 1 and value in DTMF_DIGITS:
        return value
    return _EVENT_CODES.get(value)
