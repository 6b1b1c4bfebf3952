"""The built-in registrar for agent softphones: digest-authenticated REGISTER and contact bindings.

RFC 3261 §10.3 (registrar behaviour) and §22 (digest authentication, RFC 2617 MD5 with
``qop=auth``). Sans-I/O like the UAS core: ``handle(request, addr, now)`` turns one REGISTER into
a :class:`RegisterReply` (status, reason, headers) that the server sends with
``SipCore.response_for``/``send_response``; time is always an argument. Bindings are read with
``lookup(extension, now)`` (contact URI and source address, for calling agents later).

Agents are configured in a TOML file (setting ``sip_agents_file``)::

    realm = "hotline"            # optional: refuses to start if it is not ``sip_realm``

    [agents.1001]
    ha1 = "9825b4c9c75afc481a419b95f9c54647"   # md5("1001:hotline:secret"), preferred

    [agents.1002]
    password = "only-for-a-lab"                # plain text, if no ha1 is given

``ha1`` wins when both are given, so plain passwords need not be on disk; compute it with
:func:`digest_ha1` (``python -c 'from ivr.sip.registrar import digest_ha1;
print(digest_ha1("1001", "hotline", "secret"))'``). An HA1 is bound to its realm: changing
``sip_realm`` invalidates every stored hash, which is why the file may state the realm it was
made for.

Decisions a newcomer would question:

- **Digest arithmetic is hashlib, not aiosipua.** ``aiosipua.auth.build_credentials`` is the
  client side: it needs the plain password and picks the cnonce. A server verifies from a stored
  HA1 and must compare in constant time, so the two RFC 2617 §3.2.2.1 formulas are written here;
  aiosipua's ``parse_auth``/``stringify_auth`` still read and write the headers, and the tests
  answer our challenges with aiosipua's client code, so both sides are checked against each other.
- **Unknown extension: 403, not 404.** Every REGISTER without credentials is challenged the same
  way and every failed proof is a 403, so nobody can enumerate the extensions (RFC 3261 §10.3
  step 5's 404 would tell a scanner which extensions exist). The log line says which it was.
- **Nonces are kept in a bounded table, not made stateless (HMAC).** Replay protection needs
  per-nonce state anyway: the highest nonce-count seen for ``qop=auth`` (RFC 2617 §3.2.2), and
  single use for clients that do not do ``qop`` (RFC 2069 style, e.g. pyVoIP 1.6.8). A valid
  proof with an unknown, expired, replayed or used-up nonce gets 401 with ``stale=true``: the
  client retries with a fresh nonce without asking the user (RFC 2617 §3.2.1). A 403 spends
  its nonce, so a password guesser needs a challenge round trip per guess; and failed proofs
  are counted per source address and per user (`ivr.sip.register_throttle`): over the limit,
  REGISTERs are dropped unanswered for a while (``RegisterReply.answered`` is false).
- **Clients without qop are accepted** (RFC 2617 §3.2.2.1's RFC 2069 compatibility) because
  real phones (pyVoIP) do it; their nonce is single-use, which gives the same replay protection.
- **One registrar, one domain:** the Request-URI's host is not checked (§10.3 step 1); the To
  URI's user part is the extension.
- **Expired bindings are removed lazily:** on every ``handle`` and by ``handle_timer(now)``;
  ``lookup`` never returns a binding past its expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import tomllib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import structlog
from aiosipua import (
    AuthChallenge,
    AuthCredentials,
    SipRequest,
    parse_address,
    parse_auth,
    parse_uri,
    stringify_auth,
    stringify_uri,
)

from ivr.sip.errors import SipError
from ivr.sip.events import Addr
from ivr.sip.messages import cseq_of, printable
from ivr.sip.register_throttle import RegisterThrottle

log = structlog.get_logger("ivr.sip.registrar")

DEFAULT_REALM = "hotline"
NONCE_TTL = 300.0
"""Seconds a nonce may be used (then ``stale=true``): long enough for one registration."""
MAX_NONCES = 4096
"""Outstanding nonces kept; every unauthenticated REGISTER makes one, so the table is bounded."""
MAX_BINDINGS = 10
"""Contacts one extension may register at once (a softphone, a desk phone, a mobile...)."""
MAX_EXPIRES_VALUE = 2**32 - 1  # RFC 3261 §20.19

_HA1 = re.compile(r"[0-9a-f]{32}")
_NC = re.compile(r"[0-9a-fA-F]{8}")
_EXTENSION = re.compile(r"[A-Za-z0-9_.+\-]{1,64}")


class AgentsFileError(SipError):
    """The agents file is missing, not TOML, or has an entry the registrar cannot use."""

    error_id = "bad-agents-file"


def digest_ha1(username: str, realm: str, password: str) -> str:
    """RFC 2617 §3.2.2.2 A1 hash for MD5: ``md5(username:realm:password)`` as lowercase hex."""
    return _md5(f"{username}:{realm}:{password}")


def load_agents(path: Path, realm: str) -> dict[str, str]:
    """Read the agents file: extension → HA1 for ``realm``. Raises AgentsFileError."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise AgentsFileError(f"agents file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AgentsFileError(f"agents file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"realm", "agents"})
    if unknown:
        raise AgentsFileError(f"agents file {path}: unknown keys {unknown} (realm, agents)")
    stated = data.get("realm")
    if stated is not None and stated != realm:
        raise AgentsFileError(
            f"agents file {path} was made for realm {stated!r} but sip_realm is {realm!r}: "
            "its ha1 hashes cannot match"
        )
    agents = data.get("agents", {})
    if not isinstance(agents, dict):
        raise AgentsFileError(f"agents file {path}: 'agents' must be a table of extensions")
    out: dict[str, str] = {}
    for extension, entry in agents.items():
        where = f"agents file {path}: [agents.{extension}]"
        if not _EXTENSION.fullmatch(extension):
            raise AgentsFileError(f"{where}: an extension is letters, digits and _.+- only")
        if not isinstance(entry, dict):
            raise AgentsFileError(f"{where} must be a table with ha1 or password")
        extra = sorted(set(entry) - {"ha1", "password"})
        if extra:  # a typo ("pasword") must not leave an agent silently locked out
            raise AgentsFileError(f"{where}: unknown keys {extra} (ha1, password)")
        ha1, password = entry.get("ha1"), entry.get("password")
        if ha1 is not None:
            if not isinstance(ha1, str) or not _HA1.fullmatch(ha1.lower()):
                raise AgentsFileError(f"{where}: ha1 must be 32 hex digits (an MD5 digest)")
            out[extension] = ha1.lower()
        elif isinstance(password, str) and password:
            out[extension] = digest_ha1(extension, realm, password)
        else:
            raise AgentsFileError(f"{where}: needs ha1 (preferred) or a non-empty password")
    return out


@dataclass(frozen=True)
class Binding:
    """One registered contact of an agent's extension (RFC 3261 §10.3 step 7)."""

    extension: str
    """The agent's extension (the user part of the REGISTER's To URI)."""
    contact: str
    """The contact URI as registered, e.g. ``sip:1001@10.0.0.5:5060;transport=udp``."""
    source: Addr
    """Where the REGISTER came from: the address to reach a phone behind NAT."""
    expires_at: float
    """When the binding lapses unless refreshed (the owner's clock, like every ``now``)."""
    call_id: str
    """Call-ID of the REGISTER that made it (§10.3 step 7 ordering)."""
    cseq: int
    """CSeq number of that REGISTER."""
    user_agent: str = ""
    """The phone's User-Agent header, for logs and the operator."""

    def expires_in(self, now: float) -> int:
        """Whole seconds left (rounded up), 0 once expired."""
        return max(0, math.ceil(self.expires_at - now))


@dataclass(frozen=True)
class RegisterReply:
    """What to answer a REGISTER with; the server builds it with ``SipCore.response_for``."""

    status: int
    """Status code: 200, 400, 401, 403, 423 or 500; 0 = send nothing (throttled)."""
    reason: str
    """Reason phrase."""
    headers: tuple[tuple[str, str], ...] = ()
    """Headers to add: Contact (200), WWW-Authenticate (401), Min-Expires (423)."""
    outcome: str = ""
    """Short machine-readable outcome for logs and tests (``registered``, ``challenged``…)."""

    @property
    def answered(self) -> bool:
        """Whether to send a response at all (not when the REGISTER throttle drops it)."""
        return self.status != 0


@dataclass
class _Nonce:
    expires_at: float
    nc: int = 0
    """Highest nonce-count accepted with qop=auth."""
    used: bool = False
    """Used once without qop: never again."""


@dataclass
class _Proof:
    """The parts of a Digest Authorization we use, checked for presence and shape."""

    username: str
    nonce: str
    uri: str
    response: str
    qop: str | None
    nc: str
    cnonce: str


class _RefusedError(Exception):
    """Internal: stop handling with this reply."""

    def __init__(self, reply: RegisterReply) -> None:
        super().__init__(reply.reason)
        self.reply = reply


class Registrar:
    """Digest-authenticated registrar for agent extensions, without I/O (see the module doc)."""

    def __init__(
        self,
        agents: Mapping[str, str],
        *,
        realm: str = DEFAULT_REALM,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        nonce_ttl: float = NONCE_TTL,
        max_nonces: int = MAX_NONCES,
        max_bindings: int = MAX_BINDINGS,
        throttle: RegisterThrottle | None = None,
    ) -> None:
        """``agents`` maps extension → HA1 (``md5(extension:realm:password)``, see load_agents).

        A non-zero expiry below ``min_expires`` gets 423 Interval Too Brief, one above
        ``max_expires`` is cut down (the 200 says so per contact), and a contact without any
        expiry gets ``default_expires`` (§10.3 step 7).
        """
        if not 0 < min_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        self.agents = agents
        self.realm = realm
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.nonce_ttl = nonce_ttl
        self.max_nonces = max_nonces
        self.max_bindings = max_bindings
        self.throttle = throttle
        """Failed proofs per source and user; ``None``: no limit (tests of the digest rules)."""
        self.dropped = 0
        """REGISTERs left unanswered by the throttle since start."""
        self._bindings: dict[str, dict[str, Binding]] = {}
        # Insertion order is expiry order (one TTL for all): the oldest are at the front.
        self._nonces: OrderedDict[str, _Nonce] = OrderedDict()

    # ------------------------------------------------------------------ the sans-I/O surface

    def handle(self, request: SipRequest, addr: Addr, now: float) -> RegisterReply:
        """Decide one REGISTER (its retransmissions are absorbed by the core)."""
        self.handle_timer(now)
        extension, proof = "", None
        try:
            extension = self._extension(request)
            if self._throttled(addr, (extension,), now):
                return _DROPPED
            proof = self._proof(request)
            if proof is None:
                return self._challenge(now, stale=False)
            if proof.username != extension and self._throttled(addr, (proof.username,), now):
                return _DROPPED
            self._authenticate(request, extension, proof, addr, now)
            return self._update(request, extension, addr, now)
        except _RefusedError as refused:
            reply = refused.reply
            if reply.status != 401:
                log.info(
                    "register refused",
                    status=reply.status,
                    reason=reply.outcome,
                    source=f"{addr[0]}:{addr[1]}",
                )
            if reply.status == 403 and reply.outcome in _GUESSES:
                self._failed(addr, extension, proof, now)
            return reply

    def _throttled(self, addr: Addr, users: tuple[str, ...], now: float) -> bool:
        if self.throttle is None:
            return False
        exempt = frozenset(
            u for u in users if any(b.source[0] == addr[0] for b in self.lookup(u, now))
        )
        scope = self.throttle.blocked(addr[0], users, now, exempt_users=exempt)
        if scope is None:
            return False
        self.dropped += 1
        return True

    def _failed(self, addr: Addr, extension: str, proof: _Proof | None, now: float) -> None:
        if self.throttle is None or proof is None:
            return
        users = (proof.username, extension)
        for scope in self.throttle.failed(addr[0], users, now):
            # Once per source or user that reaches its limit: a brute force is one line, not
            # one per guess (the per-guess lines are at info level above).
            log.warning(
                "register throttled",
                limit=scope,
                source=addr[0],
                user=printable(proof.username, 64) if scope == "user" else None,
                failures=(
                    self.throttle.per_source if scope == "source" else self.throttle.per_user
                ),
                window_seconds=self.throttle.window,
                then="dropped unanswered",
            )

    def lookup(self, extension: str, now: float) -> list[Binding]:
        """The live bindings of an extension, most recently registered last."""
        bindings = self._bindings.get(extension, {})
        return [b for b in bindings.values() if b.expires_at > now]

    def handle_timer(self, now: float) -> list[Binding]:
        """Drop expired bindings and nonces; returns the bindings that lapsed."""
        lapsed: list[Binding] = []
        for extension, bindings in list(self._bindings.items()):
            for key, binding in list(bindings.items()):
                if binding.expires_at <= now:
                    del bindings[key]
                    lapsed.append(binding)
                    log.info("agent binding expired", extension=extension, contact=binding.contact)
            if not bindings:
                del self._bindings[extension]
        while self._nonces and next(iter(self._nonces.values())).expires_at <= now:
            self._nonces.popitem(last=False)
        return lapsed

    def get_timer(self) -> float | None:
        """When ``handle_timer`` next has work (a binding or nonce lapses), or ``None``."""
        times = [b.expires_at for bs in self._bindings.values() for b in bs.values()]
        if self._nonces:
            times.append(next(iter(self._nonces.values())).expires_at)
        return min(times, default=None)

    @property
    def nonces(self) -> int:
        """Outstanding nonces (bounded by ``max_nonces``)."""
        return len(self._nonces)

    # ------------------------------------------------------------------ authentication

    def _extension(self, request: SipRequest) -> str:
        # §10.3 step 5: the address-of-record is the To URI; its user part is the extension.
        to = request.headers.get_first("to") or ""
        user = parse_address(to).uri.user if to else None
        if not user:
            raise _RefusedError(_reply(400, "Bad Request (To has no extension)", "no-extension"))
        return user

    def _proof(self, request: SipRequest) -> _Proof | None:
        """Our realm's Digest credentials, or ``None`` (then: challenge)."""
        for raw in request.headers.get("authorization"):
            creds: AuthCredentials = parse_auth(raw, credentials=True)
            params = {k.lower(): v for k, v in creds.params.items()}
            if creds.scheme.lower() != "digest" or params.get("realm") != self.realm:
                continue  # §22.4: credentials for another realm are not ours to judge
            if params.get("algorithm", "MD5").upper() != "MD5":
                return None  # we offered MD5 only: challenge again
            needed = ("username", "nonce", "uri", "response")
            missing = [name for name in needed if not params.get(name)]
            qop = params.get("qop")
            if qop is not None:
                # RFC 2617 §3.2.2: with qop, cnonce and an 8-hex-digit nc are mandatory.
                if qop.lower() != "auth":
                    raise _RefusedError(_reply(400, "Bad Request (qop must be auth)", "bad-qop"))
                missing += [name for name in ("nc", "cnonce") if not params.get(name)]
                if not missing and not _NC.fullmatch(params["nc"]):
                    raise _RefusedError(_reply(400, "Bad Request (malformed nc)", "bad-nc"))
            if missing:
                reason = f"Bad Request (Authorization lacks {', '.join(missing)})"
                raise _RefusedError(_reply(400, reason, "incomplete-credentials"))
            if not _HA1.fullmatch(params["response"].lower()):
                # An MD5 request-digest is 32 hex digits (RFC 2617 §3.2.2); anything else (a
                # fuzzed non-ASCII one made hmac.compare_digest raise TypeError) is malformed,
                # and said so before any extension is looked up (no enumeration).
                raise _RefusedError(_reply(400, "Bad Request (malformed response)", "bad-response"))
            return _Proof(
                username=params["username"],
                nonce=params["nonce"],
                uri=params["uri"],
                response=params["response"].lower(),
                qop=qop.lower() if qop is not None else None,
                nc=params.get("nc", ""),
                cnonce=params.get("cnonce", ""),
            )
        return None

    def _authenticate(
        self, request: SipRequest, extension: str, proof: _Proof, addr: Addr, now: float
    ) -> None:
        ha1 = self.agents.get(proof.username)
        if not _same_resource(proof.uri, request.uri):
            # RFC 2617 §3.2.2.5: the digest-uri must name the Request-URI's resource. Checked
            # before the extension is looked up, so this 400 is the same for every username.
            raise _RefusedError(_reply(400, "Bad Request (digest uri)", "digest-uri-mismatch"))
        if ha1 is None:
            self._forbid(proof, "unknown-extension")
        elif proof.username != extension:
            # §10.3 step 4: an agent may only register its own extension.
            self._forbid(proof, "not-own-extension")
        elif not hmac.compare_digest(_expected(ha1, request.method, proof), proof.response):
            self._forbid(proof, "wrong-password")
        if not self._use_nonce(proof, now):
            # The proof is right but the nonce is not usable (again): stale=true makes the
            # phone retry with a fresh nonce without asking its user (RFC 2617 §3.2.1).
            log.info("register nonce stale", extension=extension, source=f"{addr[0]}:{addr[1]}")
            raise _RefusedError(self._challenge(now, stale=True))

    def _forbid(self, proof: _Proof, outcome: str) -> NoReturn:
        # One guess per nonce: a password guesser needs a round trip for every try.
        self._nonces.pop(proof.nonce, None)
        raise _RefusedError(_reply(403, "Forbidden", outcome))

    def _use_nonce(self, proof: _Proof, now: float) -> bool:
        state = self._nonces.get(proof.nonce)
        if state is None or state.expires_at <= now:
            return False
        if proof.qop is None:
            if state.used:
                return False
            state.used = True
            return True
        nc = int(proof.nc, 16)
        if nc <= state.nc:  # a replayed or reordered request
            return False
        state.nc = nc
        return True

    def _challenge(self, now: float, *, stale: bool) -> RegisterReply:
        nonce = secrets.token_urlsafe(24)
        self._nonces[nonce] = _Nonce(expires_at=now + self.nonce_ttl)
        while len(self._nonces) > self.max_nonces:
            self._nonces.popitem(last=False)  # the oldest first
        params = {"realm": self.realm, "nonce": nonce, "algorithm": "MD5", "qop": "auth"}
        if stale:
            params["stale"] = "true"
        header = stringify_auth(AuthChallenge(scheme="Digest", params=params))
        outcome = "stale" if stale else "challenged"
        return _reply(401, "Unauthorized", outcome, ("WWW-Authenticate", header))

    # ------------------------------------------------------------------ bindings

    def _update(self, request: SipRequest, extension: str, addr: Addr, now: float) -> RegisterReply:
        call_id = request.headers.get_first("call-id") or ""
        cseq = cseq_of(request)
        assert cseq is not None  # the core refuses requests without a valid CSeq
        raw_contacts = [c.strip() for c in request.headers.get("contact")]
        header_expires = _expires_value(request.headers.get_first("expires"))
        current = dict(self._bindings.get(extension, {}))
        user_agent = printable(request.headers.get_first("user-agent") or "", 80)

        if "*" in raw_contacts:
            # §10.3 step 6: "*" removes every binding, only alone and only with Expires: 0.
            if len(raw_contacts) != 1 or header_expires != 0:
                raise _RefusedError(_reply(400, "Bad Request (Contact: *)", "bad-wildcard"))
            for binding in current.values():
                _check_order(binding, call_id, cseq[0])
            updated: dict[str, Binding] = {}
        else:
            wanted = [self._requested(raw, header_expires) for raw in raw_contacts]
            updated = current
            for uri, expires in wanted:
                key = _uri_key(uri)
                old = current.get(key)
                if old is not None:
                    _check_order(old, call_id, cseq[0])
                if expires == 0:
                    updated.pop(key, None)
                    continue
                updated[key] = Binding(
                    extension=extension,
                    contact=uri,
                    source=addr,
                    expires_at=now + expires,
                    call_id=call_id,
                    cseq=cseq[0],
                    user_agent=user_agent,
                )
            if len(updated) > self.max_bindings:
                reason = f"Forbidden (at most {self.max_bindings} contacts)"
                raise _RefusedError(_reply(403, reason, "too-many-contacts"))
        self._commit(extension, self._bindings.get(extension, {}), updated, now)
        contacts = tuple(
            ("Contact", f"<{b.contact}>;expires={b.expires_in(now)}") for b in updated.values()
        )
        outcome = "registered" if updated else "unregistered"
        return RegisterReply(200, "OK", contacts, outcome)

    def _requested(self, raw: str, header_expires: int | None) -> tuple[str, int]:
        """(contact URI, granted seconds) of one Contact value; 400/423 raised as _RefusedError."""
        if not _is_sip_uri(raw):
            raise _RefusedError(
                _reply(400, "Bad Request (Contact is not a SIP URI)", "bad-contact")
            )
        address = parse_address(raw)
        if not address.uri.host:
            raise _RefusedError(_reply(400, "Bad Request (Contact has no host)", "bad-contact"))
        # §10.3 step 7: the contact's expires parameter, else the Expires header, else ours.
        expires = _expires_value(address.params.get("expires"))
        if expires is None:
            expires = header_expires
        if expires is None:
            expires = self.default_expires
        if 0 < expires < self.min_expires:
            raise _RefusedError(
                _reply(
                    423,
                    "Interval Too Brief",
                    "interval-too-brief",
                    ("Min-Expires", str(self.min_expires)),
                )
            )
        return stringify_uri(address.uri), min(expires, self.max_expires)

    def _commit(
        self, extension: str, before: Mapping[str, Binding], after: dict[str, Binding], now: float
    ) -> None:
        for key, binding in after.items():
            old = before.get(key)
            if old is None or old.source != binding.source:  # refreshes are not news
                log.info(
                    "agent registered",
                    extension=extension,
                    contact=binding.contact,
                    source=f"{binding.source[0]}:{binding.source[1]}",
                    expires=binding.expires_in(now),
                )
        for key, binding in before.items():
            if key not in after:
                log.info("agent unregistered", extension=extension, contact=binding.contact)
        if after:
            self._bindings[extension] = after
        else:
            self._bindings.pop(extension, None)


# ---------------------------------------------------------------------- helpers


_DROPPED = RegisterReply(0, "", (), "throttled")
_GUESSES = ("unknown-extension", "not-own-extension", "wrong-password")
"""Refusals that are a failed password guess (counted by the throttle)."""


def _reply(status: int, reason: str, outcome: str, *headers: tuple[str, str]) -> RegisterReply:
    return RegisterReply(status, reason, tuple(headers), outcome)


def _md5(text: str) -> str:
    # RFC 2617 mandates MD5 here; it is the protocol's hash, not our choice of security hash.
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _expected(ha1: str, method: str, proof: _Proof) -> str:
    """RFC 2617 §3.2.2.1 request-digest (A2 = method:digest-uri, §3.2.2.3)."""
    ha2 = _md5(f"{method}:{proof.uri}")
    if proof.qop is None:  # RFC 2069 compatibility: no nonce-count, no cnonce
        return _md5(f"{ha1}:{proof.nonce}:{ha2}")
    return _md5(f"{ha1}:{proof.nonce}:{proof.nc}:{proof.cnonce}:{proof.qop}:{ha2}")


def _same_resource(digest_uri: str, request_uri: str) -> bool:
    """Scheme, user, host and port equal; URI parameters (``;transport=UDP``) may differ."""
    a, b = parse_uri(digest_uri), parse_uri(request_uri)
    return (a.scheme, a.user, a.host.lower(), a.port or 5060) == (
        b.scheme,
        b.user,
        b.host.lower(),
        b.port or 5060,
    )


def _is_sip_uri(contact: str) -> bool:
    """Whether a Contact value's URI is sip: or sips: (aiosipua would read ``tel:1`` as a host)."""
    uri = contact[contact.find("<") + 1 : contact.find(">")] if "<" in contact else contact
    return uri.strip().lower().startswith(("sip:", "sips:"))


def _uri_key(uri: str) -> str:
    """Contacts compare as URIs (§19.1.4): scheme and host are case-insensitive."""
    parsed = parse_uri(uri)
    transport = (parsed.params.get("transport") or "udp").lower()
    host = parsed.host.lower()
    return f"{parsed.scheme}:{parsed.user or ''}@{host}:{parsed.port or 5060};{transport}"


def _expires_value(raw: str | None) -> int | None:
    """An Expires value; malformed counts as absent (§10.2.1.1 treats it as the default)."""
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    return min(int(text), MAX_EXPIRES_VALUE)


def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
    """§10.3 step 7: the same Call-ID with a CSeq not higher than the binding's is refused."""
    if binding.call_id == call_id and cseq <= binding.cseq:
        raise _RefusedError(
            _reply(500, "Server Internal Error (CSeq out of order)", "out-of-order")
        )
