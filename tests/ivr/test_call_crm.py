"""`hotline call --crm`: a simulated call files its work order in this node's CRM store."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from crm_bridge.embedded import EmbeddedCrm, store_path


def hotline(*args: str, cwd: Path, stdin: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("hotline")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ivr"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    return subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def test_a_spoken_fault_report_leaves_a_ticket_in_the_embedded_store(tmp_path: Path) -> None:
    # Intent and address in one sentence, as the speech issue asks; the caller then hangs up
    # before the flow ends: the work order is still filed (a partial one), with the address.
    run = hotline(
        "call",
        "--crm",
        cwd=tmp_path,
        stdin="say: 我家停电了 历下区经十路 88 号\n#\nhangup\n",
    )
    assert run.returncode == 0, run.stderr
    assert "CRM: 1 delivered (embedded)" in run.stdout
    [number] = re.findall(r"CRM ▶ ok: (\d{13})", run.stdout)

    async def read() -> None:
        crm = await EmbeddedCrm.open(store_path(tmp_path / "var"))
        try:
            ticket = await crm.get_ticket(number)
        finally:
            await crm.close()
        assert ticket is not None
        assert ticket.ticket_type == "故障报修"
        address = ticket.address
        assert (address.province, address.city, address.district) == ("山东省", "济南市", "历下区")
        assert (address.street, address.number) == ("经十路", "88号")

    asyncio.run(read())


def test_without_crm_the_call_says_so(tmp_path: Path) -> None:
    run = hotline("call", cwd=tmp_path, stdin="hangup\n")
    assert run.returncode == 0, run.stderr
    assert "hotline call --crm files tickets" in run.stdout
    assert not (tmp_path / "var").exists()
