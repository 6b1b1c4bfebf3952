"""The sans-I/O RTP stream: packets out per tick, keys and audio in, on bytes and captured pcaps."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from aiortp.dtmf import DtmfEvent
from aiortp.packet import RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from ivr.sip.rtp_stream import (
    ENCODED_CACHE,
    FRAME_BYTES,
    G711,
    PCMA,
    PCMU,
    AudioReceived,
    KeyPressed,
    RtpStream,
    UnsupportedPayloadType,
    codec_for,
    payload_bounds,
)

SIPP_PCAPS = Path("/usr/share/sip-tester")
"""Debian sip-tester's captured RTP: one RFC 4733 key per file, and A-law speech."""


def tone_pcm(freq: float, seconds: float, amplitude: float = 10000.0) -> bytes:
    n = round(8000 * seconds)
    samples = array(
        "h", (round(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def stream(**kwargs: object) -> RtpStream:
    defaults: dict[str, object] = {"ssrc": 0x1234ABCD, "sequence": 1000, "timestamp": 50_000}
    return RtpStream(**{**defaults, **kwargs})  # type: ignore[arg-type]


def run(s: RtpStream, ticks: range) -> tuple[list[RtpPacket], list[tuple[int, int]]]:
    """Tick `s` over `ticks`; the packets sent and (tick, play_id) of every finished play."""
    packets: list[RtpPacket] = []
    finished: list[tuple[int, int]] = []
    for tick in ticks:
        out = s.tick(tick)
        if out.datagram is not None:
            packets.append(RtpPacket.parse(out.datagram))
        finished += [(tick, play_id) for play_id in out.finished]
    return packets, finished


def event_packet(
    event: int, *, timestamp: int, duration: int, end: bool, seq: int, ssrc: int = 77, pt: int = 101
) -> bytes:
    payload = DtmfEvent(event=event, end=end, volume=10, duration=duration).serialize()
    return bytes(
        RtpPacket(
            payload_type=pt, sequence_number=seq, timestamp=timestamp, ssrc=ssrc, payload=payload
        ).serialize()
    )


def key_packets(event: int, *, timestamp: int, seq: int = 0) -> list[bytes]:
    """One key press as a phone sends it: 3 progress packets, then the end packet three times."""
    progress = [
        event_packet(event, timestamp=timestamp, duration=160 * (i + 1), end=False, seq=seq + i)
        for i in range(3)
    ]
    end = [
        event_packet(event, timestamp=timestamp, duration=640, end=True, seq=seq + 3 + i)
        for i in range(3)
    ]
    return progress + end


def pcap_rtp(path: Path) -> list[bytes]:
    """The UDP payloads of a classic little-endian Ethernet/IPv4 pcap file."""
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    payloads, pos = [], 24
    while pos < len(data):
        _sec, _usec, length, _orig = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + length]
        ihl = (frame[14] & 0x0F) * 4
        payloads.append(frame[14 + ihl + 8 :])
        pos += 16 + length
    return payloads


def keys_of(s: RtpStream, datagrams: list[bytes], now: float = 0.0) -> str:
    got = [s.receive(d, now) for d in datagrams]
    return "".join(r.digit for r in got if isinstance(r, KeyPressed))


# --- G.711 on the wire ---


@pytest.mark.parametrize(("pt", "encoding"), [(PCMU, "mu-law"), (PCMA, "a-law")])
def test_g711_bytes_match_sox(pt: int, encoding: str, tmp_path: Path) -> None:
    """Our G.711 bytes are what an independent encoder (sox) writes, sign bit included."""
    pcm = tone_pcm(1000, 0.1, amplitude=12000) + struct.pack("<4h", 1000, -1000, 0, 32767)
    (tmp_path / "in.raw").write_bytes(pcm)
    subprocess.run(
        [
            "sox",
            "-D",  # no dither: the exact encoding of each sample
            "-t",
            "raw",
            "-r",
            "8000",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            str(tmp_path / "in.raw"),
            "-t",
            "raw",
            "-e",
            encoding,
            "-b",
            "8",
            str(tmp_path / "out.raw"),
        ],
        check=True,
        timeout=30,
    )
    expected = (tmp_path / "out.raw").read_bytes()
    codec: G711 = codec_for(pt)
    assert codec.encode(pcm) == expected
    # Decoding is the inverse on the G.711 grid: re-encoding the decoded bytes is exact.
    assert codec.encode(codec.decode(expected)) == expected


# --- outgoing ---


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_a_prompt_is_framed_encoded_and_numbered(pt: int) -> None:
    codec = codec_for(pt)
    s = stream(payload_type=pt, silence_when_idle=False)
    audio = tone_pcm(1000, 1.0)
    s.play(audio, play_id=7)
    packets, finished = run(s, range(100, 160))
    assert len(packets) == 50  # 1 s of audio, one 20 ms frame per tick
    assert finished == [(149, 7)]  # reported with the tick that carries the last frame
    assert [p.sequence_number for p in packets] == list(range(1000, 1050))
    assert [p.timestamp for p in packets] == list(range(50_000, 50_000 + 50 * 160, 160))
    assert {p.payload_type for p in packets} == {pt}
    assert {p.ssrc for p in packets} == {0x1234ABCD}
    assert [p.marker for p in packets] == [1] + [0] * 49
    assert b"".join(p.payload for p in packets) == codec.encode(audio)


def test_sequence_and_timestamp_wrap_around() -> None:
    s = stream(sequence=0xFFFE, timestamp=0xFFFFFFFF - 159)
    packets, _ = run(s, range(4))
    assert [p.sequence_number for p in packets] == [0xFFFE, 0xFFFF, 0, 1]
    assert [p.timestamp for p in packets] == [0xFFFFFFFF - 159, 0, 160, 320]


def test_prompts_follow_each_other_without_a_seam() -> None:
    s = stream()
    s.play(tone_pcm(1000, 0.1), 1)
    s.play(tone_pcm(500, 0.05), 2)
    packets, finished = run(s, range(10))
    assert finished == [(4, 1), (7, 2)]
    assert [p.sequence_number for p in packets] == list(range(1000, 1010))
    assert [p.timestamp - 50_000 for p in packets] == [160 * i for i in range(10)]
    assert [p.marker for p in packets] == [1] + [0] * 9  # one talkspurt: silence continues it


def test_idle_stream_sends_precomputed_silence() -> None:
    packets, _ = run(stream(payload_type=PCMU), range(3))
    assert {p.payload for p in packets} == {b"\xff" * 160}  # µ-law silence
    packets, _ = run(stream(payload_type=PCMA), range(3))
    assert {p.payload for p in packets} == {b"\xd5" * 160}  # A-law silence


def test_without_idle_silence_each_prompt_is_a_talkspurt_and_time_runs_on() -> None:
    s = stream(silence_when_idle=False)
    s.play(tone_pcm(1000, 0.04), 1)
    first, _ = run(s, range(0, 10))
    s.play(tone_pcm(1000, 0.04), 2)
    second, _ = run(s, range(10, 20))
    assert len(first) == len(second) == 2
    assert [p.marker for p in first + second] == [1, 0, 1, 0]
    assert [p.sequence_number for p in first + second] == [1000, 1001, 1002, 1003]
    # The timestamp follows the clock through the pause (ticks 2-9 sent nothing).
    assert second[0].timestamp - first[0].timestamp == 10 * 160


def test_last_frame_is_padded_with_silence_and_odd_bytes_dropped() -> None:
    s = stream()
    s.play(b"\x10\x00" * 170 + b"\x01", 3)  # 170 samples and a stray byte
    packets, finished = run(s, range(3))
    assert finished == [(1, 3)]
    codec = codec_for(PCMU)
    assert packets[1].payload == codec.encode(b"\x10\x00" * 10 + bytes(300))


def test_an_empty_play_finishes_on_the_next_tick() -> None:
    s = stream()
    s.play(b"", 1)
    s.play(tone_pcm(1000, 0.02), 2)
    s.play(b"", 3)
    _, finished = run(s, range(2))
    assert finished == [(0, 1), (0, 2), (0, 3)]


def test_stop_playback_drops_everything_at_once_and_finishes_nothing() -> None:
    s = stream()
    s.play(tone_pcm(1000, 1.0), 1)
    s.play(tone_pcm(1000, 1.0), 2)
    run(s, range(5))
    assert s.stop_playback() == (1, 2)
    assert not s.playing
    packets, finished = run(s, range(5, 8))
    assert finished == []
    assert {p.payload for p in packets} == {b"\xff" * 160}
    assert [p.sequence_number for p in packets] == [1005, 1006, 1007]


@pytest.mark.parametrize("direction", ["sendonly", "inactive"])
def test_hold_pauses_sending_and_the_prompt_waits(direction: str) -> None:
    s = stream()
    s.play(tone_pcm(1000, 0.1), 1)  # 5 frames
    before, _ = run(s, range(2))
    s.update(payload_type=PCMU, dtmf_payload_type=101, direction=direction, now=0.0)
    held, finished = run(s, range(2, 10))
    assert (held, finished) == ([], [])
    s.update(payload_type=PCMU, dtmf_payload_type=101, direction="sendrecv", now=0.0)
    after, finished = run(s, range(10, 14))
    assert finished == [(12, 1)]  # the 3 frames left, after the hold
    assert [p.marker for p in after] == [1, 0, 0, 0]
    assert after[0].timestamp - before[-1].timestamp == 9 * 160
    assert after[0].sequence_number == before[-1].sequence_number + 1


def test_recvonly_peer_still_gets_audio() -> None:
    s = stream(direction="recvonly")
    assert s.sends
    assert not s.expects_audio
    assert len(run(s, range(3))[0]) == 3


def test_re_invite_to_pcma_keeps_the_stream_running() -> None:
    s = stream()
    first, _ = run(s, range(2))
    s.update(payload_type=PCMA, dtmf_payload_type=None, direction="sendrecv", now=0.0)
    second, _ = run(s, range(2, 4))
    assert [p.payload_type for p in first + second] == [PCMU, PCMU, PCMA, PCMA]
    assert [p.sequence_number for p in first + second] == [1000, 1001, 1002, 1003]
    assert {p.ssrc for p in first + second} == {0x1234ABCD}


def test_a_codec_change_mid_prompt_re_encodes_the_rest() -> None:
    s = stream()
    audio = tone_pcm(1000, 0.1)
    s.play(audio, 1)
    first, _ = run(s, range(2))
    s.update(payload_type=PCMA, dtmf_payload_type=101, direction="sendrecv", now=0.0)
    rest, finished = run(s, range(2, 5))
    assert finished == [(4, 1)]
    assert b"".join(p.payload for p in first) == codec_for(PCMU).encode(audio[:640])
    assert b"".join(p.payload for p in rest) == codec_for(PCMA).encode(audio[640:])


def test_the_same_prompt_is_encoded_once_for_all_calls() -> None:
    audio = tone_pcm(700, 0.5)
    before = (ENCODED_CACHE.hits, ENCODED_CACHE.misses)
    for _ in range(20):
        stream().play(bytes(audio), 1)  # equal content, distinct objects (as render_play makes)
    assert ENCODED_CACHE.misses - before[1] <= 1
    assert ENCODED_CACHE.hits - before[0] >= 19


def test_only_g711_can_be_negotiated() -> None:
    with pytest.raises(UnsupportedPayloadType, match="payload type 9"):
        RtpStream(payload_type=9)
    with pytest.raises(ValueError, match="direction"):
        stream(direction="sideways")


def test_random_initial_values_differ_between_streams() -> None:
    # RFC 3550 §5.1: SSRC, sequence and timestamp start random.
    streams = [RtpStream() for _ in range(8)]
    assert len({s.ssrc for s in streams}) == 8


# --- incoming: audio ---


@pytest.mark.parametrize("pt", [PCMU, PCMA])
def test_received_audio_is_decoded_by_its_payload_type(pt: int) -> None:
    codec = codec_for(pt)
    s = stream(payload_type=PCMU)  # negotiated PCMU; a PCMA packet is still decoded right
    payload = codec.encode(tone_pcm(1000, 0.02))
    packet = RtpPacket(payload_type=pt, sequence_number=1, timestamp=0, ssrc=5, payload=payload)
    got = s.receive(packet.serialize(), now=3.5)
    assert isinstance(got, AudioReceived)
    assert got.pcm == codec.decode(payload)
    assert len(got.pcm) == FRAME_BYTES
    assert got.at == 3.5


def test_captured_a_law_call_decodes_to_speech() -> None:
    s = stream(payload_type=PCMA)
    datagrams = pcap_rtp(SIPP_PCAPS / "g711a.pcap")
    decoded = [s.receive(d, 0.0) for d in datagrams]
    assert all(isinstance(d, AudioReceived) for d in decoded)
    pcm = b"".join(d.pcm for d in decoded if isinstance(d, AudioReceived))
    samples = array("h", pcm)
    assert len(samples) == 236 * 240  # 30 ms packets
    assert max(abs(x) for x in samples) > 1000


def test_missing_sequence_numbers_are_counted_lost() -> None:
    # Audio and telephone-events share the stream's sequence numbers (RFC 4733 §2.1).
    s = stream(payload_type=PCMU)
    payload = codec_for(PCMU).encode(tone_pcm(1000, 0.02))
    for seq in (10, 11, 14, 12, 15):  # 12 and 13 missing when 14 comes; 12 arrives late
        packet = RtpPacket(
            payload_type=PCMU, sequence_number=seq, timestamp=0, ssrc=5, payload=payload
        )
        s.receive(packet.serialize(), 0.0)
    s.receive(event_packet(1, timestamp=0, duration=160, end=False, seq=18, ssrc=5), 0.0)
    assert (s.counters.received, s.counters.lost) == (6, 4)


def test_other_payload_types_and_rtcp_are_ignored() -> None:
    s = stream()
    cn = RtpPacket(payload_type=13, sequence_number=1, timestamp=0, ssrc=5, payload=b"\x40")
    assert s.receive(cn.serialize(), 0.0) is None
    rtcp_rr = struct.pack("!BBHI", 0x80, 201, 1, 5)
    assert s.receive(rtcp_rr, 0.0) is None
    assert (s.counters.other_payload, s.counters.rtcp, s.counters.garbage) == (1, 1, 0)


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x80", b"hello world!", bytes(12), b"\x40" + bytes(20), b"\x90\x00" + bytes(10)],
    ids=["empty", "one-byte", "text", "version-0", "version-1", "truncated-extension"],
)
def test_garbage_is_counted_and_dropped(datagram: bytes) -> None:
    s = stream()
    assert s.receive(datagram, 1.0) is None
    assert s.counters.garbage == 1
    assert s.last_received is None


@given(st.binary(max_size=300))
def test_any_datagram_never_raises(datagram: bytes) -> None:
    s = stream()
    got = s.receive(datagram, 0.0)
    assert got is None or isinstance(got, AudioReceived | KeyPressed)


RTP_LIKE = st.tuples(st.integers(0, 0x3F), st.binary(max_size=120)).map(
    lambda t: bytes([0x80 | t[0]]) + t[1]
)
"""Datagrams that look like RTP: version 2 with any P/X/CC bits, and any bytes after."""


@given(st.one_of(st.binary(max_size=120), RTP_LIKE))
def test_payload_bounds_agree_with_aiortp(datagram: bytes) -> None:
    """The header-only reader finds the payload aiortp's full parser finds, on any datagram.

    The one allowed difference: aiortp also parses the header extension's RFC 8285 elements
    and rejects a packet whose elements are malformed; we skip the extension unread (RFC 3550
    §5.3.1), so such a packet is still audio to us.
    """
    bounds = payload_bounds(datagram)
    try:
        packet = RtpPacket.parse(datagram)
    except (ValueError, IndexError, struct.error):
        assert bounds is None or datagram[0] & 0x10
        return
    assert bounds is not None
    start, end = bounds
    assert datagram[start:end] == packet.payload


def test_csrc_extension_and_padding_are_stepped_over() -> None:
    """A mixer's packet: 2 CSRCs, a one-word extension, 4 bytes of padding; the audio is found."""
    audio = codec_for(PCMA).encode(tone_pcm(1000, 0.02))
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, PCMA, 7, 1600, 99)
    csrc = struct.pack("!II", 1, 2)
    extension = struct.pack("!HHI", 0xBEDE, 1, 0x10AA0000)
    datagram = header + csrc + extension + audio + b"\x00\x00\x00\x04"
    assert payload_bounds(datagram) == (12 + 8 + 8, len(datagram) - 4)
    s = stream(payload_type=PCMA)
    got = s.receive(datagram, 2.0)
    assert got == AudioReceived(codec_for(PCMA).decode(audio), 2.0)
    assert (s.counters.received, s.counters.garbage) == (1, 0)


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x82" + bytes(11 + 4),  # 2 CSRCs announced, one present
        b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4),  # extension longer than the packet
        b"\xa0" + bytes(11) + b"\x00\x05",  # padding count beyond the payload
        b"\xa0" + bytes(11) + b"\xd5\x00",  # padding count 0
    ],
    ids=["csrc", "extension", "padding-too-long", "padding-zero"],
)
def test_truncated_headers_are_garbage(datagram: bytes) -> None:
    assert payload_bounds(datagram) is None
    s = stream()
    assert s.receive(datagram, 1.0) is None
    assert s.counters.garbage == 1


# --- incoming: RFC 4733 keys ---


def test_one_event_is_one_key_however_many_packets() -> None:
    s = stream()
    assert keys_of(s, key_packets(5, timestamp=8000)) == "5"
    assert s.counters.event_packets == 6


def test_replaying_an_event_does_not_duplicate_it() -> None:
    s = stream()
    packets = key_packets(5, timestamp=8000)
    assert keys_of(s, packets + packets) == "5"


def test_a_new_timestamp_is_a_new_key_even_for_the_same_digit() -> None:
    s = stream()
    first = key_packets(5, timestamp=8000)
    second = key_packets(5, timestamp=9600, seq=6)
    assert keys_of(s, first + second) == "55"


def test_a_key_is_reported_on_the_first_packet_seen_even_an_end_packet() -> None:
    s = stream()
    packets = key_packets(11, timestamp=8000)  # '#'
    got = s.receive(packets[4], now=2.0)  # the progress packets were lost
    assert got == KeyPressed("#", 2.0)
    assert keys_of(s, packets) == ""


def test_late_packets_of_an_older_event_are_ignored() -> None:
    s = stream()
    for n in range(20):  # more events than the remembered keys
        keys_of(s, key_packets(n % 10, timestamp=1000 + 800 * n, seq=6 * n))
    assert s.counters.keys == 20
    late = key_packets(0, timestamp=1000)[-1]
    assert keys_of(s, [late]) == ""
    assert s.counters.stale_events == 1


def test_a_timestamp_jump_backwards_is_not_mistaken_for_a_late_repeat() -> None:
    # A media relay switched sources under one SSRC: the clock jumped back by minutes.
    s = stream()
    assert keys_of(s, key_packets(1, timestamp=8_000_000)) == "1"
    assert keys_of(s, key_packets(2, timestamp=8_000_000 - 8000 * 60, seq=6)) == "2"


def test_hook_flash_and_other_events_are_ignored() -> None:
    s = stream()
    assert keys_of(s, key_packets(16, timestamp=8000)) == ""  # hook flash
    assert keys_of(s, key_packets(36, timestamp=9600)) == ""  # fax CNG tone
    assert s.counters.other_events == 12
    assert keys_of(s, key_packets(1, timestamp=11200)) == "1"  # and keys still work


def test_truncated_event_payload_is_garbage() -> None:
    s = stream()
    bad = RtpPacket(payload_type=101, sequence_number=1, timestamp=0, ssrc=5, payload=b"\x05")
    assert s.receive(bad.serialize(), 0.0) is None
    assert s.counters.garbage == 1


def test_without_negotiated_telephone_event_pt_101_is_not_a_key() -> None:
    s = stream(dtmf_payload_type=None)
    assert keys_of(s, key_packets(5, timestamp=8000)) == ""
    assert s.counters.other_payload == 6


def test_a_new_ssrc_starts_fresh() -> None:
    s = stream()
    assert keys_of(s, key_packets(1, timestamp=90_000)) == "1"
    # A transfer or re-INVITE: new SSRC, timestamps from elsewhere in the 32-bit space.
    other = [
        event_packet(2, timestamp=500, duration=160, end=False, seq=0, ssrc=99),
        event_packet(2, timestamp=500, duration=640, end=True, seq=1, ssrc=99),
    ]
    assert keys_of(s, other) == "2"


@pytest.mark.parametrize(
    ("name", "key"),
    [*((str(d), str(d)) for d in range(10)), ("star", "*"), ("pound", "#")],
)
def test_captured_sipp_key_presses(name: str, key: str) -> None:
    assert keys_of(stream(), pcap_rtp(SIPP_PCAPS / f"dtmf_2833_{name}.pcap")) == key


def test_sipp_pcap_replayed_twice_is_one_event_unless_restamped() -> None:
    # The note: replaying dtmf_2833_5.pcap twice reuses its RTP timestamp (one event).
    packets = pcap_rtp(SIPP_PCAPS / "dtmf_2833_5.pcap")
    assert keys_of(stream(), packets + packets) == "5"
    restamped = [
        p[:4] + struct.pack("!I", struct.unpack_from("!I", p, 4)[0] + 1600) + p[8:] for p in packets
    ]
    assert keys_of(stream(), packets + restamped) == "55"


# --- inactivity ---


def test_idle_seconds_counts_from_the_last_packet() -> None:
    s = stream(now=100.0)
    assert s.idle_seconds(130.0) == 30.0  # nothing yet: counted from the start
    s.receive(key_packets(1, timestamp=0)[0], 131.0)
    assert s.idle_seconds(140.0) == 9.0
    s.receive(b"garbage!", 145.0)  # not RTP: no sign of life
    assert s.idle_seconds(150.0) == 19.0


def test_idle_seconds_is_zero_on_hold_and_restarts_on_resume() -> None:
    s = stream(now=0.0)
    s.update(payload_type=PCMU, dtmf_payload_type=101, direction="inactive", now=10.0)
    assert s.idle_seconds(500.0) == 0.0
    s.update(payload_type=PCMU, dtmf_payload_type=101, direction="sendrecv", now=600.0)
    assert s.idle_seconds(605.0) == 5.0


# --- invariants ---

Op = tuple[str, int]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("play"), st.integers(0, 2000)),  # samples
        st.tuples(st.just("tick"), st.integers(1, 30)),  # how many ticks
        st.tuples(st.just("skip"), st.integers(1, 5)),  # ticks the clock skipped
        st.tuples(st.sampled_from(["stop", "hold", "resume", "pcma", "pcmu"]), st.just(0)),
    ),
    max_size=40,
)


@given(ops, st.booleans())
def test_outgoing_invariants_hold_whatever_the_call_does(steps: list[Op], silence: bool) -> None:
    s = stream(silence_when_idle=silence)
    tick, next_id = 0, 0
    queued: list[int] = []
    stopped: set[int] = set()
    finished: list[int] = []
    packets: list[tuple[int, RtpPacket]] = []
    for op, n in steps:
        if op == "play":
            s.play(tone_pcm(440, n / 8000), next_id)
            queued.append(next_id)
            next_id += 1
        elif op == "stop":
            stopped.update(s.stop_playback())
        elif op == "skip":
            tick += n
        elif op == "tick":
            for _ in range(n):
                out = s.tick(tick)
                if out.datagram is not None:
                    packets.append((tick, RtpPacket.parse(out.datagram)))
                finished += out.finished
                tick += 1
        else:
            pt = PCMA if op == "pcma" else PCMU
            direction = "sendonly" if op == "hold" else "sendrecv"
            if op in ("pcma", "pcmu"):
                direction = s.direction
            s.update(
                payload_type=pt if op in ("pcma", "pcmu") else s.payload_type,
                dtmf_payload_type=101,
                direction=direction,
                now=0.0,
            )
    # Every play finishes at most once, in queue order, and a stopped one never.
    assert len(finished) == len(set(finished))
    assert finished == sorted(finished)
    assert not set(finished) & stopped
    assert set(finished) | stopped | set(s.queued) == set(queued)
    # Sequence numbers count packets; timestamps follow the clock from the first tick; one SSRC.
    first_tick = 0
    for op, n in steps:
        if op == "tick":
            break
        if op == "skip":
            first_tick += n
    for i, (t, p) in enumerate(packets):
        assert p.sequence_number == (1000 + i) & 0xFFFF
        assert p.timestamp == (50_000 + 160 * (t - first_tick)) & 0xFFFFFFFF
        assert p.ssrc == 0x1234ABCD
        assert len(p.payload) == 160
        gap = i == 0 or packets[i - 1][0] != t - 1
        assert p.marker == int(gap)


def test_receiving_keeps_nothing() -> None:
    s = stream()
    audio = RtpPacket(
        payload_type=PCMU, sequence_number=0, timestamp=0, ssrc=1, payload=bytes(160)
    ).serialize()
    for n in range(2000):  # events from ever-new SSRCs, as a hostile peer might send
        s.receive(
            event_packet(n % 10, timestamp=n * 800, duration=160, end=False, seq=n, ssrc=n), 0.0
        )
        s.receive(audio, 0.0)
    assert len(s._recent_events) <= 16
    assert len(s._newest_event_ts) <= 17
    assert s.counters.keys == 2000


def test_audio_is_not_decoded_when_nobody_listens() -> None:
    """Decoding is most of the receive cost: skipped when no one uses the caller's audio."""
    import struct as _struct

    stream = RtpStream(payload_type=0)
    packet = _struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + b"\xff" * 160
    assert stream.receive(packet, 1.0, decode=False) is None
    assert stream.counters.audio == 1
    assert stream.last_received == 1.0  # still alive for the RTP timeout
    heard = stream.receive(packet, 1.02)
    assert heard is not None
    assert len(heard.pcm) == 320  # type: ignore[union-attr]
