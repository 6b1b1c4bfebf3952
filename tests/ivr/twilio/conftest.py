"""Twilio's side of a call, played by the tests.

The message fixtures in ``data/`` are shaped exactly as Twilio's "Media Streams - WebSocket
Messages" page shows them (only sids, numbers, digits and payloads are substituted).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
SILENCE_ULAW = b"\xff" * 160
"""20 ms of µ-law silence: what a quiet caller sends."""


def fixture(name: str) -> dict[str, Any]:
    """A message fixture from data/ (a fresh copy)."""
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data
