"""`hotline serve` draining after the first SIGTERM, and its RTP port range, as a real process
reached over real UDP and HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ivr.serve_process import ServeProcess, start_serve
from tests.ivr.sip.sipp import free_udp_port
from tests.ivr.sip.udp_peer import Call, UdpPeer, place_call

START_TIMEOUT = 60.0  # a shared, loaded CI machine starts the embedded Redis slowly


def health(port: int) -> tuple[int, dict[str, object]]:
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def peer() -> Iterator[UdpPeer]:
    created: list[UdpPeer] = []

    def make(target: tuple[str, int]) -> UdpPeer:
        created.append(UdpPeer(target))
        return created[-1]

    yield make  # type: ignore[misc]
    for p in created:
        p.close()


def started(tmp_path: Path, **env: str) -> tuple[ServeProcess, int, int]:
    serve = start_serve(tmp_path, **env)
    web_port = int(serve.wait_for("web listening", START_TIMEOUT)["port"])
    sip_port = int(serve.wait_for("sip listening", 0)["port"])
    return serve, sip_port, web_port


def test_draining_node_answers_options_and_healthz_with_503(tmp_path: Path, peer) -> None:
    serve, sip_port, web_port = started(tmp_path, HOTLINE_SHUTDOWN_GRACE_SECONDS="8")
    try:
        sip = peer(("127.0.0.1", sip_port))
        assert sip.options().status == 200
        assert health(web_port)[0] == 200
        call = place_call(sip)
        assert isinstance(call, Call)  # a call in flight keeps the node draining for a while
        serve.proc.send_signal(signal.SIGTERM)
        serve.wait_for("stopping", 5)
        probe = sip.options()
        assert probe.status == 503  # Kamailio's dispatcher takes the node out
        assert probe.header("retry-after") == "30"
        status, body = health(web_port)
        assert status == 503
        assert body["status"] == "draining"
        assert body["sip"] == "draining"
        refused = place_call(peer(("127.0.0.1", sip_port)))
        assert not isinstance(refused, Call)
        assert refused.status == 503
        assert call.bye().status == 200  # the call in flight is still carried
        call.close()
        assert serve.proc.wait(timeout=10) == 0
    finally:
        serve.stop()


def test_calls_get_media_ports_from_the_range_and_a_full_range_refuses(
    tmp_path: Path, peer
) -> None:
    # Four ports = two even ones: two calls fit, the third finds none. An even port with the
    # next three free, so no other program on this shared machine holds one of them.
    first = free_udp_port()
    serve, sip_port, _ = started(
        tmp_path, HOTLINE_SIP_RTP_PORT_MIN=str(first), HOTLINE_SIP_RTP_PORT_MAX=str(first + 3)
    )
    calls: list[Call] = []
    try:
        for _ in range(2):
            call = place_call(peer(("127.0.0.1", sip_port)))
            assert isinstance(call, Call)
            calls.append(call)
        ports = sorted(c.remote_rtp[1] for c in calls)
        assert ports == [first, first + 2]
        refused = place_call(peer(("127.0.0.1", sip_port)))
        assert not isinstance(refused, Call)
        assert refused.status == 503
        assert refused.header("retry-after") == "30"
        line = serve.wait_for("no rtp port", 5)
        assert line["rtp_port_min"] == first
        assert line["rtp_port_max"] == first + 3
        assert line["level"] == "error"
        # A port comes free when a call ends: the next call gets it.
        ended = calls.pop(0)
        assert ended.bye().status == 200
        ended.close()
        again = place_call(peer(("127.0.0.1", sip_port)))
        assert isinstance(again, Call)
        assert first <= again.remote_rtp[1] <= first + 3
        calls.append(again)
    finally:
        for call in calls:
            call.close()
        serve.stop()


KAMAILIO_CFG = Path(__file__).resolve().parents[2] / "docker" / "kamailio" / "kamailio.cfg"


def dispatcher_flags(ctl: Path, uri: str) -> str:
    """The dispatcher's FLAGS for ``uri`` (AP active, IP inactive, TP trying), via kamcmd."""
    done = subprocess.run(
        ["kamcmd", "-s", f"unix:{ctl}", "dispatcher.list"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    found = re.search(rf"URI: {re.escape(uri)}\s+FLAGS: (\w+)", done.stdout)
    return found.group(1) if found else ""


def wait_flags(ctl: Path, uri: str, wanted: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    flags = ""
    while time.monotonic() < deadline:
        flags = dispatcher_flags(ctl, uri)
        if flags.startswith(wanted):
            return flags
        time.sleep(0.5)
    return flags


@pytest.mark.slow
def test_kamailio_takes_a_draining_node_out_by_its_options_probes(tmp_path: Path, peer) -> None:
    # docker/kamailio/kamailio.cfg as deployed: OPTIONS every 5 s, two failed probes (only a
    # 200 counts) and the node is inactive.
    if shutil.which("kamailio", path="/usr/sbin:/usr/bin") is None:
        pytest.fail("kamailio is not installed (scripts/test installs it)")
    serve, sip_port, _ = started(tmp_path, HOTLINE_SHUTDOWN_GRACE_SECONDS="60")
    uri = f"sip:127.0.0.1:{sip_port}"
    (tmp_path / "dispatcher.list").write_text(f"1 {uri} 0 0 duid=node1\n")
    ctl = tmp_path / "kamailio.ctl"
    with (tmp_path / "kamailio.log").open("w") as log:
        kamailio = subprocess.Popen(
            [
                *("kamailio", "-f", str(KAMAILIO_CFG), "-DD", "-E"),
                *("-A", f"LISTEN=udp:127.0.0.1:{free_udp_port()}"),
                *("-A", f'DISPATCHER_LIST="{tmp_path / "dispatcher.list"}"'),
                *("-A", f'CTL_SOCKET="unix:{ctl}"'),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    call: Call | None = None
    try:
        assert wait_flags(ctl, uri, "AP", 30).startswith("AP")  # probed and answered
        placed = place_call(peer(("127.0.0.1", sip_port)))
        assert isinstance(placed, Call)  # keeps the node draining while Kamailio probes
        call = placed
        serve.proc.send_signal(signal.SIGTERM)
        serve.wait_for("stopping", 5)
        assert wait_flags(ctl, uri, "IP", 30).startswith("IP")  # inactive: no new calls sent
        assert call.bye().status == 200  # the call in flight was carried to its end
        assert serve.proc.wait(timeout=20) == 0
    finally:
        if call is not None:
            call.close()
        os.killpg(kamailio.pid, signal.SIGTERM)
        kamailio.wait(timeout=10)
        serve.stop()
