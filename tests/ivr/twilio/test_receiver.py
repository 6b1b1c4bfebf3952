"""The stream receiver, sans-I/O: Twilio's message order, and every frame that breaks it dropped
with a reason instead of ending the call."""

from __future__ import annotations

import json
from typing import Any

from ivr.twilio import receiver as rx

from .conftest import SILENCE_ULAW, fixture

SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"


def frame(name: str, **change: Any) -> str:
    data = fixture(name)
    data.update(change)
    return json.dumps(data)


def test_a_stream_in_twilios_order() -> None:
    receiver = rx.StreamReceiver()
    assert receiver.receive_text(frame("connected.json")) is None
    assert receiver.state is rx.StreamState.CONNECTED
    started = receiver.receive_text(frame("start.json"))
    assert isinstance(started, rx.Started)
    assert started.start.stream_sid == SID
    assert receiver.receive_text(frame("media_inbound.json")) == rx.CallerAudio(SILENCE_ULAW)
    assert receiver.receive_text(frame("dtmf.json")) == rx.KeyPressed("1")
    assert receiver.receive_text(frame("mark.json")) == rx.MarkEchoed("my label")
    assert receiver.receive_text(frame("stop.json")) == rx.Stopped(started=True)
    late = receiver.receive_text(frame("dtmf.json"))
    assert isinstance(late, rx.ProtocolError)
    assert late.kind == "after_stop"
    counters = receiver.counters
    assert (counters.media, counters.keys, counters.marks, counters.dropped) == (1, 1, 1, 1)


def test_media_keys_and_marks_before_start_are_dropped() -> None:
    receiver = rx.StreamReceiver()
    for name in ("media_inbound.json", "dtmf.json", "mark.json"):
        event = receiver.receive_text(frame(name))
        assert isinstance(event, rx.ProtocolError)
        assert event.kind == "before_start"
    assert isinstance(receiver.receive_text(frame("start.json")), rx.Started)


def test_stop_without_start() -> None:
    receiver = rx.StreamReceiver()
    receiver.receive_text(frame("connected.json"))
    assert receiver.receive_text(frame("stop.json")) == rx.Stopped(started=False)
    assert receiver.state is rx.StreamState.STOPPED


def test_frames_that_break_the_order_or_do_not_parse() -> None:
    receiver = rx.StreamReceiver()
    receiver.receive_text(frame("start.json"))
    kinds = []
    for text in (
        frame("start.json"),
        frame("media_inbound.json", streamSid="MZ-another"),
        frame("stop.json", streamSid="MZ-another"),
        '{"event": "media"',
        json.dumps({"event": "transcription", "streamSid": SID}),
    ):
        event = receiver.receive_text(text)
        assert isinstance(event, rx.ProtocolError)
        kinds.append(event.kind)
    kinds.append(receiver.receive_binary(160).kind)
    assert kinds == [
        "second_start",
        "wrong_stream",
        "wrong_stream",
        "malformed",
        "unknown_event",
        "binary",
    ]
    # The stream goes on.
    assert receiver.receive_text(frame("dtmf.json")) == rx.KeyPressed("1")


def test_outbound_track_media_is_not_caller_audio() -> None:
    receiver = rx.StreamReceiver()
    receiver.receive_text(frame("start.json"))
    data = fixture("media_inbound.json")
    data["media"]["track"] = "outbound"
    assert receiver.receive_text(json.dumps(data)) is None
