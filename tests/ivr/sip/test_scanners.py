"""SIPVicious (svmap, svwar, svcrack) against a real `hotline serve` with agent extensions: the
scanner finds the node, learns nothing about which extensions are agents, and a REGISTER brute
force is throttled while the real agent phone still registers.

svwar and svcrack 0.3.8 ignore their ``-b`` (they always send from 127.0.0.1 here), so the
agent's phone and the probes of this test send from other loopback addresses (127.0.0.2,
127.0.0.3): the throttle, which keys on the source address, tells them apart.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosipua import SipDigestAuth, build_credentials, parse_auth, stringify_auth

from tests.ivr.serve_process import ServeProcess, start_serve
from tests.ivr.sip.udp_peer import UdpPeer

AGENTS = {"1001": "correct-horse-1001", "1002": "correct-horse-1002"}
SCANNED = "1000-1010"  # agents 1001 and 1002 among extensions that are not agents
PER_SOURCE = 5
SCANNER_TIMEOUT = 90

pytestmark = pytest.mark.slow


def tool(name: str) -> str:
    path = Path(sys.executable).with_name(f"sipvicious_{name}")
    if not path.exists():
        found = shutil.which(f"sipvicious_{name}")
        if found is None:
            pytest.fail(f"sipvicious_{name} is not installed (the dev extra installs it)")
        return found
    return str(path)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def scan(name: str, sip_port: int, source: str, *args: str) -> str:
    """Run one SIPVicious tool from ``source``; its whole output (it reports on stderr)."""
    done = subprocess.run(
        [
            tool(name),
            *args,
            f"-p{sip_port}",
            "-b",
            source,
            "-P",
            str(free_port(source)),
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=SCANNER_TIMEOUT,
        check=False,
    )
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, int, int]]:
    folder = tmp_path_factory.mktemp("scanners")
    agents = folder / "agents.toml"
    agents.write_text("".join(f'[agents.{ext}]\npassword = "{pw}"\n' for ext, pw in AGENTS.items()))
    serve = start_serve(
        folder,
        HOTLINE_SIP_AGENTS_FILE=str(agents),
        HOTLINE_SIP_REGISTER_ATTEMPTS_PER_SOURCE=str(PER_SOURCE),
        # A second of ringing: svwar's CANCEL (sent on the first provisional) always wins, so
        # every dialed extension gets the same 487, agent or not.
        HOTLINE_SIP_RING_SECONDS="1",
    )
    try:
        web = int(serve.wait_for("web listening", 60)["port"])
        sip = int(serve.wait_for("sip listening", 0)["port"])
        yield serve, sip, web
    finally:
        serve.stop()


def test_svmap_finds_the_node_and_nothing_more(node) -> None:
    _, sip_port, _ = node
    out = scan("svmap", sip_port, "127.0.0.1")
    assert f"127.0.0.1:{sip_port}" in out
    assert "hotline95598" in out


@pytest.mark.parametrize("method", ["REGISTER", "OPTIONS", "INVITE"])
def test_svwar_learns_nothing_about_agent_extensions(node, method: str) -> None:
    serve, sip_port, _ = node
    out = scan("svwar", sip_port, "127.0.0.1", f"-e{SCANNED}", "-m", method, "--force")
    assert "found nothing" in out, out
    for ext in AGENTS:  # no row of its results table names an agent
        assert not re.search(rf"^\|\s*{ext}\s*\|", out, re.MULTILINE), out
    assert serve.proc.poll() is None


def test_agent_and_non_agent_extensions_get_the_same_answers(node) -> None:
    _, sip_port, _ = node
    peer = UdpPeer(("127.0.0.1", sip_port), host="127.0.0.3")
    try:
        answers = {}
        for ext in ("1001", "1000", "424242"):
            register = peer.final(peer.request("REGISTER", user=ext, from_user=ext))
            options = peer.final(peer.request("OPTIONS", user=ext))
            challenge = register.header("www-authenticate") or ""
            answers[ext] = (
                register.status,
                re.sub(r'nonce="[^"]*"', "nonce", challenge),
                options.status,
            )
        assert answers["1001"] == answers["1000"] == answers["424242"]
        assert answers["1001"][0] == 401
    finally:
        peer.close()


def register_agent(sip_port: int, ext: str) -> int:
    """The agent's phone on 127.0.0.2 registers with its password; the final status."""
    peer = UdpPeer(("127.0.0.1", sip_port), host="127.0.0.2")
    try:
        call_id = f"phone-{ext}"
        first = peer.final(peer.request("REGISTER", user=ext, from_user=ext, call_id=call_id))
        if first.status != 401:
            return first.status
        challenge = parse_auth(first.header("www-authenticate") or "")
        uri = f"sip:{ext}@127.0.0.1:{sip_port}"
        creds = build_credentials(
            SipDigestAuth(ext, AGENTS[ext]), challenge, "REGISTER", uri, nonce_count=1
        )
        assert creds is not None
        auth = f"Authorization: {stringify_auth(creds)}"
        again = peer.request(
            "REGISTER", user=ext, from_user=ext, call_id=call_id, cseq=2, headers=(auth,)
        )
        return peer.final(again).status
    finally:
        peer.close()


def test_svcrack_is_throttled_and_the_agent_still_registers(node) -> None:
    serve, sip_port, web_port = node
    wordlist = Path(__file__).parent / "data" / "svcrack_words.txt"
    # The right password comes after more wrong guesses than the throttle allows.
    assert wordlist.read_text().splitlines().index(AGENTS["1001"]) > PER_SOURCE
    out = scan(
        "svcrack",
        sip_port,
        "127.0.0.1",
        "-u1001",
        "-d",
        str(wordlist),
        "--maximumtime=5",
    )
    assert "found nothing" in out, out
    assert AGENTS["1001"] not in out
    line = serve.wait_for("register throttled", 5)
    assert line["limit"] == "source"
    assert line["source"] == "127.0.0.1"
    assert line["level"] == "warning"
    refused = [
        entry
        for entry in serve.lines
        if entry.get("event") == "register refused"
        and str(entry.get("source")).startswith("127.0.0.1:")
    ]
    assert len(refused) == PER_SOURCE  # one line per counted guess, then only the throttle's
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    dropped = re.search(r"^hotline_sip_registers_dropped_total (\S+)$", metrics, re.MULTILINE)
    assert dropped is not None
    assert float(dropped.group(1)) >= 1
    # The agent's phone, from its own address, is not locked out by the scanner's guesses.
    assert register_agent(sip_port, "1001") == 200
    assert serve.proc.poll() is None
