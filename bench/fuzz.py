"""Longer hostile-input runs than CI's (tests/hostile): the pure parsers for as many inputs as
asked, then a running `hotline serve` under SIP, RTP, HTTP and Twilio barrages while SIPp places
ordinary calls. Prints a table; exit 1 if any parser raised, the node died or logged an error,
or an ordinary call failed.

    python bench/fuzz.py --parsers 200000 --sip 50000 --rtp 50000 --http 5000 --twilio 10000
    python bench/fuzz.py --seed 7          # other inputs than CI's (seed 95598)

Run it from the repository root with the dev extra installed (SIPp on PATH for the live part).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hostile import test_fuzz_parsers as pure
from tests.hostile.inputs import hostile, seeded
from tests.hostile.live import Plan
from tests.hostile.test_fuzz_serve import (
    hostile_serve,
    ordinary_call,
    problems,
    run_barrages,
)
from tests.ivr.sip.udp_peer import Call, UdpPeer, place_call


def fuzz_parsers(count: int, seed: int) -> list[tuple[str, int, str]]:
    """``count`` inputs per target; (target, seed, error) of every input that raised."""
    failures = []
    targets = {
        "sip": (pure.SIP_SEEDS, pure.SIP.feed),
        "rtp": (pure.RTP_SEEDS, lambda data: pure.STREAM.receive(data, 1.0)),
    }
    for kind, (seeds, feed) in targets.items():
        for i in range(count):
            data = hostile(kind, seeds, seeded(seed + i))
            try:
                feed(data)
            except Exception as exc:
                failures.append((kind, seed + i, repr(exc)))
    for kind, test in (
        ("sdp", pure.test_sdp_bodies_only_ever_fail_as_sdp_errors),
        ("twilio", pure.test_twilio_frames_only_ever_fail_as_malformed),
    ):
        inner = test.hypothesis.inner_test  # type: ignore[attr-defined]
        for i in range(count):
            try:
                inner(seed + i)
            except Exception as exc:
                failures.append((kind, seed + i, repr(exc)))
    return failures


async def fuzz_node(
    plan: Plan, seed: int, calls: int, log_file: Path | None = None
) -> tuple[bool, str, float]:
    """The barrages against a fresh node; (passed, why not, seconds)."""
    with tempfile.TemporaryDirectory(prefix="hotline-fuzz-") as folder:
        node = hostile_serve(Path(folder))
        try:
            web = int((await asyncio.to_thread(node.wait_for, "web listening", 60))["port"])
            sip = int(node.wait_for("sip listening", 0)["port"])
            duration = 45  # SIPp's built-in caller sends no RTP: under the 60 s RTP timeout
            callers = [ordinary_call(sip, duration) for _ in range(calls)]
            await asyncio.sleep(1.0)
            peer = UdpPeer(("127.0.0.1", sip))
            call = place_call(peer)
            if not isinstance(call, Call):
                return False, f"the call under fire was refused: {call.status}", 0.0
            started = time.monotonic()
            sent = await run_barrages(sip, web, call, plan, seed)
            took = time.monotonic() - started
            why = []
            if node.proc.poll() is not None:
                why.append("the node died")
            await asyncio.sleep(2.0)  # the node reads what is still queued for it
            try:
                bye = call.bye().status
            except AssertionError:  # no answer at all
                bye = 0
            if bye != 200:
                why.append(f"the call under fire was lost (BYE answered {bye or 'nothing'})")
            codes = [await asyncio.to_thread(c.wait, duration + 90) for c in callers]
            if any(codes):
                why.append(f"ordinary calls failed: SIPp exit codes {codes}")
            if 500 in sent.http_statuses:
                why.append(f"HTTP 500 answered {sent.http_statuses[500]} times")
            call.close()
            peer.close()
            node.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(node.proc.wait, 15)
            node.drain(5)
            if log_file is not None:
                text = "".join(json.dumps(line) + "\n" for line in node.lines)
                await asyncio.to_thread(log_file.write_text, text)
            if found := problems(node.lines):
                why.append(f"{len(found)} error lines, first: {found[0]}")
            return not why, "; ".join(why), took
        finally:
            node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=95598)
    parser.add_argument("--parsers", type=int, default=20000, help="inputs per pure target")
    parser.add_argument("--sip", type=int, default=10000)
    parser.add_argument("--rtp", type=int, default=10000)
    parser.add_argument("--http", type=int, default=2000)
    parser.add_argument("--twilio", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=3, help="ordinary SIPp calls alongside")
    parser.add_argument(
        "--pace", type=float, default=0.02, help="seconds of rest per 20 SIP or RTP inputs"
    )
    parser.add_argument("--log", type=Path, help="write the node's log lines (JSON) here")
    args = parser.parse_args()

    start = time.monotonic()
    failures = fuzz_parsers(args.parsers, args.seed)
    parsers_took = time.monotonic() - start
    plan = Plan(sip=args.sip, rtp=args.rtp, http=args.http, twilio=args.twilio, pace=args.pace)
    passed, why, took = asyncio.run(fuzz_node(plan, args.seed, args.calls, args.log))

    print(f"{'part':<28}{'inputs':>10}{'seconds':>10}  result")
    result = "ok" if not failures else f"{len(failures)} raised, first {failures[0]}"
    print(f"{'pure parsers (4 targets)':<28}{4 * args.parsers:>10}{parsers_took:>10.1f}  {result}")
    print(f"{'running node':<28}{plan.total:>10}{took:>10.1f}  {'ok' if passed else why}")
    return 0 if passed and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
