"""docker/redis/haproxy.cfg (the stable Redis-primary address of the Sentinel override): HAProxy
accepts it (`haproxy -c`), and it does its job: with a primary and a replica on loopback it
forwards to the primary, and after the replica is promoted (what Sentinel does in a failover)
and the old primary demoted, new connections reach the new primary."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

CFG = Path(__file__).resolve().parents[2] / "docker" / "redis" / "haproxy.cfg"


def haproxy() -> str:
    found = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    assert found, "haproxy missing: apt-get install haproxy (scripts/test does)"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_config_is_valid() -> None:
    result = subprocess.run(
        [haproxy(), "-c", "-f", str(CFG)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


@pytest.fixture
def two_redis(tmp_path: Path) -> Iterator[tuple[int, int]]:
    binary = shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
    assert binary, "redis-server missing"
    ports = (free_port(), free_port())
    procs = []
    for n, port in enumerate(ports):
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(tmp_path)]
        args += ["--dbfilename", f"dump{n}.rdb"]
        if n == 1:
            args += ["--replicaof", "127.0.0.1", str(ports[0])]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for port in ports:
            with redis.Redis(port=port) as client:
                for _ in range(100):
                    try:
                        client.ping()
                        break
                    except redis.ConnectionError:
                        time.sleep(0.05)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def settles_on(port: int, want: int, timeout: float, in_a_row: int = 8) -> bool:
    """Whether new connections through the proxy reach server ``want`` ``in_a_row`` times in a
    row within ``timeout`` (two servers both up would alternate: round robin)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                seen = int(client.config_get("port")["port"])
        except redis.RedisError:
            seen = -1
        streak = streak + 1 if seen == want else 0
        if streak >= in_a_row:
            return True
        time.sleep(0.1)
    return False


def test_it_follows_the_primary(tmp_path: Path, two_redis: tuple[int, int]) -> None:
    primary, replica = two_redis
    front = free_port()
    text = CFG.read_text()
    text = text.replace("bind :6379", f"bind 127.0.0.1:{front}")
    text = re.sub(r"\s*resolvers docker\n.*\Z", "\n", text, flags=re.DOTALL)
    text = text.replace(" check resolvers docker init-addr last,libc,none", " check")
    text = text.replace("redis:6379", f"127.0.0.1:{primary}")
    text = text.replace("redis-replica:6379", f"127.0.0.1:{replica}")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    proxy = subprocess.Popen(
        [haproxy(), "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert settles_on(front, primary, 15)
        # A failover as Sentinel does it: promote the replica, demote the old primary.
        with redis.Redis(port=replica) as client:
            client.execute_command("REPLICAOF", "NO", "ONE")
        with redis.Redis(port=primary) as client:
            client.execute_command("REPLICAOF", "127.0.0.1", str(replica))
        assert settles_on(front, replica, 15)
        # and stays there: the demoted server is not taken back
        assert settles_on(front, replica, 5, in_a_row=20)
    finally:
        proxy.terminate()
        proxy.wait(10)
