"""RFC 4028 session timers for the UAS: the negotiated interval, refresher, and their deadlines.

Pure functions over one request; the UAS core keeps the resulting `SessionTimer` per call and
turns its delays into deadlines (BYE when the peer stops refreshing, UPDATE when we refresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiosipua import SipRequest

from ivr.sip.messages import header_tokens

MIN_SE = 90
"""RFC 4028 §4: the smallest interval any element may insist on (and our Min-SE)."""


@dataclass(frozen=True)
class TimerRequest:
    """What an INVITE, re-INVITE or UPDATE says about session timers."""

    expires: int | None
    """Session-Expires delta-seconds, if the header is present."""
    refresher: str | None
    """The ``refresher`` parameter (``uac``/``uas``), if present."""
    min_se: int
    """The request's Min-SE (90 when absent, RFC 4028 §5)."""
    supported: bool
    """The UAC listed ``timer`` in Supported or Require."""


@dataclass(frozen=True)
class SessionTimer:
    """The session timer agreed for a dialog, as it is stated in our 2xx."""

    interval: int
    """Session interval in seconds."""
    refresher: Literal["uac", "uas"]
    """Who sends the refreshes."""
    require: bool
    """Whether our 2xx says ``Require: timer`` (only when the UAC supports it, §9)."""

    @property
    def header(self) -> str:
        """The Session-Expires header value of our 2xx."""
        return f"{self.interval};refresher={self.refresher}"

    @property
    def expiry_delay(self) -> float:
        """Seconds after a refresh until the non-refresher's BYE (§10: min(32, SE/3) early)."""
        return self.interval - min(32.0, self.interval / 3)

    @property
    def refresh_delay(self) -> float:
        """Seconds after a refresh at which the refresher sends the next one (§10: half)."""
        return self.interval / 2

    def next_deadline(self, now: float) -> float:
        """After a refresh at ``now``: when we refresh, or when we give up on the peer's."""
        return now + (self.refresh_delay if self.refresher == "uas" else self.expiry_delay)

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """What our 2xx says (§9): Session-Expires, and Require: timer if the UAC supports it."""
        headers = [("Session-Expires", self.header)]
        if self.require:
            headers.append(("Require", "timer"))
        return headers

    def refreshed(self, session_expires: str | None) -> SessionTimer:
        """The timer after a 2xx to our refresh, which may restate it (§7.2)."""
        if not session_expires:
            return self
        try:
            interval, params = _delta(session_expires)
        except ValueError:
            return self
        refresher: Literal["uac", "uas"] = "uac" if params.get("refresher") == "uac" else "uas"
        return SessionTimer(max(interval, MIN_SE), refresher, self.require)


@dataclass(frozen=True)
class IntervalTooSmall:
    """The UAC asked for less than our Min-SE: answer 422 with this Min-SE (§9)."""

    min_se: int
    """Our Min-SE, for the 422's Min-SE header."""


def _delta(value: str) -> tuple[int, dict[str, str]]:
    first, *params = value.split(";")
    seconds = int(first.strip())  # ValueError for garbage: the caller answers 400
    if seconds < 0:
        raise ValueError("negative interval")
    named: dict[str, str] = {}
    for param in params:
        key, _, val = param.partition("=")
        named[key.strip().lower()] = val.strip().lower()
    return seconds, named


def read_request(request: SipRequest) -> TimerRequest:
    """The session timer fields of a request; ValueError if Session-Expires or Min-SE is garbage."""
    raw = request.headers.get_first("session-expires") or request.headers.get_first("x")
    expires: int | None = None
    refresher: str | None = None
    if raw is not None:
        expires, params = _delta(raw)
        refresher = params.get("refresher")
    raw_min = request.headers.get_first("min-se")
    min_se = _delta(raw_min)[0] if raw_min is not None else MIN_SE
    tags = header_tokens(request.headers.get("supported") + request.headers.get("require"))
    return TimerRequest(expires, refresher, min_se, "timer" in tags)


def negotiate(
    request: TimerRequest,
    *,
    local_expires: int | None,
    peer_allows_update: bool,
    local_min_se: int = MIN_SE,
) -> SessionTimer | IntervalTooSmall | None:
    """The session timer for our 2xx, a 422, or ``None`` for no session timer (RFC 4028 §9).

    We may shorten the UAC's interval to ``local_expires`` but never below either Min-SE. When
    the UAC supports timers we let it refresh (``refresher=uac``) unless it asked us to. When it
    does not, §9 makes us the refresher; we refresh with UPDATE (RFC 3311), so a peer whose Allow
    lacks UPDATE gets no session timer at all rather than one we cannot keep.
    """
    if request.expires is None and local_expires is None:
        return None
    if request.expires is not None and request.expires < local_min_se and request.supported:
        return IntervalTooSmall(local_min_se)
    floor = max(local_min_se, request.min_se)
    if request.expires is None:
        assert local_expires is not None
        interval = local_expires
    elif local_expires is not None:
        interval = min(request.expires, local_expires)
    else:
        interval = request.expires
    interval = max(interval, floor)
    if request.supported:
        return SessionTimer(interval, "uas" if request.refresher == "uas" else "uac", require=True)
    if not peer_allows_update:
        return None
    return SessionTimer(interval, "uas", require=False)


def peer_allows_update(request: SipRequest) -> bool:
    """Whether the peer accepts UPDATE: an absent Allow says nothing, so yes (RFC 3261 §20.5)."""
    allow = request.headers.get("allow")
    return not allow or "update" in header_tokens(allow)
