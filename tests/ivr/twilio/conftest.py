"""Twilio's side of a call, played by the tests with real HTTP and WebSocket clients.

- :class:`TwilioSide` posts webhooks signed with the twilio library's own
  ``RequestValidator.compute_signature`` over the *public* URL (the hotline sits behind a
  reverse proxy at ``https://ivr.example.cn``; the requests reach it on a loopback port), and
  opens Media Streams with a signed handshake.
- :class:`MediaStreamClient` speaks Media Streams from the message fixtures in ``data/``, shaped
  exactly as Twilio's "Media Streams - WebSocket Messages" page shows them (only sids, numbers,
  digits and payloads are substituted), records what the hotline sends with its arrival time and,
  like Twilio's player, echoes every mark it receives.
- :class:`FakeTwilioApi` is a local HTTP server standing in for Twilio's REST API: it checks a
  call update as Twilio would (basic auth with the account SID and Auth Token or an API key,
  ``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``, a form with ``Twiml`` or ``Url``,
  TwiML that parses) and answers with a call resource, or with Twilio's JSON errors.

Prompts are replaced by short tones (``short_prompts``) so a whole call takes seconds, while
still being paced in real time.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import math
import struct
import wave
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from ivr.flow.model import Flow, load_flow
from ivr.listening import Speech
from ivr.services import Crm, NotConnectedCrm, NotConnectedRouting, Routing
from ivr.settings import Settings
from ivr.twilio.front import TwilioFrontEnd
from ivr.web import create_app
from sounds.catalog import Catalog, PromptLibrary, shipped_dir

DATA = Path(__file__).parent / "data"
ACCOUNT_SID = "AC5f2c0e9d4b7a41c3a8e6d1f0b2c4e6a8"
AUTH_TOKEN = "9c1f0e7d3b5a4c2e8f6a0b1d3c5e7f90"  # noqa: S105 - a made-up test account
API_KEY = "SK0b7e3c9a1d5f4e2a8c6b0d2f4a6c8e1b"
API_SECRET = "kq3Vb8XwT1uYz5RcN2mLp7HsD4fGj9Ae"  # noqa: S105 - a made-up test key
PUBLIC_URL = "https://ivr.example.cn"
CALLER = "+8613812345678"
DIALED = "+8695598"
SILENCE_ULAW = b"\xff" * 160
"""20 ms of µ-law silence: what a quiet caller sends."""


def fixture(name: str) -> dict[str, Any]:
    """A message fixture from data/ (a fresh copy)."""
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


def call_sid(n: int) -> str:
    """A well-formed call SID."""
    return f"CA{n:032x}"


def stream_sid(n: int) -> str:
    """A well-formed stream SID."""
    return f"MZ{n:032x}"


def write_tone(path: Path, seconds: float, freq: float = 440.0) -> bytes:
    """A 16-bit mono 8 kHz tone WAV; returns its PCM."""
    count = round(seconds * 8000)
    pcm = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / 8000))) for i in range(count)
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(pcm)
    return pcm


def short_prompts(folder: Path, seconds: float = 0.1, **lengths: float) -> PromptLibrary:
    """Every catalog prompt as a short tone (``lengths`` overrides one id's length)."""
    catalog = Catalog.shipped()
    folder.mkdir(parents=True, exist_ok=True)
    for prompt_id in catalog.texts:
        write_tone(folder / f"{prompt_id}.wav", lengths.get(prompt_id, seconds))
    return PromptLibrary(catalog, [folder, shipped_dir()])


def settings_for(api_base: str, **extra: Any) -> Settings:
    """Settings that switch the Twilio front end on, REST requests to `api_base`."""
    values: dict[str, Any] = {
        "node_id": "twilio-node",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_public_url": PUBLIC_URL,
        "twilio_api_base": api_base,
        **extra,
    }
    return Settings(**values)


# --------------------------------------------------------------------------- REST API


@dataclass
class CallUpdate:
    """One REST update the fake API accepted."""

    account_sid: str
    call_sid: str
    user: str
    form: dict[str, str]

    @property
    def twiml(self) -> ET.Element:
        return ET.fromstring(self.form["Twiml"])  # noqa: S314 - our own server's test input


def _twilio_error(status: int, code: int, message: str) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


class FakeTwilioApi:
    """The Call resource's update, checked the way Twilio's API checks it."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, str]] = {}
        """Calls in progress: sid -> from/to; anything else is unknown (404)."""
        self.updates: list[CallUpdate] = []
        self.refused: list[tuple[int, str]] = []
        self.updated = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", self._update_call)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refuse(self, status: int, code: int, message: str) -> web.Response:
        self.refused.append((status, message))
        return _twilio_error(status, code, message)

    async def _update_call(self, request: web.Request) -> web.Response:
        account, sid = request.match_info["account"], request.match_info["call"]
        auth = request.headers.get("Authorization", "")
        try:
            decoded = base64.b64decode(auth.removeprefix("Basic ")).decode()
            user, _, password = decoded.partition(":")
        except ValueError:
            user = password = ""
        known = {ACCOUNT_SID: AUTH_TOKEN, API_KEY: API_SECRET}
        if not auth.startswith("Basic ") or known.get(user) != password or account != ACCOUNT_SID:
            return self._refuse(401, 20003, "Authenticate")
        if request.content_type != "application/x-www-form-urlencoded":
            return self._refuse(400, 21218, "Invalid content type")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if ("Twiml" in form) == ("Url" in form):
            return self._refuse(400, 21205, "Either Url or Twiml must be provided, not both")
        if "Twiml" in form:
            try:
                root = ET.fromstring(form["Twiml"])  # noqa: S314 - test input
            except ET.ParseError:
                return self._refuse(400, 12100, "Document parse failure")
            if root.tag != "Response":
                return self._refuse(400, 12100, "Document parse failure")
        call = self.live.get(sid)
        if call is None:
            return self._refuse(404, 20404, f"The requested resource {request.path} was not found")
        if call.get("status") == "completed":
            return self._refuse(400, 21220, "Call is not in-progress. Cannot redirect.")
        self.updates.append(CallUpdate(account, sid, user, form))
        self.updated.set()
        text = (DATA / "call_resource.json").read_text(encoding="utf-8")
        text = text.replace("ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", account)
        text = text.replace("CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", sid)
        return web.json_response(json.loads(text))


# --------------------------------------------------------------------------- Media Streams


@dataclass
class Received:
    """A message the hotline sent, and when it arrived (loop time)."""

    at: float
    data: dict[str, Any]

    @property
    def event(self) -> str:
        return str(self.data.get("event"))


class MediaStreamClient:
    """Twilio's side of one Media Stream WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, sid: str) -> None:
        self.ws = ws
        self.stream_sid = sid
        self.call_sid = ""
        self.received: list[Received] = []
        self.echo_marks = True
        """Echo each mark, as Twilio does once the audio before it has played."""
        self._sequence = itertools.count(1)
        self._chunk = itertools.count(1)
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self._caller: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            self.received.append(Received(loop.time(), data))
            if data.get("event") == "mark" and self.echo_marks and not self.ws.closed:
                await self.echo(data["mark"]["name"])
            self._changed.set()
        self._changed.set()

    # -- what Twilio sends --

    async def send(self, data: Mapping[str, Any]) -> None:
        await self.ws.send_str(json.dumps(data))

    async def send_fixture(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        data = copy.deepcopy(fixture(name))
        if "sequenceNumber" in data:
            data["sequenceNumber"] = str(next(self._sequence))
        if "streamSid" in data:
            data["streamSid"] = self.stream_sid
        change(data)
        await self.send(data)

    async def connected(self) -> None:
        await self.send(fixture("connected.json"))

    async def start(self, sid: str, parameters: Mapping[str, str], **media: Any) -> None:
        self.call_sid = sid

        def change(data: dict[str, Any]) -> None:
            body = data["start"]
            body.update(accountSid=ACCOUNT_SID, streamSid=self.stream_sid, callSid=sid)
            body["customParameters"] = dict(parameters)
            body["mediaFormat"].update(media)

        await self.send_fixture("start.json", change)

    async def begin(self, sid: str, parameters: Mapping[str, str]) -> None:
        """``connected`` then ``start``: how every stream opens."""
        await self.connected()
        await self.start(sid, parameters)

    async def media(self, ulaw: bytes = SILENCE_ULAW) -> None:
        chunk = next(self._chunk)

        def change(data: dict[str, Any]) -> None:
            data["media"].update(
                chunk=str(chunk), timestamp=str(20 * chunk), payload=base64.b64encode(ulaw).decode()
            )

        await self.send_fixture("media_inbound.json", change)

    async def press(self, digit: str) -> None:
        await self.send_fixture("dtmf.json", lambda d: d["dtmf"].update(digit=digit))

    async def echo(self, name: str) -> None:
        await self.send_fixture("mark.json", lambda d: d["mark"].update(name=name))

    async def stop(self) -> None:
        def change(data: dict[str, Any]) -> None:
            data["stop"].update(accountSid=ACCOUNT_SID, callSid=self.call_sid)

        await self.send_fixture("stop.json", change)

    def caller_speaks(self, frames: list[bytes] | None = None) -> None:
        """Send caller audio every 20 ms, like Twilio (silence, or these frames then silence),
        instead of what the caller sent so far."""
        if self._caller is not None:
            self._caller.cancel()

        async def run() -> None:
            queue = list(frames or [])
            while not self.ws.closed:
                await self.media(queue.pop(0) if queue else SILENCE_ULAW)
                await asyncio.sleep(0.02)

        self._caller = asyncio.get_running_loop().create_task(run())

    # -- what the hotline sent --

    def events(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.event == kind]

    def marks(self) -> list[str]:
        return [str(r.data["mark"]["name"]) for r in self.events("mark")]

    async def wait_for(
        self, check: Callable[[], object], within: float = 5.0, what: str = ""
    ) -> None:
        async def until() -> None:
            while not check():
                self._changed.clear()
                if self.ws.closed and not check():
                    raise AssertionError(f"stream closed while waiting for {what or check}")
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), within)
        except TimeoutError:
            seen = [r.event for r in self.received][-12:]
            raise AssertionError(f"timed out waiting for {what or check}; last: {seen}") from None

    async def wait_mark(self, count: int, within: float = 5.0) -> str:
        """Wait for the `count`-th mark the hotline sends; its name."""
        await self.wait_for(lambda: len(self.marks()) >= count, within, f"mark #{count}")
        return self.marks()[count - 1]

    async def wait_closed(self, within: float = 5.0) -> None:
        await asyncio.wait_for(asyncio.shield(self._reader), within)

    async def close(self) -> None:
        if self._caller is not None:
            self._caller.cancel()
        if not self.ws.closed:
            await self.ws.close()
        await asyncio.wait({self._reader}, timeout=2.0)
        self._reader.cancel()


@dataclass
class StreamTwiml:
    """What ``<Connect><Stream>`` told Twilio."""

    url: str
    parameters: dict[str, str]


def parse_stream_twiml(text: str) -> StreamTwiml:
    root = ET.fromstring(text)  # noqa: S314 - the hotline's own answer
    assert root.tag == "Response", text
    connect, hangup = list(root)  # <Hangup/> runs once the hotline closes the stream
    assert (connect.tag, hangup.tag) == ("Connect", "Hangup"), text
    [stream] = list(connect)
    assert stream.tag == "Stream", text
    params = {p.attrib["name"]: p.attrib["value"] for p in stream if p.tag == "Parameter"}
    return StreamTwiml(stream.attrib["url"], params)


class TwilioSide:
    """Twilio's webhooks and streams toward the hotline on `local` (reached as PUBLIC_URL)."""

    def __init__(self, http: aiohttp.ClientSession, local: str, token: str = AUTH_TOKEN) -> None:
        self.http = http
        self.local = local
        self.validator = RequestValidator(token)
        self.streams: list[MediaStreamClient] = []
        self._stream_ids = itertools.count(1)

    def sign(self, path: str, params: Mapping[str, str]) -> str:
        return str(self.validator.compute_signature(PUBLIC_URL + path, params))

    async def post(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        signature: str | None = "sign",
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        headers = dict(extra_headers or {})
        if signature == "sign":
            headers["X-Twilio-Signature"] = self.sign(path, params)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        async with self.http.post(self.local + path, data=dict(params), headers=headers) as r:
            return r.status, await r.text()

    def voice_params(self, sid: str, caller: str = CALLER, dialed: str = DIALED) -> dict[str, str]:
        params = {k: str(v) for k, v in fixture("voice_webhook.json").items()}
        params.update(AccountSid=ACCOUNT_SID, CallSid=sid)
        params.update(From=caller, Caller=caller, To=dialed, Called=dialed)
        return params

    async def incoming_call(self, sid: str, caller: str = CALLER) -> StreamTwiml:
        status, text = await self.post("/twilio/voice", self.voice_params(sid, caller))
        assert status == 200, text
        return parse_stream_twiml(text)

    async def open_stream(
        self, *, signature: str | None = "sign", url: str = ""
    ) -> MediaStreamClient:
        headers = {}
        if signature == "sign":
            wss = PUBLIC_URL.replace("https://", "wss://") + "/twilio/stream"
            headers["X-Twilio-Signature"] = str(self.validator.compute_signature(wss, {}))
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        ws_url = url or self.local.replace("http://", "ws://") + "/twilio/stream"
        ws = await self.http.ws_connect(ws_url, headers=headers)
        client = MediaStreamClient(ws, stream_sid(next(self._stream_ids)))
        self.streams.append(client)
        return client

    async def connect_call(self, sid: str, caller: str = CALLER) -> MediaStreamClient:
        """The voice webhook, then the stream its TwiML asks for (connected, start)."""
        twiml = await self.incoming_call(sid, caller)
        assert twiml.url == "wss://ivr.example.cn/twilio/stream"
        stream = await self.open_stream()
        await stream.begin(sid, twiml.parameters)
        return stream

    def common(self, sid: str, status: str) -> dict[str, str]:
        return {
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "CallSid": sid,
            "CallStatus": status,
            "Direction": "inbound",
            "From": CALLER,
            "To": DIALED,
            "Called": DIALED,
            "Caller": CALLER,
        }

    async def status(self, sid: str, status: str, **extra: str) -> int:
        params = self.common(sid, status)
        params.update(CallbackSource="call-progress-events", SequenceNumber="0", **extra)
        code, _ = await self.post("/twilio/status", params)
        return code

    async def agent_leg_status(self, parent: str, leg: str, status: str) -> int:
        params = self.common(leg, status)
        params.update(ParentCallSid=parent, Direction="outbound-dial", SequenceNumber="1")
        code, _ = await self.post("/twilio/status", params)
        return code

    async def dial_action(
        self, sid: str, dial_status: str, *, duration: str = "42", call_status: str = "in-progress"
    ) -> tuple[int, str]:
        params = self.common(sid, call_status)
        params.update(DialCallSid=call_sid(0xA6E47), DialCallStatus=dial_status, DialBridged="true")
        if dial_status == "completed":
            params["DialCallDuration"] = duration
        return await self.post("/twilio/dial", params)

    async def close(self) -> None:
        for stream in self.streams:
            await stream.close()


# --------------------------------------------------------------------------- the hotline


@dataclass
class Hotline:
    """The Twilio front end in a web app on a loopback port, with Twilio's side around it."""

    front: TwilioFrontEnd
    url: str
    twilio: TwilioSide
    api: FakeTwilioApi
    status: dict[str, object] = field(default_factory=dict)

    async def wait_idle(self, within: float = 5.0) -> None:
        """Until every call's session has ended."""
        tasks = [c.task for c in self.front.calls.values() if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=within)
            assert not pending, "calls still running"


MakeHotline = Callable[..., Awaitable[Hotline]]


@pytest.fixture
def flow() -> Flow:
    return load_flow(Settings().resolved_flow_file())


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeTwilioApi]:
    api = FakeTwilioApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def make_hotline(
    tmp_path: Path, flow: Flow, fake_api: FakeTwilioApi
) -> AsyncIterator[MakeHotline]:
    started: list[tuple[Hotline, web.AppRunner, aiohttp.ClientSession]] = []

    async def make(
        *,
        crm: Crm | None = None,
        routing: Routing | None = None,
        library: PromptLibrary | None = None,
        speech: Speech | None = None,
        the_flow: Flow | None = None,
        **settings: Any,
    ) -> Hotline:
        front = TwilioFrontEnd(
            settings_for(fake_api.url, **settings),
            the_flow or flow,
            library or short_prompts(tmp_path / f"prompts{len(started)}"),
            crm=crm or NotConnectedCrm(),
            routing=routing or NotConnectedRouting(),
            speech=speech,
        )
        status: dict[str, object] = {"twilio": front.start()}
        runner = web.AppRunner(create_app(front.settings, status=status, twilio=front))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        http = aiohttp.ClientSession()
        hotline = Hotline(front, url, TwilioSide(http, url), fake_api, status)
        started.append((hotline, runner, http))
        return hotline

    yield make
    for hotline, runner, http in reversed(started):
        await hotline.twilio.close()
        await hotline.front.stop(0)
        await runner.cleanup()
        await http.close()
