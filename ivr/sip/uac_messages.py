"""Wire rules of the agent-leg UAC: how its INVITE, ACKs, CANCEL and in-dialog requests are built.

Pure functions over aiosipua messages, so `ivr.sip.uac` can stay about state. Each cites the
RFC 3261 section that says which header comes from where; getting the ACK for a 2xx wrong (a
made-up To-tag) is what dropped pyVoIP's agent legs after 32 s (docs/decisions/0004).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiosipua import SipRequest, SipResponse, stringify_uri

from ivr.sip.events import Addr
from ivr.sip.messages import Headers, cseq_of, hostport, next_hop

MAX_FORWARDS = "70"
"""RFC 3261 §8.1.1.6: the recommended initial value."""

CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization")
"""Headers that carry digest credentials (RFC 3261 §22)."""


@dataclass
class Dialog:
    """The far side of a dialog a 2xx created (RFC 3261 §12.1.2), as the UAC sees it."""

    remote_tag: str
    """The To-tag of the 2xx: the dialog's remote tag, never made up."""
    remote_header: str
    """The To header of the 2xx (with its tag): the To of every request in the dialog."""
    remote_target: str
    """The Contact URI of the 2xx (later of re-INVITEs): the Request-URI of in-dialog requests."""
    route_set: list[str]
    """The 2xx's Record-Route in reverse order (§12.1.2); Route headers of in-dialog requests."""


def build_request(
    method: str,
    uri: str,
    *,
    via: str,
    routes: Iterable[str],
    from_header: str,
    to_header: str,
    call_id: str,
    cseq: int,
    user_agent: str,
    headers: Headers = (),
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> SipRequest:
    """A request with the mandatory headers of §8.1.1 in the usual order, extras after them."""
    request = SipRequest(method=method, uri=uri)
    request.headers.append("Via", via)
    request.headers.append("Max-Forwards", MAX_FORWARDS)
    for route in routes:
        request.headers.append("Route", route)
    request.headers.append("From", from_header)
    request.headers.append("To", to_header)
    request.headers.append("Call-ID", call_id)
    request.headers.append("CSeq", f"{cseq} {method}")
    for name, value in headers:
        request.headers.append(name, value)
    request.headers.append("User-Agent", user_agent)
    if body:
        request.headers.set_single("Content-Type", content_type)
        request.body = body
    return request


def credentials_of(request: SipRequest) -> list[tuple[str, str]]:
    """The digest credentials a request carries, to repeat them where the RFC says so."""
    return [(name, value) for name in CREDENTIAL_HEADERS for value in request.headers.get(name)]


def dialog_from_2xx(response: SipResponse, remote_tag: str, fallback_target: str) -> Dialog:
    """The dialog a 2xx to our INVITE creates (§12.1.2).

    Route set: Record-Route reversed. Remote target: the Contact URI (a 2xx without Contact is
    broken; the INVITE's Request-URI is the best guess left).
    """
    contacts = response.contact
    target = stringify_uri(contacts[0].uri) if contacts else fallback_target
    return Dialog(
        remote_tag=remote_tag,
        remote_header=response.headers.get_first("to") or "",
        remote_target=target,
        route_set=list(reversed(response.headers.get("record-route"))),
    )


def in_dialog(
    dialog: Dialog,
    method: str,
    *,
    via: str,
    from_header: str,
    call_id: str,
    cseq: int,
    user_agent: str,
    fallback: Addr,
    headers: Headers = (),
) -> tuple[SipRequest, Addr]:
    """A request inside a dialog and where it goes (§12.2.1.1): BYE, or the ACK of a 2xx.

    Request-URI = remote target, Route = route set (loose routing; a strict router becomes the
    Request-URI), From = ours with our tag, To = the 2xx's To with the remote tag. The next hop
    is the first route, or the remote target; ``fallback`` (where the INVITE went) when that
    host is a name we cannot resolve here.
    """
    uri, routes, hop = next_hop(dialog.remote_target, dialog.route_set, fallback)
    request = build_request(
        method,
        uri,
        via=via,
        routes=routes,
        from_header=from_header,
        to_header=dialog.remote_header,
        call_id=call_id,
        cseq=cseq,
        user_agent=user_agent,
        headers=headers,
    )
    return request, hop


def ack_for_failure(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a non-2xx final: part of the INVITE transaction (§17.1.1.3).

    Request-URI, top Via (so the same branch), Route, From, Call-ID and the CSeq number of the
    INVITE; the To of the response, with the tag the UAS chose.
    """
    seq = cseq_of(invite)
    assert seq is not None  # we built it
    ack = SipRequest(method="ACK", uri=invite.uri)
    ack.headers.append("Via", invite.headers.get("via")[0])
    ack.headers.append("Max-Forwards", MAX_FORWARDS)
    for route in invite.headers.get("route"):
        ack.headers.append("Route", route)
    ack.headers.append("From", invite.headers.get_first("from") or "")
    ack.headers.append("To", response.headers.get_first("to") or "")
    ack.headers.append("Call-ID", invite.headers.get_first("call-id") or "")
    ack.headers.append("CSeq", f"{seq[0]} ACK")
    return ack


def cancel_for(invite: SipRequest) -> SipRequest:
    """The CANCEL of a pending INVITE (§9.1).

    Request-URI, top Via (same branch: it names the INVITE's transaction), Route, From, To
    (without a tag) and Call-ID of the INVITE, its CSeq number with method CANCEL.
    """
    seq = cseq_of(invite)
    assert seq is not None  # we built it
    cancel = SipRequest(method="CANCEL", uri=invite.uri)
    cancel.headers.append("Via", invite.headers.get("via")[0])
    cancel.headers.append("Max-Forwards", MAX_FORWARDS)
    for route in invite.headers.get("route"):
        cancel.headers.append("Route", route)
    for name in ("From", "To", "Call-ID"):
        cancel.headers.append(name, invite.headers.get_first(name) or "")
    cancel.headers.append("CSeq", f"{seq[0]} CANCEL")
    user_agent = invite.headers.get_first("user-agent")
    if user_agent is not None:
        cancel.headers.append("User-Agent", user_agent)
    return cancel


def sdp_offer(
    host: str,
    port: int,
    *,
    payload_types: Iterable[int] = (0, 8),
    dtmf_payload_type: int | None = 101,
    session_id: int = 0,
) -> bytes:
    """An SDP offer for an agent leg: G.711 in our order of preference, RFC 4733 events.

    The agent's answer picks one codec; the bridge transcodes if it differs from the caller's.
    """
    names = {0: "PCMU/8000", 8: "PCMA/8000"}
    types = [pt for pt in payload_types if pt in names]
    if not types:
        raise ValueError("an agent leg offers PCMU (0) and/or PCMA (8)")
    formats = [str(pt) for pt in types]
    if dtmf_payload_type is not None:
        formats.append(str(dtmf_payload_type))
    address = f"IN IP6 {host}" if ":" in host else f"IN IP4 {host}"
    lines = [
        "v=0",
        f"o=hotline95598 {session_id} {session_id} {address}",
        "s=hotline95598",
        f"c={address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(formats)}",
        *(f"a=rtpmap:{pt} {names[pt]}" for pt in types),
    ]
    if dtmf_payload_type is not None:
        lines += [
            f"a=rtpmap:{dtmf_payload_type} telephone-event/8000",
            f"a=fmtp:{dtmf_payload_type} 0-16",
        ]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def contact_uri(user: str, local: Addr) -> str:
    """Our Contact for an agent leg: the agent's in-dialog requests come back here."""
    return f"<sip:{user}@{hostport(local)}>" if user else f"<sip:{hostport(local)}>"
