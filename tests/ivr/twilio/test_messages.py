"""Media Streams messages: Twilio's documented examples parse, ours are shaped like Twilio's, and
nothing a peer sends makes the parser raise anything but MalformedMessage."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.twilio import messages as msg

from .conftest import SILENCE_ULAW, fixture

SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"


def text(name: str) -> str:
    return json.dumps(fixture(name))


def test_connected_as_documented() -> None:
    assert msg.parse(text("connected.json")) == msg.Connected("Call", "1.0.0")


def test_start_as_documented() -> None:
    start = msg.parse(text("start.json"))
    assert isinstance(start, msg.Start)
    assert start.sequence == 1
    assert start.stream_sid == SID
    assert start.account_sid == fixture("start.json")["start"]["accountSid"]
    assert start.call_sid == fixture("start.json")["start"]["callSid"]
    assert start.tracks == ("inbound",)
    assert dict(start.custom_parameters) == {
        "FirstName": "Jane",
        "LastName": "Doe",
        "RemoteParty": "Bob",
    }
    assert (start.encoding, start.sample_rate, start.channels) == ("audio/x-mulaw", 8000, 1)


def test_media_dtmf_mark_stop_as_documented() -> None:
    media = msg.parse(text("media_inbound.json"))
    assert media == msg.Media(4, SID, "inbound", 2, 5, SILENCE_ULAW)
    assert msg.parse(text("dtmf.json")) == msg.Dtmf(5, SID, "1", "inbound_track")
    assert msg.parse(text("mark.json")) == msg.Mark(4, SID, "my label")
    body = fixture("stop.json")["stop"]
    assert msg.parse(text("stop.json")) == msg.Stop(5, SID, body["accountSid"], body["callSid"])


def test_what_we_send_has_the_documented_shape() -> None:
    payload = base64.b64encode(SILENCE_ULAW).decode()
    assert json.loads(msg.media(SID, payload)) == fixture("send_media.json")
    assert json.loads(msg.mark(SID, "my label")) == fixture("send_mark.json")
    assert json.loads(msg.clear(SID)) == fixture("send_clear.json")


def test_media_is_recognised_without_parsing() -> None:
    assert msg.is_media(msg.media(SID, "AAAA"))
    assert not msg.is_media(msg.mark(SID, "media"))
    assert not msg.is_media(msg.clear(SID))


def test_numbers_may_come_as_numbers() -> None:
    data = fixture("media_inbound.json")
    data["sequenceNumber"], data["media"]["chunk"] = 4, 2
    parsed = msg.parse(json.dumps(data))
    assert isinstance(parsed, msg.Media)
    assert (parsed.sequence, parsed.chunk) == (4, 2)


def test_an_unknown_event_is_not_an_error() -> None:
    assert msg.parse('{"event": "ping", "streamSid": "MZ1"}') == msg.OtherEvent("ping")


def _changed(name: str, change: Any) -> str:
    data = fixture(name)
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not JSON"),
        (b"\xff\xfe{", "not JSON"),
        ("[1, 2]", "not a JSON object but list"),
        ('{"streamSid": "MZ1"}', "no 'event' string"),
        ('{"event": 5}', "no 'event' string"),
        (
            _changed("media_inbound.json", lambda d: d["media"].update(payload="no+JhoaJjpz...")),
            "media.payload is not base64",
        ),
        (_changed("media_inbound.json", lambda d: d["media"].pop("payload")), "no 'media.payload'"),
        (_changed("media_inbound.json", lambda d: d.pop("media")), "no 'media' object"),
        (
            _changed("media_inbound.json", lambda d: d["media"].update(payload="A" * 20000)),
            "longer than",
        ),
        (_changed("media_inbound.json", lambda d: d.pop("streamSid")), "no 'streamSid'"),
        (
            _changed("media_inbound.json", lambda d: d["media"].update(chunk="-1")),
            "media.chunk is not a number",
        ),
        (_changed("dtmf.json", lambda d: d["dtmf"].update(digit="12")), "not a DTMF key"),
        (_changed("dtmf.json", lambda d: d["dtmf"].update(digit=1)), "dtmf.digit is not a string"),
        (_changed("mark.json", lambda d: d["mark"].pop("name")), "no 'mark.name'"),
        (_changed("start.json", lambda d: d["start"].pop("callSid")), "no 'start.callSid'"),
        (_changed("start.json", lambda d: d["start"].update(tracks="inbound")), "start.tracks"),
        (
            _changed("start.json", lambda d: d["start"].update(customParameters={"a": 1})),
            "customParameters",
        ),
        (_changed("start.json", lambda d: d.update(streamSid="MZother")), "differ"),
        (_changed("stop.json", lambda d: d.update(stop=[])), "no 'stop' object"),
        (
            _changed("stop.json", lambda d: d.update(sequenceNumber=True)),
            "sequenceNumber is not a number",
        ),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_malformed_frames_say_what_is_wrong(frame: str | bytes, reason: str) -> None:
    with pytest.raises(msg.MalformedMessage, match=reason):
        msg.parse(frame)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_events = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", "x"])


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parser_never_crashes_on_any_text(frame: str | bytes) -> None:
    with contextlib.suppress(msg.MalformedMessage):
        msg.parse(frame)


@given(
    _events,
    st.dictionaries(
        st.sampled_from(
            ["streamSid", "sequenceNumber", "start", "media", "dtmf", "mark", "stop", "x"]
        ),
        _json,
        max_size=6,
    ),
)
def test_parser_never_crashes_on_any_message_shape(event: str, fields: dict[str, Any]) -> None:
    with contextlib.suppress(msg.MalformedMessage):
        msg.parse(json.dumps({"event": event, **fields}))
