"""The fault-test rig: a private Redis (AOF on, as in production), real worker processes, a real
SMTP server, and the redispatch sweep as its command — each of which a test may break."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from dramatiq.brokers.redis import RedisBroker

from conftest import PrivateRedis, SmtpSink, WorkerProcess, configured_middleware, swapped_broker, worker_env

# Short enough that a killed worker's messages come back, and retries happen, within seconds.
FAULT_ENV = {
    "TEST_DRAMATIQ_HEARTBEAT_TIMEOUT_MS": "2000",
    "TEST_DRAMATIQ_MAINTENANCE_CHANCE": "1000000",
    # A claim outlives a database restart (the sender keeps recording "sent" for half of it).
    "VERIFY_EMAIL_CLAIM_TIMEOUT": "10",
    "VERIFY_EMAIL_RETRY_MIN_BACKOFF_MS": "200",
    "VERIFY_EMAIL_RETRY_MAX_BACKOFF_MS": "1000",
    # A retry not seen this long after the last attempt was lost: the sweep sends the row again.
    "VERIFY_EMAIL_RETRY_STALL_AFTER": "8",
    "TEST_CONN_MAX_AGE": "60",  # persistent connections, as in production
}


@pytest.fixture
def redis_server(tmp_path) -> Iterator[PrivateRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory, appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker(redis_server: PrivateRedis) -> Iterator[RedisBroker]:
    """The web side's broker, on the private Redis."""
    broker = RedisBroker(
        url=redis_server.url,
        namespace=settings.DRAMATIQ_NAMESPACE,
        middleware=configured_middleware(),
        socket_connect_timeout=1,
        socket_timeout=5,
    )
    with swapped_broker(broker):
        yield broker


@pytest.fixture
def start_worker(tmp_path, redis_server, smtp_server) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*, processes: int = 1, threads: int = 2, **env: str) -> WorkerProcess:
        log = tmp_path / f"worker{len(started)}.log"
        environment = worker_env(redis_url=redis_server.url, smtp=smtp_server, **(FAULT_ENV | env))
        worker = WorkerProcess(log, environment, processes=processes, threads=threads)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop_quietly()


@pytest.fixture
def sweep(redis_server, smtp_server) -> Callable[..., str]:
    """Run ``manage.py redispatch_verifications`` once, as the scheduler does, with no grace period
    (``env``: settings that differ from the fault tests', as the worker's do)."""

    def run(**env: str) -> str:
        env = worker_env(
            redis_url=redis_server.url,
            smtp=smtp_server,
            **(FAULT_ENV | {"VERIFY_EMAIL_REDISPATCH_AFTER": "0"} | env),
        )
        done = subprocess.run(
            [sys.executable, "manage.py", "redispatch_verifications"],
            cwd=settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    return run


class SilentServer:
    """Accepts TCP connections and never says a word: an SMTP server that hangs before its greeting."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.accepted.set()

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_smtp() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def emails_per_address(sink: SmtpSink) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in sink.messages:
        counts[str(message["To"])] = counts.get(str(message["To"]), 0) + 1
    return counts
