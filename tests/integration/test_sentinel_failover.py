"""Rate limits hold through Redis Sentinel fail-overs, with the cache configured as an operator would.

A private master, a replica and three sentinels (``redis-server`` processes on free ports), and
a real gunicorn of the project started with only ``REDIS_SENTINELS`` (``REDIS_URL`` points at a
closed port, ``CACHE_URL`` is unset). The test fails the master over itself, three times:

1. the master is killed (SIGKILL): the sentinels promote the replica;
2. the old master is started again, empty, and the sentinels turn it into a replica (from then
   on it answers writes with READONLY, the state a static ``CACHE_URL`` stays stuck in);
3. an operator's switch-over back (``SENTINEL FAILOVER``), healthy master and all.

After each, a limit never used before (a new address for the per-address resend limit) lets
exactly N requests through and then answers 429, its counter is in the master the sentinels
name, and the web log has no "throttle cache unreachable" once the first fail-over has settled.
Counts made before a fail-over survive it (the replica had them), and the Lua script, which a
new master has never seen (Redis does not replicate its script cache), is loaded there again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django_redis.pool import SentinelConnectionFactory
from redis.sentinel import SentinelConnectionPool

from conftest import NOT_READY_ERRORS, database_url, free_port, wait_for
from users import identity, throttles

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),  # three fail-overs, two of them waiting out Sentinel's ~10 s re-configuration
]

MASTER = "mymaster"
LIMIT = 3  # THROTTLE_VERIFY and THROTTLE_RESEND_ADDRESS in the web process, per hour (the counts
# made before a fail-over must still be in their window after it, which may take a minute or two)
SCRIPT_SHA = hashlib.sha1(throttles._SLIDING_WINDOW.encode()).hexdigest()  # noqa: S324 - Redis's own script id
# Sentinel hands out roles while it re-configures: a replica it is not ready to promote yet, a
# fail-over still in progress. Such an answer means "not yet" to the polls below.
SENTINEL_NOT_YET = (*NOT_READY_ERRORS, redis.ResponseError)
DOWN_AFTER_MS = 3000


class RedisNode:
    """A ``redis-server`` of the test's own on a free port, without persistence, stopped by PID."""

    def __init__(self, directory: Path, *, replica_of: int | None = None) -> None:
        self.port = free_port()
        self.directory = directory
        self.replica_of = replica_of
        self.process: subprocess.Popen | None = None
        self.client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)

    def start(self) -> RedisNode:
        self.directory.mkdir(exist_ok=True)
        replication = ["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []
        with (self.directory / "redis.log").open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                    # A new replica is served at once, not after Redis's default 5 s for others to join.
                    *("--repl-diskless-sync-delay", "0"),
                    *replication,
                ],
                cwd=self.directory,
                stdout=log,
            )
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"redis-server on port {self.port} exited with {process.returncode} while starting")
            return bool(self.client.ping())

        wait_for(ready, timeout=30, what=f"redis-server on port {self.port}")
        return self

    def kill(self) -> None:
        """SIGKILL: a master that dies without a word."""
        assert self.process
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def replication(self) -> dict[str, Any]:
        return self.client.info("replication")

    def is_master(self) -> bool:
        return self.replication()["role"] == "master"

    def is_replica_of(self, master: RedisNode) -> bool:
        info = self.replication()
        return (
            info["role"] == "slave"
            and int(info["master_port"]) == master.port
            and info["master_link_status"] == "up"
            and not info.get("master_sync_in_progress")
        )

    def zcard(self, key: str) -> int:
        return int(self.client.zcard(key))


def _fields(answer) -> dict:
    """A SENTINEL MASTER/REPLICAS entry as a dict (redis-py gives a flat list or a dict)."""
    return answer if isinstance(answer, dict) else dict(zip(answer[::2], answer[1::2], strict=True))


class SentinelNode:
    """``redis-server --sentinel`` watching MASTER, quorum 2, quick to call a master down."""

    def __init__(self, directory: Path, master_port: int) -> None:
        self.port = free_port()
        self.directory = directory
        self.master_port = master_port
        self.process: subprocess.Popen | None = None
        self.client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)

    def start(self) -> SentinelNode:
        self.directory.mkdir(exist_ok=True)
        config = self.directory / "sentinel.conf"  # Sentinel rewrites its file: one each
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
            # 3 s, not 1: on a busy machine a starved sentinel can miss a PING reply for over a
            # second, call a healthy master down and fail over to a replica nobody chose (seen in CI:
            # the old master, just restarted and empty, promoted over the new one).
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
        )
        with (self.directory / "sentinel.log").open("ab") as log:
            self.process = subprocess.Popen(["redis-server", str(config), "--sentinel"], cwd=self.directory, stdout=log)
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"redis-server --sentinel on port {self.port} exited with {process.returncode}")
            return bool(self.client.ping())

        wait_for(ready, timeout=30, what=f"the sentinel on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def master_port_named(self) -> int | None:
        answer = self.client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
        return int(answer[1]) if answer else None

    def sees_healthy_master(self, node: RedisNode) -> bool:
        """``node`` is this sentinel's master, flagged nothing but ``master`` (no ``s_down``, no
        failover in progress), and it answered this sentinel's last PING well within down-after."""
        answer = self.client.execute_command("SENTINEL", "MASTER", MASTER)
        state = _fields(answer)
        return (
            int(state["port"]) == node.port
            and state["flags"] == "master"
            and int(state["last-ok-ping-reply"]) < DOWN_AFTER_MS // 3
        )

    def knows_good_replica(self, node: RedisNode) -> bool:
        """``node`` is listed as a replica that is up and linked, i.e. one Sentinel would promote."""
        for replica in self.client.execute_command("SENTINEL", "REPLICAS", MASTER):
            state = _fields(replica)
            if int(state["port"]) == node.port:
                flags = set(state["flags"].split(","))
                return (
                    flags == {"slave"}
                    and state["role-reported"] == "slave"  # its last INFO said so, too
                    and state["master-link-status"] == "ok"
                )
        return False

    def other_sentinels(self) -> int:
        return len(self.client.execute_command("SENTINEL", "SENTINELS", MASTER))


@dataclass
class Stack:
    first: RedisNode  # the master at the start
    second: RedisNode  # its replica at the start
    sentinels: list[SentinelNode]

    @property
    def addresses(self) -> str:
        return ",".join(s.address for s in self.sentinels)

    def settled(self, master: RedisNode, replica: RedisNode | None) -> bool:
        """Every sentinel names ``master``, which says it is one; ``replica`` (if running) follows it."""
        if not all(s.master_port_named() == master.port for s in self.sentinels):
            return False
        if not master.is_master():
            return False
        return replica is None or replica.is_replica_of(master)

    def switch_over(self) -> bool:
        """SENTINEL FAILOVER on the first sentinel that accepts it."""
        for sentinel in self.sentinels[:-1]:
            with contextlib.suppress(redis.ResponseError):
                return bool(sentinel.client.execute_command("SENTINEL", "FAILOVER", MASTER))
        return bool(self.sentinels[-1].client.execute_command("SENTINEL", "FAILOVER", MASTER))

    def master_healthy(self, master: RedisNode) -> bool:
        return all(s.sees_healthy_master(master) for s in self.sentinels)

    def ready_to_promote(self, replica: RedisNode) -> bool:
        return all(s.other_sentinels() == 2 and s.knows_good_replica(replica) for s in self.sentinels)


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    first = RedisNode(tmp_path / "first")
    second = RedisNode(tmp_path / "second", replica_of=first.port)
    sentinels = [SentinelNode(tmp_path / f"sentinel{n}", first.port) for n in range(3)]
    stack = Stack(first, second, sentinels)
    nodes: list[RedisNode | SentinelNode] = [first, second, *sentinels]
    try:
        for node in nodes:
            node.start()  # each one stopped below, even if a later one fails to start
        wait_for(lambda: second.is_replica_of(first), timeout=30, what="the replica to catch up")
        # Each sentinel must know the master, the replica and the two others (hello messages every 2 s).
        wait_for(
            lambda: stack.settled(first, second) and stack.ready_to_promote(second),
            timeout=30,
            what="the three sentinels to know the master, the replica and each other",
            errors=SENTINEL_NOT_YET,
        )
        yield stack
    finally:
        for node in reversed(nodes):
            node.stop()


@dataclass
class Web:
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, body: dict) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers)

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


@pytest.fixture
def web(stack, tmp_path) -> Iterator[Web]:
    """gunicorn of this project, configured for Sentinel through the environment only."""
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "bankproject.settings_test",
        "DATABASE_URL": database_url(),
        "REDIS_SENTINELS": stack.addresses,
        "REDIS_SENTINEL_MASTER": MASTER,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens: whatever used it would fail
        "THROTTLE_VERIFY": f"{LIMIT}/hour",
        "THROTTLE_RESEND": "1000/min",
        "THROTTLE_RESEND_ADDRESS": f"{LIMIT}/hour",
    }
    env.pop("CACHE_URL", None)
    port = free_port()
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "bankproject.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        server = Web(f"http://127.0.0.1:{port}", log_path)

        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode} while starting:\n{server.log()[-3000:]}")
            return server.get("/healthz") == 200

        wait_for(answers, timeout=60, what="gunicorn to answer")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


GUESS = {"email_id": 1, "secret_code": "A" * 43}  # a wrong code: 400 while allowed


def verify_key() -> str:
    return cache.make_key("throttle_verify_127.0.0.1")  # per client address; the test's is loopback


def address_key(address: str) -> str:
    canonical = identity.canonical_email(address)
    assert canonical
    return cache.make_key(f"throttle_resend_address_{throttles._digest(canonical)}")


def assert_limited(send: Callable[[], tuple[int, dict[str, str]]], allowed: int) -> None:
    """LIMIT requests answered with ``allowed``, the next one 429 with a Retry-After."""
    answers = [send() for _ in range(LIMIT + 1)]
    assert [status for status, _ in answers] == [allowed] * LIMIT + [429]
    assert 0 < int(answers[-1][1]["Retry-After"]) <= 3600


def assert_fresh_limit_holds(web: Web, master: RedisNode, address: str) -> None:
    """A limit never counted before: LIMIT through, then 429, counted in ``master``."""
    assert master.zcard(address_key(address)) == 0
    assert_limited(lambda: web.post("/api/users/resend-verification/", {"email": address}), allowed=202)
    assert master.zcard(address_key(address)) == LIMIT  # counted there, not in a process


def test_rate_limits_hold_through_sentinel_failovers(stack, web):
    first, second, sentinels = stack.first, stack.second, stack.sentinels

    # Before: counted in the first master.
    assert_limited(lambda: web.post("/api/verify-email/", GUESS), allowed=400)
    assert first.zcard(verify_key()) == LIMIT
    assert_fresh_limit_holds(web, first, "before@example.com")
    assert first.client.script_exists(SCRIPT_SHA) == [True]
    assert first.client.wait(1, 5000) == 1  # the replica has every count so far
    assert second.client.script_exists(SCRIPT_SHA) == [False]  # but not the script

    # 1. The master dies. Until the sentinels promote the replica (down-after 3 s, then a vote),
    # requests are still answered, counted in the process.
    first.kill()
    status, _ = web.post("/api/verify-email/", GUESS)
    assert status in (400, 429)
    ready = web.get("/readyz")
    if all(s.master_port_named() == first.port for s in sentinels):  # both still before the promotion
        assert "throttle cache unreachable" in web.log()
        assert ready == 503
    # (60 s: a split vote makes the sentinels wait twice the failover-timeout, 10 s, and vote again.)
    wait_for(lambda: stack.settled(second, None), timeout=60, what="the replica's promotion", errors=SENTINEL_NOT_YET)
    settled_at = len(web.log())

    assert web.post("/api/verify-email/", GUESS)[0] == 429  # the counts from before came along
    assert second.zcard(verify_key()) == LIMIT
    assert_fresh_limit_holds(web, second, "after-kill@example.com")
    assert second.client.script_exists(SCRIPT_SHA) == [True]  # NOSCRIPT answered by loading it
    assert web.get("/readyz") == 200  # the broker found the new master too

    # 2. The old master comes back, empty, as a master; the sentinels make it a replica (~10 s).
    # Not before every sentinel has a live link to the new master: one that learnt of the switch
    # but has not had a PING answered yet could still call it down and promote the empty old one.
    wait_for(lambda: stack.master_healthy(second), timeout=30, what="every sentinel to see the new master up")
    first.start()
    wait_for(
        lambda: stack.settled(second, first),
        timeout=60,
        what="the old master to rejoin as a replica",
        errors=SENTINEL_NOT_YET,
    )
    with pytest.raises(redis.ReadOnlyError):  # where a static CACHE_URL would still point
        first.client.zadd("probe", {"x": 1})
    assert_fresh_limit_holds(web, second, "after-rejoin@example.com")
    wait_for(lambda: first.zcard(address_key("after-rejoin@example.com")) == LIMIT, what="the counts replicated")
    assert_readonly_makes_the_pool_reconnect(stack, demoted=first, master=second)

    # 3. An operator switches back (SENTINEL FAILOVER). The old master stays writable until the
    # sentinels re-configure it (~10 s later, when they also close its clients' connections).
    assert_fresh_limit_holds(web, second, "before-switch@example.com")  # the web holds a connection there
    # Not before every sentinel has read the rejoined replica's INFO (every 10 s): one that still
    # saw it as a master would demote it in the middle of its promotion, aborting the switch-over.
    wait_for(lambda: stack.ready_to_promote(first), timeout=30, what="every sentinel to see a good replica")
    wait_for(
        lambda: stack.switch_over(),
        timeout=30,
        what="a sentinel to accept SENTINEL FAILOVER",
        errors=SENTINEL_NOT_YET,  # e.g. INPROG, NOGOODSLAVE
    )
    wait_for(
        lambda: stack.settled(first, second),
        timeout=60,
        what="the switch-over back to the first master",
        errors=SENTINEL_NOT_YET,
    )
    assert_fresh_limit_holds(web, first, "after-switch@example.com")
    assert web.get("/readyz") == 200

    after = web.log()[settled_at:]
    assert "throttle cache unreachable" not in after, after[-3000:]
    assert "Traceback" not in after, after[-3000:]


def assert_readonly_makes_the_pool_reconnect(stack: Stack, *, demoted: RedisNode, master: RedisNode) -> None:
    """A connection of django-redis's Sentinel pool still open to a master since demoted (as one
    opened just before the demotion would be): its first write there answers READONLY, redis-py
    drops the connection and that command fails once (a throttle counts that request in its
    process); the next command asks the sentinels and runs on the new master. It never stays
    stuck on the replica, as a client of a fixed URL does."""
    factory = SentinelConnectionFactory(
        {
            "SENTINELS": [("127.0.0.1", s.port) for s in stack.sentinels],
            "SOCKET_CONNECT_TIMEOUT": 1,
            "SOCKET_TIMEOUT": 2,
        }
    )
    # The pool the cache's master client gets (built directly: the factory's cache is process-wide).
    pool = factory.get_connection_pool(factory.make_connection_params(f"redis://{MASTER}/0?is_master=1"))
    assert isinstance(pool, SentinelConnectionPool) and pool.is_master
    client = redis.Redis(connection_pool=pool)
    try:
        key = cache.make_key("readonly-probe")
        connection = pool.get_connection()
        connection.disconnect()
        connection.connect_to(("127.0.0.1", demoted.port))
        connection.send_command("EVAL", throttles._SLIDING_WINDOW, 1, key, time.time(), 60, 10, "a")
        with pytest.raises(redis.ConnectionError, match="previous master is now a slave"):
            connection.read_response()
        pool.release(connection)  # dropped: it is no longer to the master the pool knows
        allowed, _ = client.register_script(throttles._SLIDING_WINDOW)(keys=[key], args=[time.time(), 60, 10, "b"])
        assert allowed == 1
        assert master.zcard(key) == 1  # "a" never counted anywhere, "b" in the new master
        with pytest.raises(redis.ReadOnlyError):  # a fixed URL's client: READONLY for as long as it lasts
            demoted.client.eval(throttles._SLIDING_WINDOW, 1, key, time.time(), 60, 10, "c")
    finally:
        pool.disconnect()


def _cache_settings(**env: str) -> subprocess.CompletedProcess:
    """The cache settings a process configured only by ``env`` gets."""
    environment = {k: v for k, v in os.environ.items() if k not in {"CACHE_URL", "REDIS_SENTINELS"}}
    environment |= {"DJANGO_SETTINGS_MODULE": "bankproject.settings_test"} | env
    code = "import json, django; django.setup(); from django.conf import settings; print(json.dumps(settings.CACHES))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=environment, capture_output=True, text=True
    )


def test_with_sentinels_the_cache_follows_the_master_sentinel_names():
    done = _cache_settings(REDIS_SENTINELS="10.0.0.5:26379, s2.internal:26380", REDIS_SENTINEL_MASTER="bank")
    assert done.returncode == 0, done.stderr
    cache_settings = json.loads(done.stdout)["default"]
    assert cache_settings["LOCATION"] == "redis://bank/0"
    assert cache_settings["KEY_PREFIX"]
    assert cache_settings["OPTIONS"] == {
        "SOCKET_CONNECT_TIMEOUT": 1,
        "SOCKET_TIMEOUT": 2,
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "CONNECTION_POOL_CLASS": "redis.sentinel.SentinelConnectionPool",
        "SENTINELS": [["10.0.0.5", 26379], ["s2.internal", 26380]],
        "SENTINEL_KWARGS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }


def test_an_explicit_cache_url_wins_over_sentinel():
    done = _cache_settings(REDIS_SENTINELS="10.0.0.5:26379", CACHE_URL="redis://cache.internal:6379/2")
    assert done.returncode == 0, done.stderr
    cache_settings = json.loads(done.stdout)["default"]
    assert cache_settings["LOCATION"] == "redis://cache.internal:6379/2"
    assert cache_settings["OPTIONS"] == {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 2}


def test_a_sentinel_without_a_port_is_refused_at_start():
    done = _cache_settings(REDIS_SENTINELS="10.0.0.5")
    assert done.returncode != 0
    assert "REDIS_SENTINELS='10.0.0.5': expected host:port" in done.stderr
