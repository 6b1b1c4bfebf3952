"""Our side of a call's SDP after the first answer: re-INVITE/UPDATE answers (RFC 3264 §6, §8).

The application negotiates the first answer (`ivr.sip.sdp`); later offers are answered by the
core from the current local SDP: one m-line per offered m-line, our codecs limited to those
offered, the offer's direction mirrored (hold: sendonly → recvonly, inactive → inactive), and the
``o=`` version bumped exactly when the description changes.
"""

from __future__ import annotations

import copy
import ipaddress

from aiosipua import Codec, ConnectionData, MediaDescription, SdpMessage, parse_sdp, serialize_sdp

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3264 §6.1: how an answer's direction mirrors the offer's.
_MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class SdpError(ValueError):
    """An SDP body we cannot use: no audio stream we can answer (488, RFC 3261 §21.4.26)."""


class SdpSyntaxError(SdpError):
    """An SDP body that does not parse (400, RFC 3261 §21.4.1)."""


def parse_body(body: bytes) -> SdpMessage:
    """Parse an SDP body; SdpError unless it has an audio stream with an address."""
    try:
        sdp = parse_sdp(body.decode("utf-8", errors="replace"))
    except ValueError as exc:  # aiosipua raises ValueError for bad numbers in v=/m=/a= lines
        raise SdpSyntaxError(f"unparseable SDP: {exc}") from None
    if sdp.audio is None or sdp.rtp_address is None:
        raise SdpError("SDP without an audio stream and address")
    host, port = sdp.rtp_address
    # RFC 4566 §5.7 allows a host name in c=, but resolving it would block the event loop on
    # every RTP packet sent (the socket's sendto resolves names): a fuzzed offer with
    # c=IN IP4 %00 made the node look up names 50 times a second. Real peers send IP literals.
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise SdpError("SDP connection address is not an IP address") from None
    if not 0 <= port < 65536:
        raise SdpError(f"SDP audio port {port} is out of range")
    return sdp


def is_hold(sdp: SdpMessage) -> bool:
    """Whether an offer puts us on hold: sendonly/inactive audio, or c=0.0.0.0 (RFC 3264 §8.4)."""
    audio = sdp.audio
    if audio is None:
        return False
    if audio.direction in ("sendonly", "inactive"):
        return True
    connection = audio.connection or sdp.connection
    return connection is not None and connection.address == "0.0.0.0"  # noqa: S104 (SDP hold, not a bind)


def _sends(direction: str) -> bool:
    return direction in ("sendrecv", "sendonly")


def _receives(direction: str) -> bool:
    return direction in ("sendrecv", "recvonly")


def _direction(send: bool, receive: bool) -> str:
    if send and receive:
        return "sendrecv"
    if send:
        return "sendonly"
    return "recvonly" if receive else "inactive"


def _rtpmap(codec: Codec, payload_type: int) -> str:
    rtpmap = f"{payload_type} {codec.encoding_name}/{codec.clock_rate}"
    return f"{rtpmap}/{codec.channels}" if codec.channels and codec.channels > 1 else rtpmap


def _answer_audio(ours: MediaDescription, offered: MediaDescription) -> MediaDescription | None:
    """Our audio m-line limited to the offered codecs (offer's numbers), direction mirrored."""
    offered_static = {c for c in offered.formats}
    offered_dynamic = {
        (c.encoding_name.lower(), c.clock_rate): c.payload_type
        for c in offered.codecs
        if c.encoding_name
    }
    kept: list[tuple[Codec, int]] = []
    for codec in ours.codecs:
        if codec.payload_type < 96 and str(codec.payload_type) in offered_static:
            kept.append((codec, codec.payload_type))
            continue
        number = offered_dynamic.get((codec.encoding_name.lower(), codec.clock_rate))
        if number is not None:
            kept.append((codec, number))
    if not any(c.encoding_name.lower() != "telephone-event" for c, _ in kept):
        return None
    attributes = {
        key: list(values)
        for key, values in ours.attributes.items()
        if key not in ("rtpmap", "fmtp") and key not in DIRECTIONS
    }
    rtpmaps = [_rtpmap(c, n) for c, n in kept if c.encoding_name]
    fmtps = [f"{n} {c.fmtp}" for c, n in kept if c.fmtp]
    if rtpmaps:
        attributes["rtpmap"] = rtpmaps
    if fmtps:
        attributes["fmtp"] = fmtps
    direction = _MIRROR.get(offered.direction, "sendrecv")
    wanted = ours.direction
    attributes[
        _direction(_sends(direction) and _sends(wanted), _receives(direction) and _receives(wanted))
    ] = []
    return MediaDescription(
        media=ours.media,
        port=ours.port if offered.port else 0,
        proto=ours.proto,
        formats=[str(n) for _, n in kept],
        connection=copy.deepcopy(ours.connection),
        bandwidths=list(ours.bandwidths),
        attributes=attributes,
        codecs=[Codec(n, c.encoding_name, c.clock_rate, c.channels, c.fmtp) for c, n in kept],
    )


class LocalSdp:
    """The local description of one call, re-stated for each offer with RFC 3264 §8 versioning."""

    def __init__(self, body: bytes) -> None:
        self._base = parse_body(body)
        origin = self._base.origin
        self._version = int(origin.session_version) if origin.session_version.isdigit() else 0
        self._last = self._key(self._base)

    @staticmethod
    def _key(sdp: SdpMessage) -> tuple[object, ...]:
        """What the description says, without spelling: rtpmap order, implicit sendrecv."""

        def connection(c: ConnectionData | None) -> tuple[str, str, str] | None:
            return None if c is None else (c.net_type, c.addr_type, c.address)

        def extra(attributes: dict[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
            skip = ("rtpmap", "fmtp", *DIRECTIONS)
            return tuple(sorted((k, tuple(v)) for k, v in attributes.items() if k not in skip))

        media = tuple(
            (
                m.media,
                m.port,
                m.proto,
                tuple(m.formats),
                connection(m.connection),
                m.direction,
                tuple(
                    (c.payload_type, c.encoding_name.lower(), c.clock_rate, c.channels or 1, c.fmtp)
                    for c in m.codecs
                ),
                extra(m.attributes),
            )
            for m in sdp.media
        )
        return (connection(sdp.connection), sdp.session_name, extra(sdp.attributes), media)

    def replace(self, body: bytes) -> None:
        """Take a new local description (new port, codec); the o= session id stays (§8)."""
        sdp = parse_body(body)
        sdp.origin.username = self._base.origin.username
        sdp.origin.session_id = self._base.origin.session_id
        self._base = sdp

    def render(self, offer: SdpMessage | None) -> bytes:
        """The answer to ``offer``, or our offer for an offerless re-INVITE (``offer=None``).

        SdpError when the offer has no audio stream our codecs can answer (→ 488).
        """
        sdp = copy.deepcopy(self._base)
        if offer is not None:
            ours = sdp.audio
            assert ours is not None  # parse_body guarantees an audio stream
            media: list[MediaDescription] = []
            answered = False
            for offered in offer.media:
                if offered.media == "audio" and not answered:
                    answer = _answer_audio(ours, offered)
                    if answer is None:
                        raise SdpError("no common codec in the offer")
                    media.append(answer)
                    answered = True
                else:
                    # RFC 3264 §6: every offered m-line is answered; unwanted ones with port 0.
                    media.append(
                        MediaDescription(
                            media=offered.media,
                            port=0,
                            proto=offered.proto,
                            formats=list(offered.formats),
                        )
                    )
            if not answered:
                raise SdpError("the offer has no audio stream")
            sdp.media = media
        key = self._key(sdp)
        if key != self._last:
            self._version += 1
            self._last = key
        sdp.origin.session_version = str(self._version)
        return serialize_sdp(sdp).encode()
