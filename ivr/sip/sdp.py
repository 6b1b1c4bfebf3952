"""SDP offer/answer for the IVR's audio: G.711 plus RFC 4733 telephone-events (RFC 3264)."""

from __future__ import annotations

from dataclasses import dataclass

from aiosipua import SdpMessage, SdpNegotiationError, negotiate_sdp, serialize_sdp

SUPPORTED_CODECS = (0, 8)
"""PCMU and PCMA: every trunk and softphone speaks one of them."""


class NoCommonCodecError(Exception):
    """The offer has no audio we can carry (answered 488, RFC 3261 §21.4.26)."""


@dataclass(frozen=True)
class Negotiated:
    """What the IVR agreed to for one call's audio (fits ``ivr.sip.media.NegotiatedMedia``)."""

    payload_type: int
    """0 = PCMU, 8 = PCMA."""
    dtmf_payload_type: int | None
    """The telephone-event payload type both sides use, if the caller offered one."""
    remote: tuple[str, int] | None
    """Where to send RTP (None: the offer holds the stream with 0.0.0.0 or port 0)."""
    direction: str
    """The caller's direction: sendrecv, sendonly (we are on hold), recvonly, inactive."""


def offered_dtmf_type(offer: SdpMessage) -> int | None:
    """The telephone-event payload type in an offer's audio, if any."""
    audio = offer.audio
    if audio is None:
        return None
    for codec in audio.codecs:
        if codec.encoding_name.lower() == "telephone-event":
            return codec.payload_type
    return None


def negotiate(offer: SdpMessage) -> Negotiated:
    """Pick the caller's first G.711 codec and its telephone-event type (RFC 3264 §6.1)."""
    if offer.audio is None:
        raise NoCommonCodecError("the offer has no audio stream")
    _, pt = _answer(offer, "127.0.0.1", 9)
    return Negotiated(
        payload_type=pt,
        dtmf_payload_type=offered_dtmf_type(offer),
        remote=offer.rtp_address,
        direction=offer.audio.direction,
    )


def answer_sdp(
    offer: SdpMessage, local_host: str, rtp_port: int, *, advertised_host: str | None = None
) -> bytes:
    """The SDP answer body for an offer, with our RTP address."""
    answer, _ = _answer(offer, local_host, rtp_port, advertised_host)
    return serialize_sdp(answer).encode()


def _answer(
    offer: SdpMessage, host: str, port: int, advertised: str | None = None
) -> tuple[SdpMessage, int]:
    try:
        # Mirror the offer's telephone-event number: dynamic types are safest unchanged.
        return negotiate_sdp(
            offer,
            host,
            port,
            supported_codecs=list(SUPPORTED_CODECS),
            dtmf_payload_type=offered_dtmf_type(offer) or 0,
            session_name="hotline95598",
            advertised_ip=advertised,
        )
    except SdpNegotiationError as exc:
        raise NoCommonCodecError(str(exc)) from None
