"""Twilio Media Streams messages: parsed from and written to the WebSocket's JSON text frames.

Pure functions, no I/O (CONVENTIONS 3). The shapes are those of Twilio's "Media Streams -
WebSocket Messages" page (twilio.com/docs/voice/media-streams/websocket-messages):

- from Twilio: ``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``; every one but
  ``connected`` carries ``streamSid`` and a string ``sequenceNumber``;
- to Twilio (bidirectional streams, ``<Connect><Stream>``): ``media`` (base64 µ-law 8 kHz, no
  file header), ``mark`` (echoed back once the audio before it has played, or was cleared) and
  ``clear`` (drop the audio Twilio has buffered).

:func:`parse` raises :class:`MalformedMessage` naming what is wrong; an event this module does
not know is returned as :class:`OtherEvent` (Twilio may add events; an unknown one is not an
error worth a log line per frame).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

DTMF_DIGITS = frozenset("0123456789*#ABCD")
"""Keys a ``dtmf`` message may carry."""

MAX_PAYLOAD_BYTES = 8000
"""The largest inbound ``media`` payload accepted: one second of µ-law (Twilio sends 20 ms)."""

_EMPTY: Mapping[str, str] = MappingProxyType({})
_MEDIA_PREFIX = '{"event":"media",'
"""How :func:`media` begins its messages (compact JSON, ``event`` first)."""


class MalformedMessage(ValueError):  # noqa: N818 - names the condition, like ValueError
    """A frame that is not a well-formed Media Streams message; the text says why."""


@dataclass(frozen=True)
class Connected:
    """The first message of every stream: which protocol follows."""

    protocol: str
    """``Call`` for voice calls."""
    version: str
    """The protocol's semantic version (``1.0.0``)."""


@dataclass(frozen=True)
class Start:
    """The stream's metadata, sent once right after ``connected``."""

    sequence: int
    """``sequenceNumber``: 1 for the first message after ``connected``."""
    stream_sid: str
    """``MZ…``: the stream, named in every later message both ways."""
    account_sid: str
    """``AC…``: the account the call belongs to."""
    call_sid: str
    """``CA…``: the call whose audio this is."""
    tracks: tuple[str, ...]
    """``inbound`` (and ``outbound``) media to expect."""
    custom_parameters: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """The ``<Parameter>`` name/value pairs of the ``<Stream>`` TwiML."""
    encoding: str = "audio/x-mulaw"
    """``mediaFormat.encoding``; always µ-law on Twilio."""
    sample_rate: int = 8000
    """``mediaFormat.sampleRate``."""
    channels: int = 1
    """``mediaFormat.channels``."""


@dataclass(frozen=True)
class Media:
    """A chunk of audio (20 ms of the caller's voice on an inbound track)."""

    sequence: int
    """``sequenceNumber``."""
    stream_sid: str
    """The stream it belongs to."""
    track: str
    """``inbound`` (the caller) or ``outbound``."""
    chunk: int
    """Chunk number, from 1."""
    timestamp: int
    """Milliseconds since the stream started."""
    payload: bytes
    """The µ-law bytes (base64-decoded)."""


@dataclass(frozen=True)
class Dtmf:
    """A key the caller pressed (bidirectional streams only)."""

    sequence: int
    """``sequenceNumber``."""
    stream_sid: str
    """The stream it belongs to."""
    digit: str
    """One of ``0123456789*#ABCD``."""
    track: str = "inbound_track"
    """Always ``inbound_track``."""


@dataclass(frozen=True)
class Mark:
    """Twilio's echo of a mark we sent: the audio before it has played (or was cleared)."""

    sequence: int
    """``sequenceNumber``."""
    stream_sid: str
    """The stream it belongs to."""
    name: str
    """The ``mark.name`` we sent."""


@dataclass(frozen=True)
class Stop:
    """The stream ended: the call ended, or its TwiML was replaced (a REST update)."""

    sequence: int
    """``sequenceNumber``."""
    stream_sid: str
    """The stream that ended."""
    account_sid: str
    """``stop.accountSid``."""
    call_sid: str
    """``stop.callSid``."""


@dataclass(frozen=True)
class OtherEvent:
    """A well-formed JSON message with an event this module does not handle."""

    event: str
    """The ``event`` value."""


Inbound = Connected | Start | Media | Dtmf | Mark | Stop | OtherEvent


def parse(text: str | bytes) -> Inbound:
    """One text frame from Twilio as a message; MalformedMessage if it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise MalformedMessage("not JSON: not UTF-8") from None
    except RecursionError:
        raise MalformedMessage("not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"not a JSON object but {type(data).__name__}")
    event = data.get("event")
    if not isinstance(event, str):
        raise MalformedMessage("no 'event' string")
    match event:
        case "connected":
            return Connected(_str(data, "protocol", default="Call"), _str(data, "version", ""))
        case "start":
            return _start(data)
        case "media":
            return _media(data)
        case "dtmf":
            body = _object(data, "dtmf")
            digit = _str(body, "digit", where="dtmf")
            if digit not in DTMF_DIGITS:
                raise MalformedMessage(f"dtmf.digit {digit!r} is not a DTMF key")
            track = _str(body, "track", "inbound_track", where="dtmf")
            return Dtmf(_sequence(data), _str(data, "streamSid"), digit, track)
        case "mark":
            name = _str(_object(data, "mark"), "name", where="mark")
            return Mark(_sequence(data), _str(data, "streamSid"), name)
        case "stop":
            body = _object(data, "stop")
            return Stop(
                _sequence(data),
                _str(data, "streamSid"),
                _str(body, "accountSid", "", where="stop"),
                _str(body, "callSid", "", where="stop"),
            )
        case _:
            return OtherEvent(event)


def _start(data: Mapping[str, Any]) -> Start:
    body = _object(data, "start")
    tracks = body.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise MalformedMessage("start.tracks is not a list of strings")
    params = body.get("customParameters", {})
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise MalformedMessage("start.customParameters is not an object of strings")
    media_format = body.get("mediaFormat", {})
    if not isinstance(media_format, dict):
        raise MalformedMessage("start.mediaFormat is not an object")
    stream_sid = _str(body, "streamSid", where="start")
    outer = data.get("streamSid", stream_sid)
    if outer != stream_sid:
        raise MalformedMessage("streamSid and start.streamSid differ")
    return Start(
        sequence=_sequence(data),
        stream_sid=stream_sid,
        account_sid=_str(body, "accountSid", where="start"),
        call_sid=_str(body, "callSid", where="start"),
        tracks=tuple(tracks),
        custom_parameters=MappingProxyType(dict(params)),
        encoding=_str(media_format, "encoding", "audio/x-mulaw", where="start.mediaFormat"),
        sample_rate=_int(media_format, "sampleRate", 8000, where="start.mediaFormat"),
        channels=_int(media_format, "channels", 1, where="start.mediaFormat"),
    )


def _media(data: Mapping[str, Any]) -> Media:
    body = _object(data, "media")
    encoded = _str(body, "payload", where="media")
    if len(encoded) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
        raise MalformedMessage(f"media.payload longer than {MAX_PAYLOAD_BYTES} bytes")
    try:
        payload = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage("media.payload is not base64") from None
    return Media(
        sequence=_sequence(data),
        stream_sid=_str(data, "streamSid"),
        track=_str(body, "track", "inbound", where="media"),
        chunk=_int(body, "chunk", 0, where="media"),
        timestamp=_int(body, "timestamp", 0, where="media"),
        payload=payload,
    )


# --- what we send (bidirectional streams) ---


def media(stream_sid: str, payload_b64: str) -> str:
    """A ``media`` message playing one chunk of base64 µ-law audio on the call."""
    return _dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload_b64}})


def is_media(text: str) -> bool:
    """Whether `text` is a ``media`` message written by :func:`media` (no JSON parsing: it is
    asked for every frame a slow peer leaves queued)."""
    return text.startswith(_MEDIA_PREFIX)


def mark(stream_sid: str, name: str) -> str:
    """A ``mark`` message: Twilio echoes it once the audio sent before it has played."""
    return _dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    """A ``clear`` message: Twilio drops the audio it has buffered and echoes pending marks."""
    return _dumps({"event": "clear", "streamSid": stream_sid})


# --- helpers ---


def _dumps(data: Mapping[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise MalformedMessage(f"no {key!r} object")
    return value


_REQUIRED = object()


def _str(data: Mapping[str, Any], key: str, default: object = _REQUIRED, *, where: str = "") -> str:
    value = data.get(key, default)
    name = f"{where}.{key}" if where else key
    if value is _REQUIRED:
        raise MalformedMessage(f"no {name!r}")
    if not isinstance(value, str):
        raise MalformedMessage(f"{name} is not a string")
    return value


def _int(data: Mapping[str, Any], key: str, default: int, *, where: str = "") -> int:
    """An integer field; Twilio sends most numbers as strings of digits."""
    value = data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise MalformedMessage(f"{f'{where}.' if where else ''}{key} is not a number")


def _sequence(data: Mapping[str, Any]) -> int:
    return _int(data, "sequenceNumber", 0)
