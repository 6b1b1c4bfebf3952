"""Benchmark: how many 95598 calls per second the pure dialog engine walks on one core.

Each call walks the fault-report path (menu, account, confirm, address, outage lookup, ticket,
queue, agent, survey) by feeding events straight into `Dialog.handle`, so the figure is the
engine's own cost per call, the ceiling any transport works under. Prints a table.

    python bench/dialog_walk.py [--calls N]
"""

from __future__ import annotations

import argparse
import platform
import time

from ivr.dialog import actions as act
from ivr.dialog import events as ev
from ivr.dialog.engine import CallContext, Dialog
from ivr.flow.model import Flow, load_flow
from ivr.settings import load_settings


def walk(flow: Flow, n: int) -> int:
    """One fault report; returns the number of events fed."""
    d = Dialog(flow, CallContext(call_id=f"b{n}", caller="13800138000", speech_available=True))
    t = 0.0
    count = 0

    def feed(event: ev.Event) -> list[act.Action]:
        nonlocal count
        count += 1
        out = d.handle(event, t)
        for a in out:
            if isinstance(a, act.Play):
                out += d.handle(ev.PromptFinished(a.play_id), t)
                count += 1
        return out

    def request(out: list[act.Action], kind: type) -> int:
        return next(a.request_id for a in out if isinstance(a, kind))  # type: ignore[attr-defined]

    feed(ev.CallStarted())
    feed(ev.DigitPressed("2"))
    for k in "3201234567#":
        feed(ev.DigitPressed(k))
    feed(ev.DigitPressed("1"))
    out = feed(ev.SpeechRecognized("南京市鼓楼区中山北路一百号", 0.9))
    out = feed(ev.LookupResult(request(out, act.Lookup), "not_found"))
    out = feed(ev.TicketCreated(request(out, act.CreateTicket), "202611270001"))
    rid = request(out, act.Enqueue)
    feed(ev.QueuePosition(rid, 3, 120))
    feed(ev.AgentConnected(rid, "A1"))
    feed(ev.AgentDisconnected(rid))
    feed(ev.DigitPressed("5"))
    assert d.ended, d.node_id
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    flow = load_flow(load_settings().resolved_flow_file())
    walk(flow, 0)  # warm caches (pinyin tables, readback)
    start = time.perf_counter()
    cpu = time.process_time()
    events = sum(walk(flow, i) for i in range(args.calls))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, Python {platform.python_version()}")
    print("| calls | events | wall s | calls/s | events/s | CPU ms per call |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.calls} | {events} | {wall:.2f} | {args.calls / wall:.0f} | {events / wall:.0f} "
        f"| {cpu * 1000 / args.calls:.2f} |"
    )


if __name__ == "__main__":
    main()
