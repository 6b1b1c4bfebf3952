"""The CRM over HTTP: `HttpCrm` speaks the REST contract of docs/crm-openapi.yaml with aiohttp.

What can go wrong is sorted by whether trying again can help, because the outbox acts on it:
timeouts, connection errors (before or after the CRM committed), 5xx, 408, 409 (a request
with the same idempotency key still in progress), 425 and 429 are `CrmUnavailableError`; any
other 4xx, a redirect, an answer that is not JSON, too big, or lacks a field is
`CrmRejectedError` with a message that names what was wrong. Nothing from the CRM's answer
reaches the caller unchecked (see `crm_bridge.codec`).

Tickets are created with an ``Idempotency-Key`` header (draft-ietf-httpapi-idempotency-key-
header): the outbox repeats a delivery until it has an answer, and the CRM creates one ticket per
key however often it is asked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar, get_args

import aiohttp
import structlog
from yarl import URL

from crm_bridge.codec import (
    CREATION_FIELDS,
    FIELD_NAMES,
    NESTED,
    Fields,
    Json,
    bill_from_dict,
    customer_from_dict,
    outage_from_dict,
    survey_to_dict,
    ticket_from_dict,
    ticket_to_dict,
)
from crm_bridge.errors import CrmRejectedError, CrmUnavailableError, TicketInvalidError
from crm_bridge.model import Address, BillSummary, Customer, Outage, Survey, Ticket

log = structlog.get_logger("crm_bridge.http")
_T = TypeVar("_T")

AuthMode = Literal["none", "bearer", "hmac"]
"""How requests are authenticated (setting ``crm_auth``)."""

MAX_ANSWER_BYTES = 1 << 20
"""Largest answer body read; a bigger one is refused, not buffered."""

TIMESTAMP_HEADER = "X-Hotline-Timestamp"
"""HMAC mode: when the request was signed, whole seconds since the epoch."""
SIGNATURE_HEADER = "X-Hotline-Signature"
"""HMAC mode: the signature, lowercase hex (see `signature`)."""

# Statuses after which the same request may succeed: 408 Request Timeout; 409 Conflict, which
# the contract uses for "a request with this idempotency key is still being processed"
# (draft-ietf-httpapi-idempotency-key-header §2.6); 425 Too Early; 429 Too Many Requests.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
_NOT_FOUND = 404
_TICKET_ID = re.compile(r"[0-9A-Za-z-]{1,40}")
_ACCOUNT = re.compile(r"[0-9]{1,32}")
_PHONE = re.compile(r"\+?[0-9]{1,20}")
_MESSAGE_LIMIT = 300


def signature(secret: str, method: str, target: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256, keyed with ``secret``, of the method, the request target (path and query as
    sent, percent-encoded), the timestamp and the body's SHA-256 (hex), joined by newlines."""
    digest = hashlib.sha256(body).hexdigest()
    message = "\n".join((method.upper(), target, timestamp, digest)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------- field map


@dataclass(frozen=True)
class FieldMap:
    """Renames between our JSON field names and a CRM's, per kind of object.

    A TOML file with one table per kind (``ticket``, ``history``, ``address``, ``customer``,
    ``outage``, ``bill``, ``survey``), each mapping our name to the CRM's::

        [ticket]
        ticket_type = "category"
        crm_ref = "id"

        [address]
        district = "county"

    The same renames apply both ways: to what we send and to what the CRM answers. Values
    (status names, ticket types) are not translated.
    """

    renames: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Kind -> our name -> the CRM's name."""
    _ours: dict[str, dict[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The CRM's name -> ours, per kind, made once: every answer is renamed with it.
        ours = {
            kind: {self.crm_name(kind, name): name for name in names}
            for kind, names in FIELD_NAMES.items()
        }
        object.__setattr__(self, "_ours", ours)

    @classmethod
    def load(cls, path: Path) -> FieldMap:
        """Read a field map file; ValueError naming the file and the entry when it is wrong."""
        try:
            with path.open("rb") as file:
                data = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"field map {path}: {exc}") from exc
        return cls.parse(data, f"field map {path}")

    @classmethod
    def parse(cls, data: Mapping[str, object], source: str = "field map") -> FieldMap:
        """A field map from parsed TOML."""
        renames: dict[str, dict[str, str]] = {}
        for kind, table in data.items():
            if kind not in FIELD_NAMES:
                raise ValueError(f"{source}: [{kind}] is not one of {', '.join(FIELD_NAMES)}")
            if not isinstance(table, dict):
                raise ValueError(f"{source}: {kind} must be a table")
            ours = FIELD_NAMES[kind]
            pairs: dict[str, str] = {}
            for name, theirs in table.items():
                if name not in ours:
                    raise ValueError(f"{source}: [{kind}] {name}: no such field")
                if not isinstance(theirs, str) or not theirs:
                    raise ValueError(f"{source}: [{kind}] {name}: must be a non-empty string")
                pairs[name] = theirs
            # Every field must stay distinguishable on the CRM's side.
            final = [pairs.get(name, name) for name in ours]
            clashes = sorted({n for n in final if final.count(n) > 1})
            if clashes:
                raise ValueError(f"{source}: [{kind}] two fields would be called {clashes[0]!r}")
            renames[kind] = pairs
        return cls(renames)

    def crm_name(self, kind: str, name: str) -> str:
        """The CRM's name for our field ``name`` of a ``kind``."""
        return self.renames.get(kind, {}).get(name, name)

    def outgoing(self, kind: str, data: Json) -> Json:
        """Our object of ``kind`` in the CRM's names (nested objects too)."""
        nested = NESTED.get(kind, {})

        def convert(name: str, value: object) -> object:
            inner = nested.get(name)
            if inner is not None and isinstance(value, dict):
                return self.outgoing(inner, value)
            if inner is not None and isinstance(value, list):
                return [self.outgoing(inner, v) if isinstance(v, dict) else v for v in value]
            return value

        return {self.crm_name(kind, name): convert(name, value) for name, value in data.items()}

    def incoming(self, kind: str, data: object) -> object:
        """The CRM's object of ``kind`` in our names; anything that is not an object is left
        for the decoder to refuse."""
        if not isinstance(data, dict):
            return data
        ours = self._ours[kind]
        nested = NESTED.get(kind, {})

        def convert(name: str, value: object) -> object:
            inner = nested.get(name)
            if inner is not None and isinstance(value, list):
                return [self.incoming(inner, v) for v in value]
            if inner is not None:
                return self.incoming(inner, value)
            return value

        # Fields we do not know are the CRM's business: left out.
        return {
            ours[theirs]: convert(ours[theirs], value)
            for theirs, value in data.items()
            if theirs in ours
        }


# ---------------------------------------------------------------------- the adapter


class HttpCrm:
    """A `CrmBackend` on an external CRM's REST API."""

    name = "http"

    def __init__(
        self,
        base_url: str,
        auth: AuthMode = "none",
        secret: str | None = None,
        timeout: float = 5.0,
        field_map: FieldMap | Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        base = URL(base_url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"the CRM's URL must be http(s)://host/..., not {base_url!r}")
        if auth not in get_args(AuthMode):
            raise ValueError(f"CRM auth must be one of {', '.join(get_args(AuthMode))}")
        if auth != "none" and not secret:
            raise ValueError(f"CRM auth {auth} needs a secret")
        if timeout <= 0:
            raise ValueError("the CRM timeout must be positive")
        self.base_url = base
        """Where the API lives (paths are appended to it)."""
        self.auth: AuthMode = auth
        """How requests are authenticated."""
        self._secret = secret or ""
        self.timeout = timeout
        """Seconds one request may take, connecting included."""
        if isinstance(field_map, Path):
            field_map = FieldMap.load(field_map)
        self.field_map = field_map or FieldMap()
        """Renames between our field names and the CRM's."""
        self.clock = clock
        """Time for HMAC timestamps."""
        self.max_answer_bytes = max_answer_bytes
        """Largest answer read."""
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "hotline95598-crm-bridge"},
            )
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ the backend interface

    async def create_ticket(self, ticket: Ticket) -> str:
        """POST /tickets with the ticket's idempotency key; the CRM's reference."""
        body = {k: v for k, v in ticket_to_dict(ticket).items() if k in CREATION_FIELDS}
        what = f"POST /tickets ({ticket.ticket_id})"
        answer = await self._call(
            "POST",
            ("tickets",),
            what,
            body=self.field_map.outgoing("ticket", body),
            idempotency_key=ticket.idempotency_key,
        )
        fields = self._fields("ticket", answer, what)
        crm_ref = self._decode("ticket", what, lambda: fields.text("crm_ref"))
        if not crm_ref:
            raise CrmRejectedError(f"{what}: the CRM answered an empty {self._name('crm_ref')}")
        return crm_ref

    async def get_ticket(self, ticket_id: str) -> Ticket | None:
        """GET /tickets/{ticket_id}."""
        if not _TICKET_ID.fullmatch(ticket_id):
            # It goes into the path: never let it be "..", a slash or anything else odd.
            raise TicketInvalidError("ticket_id", "1-40 letters, digits or '-'")
        what = f"GET /tickets/{ticket_id}"
        answer = await self._call("GET", ("tickets", ticket_id), what, missing_ok=True)
        if answer is None:
            return None
        data = self.field_map.incoming("ticket", answer)
        ticket = self._decode("ticket", what, lambda: ticket_from_dict(data))
        if ticket.ticket_id != ticket_id:
            raise CrmRejectedError(f"{what}: the CRM answered with ticket {ticket.ticket_id}")
        return ticket

    async def find_customer(self, *, phone: str = "", account: str = "") -> Customer | None:
        """GET /customers?phone= or ?account= (exactly one)."""
        if bool(phone) == bool(account):
            raise TicketInvalidError("phone", "give a phone number or an account, not both")
        # Both go into the query as the contract's patterns allow, nothing else.
        if phone and not _PHONE.fullmatch(phone):
            raise TicketInvalidError("phone", "digits only, optionally with a leading +")
        if account and not _ACCOUNT.fullmatch(account):
            raise TicketInvalidError("account", "1-32 digits")
        query = {"phone": phone} if phone else {"account": account}
        what = "GET /customers?phone=…" if phone else "GET /customers?account=…"
        answer = await self._call("GET", ("customers",), what, query=query, missing_ok=True)
        if answer is None:
            return None
        data = self.field_map.incoming("customer", answer)
        return self._decode("customer", what, lambda: customer_from_dict(data))

    async def outages(self, address: Address, now: float) -> list[Outage]:
        """GET /outages for the address's area at ``now``; active ones, most recent first."""
        levels = ("province", "city", "district", "street")
        query = {
            self.field_map.crm_name("address", level): getattr(address, level)
            for level in levels
            if getattr(address, level)
        }
        query["at"] = f"{now:.3f}"
        what = "GET /outages"
        answer = await self._call("GET", ("outages",), what, query=query)
        listing = self._decode("outage", what, lambda: Fields(answer).items("outages"))
        notices = []
        for i, item in enumerate(listing):
            data = self.field_map.incoming("outage", item)
            notices.append(self._decode("outage", what, outage_from_dict, data, f"outages[{i}]"))
        # The contract asks the CRM for active notices; an ended one must still not be read
        # out to callers, whatever the CRM's notion of "at" is.
        active = [notice for notice in notices if notice.active(now)]
        return sorted(active, key=lambda notice: notice.starts_at, reverse=True)

    async def bill_summary(self, account: str) -> BillSummary | None:
        """GET /accounts/{account}/bill."""
        if not _ACCOUNT.fullmatch(account):
            raise TicketInvalidError("account", "1-32 digits")
        what = "GET /accounts/…/bill"
        answer = await self._call("GET", ("accounts", account, "bill"), what, missing_ok=True)
        if answer is None:
            return None
        data = self.field_map.incoming("bill", answer)
        bill = self._decode("bill", what, lambda: bill_from_dict(data))
        if bill.account != account:
            raise CrmRejectedError(f"{what}: the CRM answered for another account")
        return bill

    async def record_survey(self, survey: Survey) -> None:
        """POST /surveys, idempotent per call (``Idempotency-Key: <call id>:survey``). Any 2xx
        means stored: what the answer says is not read."""
        await self._call(
            "POST",
            ("surveys",),
            f"POST /surveys ({survey.call_id})",
            body=self.field_map.outgoing("survey", survey_to_dict(survey)),
            idempotency_key=survey.idempotency_key,
            read_answer=False,
        )

    # ------------------------------------------------------------------ plumbing

    def _name(self, name: str, kind: str = "ticket") -> str:
        return repr(self.field_map.crm_name(kind, name))

    def _fields(self, kind: str, answer: object, what: str) -> Fields:
        data = self.field_map.incoming(kind, answer)
        return self._decode(kind, what, lambda: Fields(data))

    def _decode(self, kind: str, what: str, decode: Callable[..., _T], *args: object) -> _T:
        try:
            return decode(*args)
        except TicketInvalidError as exc:
            # Name the field as the CRM spells it: that is what its operators can look up.
            top = exc.field.split(".")[0].split("[")[0]
            theirs = self.field_map.crm_name(kind, top)
            named = exc.field if theirs == top else f"{exc.field} (the CRM's {theirs!r})"
            raise CrmRejectedError(
                f"{what}: the CRM's answer is unusable: {named}: {exc.problem}"
            ) from None

    def _headers(self, method: str, url: URL, body: bytes) -> dict[str, str]:
        if self.auth == "bearer":
            return {"Authorization": f"Bearer {self._secret}"}
        if self.auth == "hmac":
            timestamp = str(int(self.clock()))
            target = url.raw_path_qs
            return {
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: signature(self._secret, method, target, timestamp, body),
            }
        return {}

    async def _call(
        self,
        method: str,
        path: tuple[str, ...],
        what: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Json | None = None,
        idempotency_key: str = "",
        missing_ok: bool = False,
        read_answer: bool = True,
    ) -> object:
        """One request; the answer's JSON (None for 404 when ``missing_ok``, for no content, or
        for a success when not ``read_answer``)."""
        url = self.base_url.joinpath(*path)
        if query:
            url = url.with_query(query)
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Accept": "application/json", **self._headers(method, url, raw)}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            async with self._client().request(
                method,
                url,
                data=raw if body is not None else None,
                headers=headers,
                allow_redirects=False,
            ) as response:
                status = response.status
                content = await self._read(response, what)
        except TimeoutError:
            raise CrmUnavailableError(f"{what}: no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise CrmUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from None
        if status == _NOT_FOUND and missing_ok:
            return None
        if status >= 500 or status in _RETRYABLE_4XX:
            raise CrmUnavailableError(f"{what}: the CRM answered {status}{_message(content)}")
        if status >= 300:
            raise CrmRejectedError(f"{what}: the CRM answered {status}{_message(content)}")
        if status == 204 or not content or not read_answer:
            return None
        try:
            return json.loads(content.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CrmRejectedError(f"{what}: the CRM's answer is not JSON ({exc})") from None

    async def _read(self, response: aiohttp.ClientResponse, what: str) -> bytes:
        limit = self.max_answer_bytes
        if response.content_length is not None and response.content_length > limit:
            raise CrmRejectedError(f"{what}: the CRM's answer is over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise CrmRejectedError(f"{what}: the CRM's answer is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _message(content: bytes) -> str:
    """What a CRM's error answer says: its error id and message, or the start of its text."""
    text = content.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("error_id", "message") if isinstance(data.get(k), str)]
        text = ": ".join(parts) if parts else text
    text = " ".join(text.split())[:_MESSAGE_LIMIT]
    return f": {text}" if text else ""
