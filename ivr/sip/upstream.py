"""Registration of the hotline itself at an upstream registrar (a PBX, an SBC, Kamailio), sans-I/O.

RFC 3261 §10.2 (REGISTER), §17.1.2 (the non-INVITE client transaction), §22 (digest, RFC 2617
``qop=auth`` with nonce counts), RFC 5626 §4.5 (back-off with jitter). Same shape as the other
SIP cores: the owner feeds datagrams with ``receive_datagram(data, addr, now)`` (``False`` for
anything that is not a response to our REGISTERs, decided by Call-ID, which we generate), sends
what ``datagrams_to_send(now)`` returns, reads ``next_event()`` until ``None`` and calls
``handle_timer(now)`` at ``get_timer()``. No socket, clock, asyncio or logging in here.

What happens here:

- ``start(now)`` only queues the first REGISTER: the hotline answers calls whether or not the
  upstream registrar is there (pyVoIP blocked start-up for 30 s on this, docs/decisions/0004).
- One transaction at a time, retransmitted on Timer E (T1 doubling, capped at T2; every T2 once
  a provisional came) until a final response or Timer F (64*T1 → ``RegistrationFailed(408)``).
- 401/407: answered with digest credentials (aiosipua's client arithmetic) — once per nonce.
  The credentials of a nonce are reused on refreshes with the nonce count going up (RFC 2617
  §3.2.2), so a registrar that tracks counts (Kamailio ``nonce_count``) sees no replay; a new
  challenge is answered again only if the refused request reused an old nonce or the registrar
  says ``stale=true``. Otherwise the password is wrong: ``RegistrationFailed(401)``, no loop.
- 423 Interval Too Brief: asked again at once with the ``Min-Expires`` (§10.2.8).
- 2xx: ``Registered(expires)`` with what the registrar granted for *our* Contact (it lists
  every binding of the address-of-record); refreshed at a random 50–80 % of that interval, so
  a fleet of hotline nodes restarted together does not refresh in lockstep.
- Any other failure or a timeout: ``RegistrationFailed(status, reason, retry_at)``, the next
  try after an exponential back-off (base doubling to a cap, RFC 5626 §4.5's 50–100 % jitter)
  or the registrar's Retry-After if that is longer. It never gives up while started.
- ``stop(now)``: REGISTER with ``Expires: 0`` for our Contact when a binding may exist
  (``Unregistered`` on its 2xx), nothing otherwise.

All REGISTERs of one client share a Call-ID and From tag with an increasing CSeq (§10.2.4), so
a late retransmission of an old REGISTER can never undo a newer one at the registrar (§10.3
step 7). aiosipua's own ``Registration`` is not used: it runs on asyncio tasks, never
retransmits, never retries after a failure and always sends ``nc=00000001``.
"""

from __future__ import annotations

import random
import re
import uuid
from collections import deque
from dataclasses import dataclass
from enum import Enum

from aiosipua import (
    AuthChallenge,
    SipMessage,
    SipResponse,
    SipUri,
    generate_branch,
    generate_tag,
    parse_address,
    parse_auth,
    parse_uri,
    parse_via,
    stringify_auth,
    stringify_uri,
)
from aiosipua.auth import SipDigestAuth, build_credentials

from ivr.sip.events import Addr
from ivr.sip.messages import MAX_DATAGRAM, bare_host, cseq_of, frame, hostport, via_for
from ivr.sip.timers import Retransmission, TimerValues
from ivr.sip.transactions import earliest
from ivr.sip.uac_messages import build_request

REFRESH_WINDOW = (0.5, 0.8)
"""Refresh at this fraction of the granted interval, drawn at random for every refresh."""

MAX_REFRESH_INTERVAL = 3600.0
"""Refresh at least this often whatever the registrar grants: a registrar that lost its
bindings (a restart without persistence) learns about us again within the hour."""

RETRY_BASE = 4.0
"""Back-off after the first failure, doubled for each further failure in a row (seconds)."""

RETRY_MAX = 300.0
"""Cap of the back-off: a registrar that comes back is used within five minutes."""

RETRY_AFTER_MAX = 3600.0
"""The longest Retry-After we honour: a registrar must not park us for a day."""

MAX_CHALLENGES = 3
"""Challenges answered per attempt at most, whatever the registrar says (``stale=true``
loops)."""

# Call-ID of a datagram without parsing it: the cheap test of whether it is ours at all.
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\s]+)", re.IGNORECASE | re.MULTILINE)

_CHALLENGE_HEADERS = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}
"""Status → (the challenge header it carries, the credentials header that answers it)."""


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Registered:
    """The registrar accepted our Contact (first registration or a refresh)."""

    expires: int
    """Seconds the registrar granted our Contact."""
    refresh_at: float
    """When the refresh will be sent (the owner's clock)."""


@dataclass(frozen=True)
class RegistrationFailed:
    """A REGISTER failed; the hotline keeps answering calls and tries again at ``retry_at``."""

    status: int
    """The final status (403, 503, ...); 408 when nothing answered within Timer F."""
    reason: str
    """The reason phrase, or what happened on our side."""
    retry_at: float | None
    """When the next REGISTER goes out; ``None`` when it was the unregistration at stop."""


@dataclass(frozen=True)
class Unregistered:
    """The registrar confirmed the removal of our Contact (``Expires: 0``) after ``stop``."""


UpstreamEvent = Registered | RegistrationFailed | Unregistered
"""What the registration client reports to its owner."""


class RegistrationState(Enum):
    """Where the client is."""

    IDLE = "idle"
    """Not started (or stopped and done)."""
    REGISTERING = "registering"
    """A REGISTER (first, refresh or retry) is in flight."""
    REGISTERED = "registered"
    """Bound; waiting for the refresh time."""
    BACKOFF = "backoff"
    """The last attempt failed; waiting for the retry time."""
    UNREGISTERING = "unregistering"
    """``stop`` sent REGISTER with ``Expires: 0``; waiting for its answer."""


# -------------------------------------------------------------------------------- records


@dataclass
class _Digest:
    """The last challenge of one kind (401 or 407), reused for later REGISTERs."""

    challenge: AuthChallenge
    """The registrar's challenge (realm, nonce, qop, opaque, algorithm)."""
    header: str
    """``Authorization`` (for a 401) or ``Proxy-Authorization`` (for a 407)."""
    nc: int = 0
    """Nonce count last sent with this nonce (RFC 2617 §3.2.2: strictly increasing)."""

    @property
    def nonce(self) -> str:
        """The nonce of the challenge."""
        return self.challenge.params.get("nonce", "")


@dataclass
class _Transaction:
    """One REGISTER client transaction (§17.1.2)."""

    data: bytes
    """The request's bytes; retransmissions are byte-identical."""
    branch: str
    """Its Via branch: responses match on it (§17.1.3)."""
    cseq: int
    """Its CSeq number."""
    expires: int
    """The interval it asked for (0: the unregistration)."""
    resend: Retransmission
    """Timer E."""
    timeout_at: float
    """Timer F."""
    nonces: dict[str, str]
    """Nonce used per credentials header it carries (empty: none)."""
    answering: bool
    """Its credentials answer a challenge of this attempt (not reused from an earlier one)."""
    challenges: int
    """Challenges answered so far in this attempt (this one included)."""


# -------------------------------------------------------------------------------- the client


class UpstreamRegistration:
    """Keeps the hotline's Contact bound at an upstream registrar, without I/O (see the module
    doc)."""

    def __init__(
        self,
        registrar_addr: Addr,
        aor: str,
        contact: str,
        *,
        username: str,
        password: str,
        realm: str | None = None,
        expires: int = 300,
        local_addr: Addr | None = None,
        registrar_uri: str | None = None,
        user_agent: str = "hotline95598",
        t1: float = 0.5,
        t2: float = 4.0,
        retry_base: float = RETRY_BASE,
        retry_max: float = RETRY_MAX,
        rng: random.Random | None = None,
    ) -> None:
        """Set up an idle client; ``start`` sends the first REGISTER.

        ``registrar_addr`` is where REGISTERs go (the registrar or an outbound proxy);
        ``aor`` the address-of-record to bind (``sip:95598@pbx.example``, To and From);
        ``contact`` where the registrar sends our calls (``sip:95598@<our IP>:<port>``).
        ``realm``: answer only challenges of that realm (``None``: any realm).
        ``local_addr`` is our Via sent-by (default: the Contact's host and port);
        ``registrar_uri`` the Request-URI (default: the AOR's domain, §10.2).
        ``rng`` draws the refresh point and the back-off jitter (seed it in tests).
        """
        if expires <= 0:
            raise ValueError("expires must be positive")
        if not 0 < retry_base <= retry_max:
            raise ValueError("need 0 < retry_base <= retry_max")
        self.registrar_addr = registrar_addr
        self.aor = aor.strip().strip("<>")
        self.contact = contact.strip().strip("<>")
        aor_uri = parse_uri(self.aor)
        contact_uri = parse_uri(self.contact)
        self._contact_uri = contact_uri
        self._request_uri = registrar_uri or stringify_uri(
            SipUri(scheme=aor_uri.scheme, host=aor_uri.host, port=aor_uri.port)
        )
        self._local = local_addr or (contact_uri.host, contact_uri.port or 5060)
        self._auth = SipDigestAuth(username, password)
        self.realm = realm
        self.expires = expires
        self._ua = user_agent
        self._timers = TimerValues(t1=t1, t2=t2)
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self.call_id = f"{uuid.uuid4()}@{bare_host(self._local[0])}"
        """One Call-ID for every REGISTER of this client (§10.2.4)."""
        self._tag = generate_tag()
        self._cseq = 0
        self._state = RegistrationState.IDLE
        self._tx: _Transaction | None = None
        self._digests: dict[str, _Digest] = {}
        self._refresh_at: float | None = None
        self._retry_at: float | None = None
        self._failures = 0
        self._bound_until: float | None = None
        self._events: deque[UpstreamEvent] = deque()
        self._outbox: list[tuple[bytes, Addr]] = []

    # ------------------------------------------------------------------ state, for the owner

    @property
    def state(self) -> RegistrationState:
        """Where the client is."""
        return self._state

    @property
    def bound_until(self) -> float | None:
        """When our binding lapses at the registrar, as last granted (``None``: never bound or
        unbound)."""
        return self._bound_until

    @property
    def failures(self) -> int:
        """Failed attempts in a row (0 after every success)."""
        return self._failures

    # ------------------------------------------------------------------ the sans-I/O surface

    def start(self, now: float) -> None:
        """Queue the first REGISTER (nothing is waited for). A no-op once started."""
        if self._state is not RegistrationState.IDLE:
            return
        self._failures = 0
        self._register(now, self.expires, answering=False, challenges=0)

    def stop(self, now: float) -> None:
        """Stop refreshing; unregister (``Expires: 0``) when a binding may exist.

        A REGISTER still in flight is abandoned: the unregistration has a higher CSeq on the
        same Call-ID, so the registrar cannot apply the older one after it (§10.3 step 7).
        """
        if self._state in (RegistrationState.IDLE, RegistrationState.UNREGISTERING):
            return
        self._refresh_at = self._retry_at = None
        bound = self._bound_until is not None and self._bound_until > now
        if bound or self._tx is not None:
            self._register(now, 0, answering=False, challenges=0)
        else:
            self._state = RegistrationState.IDLE

    def owns_datagram(self, data: bytes) -> bool:
        """Whether a datagram carries our Call-ID (nothing is parsed)."""
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        match = _CALL_ID.search(head)
        return match is not None and match.group(1).decode("utf-8", "replace") == self.call_id

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> bool:
        """Take a datagram if it carries our Call-ID; ``False`` (untouched) if not.

        Never raises: what we cannot use (unparseable, a request, a response to an abandoned
        transaction, a retransmitted final: Timer K's absorption) is dropped here.
        """
        del addr  # responses are matched by branch; the registrar may answer from anywhere
        if len(data) > MAX_DATAGRAM or not self.owns_datagram(data):
            return False
        try:
            framed, short = frame(data)
            message = SipMessage.parse(framed)
            if isinstance(message, SipResponse) and not short:  # §18.3
                self._on_response(message, now)
        except Exception:  # a bad datagram must never end the hotline's calls (CONVENTIONS 7)
            self._keep_alive(now)
        return True

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """Datagrams to send now, in order, with their destinations."""
        del now  # everything queued is due at once
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> UpstreamEvent | None:
        """The next event for the owner, or ``None``."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest time ``handle_timer`` must be called, or ``None``."""
        tx = self._tx
        return earliest(
            tx.resend.next_at if tx else None,
            tx.timeout_at if tx else None,
            self._refresh_at,
            self._retry_at,
        )

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        tx = self._tx
        if tx is not None:
            if tx.timeout_at <= now:
                # Timer F (§17.1.2.2): the registrar is down or unreachable.
                self._tx = None
                self._failed(408, "Request Timeout", now, unregistering=tx.expires == 0)
            elif tx.resend.next_at <= now:
                self._outbox.append((tx.data, self.registrar_addr))  # Timer E
                tx.resend.fire(now, self._timers)
        if self._refresh_at is not None and self._refresh_at <= now:
            self._refresh_at = None
            self._register(now, self.expires, answering=False, challenges=0)
        if self._retry_at is not None and self._retry_at <= now:
            self._retry_at = None
            self._register(now, self.expires, answering=False, challenges=0)

    # ------------------------------------------------------------------ sending

    def _register(self, now: float, expires: int, *, answering: bool, challenges: int) -> None:
        """Send a new REGISTER (new branch, next CSeq) with whatever credentials we hold."""
        self._cseq += 1
        branch = generate_branch()
        credentials: list[tuple[str, str]] = []
        nonces: dict[str, str] = {}
        for digest in self._digests.values():
            header = self._credentials(digest)
            if header is not None:
                credentials.append((digest.header, header))
                nonces[digest.header] = digest.nonce
        contact = f"<{self.contact}>" + (";expires=0" if expires == 0 else "")
        request = build_request(
            "REGISTER",
            self._request_uri,
            via=via_for(self._local, branch),
            routes=(),
            from_header=f"<{self.aor}>;tag={self._tag}",
            to_header=f"<{self.aor}>",
            call_id=self.call_id,
            cseq=self._cseq,
            user_agent=self._ua,
            headers=[("Contact", contact), ("Expires", str(expires)), *credentials],
        )
        data = bytes(request)
        t1 = self._timers.t1
        self._tx = _Transaction(
            data=data,
            branch=branch,
            cseq=self._cseq,
            expires=expires,
            resend=Retransmission(data, self.registrar_addr, now + t1, t1),  # Timer E
            timeout_at=now + self._timers.transaction_timeout,  # Timer F
            nonces=nonces,
            answering=answering,
            challenges=challenges,
        )
        self._state = (
            RegistrationState.UNREGISTERING if expires == 0 else RegistrationState.REGISTERING
        )
        self._outbox.append((data, self.registrar_addr))

    def _credentials(self, digest: _Digest) -> str | None:
        """The credentials header value for the next request on this nonce (nc + 1)."""
        digest.nc += 1
        answer = build_credentials(
            self._auth, digest.challenge, "REGISTER", self._request_uri, nonce_count=digest.nc
        )
        return stringify_auth(answer) if answer is not None else None

    # ------------------------------------------------------------------ receiving

    def _on_response(self, response: SipResponse, now: float) -> None:
        tx = self._tx
        vias = response.headers.get("via")
        cseq = cseq_of(response)
        if tx is None or not vias or cseq != (tx.cseq, "REGISTER"):
            return  # an abandoned transaction, or a retransmitted final (Timer K absorbs it)
        if (parse_via(vias[0]).branch or "") != tx.branch:
            return
        status = response.status_code
        if status < 200:
            tx.resend.interval = self._timers.t2  # §17.1.2.2: Proceeding resends every T2
            return
        self._tx = None
        unregistering = tx.expires == 0
        reason = response.reason_phrase or str(status)
        if status < 300:
            if unregistering:
                self._bound_until = None
                self._state = RegistrationState.IDLE
                self._events.append(Unregistered())
            else:
                self._registered(response, tx, now)
            return
        if status in _CHALLENGE_HEADERS:
            problem = self._take_challenge(response, status, tx)
            if problem is None:
                self._register(now, tx.expires, answering=True, challenges=tx.challenges + 1)
                return
            reason = f"{reason} ({problem})"
        elif status == 423 and not unregistering:
            minimum = _seconds(response.headers.get_first("min-expires"))
            if minimum is not None and tx.expires < minimum:
                # §10.2.8: ask again at once with at least the registrar's minimum.
                self.expires = minimum
                self._register(now, minimum, answering=tx.answering, challenges=tx.challenges)
                return
        retry_after = _seconds((response.headers.get_first("retry-after") or "").split(";")[0])
        self._failed(status, reason, now, unregistering=unregistering, retry_after=retry_after)

    def _keep_alive(self, now: float) -> None:
        """After an error half-way through a response: never stay started with nothing
        scheduled (that would silently end the registration for good)."""
        idle = self._tx is None and self._refresh_at is None and self._retry_at is None
        if idle and self._state is RegistrationState.UNREGISTERING:
            self._state = RegistrationState.IDLE
        elif idle and self._state is not RegistrationState.IDLE:
            self._failed(500, "unusable response", now)

    def _take_challenge(self, response: SipResponse, status: int, tx: _Transaction) -> str | None:
        """Keep a 401/407 challenge to answer; why not, if it must not be answered (§22.2)."""
        if tx.challenges >= MAX_CHALLENGES:
            return "too many challenges"
        challenge_header, credentials_header = _CHALLENGE_HEADERS[status]
        offered = [parse_auth(value) for value in response.headers.get(challenge_header)]
        usable = [c for c in offered if self._answerable(c)]
        if not usable:
            realms = sorted({c.params.get("realm", "") for c in offered})
            return f"no challenge we can answer (realm {', '.join(realms) or 'none'})"
        challenge = usable[0]
        nonce = challenge.params.get("nonce", "")
        stale = challenge.params.get("stale", "").lower() == "true"
        used = tx.nonces.get(credentials_header)
        if used == nonce:
            return "credentials refused"  # the same nonce again: a wrong password
        if used is not None and tx.answering and not stale:
            # Fresh credentials refused with a new nonce: a wrong password too, unless the
            # registrar says the nonce merely went stale (RFC 2617 §3.2.1).
            return "credentials refused"
        self._digests[credentials_header] = _Digest(challenge, credentials_header)
        return None

    def _answerable(self, challenge: AuthChallenge) -> bool:
        if self.realm is not None and challenge.params.get("realm") != self.realm:
            return False  # never hand a digest of our password to another realm
        return build_credentials(self._auth, challenge, "REGISTER", self._request_uri) is not None

    def _registered(self, response: SipResponse, tx: _Transaction, now: float) -> None:
        granted = self._granted(response, tx.expires)
        if granted <= 0:
            self._failed(response.status_code, "no binding granted for our Contact", now)
            return
        self._failures = 0
        self._bound_until = now + granted
        low, high = REFRESH_WINDOW
        delay = min(granted * self._rng.uniform(low, high), MAX_REFRESH_INTERVAL)
        self._refresh_at = now + delay
        self._state = RegistrationState.REGISTERED
        self._events.append(Registered(granted, self._refresh_at))

    def _granted(self, response: SipResponse, requested: int) -> int:
        """Our Contact's ``expires`` in the 2xx, else its Expires header, else what we asked
        (§10.2.4: the 2xx lists every binding of the address-of-record)."""
        for raw in response.headers.get("contact"):
            for part in _split_contacts(raw):
                try:
                    address = parse_address(part)
                except ValueError:
                    continue
                if _same_uri(address.uri, self._contact_uri):
                    value = _seconds(address.params.get("expires"))
                    if value is not None:
                        return value
        header = _seconds(response.headers.get_first("expires"))
        return header if header is not None else requested

    def _failed(
        self,
        status: int,
        reason: str,
        now: float,
        *,
        unregistering: bool = False,
        retry_after: int | None = None,
    ) -> None:
        if unregistering:
            self._state = RegistrationState.IDLE
            self._events.append(RegistrationFailed(status, reason, None))
            return
        self._failures += 1
        ceiling = min(self._retry_max, self._retry_base * 2 ** (self._failures - 1))
        delay = ceiling * self._rng.uniform(0.5, 1.0)  # RFC 5626 §4.5: 50-100 % of the bound
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), RETRY_AFTER_MAX))
        self._retry_at = now + delay
        self._state = RegistrationState.BACKOFF
        self._events.append(RegistrationFailed(status, reason, self._retry_at))


def hotline_registration(
    registrar: str,
    user: str,
    password: str,
    local_addr: Addr,
    *,
    expires: int = 300,
    realm: str | None = None,
    t1: float = 0.5,
    retry_base: float = RETRY_BASE,
    retry_max: float = RETRY_MAX,
) -> UpstreamRegistration:
    """The hotline's registration as ``user`` at ``registrar`` (``"IP:port"``, ``"[IPv6]:port"``
    or a bare IP for port 5060; no DNS here): AOR ``sip:user@registrar``, Contact
    ``sip:user@<our SIP socket>``, digest username ``user``."""
    host, port = _split_hostport(registrar)
    return UpstreamRegistration(
        (host, port),
        f"sip:{user}@{hostport((host, port))}",
        f"sip:{user}@{hostport(local_addr)}",
        username=user,
        password=password,
        realm=realm,
        expires=expires,
        local_addr=local_addr,
        t1=t1,
        retry_base=retry_base,
        retry_max=retry_max,
    )


# ------------------------------------------------------------------------------ wire helpers


def _split_hostport(text: str) -> Addr:
    """``"127.0.0.1:5070"``, ``"[::1]:5070"``, ``"10.0.0.1"`` (5060) → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 5060
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:  # no port, or a bare IPv6 literal
        return text, 5060
    return host, int(port)


def _seconds(raw: str | None) -> int | None:
    """A delta-seconds value (Expires, Min-Expires, Retry-After), or ``None``."""
    text = (raw or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _split_contacts(raw: str) -> list[str]:
    """One Contact header value may hold several comma-separated contacts (§20.10); commas
    inside ``<...>`` or quotes do not separate."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for index, char in enumerate(raw):
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(raw[start:index].strip())
            start = index + 1
    parts.append(raw[start:].strip())
    return [p for p in parts if p]


def _same_uri(a: SipUri, b: SipUri) -> bool:
    """Our Contact as the registrar echoes it (§19.1.4, without parameter comparison: a
    registrar may add its own, e.g. Kamailio's ``received``)."""
    return (
        a.scheme.lower() == b.scheme.lower()
        and (a.user or "") == (b.user or "")
        and bare_host(a.host) == bare_host(b.host)
        and (a.port or 5060) == (b.port or 5060)
    )
