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
    """What the IVR agreed to for one call's audio."""

    answer: bytes
    """The SDP answer body."""
    payload_type: int
    """0 = PCMU, 8 = PCMA."""
    dtmf_payload_type: int | None
    """The telephone-event payload type both sides use, if the caller offered one."""
    remote: tuple[str, int]
    """Where to send RTP."""
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


def answer_offer(
    offer: SdpMessage, local_host: str, rtp_port: int, *, advertised_host: str | None = None
) -> Negotiated:
    """Answer an offer: the caller's first G.711 codec, its telephone-event payload type."""
    remote = offer.rtp_address
    if remote is None or offer.audio is None:
        raise NoCommonCodecError("the offer has no audio stream")
    dtmf = offered_dtmf_type(offer)
    try:
        # Mirror the offer's telephone-event number: dynamic types are safest unchanged.
        answer, pt = negotiate_sdp(
            offer,
            local_host,
            rtp_port,
            supported_codecs=list(SUPPORTED_CODECS),
            dtmf_payload_type=dtmf or 0,
            session_name="hotline95598",
            advertised_ip=advertised_host,
        )
    except SdpNegotiationError as exc:
        raise NoCommonCodecError(str(exc)) from None
    return Negotiated(
        answer=serialize_sdp(answer).encode(),
        payload_type=pt,
        dtmf_payload_type=dtmf,
        remote=remote,
        direction=offer.audio.direction,
    )
