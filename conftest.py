"""Shared fixtures: brokers, an in-process worker, a real SMTP server (aiosmtpd), factories."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import html
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import dramatiq
import pytest
import redis
from aiosmtpd.controller import Controller
from django.conf import settings
from django_dramatiq.utils import load_middleware
from dramatiq.brokers.stub import StubBroker

# aiosmtpd gives its server thread 5 s to start, then says "the system is too busy": on a busy
# machine every SMTP sink of the suite gets 30 s.
os.environ.setdefault("AIOSMTPD_CONTROLLER_TIMEOUT", "30")

LINK_RE = re.compile(r"https?://[^\s\"'<>]+/verify-email/\?email_id=(\d+)&secret_code=([A-Za-z0-9_-]+)")


# What a process that is starting, restarting or failing over answers before it is ready.
NOT_READY_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out, unreachable (urllib's URLError is one too)
    http.client.HTTPException,  # a server that closed the connection mid-answer
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (an AOF still loading)
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # an old master that came back as a replica
)


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 60.0,  # a deadline: a passing test pays nothing for it (a loaded 2-core box, the worker twice)
    interval: float = 0.02,
    what: str = "",
    errors: tuple[type[BaseException], ...] = NOT_READY_ERRORS,
) -> Any:
    """Poll until ``predicate()`` is truthy or the deadline passes, then fail saying ``what``.

    An exception in ``errors`` (by default, what a server that is still starting gives: refused,
    reset, timeouts) counts as "not yet"; the last one is named in the failure. Anything else
    (an assertion, a bug in the test) fails at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except errors as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"; last error: {type(last_error).__name__}: {last_error}" if last_error else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}{detail}")
        time.sleep(interval)


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and not one this run handed out before: a test that takes
    several before binding any (a Sentinel rig takes five) never gets the same one twice."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def _actors() -> list[dramatiq.Actor]:
    from users import tasks as actors_module

    return [value for value in vars(actors_module).values() if isinstance(value, dramatiq.Actor)]


@contextlib.contextmanager
def swapped_broker(broker: dramatiq.Broker) -> Iterator[dramatiq.Broker]:
    """Bind every actor of ours to ``broker`` for the duration, then restore the configured one."""
    original = dramatiq.get_broker()
    actors = _actors()
    dramatiq.set_broker(broker)
    for actor in actors:
        actor.broker = broker
        broker.declare_actor(actor)
    try:
        yield broker
    finally:
        for actor in actors:
            actor.broker = original
        dramatiq.set_broker(original)
        broker.close()


# --- Services the suite needs (scripts/test.sh starts what is installed, names what is not) --------
MISSING_SERVICES = set(os.environ.get("SIMPLEBANK_MISSING_SERVICES", "").split())
INSTALL = {
    "postgresql": "PostgreSQL is not running and not installed (apt-get install postgresql, or set DATABASE_URL)",
    "redis": "Redis is not running and not installed (apt-get install redis-server, or set REDIS_URL)",
    "rabbitmq": "RabbitMQ is not running and not installed (apt-get install rabbitmq-server)",
}


def require_service(name: str) -> None:
    """A test that needs ``name``: it fails with what to install under CI, and is skipped with it
    elsewhere, when scripts/test.sh found the service neither running nor installed."""
    if name in MISSING_SERVICES:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(INSTALL[name])


@pytest.fixture(autouse=True)
def _services_present(request: pytest.FixtureRequest) -> None:
    """Without PostgreSQL or Redis, every test that touches the database or the broker says why."""
    node = request.node
    if MISSING_SERVICES & {"postgresql", "redis"} and (
        node.get_closest_marker("django_db")
        or any(node.get_closest_marker(m) for m in ("integration", "fault", "browser"))
    ):
        for name in ("postgresql", "redis"):
            require_service(name)


def configured_middleware() -> list[dramatiq.Middleware]:
    return [load_middleware(path) for path in settings.DRAMATIQ_BROKER["MIDDLEWARE"]]


@pytest.fixture
def admin_user(db: None, django_user_model: Any, django_username_field: str) -> Any:
    """pytest-django's ``admin_user`` (behind ``admin_client``), with the second factor staff must
    have (``MFA_REQUIRED_ROLES``): without one every admin page sends them to set one up."""
    from users.tests.factories import superuser_with_factor

    return superuser_with_factor(username="admin", password="password")  # noqa: S106  # pytest-django's


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    """Unit tests only: an in-memory broker with the production middleware."""
    broker = StubBroker(middleware=configured_middleware())
    broker.emit_after("process_boot")
    with swapped_broker(broker):
        yield broker


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def redis_broker() -> Iterator[dramatiq.Broker]:
    """The configured RedisBroker (real Redis, this run's namespace), emptied before and after."""
    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()


@pytest.fixture
def worker(redis_broker: dramatiq.Broker) -> Iterator[dramatiq.Worker]:
    """An in-process Dramatiq worker on real Redis. Tests using it need ``transaction=True``."""
    worker = dramatiq.Worker(redis_broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield worker
    worker.stop(timeout=10_000)


# --- A real SMTP server --------------------------------------------------------------------------
@dataclass
class SmtpSink:
    """An aiosmtpd server that keeps what it accepts and can be told to refuse."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    attempts: int = 0
    # Answers to give to the next RCPT commands, e.g. ["451 4.3.0 try later"]; then accept.
    rcpt_answers: list[str] = field(default_factory=list)
    # Recipients refused for good with 550.
    reject: set[str] = field(default_factory=set)
    # Seconds to hold each DATA before answering (a slow server keeps sends in flight).
    data_delay: float = 0.0
    # If set, DATA waits until the test sets it (holds a send in flight for as long as needed).
    data_gate: threading.Event | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # SMTP sessions opened by clients (EHLO count), and the open ones (to drop them on purpose).
    connections: int = 0
    sessions: list[Any] = field(default_factory=list)
    loop: Any = None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        with self.lock:
            self.connections += 1
            self.sessions.append(server)
        return responses

    def drop_connections(self) -> None:
        """Close every open client connection from the server side, as an idle timeout would."""
        with self.lock:
            servers, self.sessions = self.sessions, []
        for server in servers:
            self.loop.call_soon_threadsafe(server.transport.close)
        wait_for(lambda: all(s.transport is None or s.transport.is_closing() for s in servers), what="drops")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            self.attempts += 1
            if self.rcpt_answers:
                return self.rcpt_answers.pop(0)
        if address.lower() in self.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_gate is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.data_gate.wait, 60)
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address.lower() in str(m["To"]).lower()]


def message_text(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]


def message_html(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]


def tampered(code: str) -> str:
    """``code`` with its last character changed — always to a different one."""
    return code[:-1] + ("B" if code.endswith("A") else "A")


def links_in(message: EmailMessage) -> list[tuple[str, int, str]]:
    """Every verification link in the text part, as (url, email_id, secret_code)."""
    return [(m.group(0), int(m.group(1)), m.group(2)) for m in LINK_RE.finditer(message_text(message))]


def html_links_in(message: EmailMessage) -> list[tuple[str, int, str]]:
    text = html.unescape(message_html(message))
    return [(m.group(0), int(m.group(1)), m.group(2)) for m in LINK_RE.finditer(text)]


@pytest.fixture
def smtp_server(settings) -> Iterator[SmtpSink]:
    """A real SMTP server on a free port; the shipped SMTP backend (``bankproject.smtp``, what the
    settings make of Django's name) is pointed at it."""
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    sink.loop = controller.loop
    settings.EMAIL_BACKEND = "bankproject.smtp.EmailBackend"
    settings.EMAIL_HOST = sink.host
    settings.EMAIL_PORT = sink.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_TIMEOUT = 30  # a stall of the shared GIL on a loaded machine is no SMTP failure
    yield sink
    controller.stop()


# --- Factories -----------------------------------------------------------------------------------
@pytest.fixture
def signup_data() -> Callable[..., dict[str, str]]:
    counter = iter(range(1, 10**6))

    def make(**overrides: str) -> dict[str, str]:
        n = next(counter)
        data = {
            "username": f"alice{n}",
            "full_name": f"Alice Example {n}",
            "email": f"alice{n}@example.com",
            "password": "correct horse battery staple",
        }
        data.update(overrides)
        return data

    return make


# --- Real processes the fault tests start and break ---------------------------------------------
class PrivateRedis:
    """A redis-server of the test's own on a free port, started, stopped and restarted by PID."""

    def __init__(self, directory, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"redis-server on port {self.port} exited with {process.returncode} while starting")
            return bool(client.ping())

        wait_for(ready, timeout=30, what=f"the private redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


def database_url() -> str:
    """The URL of the test database, for worker processes."""
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextlib.contextmanager
def gunicorn(log_path: Any, **env: str) -> Iterator[str]:
    """gunicorn as deployed (./gunicorn.conf.py) on the test database, one worker, its stdout and
    stderr in ``log_path``, ``env`` over this process's environment: its base URL once it answers
    ``/healthz`` (polled through its start-up until a deadline); stopped on the way out."""
    port = free_port()
    environment = os.environ | {"DJANGO_SETTINGS_MODULE": "bankproject.settings_test", "DATABASE_URL": database_url()}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "bankproject.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=settings.BASE_DIR,
            env=environment | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            with open(log_path) as log:
                pytest.fail(f"gunicorn exited: {log.read()[-2000:]}")
        with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) as connection:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200

    try:
        wait_for(up, timeout=60, what="gunicorn")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


class WorkerProcess:
    """``python manage.py rundramatiq`` as operators run it, with its output in a file."""

    def __init__(self, log_path, env: dict[str, str], *, processes: int = 1, threads: int = 2) -> None:
        self.log_path = log_path
        self.env = env
        self.processes = processes
        self.args = ["--processes", str(processes), "--threads", str(threads)]
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "rundramatiq", *self.args],
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process

        def booted() -> bool:
            if process.poll() is not None:
                pytest.fail(f"rundramatiq exited with {process.returncode} while starting:\n{self.output()[-3000:]}")
            return self.output().count("Worker process is ready") >= self.processes

        wait_for(booted, timeout=90, what=f"{self.processes} worker process(es) to boot")
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as an orchestrator stops it; returns the exit code."""
        assert self.process
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no acks, no goodbyes."""
        assert self.process
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop_quietly(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


def worker_env(*, redis_url: str, smtp: SmtpSink, **extra: str) -> dict[str, str]:
    return os.environ | {
        "DJANGO_SETTINGS_MODULE": "bankproject.settings_test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url,
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": smtp.host,
        "EMAIL_PORT": str(smtp.port),
        **extra,
    }


def _delete_cache_keys(pattern: str) -> None:
    """Delete this run's cache keys matching ``pattern`` (after the run's key prefix)."""
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    keys = list(client.scan_iter(match=f"{settings.CACHES['default']['KEY_PREFIX']}:{pattern}", count=1000))
    if keys:
        client.delete(*keys)


def expire_cooldowns() -> None:
    """As if every email cooldown had run out: the cooldowns are read from the email rows."""
    from django.db.models import F

    from users.models import OutboundEmail

    OutboundEmail.objects.update(created_at=F("created_at") - timedelta(seconds=settings.VERIFY_EMAIL_RESEND_COOLDOWN))


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    """Throttle counters start empty in every test (only this run's keys, and the per-process
    fallback counters used while the cache is down)."""
    from users import throttles

    yield
    _delete_cache_keys("*")
    throttles._local.counts.clear()


@pytest.fixture
def no_throttling(settings) -> None:
    """For tests that sign up many people from one address; the rate limits have their own tests."""
    rates = dict.fromkeys(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "1000000/min")
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"DEFAULT_THROTTLE_RATES": rates}
