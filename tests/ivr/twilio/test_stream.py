"""The Media Stream of a call: prompts paced at real time with a mark after each, keys and
barge-in, and every way a stream goes wrong (malformed frames, media before start, stop without
start, a stream that stops mid-prompt, a stream for a call we never answered)."""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from aiortp.codecs.g711 import PcmuCodec
from structlog.testing import capture_logs

from ivr.twilio import front as front_module
from ivr.twilio import messages as msg
from ivr.twilio.call import StreamLink
from ivr.twilio.front import FRAMES_DROPPED
from ivr.twilio.playout import LEAD_FRAMES

from .conftest import (
    SILENCE_ULAW,
    MakeHotline,
    MediaStreamClient,
    call_sid,
    fixture,
    short_prompts,
    write_tone,
)


def dropped(kind: str) -> float:
    return FRAMES_DROPPED.labels(kind=kind)._value.get()


def media_before_mark(stream: MediaStreamClient, name: str) -> list[float]:
    """Arrival times of the frames sent between the previous mark and mark `name`."""
    times: list[float] = []
    for received in stream.received:
        if received.event == "mark":
            if received.data["mark"]["name"] == name:
                return times
            times = []
        elif received.event == "media":
            times.append(received.at)
    raise AssertionError(f"no mark {name}")


async def test_prompts_are_paced_at_real_time_with_a_mark_after_their_audio(
    make_hotline: MakeHotline, tmp_path: Path
) -> None:
    welcome = write_tone(tmp_path / "welcome.wav", 1.0)  # 50 frames
    library = short_prompts(tmp_path / "prompts", welcome=1.0)
    hotline = await make_hotline(library=library)
    stream = await hotline.twilio.connect_call(call_sid(1))
    stream.caller_speaks()
    assert await stream.wait_mark(1, within=3.0) == "play-1"
    times = media_before_mark(stream, "play-1")
    assert len(times) == 50
    # The lead goes out at once, then one frame per 20 ms tick.
    steady = [b - a for a, b in zip(times[LEAD_FRAMES:], times[LEAD_FRAMES + 1 :], strict=False)]
    assert 0.018 <= statistics.mean(steady) <= 0.023, statistics.mean(steady)
    assert times[-1] - times[0] >= (50 - LEAD_FRAMES - 2) * 0.02
    # What was sent is the prompt, µ-law, frame by frame, to this stream.
    payloads = [r.data for r in stream.received if r.event == "media"][:50]
    assert {p["streamSid"] for p in payloads} == {stream.stream_sid}
    audio = b"".join(base64.b64decode(p["media"]["payload"]) for p in payloads)
    assert audio == PcmuCodec().encode(welcome)
    # Only after the mark came back did the next prompt (the menu) start.
    await stream.wait_mark(2)
    assert stream.marks() == ["play-1", "play-2"]
    await stream.stop()
    await stream.wait_closed()


async def test_a_key_stops_the_prompt_with_clear_and_reaches_the_dialog(
    make_hotline: MakeHotline, tmp_path: Path
) -> None:
    library = short_prompts(tmp_path / "prompts", main_menu=3.0, hazard_safety=3.0)
    hotline = await make_hotline(library=library)
    stream = await hotline.twilio.connect_call(call_sid(2))
    await stream.wait_mark(1)  # the welcome; now the 3 s menu plays
    await stream.wait_for(lambda: len(stream.events("media")) > 20, what="menu frames")
    await stream.press("0")  # an agent, please: barge-in
    await stream.wait_for(lambda: stream.events("clear"), what="clear")
    clear = stream.events("clear")[0]
    assert clear.data == {"event": "clear", "streamSid": stream.stream_sid}
    # Without routing the queue refuses the caller at once (its prompt is cleared too), who
    # is offered the busy menu.
    assert await stream.wait_mark(2) == "play-4"
    assert len(stream.events("clear")) == 2
    await stream.stop()
    await hotline.wait_idle()
    summary = hotline.front.completed[0]
    assert summary.path == ["welcome", "main_menu", "agent_general", "queue_busy_menu"]
    assert stream.marks() == ["play-1", "play-4"]  # the stopped prompts never finished


async def test_malformed_frames_are_dropped_and_the_call_goes_on(
    make_hotline: MakeHotline,
) -> None:
    hotline = await make_hotline()
    stream = await hotline.twilio.connect_call(call_sid(3))
    await stream.wait_mark(2)  # the menu is waiting for a key
    before = {k: dropped(k) for k in ("malformed", "binary", "unknown_event", "wrong_stream")}
    media = fixture("media_inbound.json")
    media["streamSid"] = stream.stream_sid
    media["media"]["payload"] = "no+JhoaJjpz..."  # the docs' abbreviated payload
    with capture_logs() as logs:
        await stream.ws.send_str("this is not json")
        await stream.ws.send_str("[]")
        await stream.ws.send_str(json.dumps(media))
        await stream.ws.send_str('{"event": "dtmf", "streamSid": "' + stream.stream_sid + '"}')
        await stream.ws.send_bytes(SILENCE_ULAW)
        await stream.ws.send_str(json.dumps({"event": "ping", "streamSid": stream.stream_sid}))
        await stream.send({**fixture("dtmf.json"), "streamSid": "MZ-not-this-stream"})
        await stream.press("3")  # the call still works: billing
        await stream.wait_mark(3)
    assert dropped("malformed") == before["malformed"] + 4
    assert dropped("binary") == before["binary"] + 1
    assert dropped("unknown_event") == before["unknown_event"] + 1
    assert dropped("wrong_stream") == before["wrong_stream"] + 1
    lines = [e for e in logs if e["event"] == "twilio frame dropped"]
    # One line per kind of bad frame (rate-limited), each naming the call.
    assert sorted(e["kind"] for e in lines) == [
        "binary",
        "malformed",
        "unknown_event",
        "wrong_stream",
    ]
    assert {e["call_id"] for e in lines} == {f"twilio-{call_sid(3)}"}
    await stream.stop()
    await hotline.wait_idle()
    assert hotline.front.completed[0].path == ["welcome", "main_menu", "billing_menu"]


async def test_a_stream_that_stops_mid_prompt_ends_the_call_as_hung_up(
    make_hotline: MakeHotline, tmp_path: Path
) -> None:
    library = short_prompts(tmp_path / "prompts", main_menu=5.0)
    hotline = await make_hotline(library=library)
    stream = await hotline.twilio.connect_call(call_sid(4))
    await stream.wait_mark(1)
    await stream.wait_for(lambda: len(stream.events("media")) > 15, what="menu frames")
    with capture_logs() as logs:
        await stream.stop()
        await stream.wait_closed()
        await hotline.wait_idle()
    sent = len(stream.events("media"))
    await asyncio.sleep(0.1)
    assert len(stream.events("media")) == sent  # nothing after the stop
    [summary] = hotline.front.completed
    assert [o.kind for o in summary.outcomes] == ["abandoned"]
    assert summary.outcomes[0].detail == "main_menu"
    assert hotline.front.calls == {}
    assert hotline.front.clock is not None
    assert len(hotline.front.clock) == 0  # the call left the send clock
    [closed] = [e for e in logs if e["event"] == "twilio stream closed"]
    assert closed["frames_out"] == sent
    # Twilio's status callback arrives afterwards: nothing left to do.
    assert await hotline.twilio.status(call_sid(4), "completed") == 204


async def test_stop_without_start_closes_the_stream_and_creates_nothing(
    make_hotline: MakeHotline,
) -> None:
    hotline = await make_hotline()
    stream = await hotline.twilio.open_stream()
    with capture_logs() as logs:
        await stream.connected()
        stream.call_sid = call_sid(5)
        await stream.stop()
        await stream.wait_closed()
    assert hotline.front.calls == {}
    assert not hotline.front.completed
    assert any(e["event"] == "twilio stream stopped before it started" for e in logs)


async def test_media_before_start_is_dropped_then_the_call_runs(
    make_hotline: MakeHotline,
) -> None:
    hotline = await make_hotline()
    sid = call_sid(6)
    twiml = await hotline.twilio.incoming_call(sid)
    stream = await hotline.twilio.open_stream()
    before = dropped("before_start")
    await stream.connected()
    await stream.media()
    await stream.press("5")
    await stream.start(sid, twiml.parameters)
    assert await stream.wait_mark(2) == "play-2"
    assert dropped("before_start") == before + 2
    await stream.stop()
    await hotline.wait_idle()
    # The early "5" went nowhere (it would have been type-ahead for the menu: complaints).
    assert hotline.front.completed[0].path == ["welcome", "main_menu"]


@pytest.mark.parametrize(
    "problem", ["unknown call", "parameters not ours", "media format", "second stream"]
)
async def test_streams_that_are_not_for_a_call_we_answered_are_closed(
    make_hotline: MakeHotline, problem: str
) -> None:
    hotline = await make_hotline()
    sid = call_sid(7)
    twiml = await hotline.twilio.incoming_call(sid)
    params = dict(twiml.parameters)
    if problem == "second stream":
        first = await hotline.twilio.open_stream()
        await first.begin(sid, params)
        await first.wait_mark(1)
    stream = await hotline.twilio.open_stream()
    await stream.connected()
    with capture_logs() as logs:
        if problem == "unknown call":
            await stream.start(call_sid(8), params)
        elif problem == "parameters not ours":
            await stream.start(sid, {**params, "call_id": "twilio-CAforged"})
        elif problem == "media format":
            await stream.start(sid, params, encoding="audio/x-l16", sampleRate=16000)
        else:
            await stream.start(sid, params)
        await stream.wait_closed()
    assert stream.ws.close_code == 1008
    [line] = [e for e in logs if e["event"] == "twilio stream refused"]
    assert str(line["reason"]).startswith(
        {
            "unknown call": "unknown call",
            "parameters not ours": "parameters not ours",
            "media format": "media format audio/x-l16/16000/1",
            "second stream": "call has a stream already",
        }[problem]
    )
    if problem == "second stream":
        assert not first.ws.closed  # the call goes on, on its own stream
    else:
        assert not hotline.front.completed
        assert hotline.front.calls[sid].session is None


async def test_a_call_whose_stream_never_starts_is_dropped(
    make_hotline: MakeHotline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_module, "STREAM_START_TIMEOUT", 0.1)
    hotline = await make_hotline()
    with capture_logs() as logs:
        await hotline.twilio.incoming_call(call_sid(9))
        await asyncio.sleep(0.3)
    assert hotline.front.calls == {}
    assert any(e["event"] == "twilio stream never started" for e in logs)


async def test_the_ivr_hangs_up_by_closing_the_stream_after_the_last_prompt(
    make_hotline: MakeHotline,
) -> None:
    hotline = await make_hotline()  # no routing, no CRM: a hazard report ends with an apology
    stream = await hotline.twilio.connect_call(call_sid(10))
    await stream.wait_mark(2)
    await stream.press("1")
    await stream.wait_closed()
    assert stream.ws.close_code == 1000
    # The goodbye was heard in full: its mark came (and was echoed) before the close.
    assert stream.received[-1].event == "mark"
    await hotline.wait_idle()
    [summary] = hotline.front.completed
    assert summary.path[-1] == "hazard_recorded"
    assert summary.outcomes[-1].kind == "hangup"


async def test_a_peer_that_does_not_read_loses_frames_never_marks() -> None:
    ws: Any = object()  # the writer is not started: nothing is ever written
    link = StreamLink(ws, max_backlog=3)
    sid = "MZ1"
    frames = [msg.media(sid, "AAAA")] * 5
    link.send([*frames, msg.mark(sid, "play-1"), msg.clear(sid)])
    assert link.dropped_frames == 2
    assert link.backlog == 5  # three frames, the mark and the clear


async def test_stopping_the_node_hangs_up_its_calls(make_hotline: MakeHotline) -> None:
    hotline = await make_hotline()
    stream = await hotline.twilio.connect_call(call_sid(11))
    await stream.wait_mark(2)
    with capture_logs() as logs:
        await hotline.front.stop(0.1)
        await stream.wait_closed()
    assert stream.ws.close_code == 1001  # going away
    [summary] = hotline.front.completed
    assert summary.outcomes[-1].kind == "abandoned"
    assert any(e["event"] == "twilio front end stopped" for e in logs)
    assert hotline.front.calls == {}
