"""Rate limits hold across web processes because they are counted in the shared Redis."""

import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connections
from rest_framework.test import APIClient

from conftest import database_url, free_port, wait_for
from users import proofs
from users.models import SecurityEvent
from users.tests.factories import UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _answers(url: str, process: subprocess.Popen) -> bool:
    """True once the server answers at all; a refused connection raises (``wait_for`` polls on)."""
    if process.poll() is not None:
        pytest.fail(f"gunicorn exited with {process.returncode} while starting")
    with contextlib.suppress(urllib.error.HTTPError):  # an answer, even a 4xx, means it is up
        urllib.request.urlopen(url, timeout=2).close()
    return True


@pytest.fixture
def two_web_processes(tmp_path) -> Iterator[list[str]]:
    """Two gunicorn servers of this project, sharing PostgreSQL and Redis, with low rates."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bankproject.settings_test",
        "DATABASE_URL": database_url(),
        "THROTTLE_SIGNUP": "4/min",
        "THROTTLE_VERIFY": "3/min",
    }
    servers, urls = [], []
    for n in range(2):
        port = free_port()
        log = open(tmp_path / f"web{n}.log", "wb")  # noqa: SIM115 - closed with the process below
        servers.append(
            (
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gunicorn",
                        "bankproject.wsgi",
                        "--bind",
                        f"127.0.0.1:{port}",
                        "--workers",
                        "1",
                    ],
                    cwd=settings.BASE_DIR,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    for url, (process, _) in zip(urls, servers, strict=True):
        wait_for(lambda u=url, p=process: _answers(f"{u}/signup/", p), timeout=60, what=f"gunicorn at {url}")
    yield urls
    for process, log in servers:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_signup_rate_is_shared_by_two_processes(two_web_processes, signup_data):
    first, second = two_web_processes
    statuses = [_post(f"{url}/api/users/", signup_data())[0] for url in (first, second, first, second)]
    assert statuses == [201, 201, 201, 201]
    status, headers, body = _post(f"{second}/api/users/", signup_data())
    assert status == 429
    assert 0 < int(headers["Retry-After"]) <= 60
    assert b"throttled" in body.lower()
    # Another address, and a forged X-Forwarded-For, change nothing: the client is REMOTE_ADDR.
    assert _post(f"{first}/api/users/", signup_data(), {"X-Forwarded-For": "203.0.113.9"})[0] == 429


def test_verify_attempts_are_limited_across_processes(two_web_processes):
    first, second = two_web_processes
    guess = {"email_id": 1, "secret_code": "A" * 43}
    statuses = [_post(f"{url}/api/verify-email/", guess)[0] for url in (first, second, first, second)]
    assert statuses == [400, 400, 400, 429]


def test_resend_is_limited_per_address_whoever_asks(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": rates | {"resend_address": "2/hour"},
        "NUM_PROXIES": 1,  # behind one trusted proxy, X-Forwarded-For names the client
    }
    api = APIClient()
    url = "/api/users/resend-verification/"
    statuses = [
        api.post(
            url, {"email": "target@example.com"}, format="json", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}"
        ).status_code
        for n in range(3)
    ]
    assert statuses == [202, 202, 429]
    assert api.post(url, {"email": "other@example.com"}, format="json").status_code == 202


def test_with_the_cache_down_requests_are_answered_and_limited_in_this_process(settings, signup_data, caplog):
    settings.CACHES = {
        "default": settings.CACHES["default"]
        | {"LOCATION": f"redis://127.0.0.1:{free_port()}/0", "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5}}
    }  # nothing listens there
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] | {"signup": "3/min"}
    }
    statuses = [APIClient().post("/api/users/", signup_data(), format="json").status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert any("throttle cache unreachable" in r.getMessage() for r in caplog.records)


def test_with_the_cache_down_log_ins_are_answered_and_still_tried_one_at_a_time(settings, caplog, monkeypatch):
    """The proof lock (users.proofs) falls back to this process, as the rate limits do."""
    monkeypatch.setattr(proofs, "WAIT_S", 60)  # five hashes in a row on a loaded machine: no one gives up waiting
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    settings.CACHES = {
        "default": settings.CACHES["default"]
        | {"LOCATION": f"redis://127.0.0.1:{free_port()}/0", "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5}}
    }  # nothing listens there
    guess = {"username": "ada", "password": "not the password"}

    def attempt(_: int) -> int:
        try:
            return APIClient().post("/api/tokens/", guess, format="json").status_code
        finally:
            connections.close_all()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=12) as pool:  # at once: the process's own lock keeps them in turn
        statuses = sorted(pool.map(attempt, range(12)))
    assert statuses == [401] * 4 + [429] * 8
    assert SecurityEvent.objects.filter(kind="login_failed").count() == 5
    right = {"username": "ada", "password": "correct horse battery staple"}
    assert APIClient().post("/api/tokens/", right, format="json").status_code == 429  # locked, as ever
    assert any("proof lock: cache unreachable" in r.getMessage() for r in caplog.records)


def test_concurrent_requests_never_pass_a_limit_together(settings):
    """45 requests at once from one address against 20/min: exactly 20 get through (an atomic
    INCR per request; DRF's read-then-write history let all 45 pass)."""
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] | {"verify": "20/min"}
    }
    start = threading.Barrier(45)

    def attempt(_: int) -> int:
        start.wait(timeout=30)
        body = {"email_id": 1, "secret_code": "not-a-code"}
        try:
            return APIClient().post("/api/verify-email/", body, format="json").status_code
        finally:
            connections.close_all()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=45) as pool:
        statuses = list(pool.map(attempt, range(45)))
    assert statuses.count(400) == 20 and statuses.count(429) == 25, statuses


def test_a_pages_retry_after_is_never_sooner_than_the_window_allows():
    """A page rounded 10.2 s of a window to 10: a client that obeys Retry-After was refused again
    (DRF's own answer rounds up, the pages now too)."""
    from django.test import RequestFactory

    from users.throttles import throttle_wait

    class Refuses:
        def allow_request(self, request, view):
            return False

        def wait(self):
            return 10.2

    assert throttle_wait(RequestFactory().post("/signup/"), [Refuses]) == 11
