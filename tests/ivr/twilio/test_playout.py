"""The playout, sans-I/O: frames per tick, a lead when playback starts, a mark after each prompt,
``clear`` on barge-in, and a queue that waits while the call has no stream."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiortp.codecs.g711 import PcmuCodec

from ivr.twilio.playout import LEAD_FRAMES, Playout, encode_frames, mark_name, play_id_of

SID = "MZ00000000000000000000000000000001"


def pcm(seconds: float) -> bytes:
    """A ramp, so frames differ from each other."""
    samples = round(seconds * 8000)
    return b"".join(
        ((i * 37) % 20000 - 10000).to_bytes(2, "little", signed=True) for i in range(samples)
    )


def parsed(texts: list[str]) -> list[dict[str, Any]]:
    return [json.loads(t) for t in texts]


def test_frames_are_20_ms_of_mulaw_padded_with_silence() -> None:
    audio = pcm(0.105)  # 840 samples: 5 full frames and 40 samples
    frames = encode_frames(audio)
    assert len(frames) == 6
    raw = [base64.b64decode(f) for f in frames]
    assert {len(r) for r in raw} == {160}
    assert b"".join(raw)[:840] == PcmuCodec().encode(audio)
    assert raw[-1][40:] == b"\xff" * 120
    assert encode_frames(audio) is frames  # cached: the same prompt is encoded once


def test_one_frame_per_tick_after_a_lead_then_the_mark() -> None:
    playout = Playout()
    playout.attach(SID)
    frames = encode_frames(pcm(0.2))  # 10 frames
    playout.play(frames, 7)
    first = parsed(playout.tick())
    assert [m["event"] for m in first] == ["media"] * (1 + LEAD_FRAMES)
    assert first[0] == {"event": "media", "streamSid": SID, "media": {"payload": frames[0]}}
    sent = list(first)
    while playout.playing:
        batch = parsed(playout.tick())
        assert len([m for m in batch if m["event"] == "media"]) == 1
        sent += batch
    assert [m["media"]["payload"] for m in sent if m["event"] == "media"] == list(frames)
    assert sent[-1] == {"event": "mark", "streamSid": SID, "mark": {"name": "play-7"}}
    assert playout.tick() == []
    assert playout.awaiting_marks == {7}
    assert playout.marked("play-7") == 7
    assert playout.marked("play-7") is None  # once
    assert playout.marked("my label") is None  # not ours


def test_back_to_back_prompts_flow_without_a_second_lead() -> None:
    playout = Playout()
    playout.attach(SID)
    playout.play(encode_frames(pcm(0.04)), 1)  # 2 frames
    playout.play(encode_frames(pcm(0.06)), 2)  # 3 frames
    first = parsed(playout.tick())
    assert [m["event"] for m in first] == ["media", "media", "mark", "media", "media"]
    assert first[2]["mark"]["name"] == "play-1"
    assert [m["event"] for m in parsed(playout.tick())] == ["media", "mark"]


def test_barge_in_clears_twilio_and_drops_the_queue() -> None:
    playout = Playout()
    playout.attach(SID)
    playout.play(encode_frames(pcm(1.0)), 3)
    playout.tick()
    assert parsed(playout.stop_playback()) == [{"event": "clear", "streamSid": SID}]
    assert not playout.playing
    assert playout.tick() == []
    assert playout.stop_playback() == []  # nothing left to clear
    assert playout.counters.clears == 1


def test_the_queue_waits_while_the_call_has_no_stream() -> None:
    playout = Playout()
    playout.play(encode_frames(pcm(0.1)), 4)
    assert playout.tick() == []
    assert playout.stop_playback() == []  # no stream: nothing to tell Twilio
    playout.play(encode_frames(pcm(0.1)), 5)
    playout.attach(SID)
    out = parsed(playout.tick())
    assert out[0]["streamSid"] == SID
    # A stream that ends takes what it was playing with it.
    playout.detach()
    assert not playout.playing
    assert playout.awaiting_marks == frozenset()


def test_mark_names() -> None:
    assert mark_name(12) == "play-12"
    assert play_id_of("play-12") == 12
    for other in ("play-", "play-x", "play-١٢", "label", "play-" + "9" * 20):
        assert play_id_of(other) is None
