"""No secret reaches any log line the stack writes: gunicorn's access and error logs, Django's
request warnings (400, 429), the worker's log — whatever a client puts in a URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from conftest import WorkerProcess, database_url, free_port, links_in, tampered, wait_for, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def _post_json(url: str, body: dict) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def web(tmp_path) -> Iterator[tuple[str, Path]]:
    """gunicorn as deployed (./gunicorn.conf.py), its stdout and stderr in one file."""
    port, log_path = free_port(), tmp_path / "web.log"
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "bankproject.settings_test",
        "DATABASE_URL": database_url(),
        "THROTTLE_VERIFY": "4/min",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "bankproject.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited: {log_path.read_text()[-2000:]}")
        return _get(f"{url}/healthz") == 200

    wait_for(up, timeout=60, what="gunicorn")
    yield url, log_path
    process.terminate()
    process.wait(timeout=10)


def test_codes_in_links_reach_no_log(web, smtp_server, redis_broker, signup_data, tmp_path):
    url, web_log = web
    worker = WorkerProcess(tmp_path / "worker.log", worker_env(redis_url=settings.REDIS_URL, smtp=smtp_server)).start()
    try:
        person = signup_data()
        assert _post_json(f"{url}/api/users/", person) == 201
        [message] = wait_for(lambda: smtp_server.to(person["email"]), timeout=60, what="the verification email")
        [(link, email_id, code)] = links_in(message)
        page = link.replace("http://127.0.0.1:8000", url)
        assert _get(page) == 200  # the confirm page
        assert _get(page + "x") == 400  # Django warns "Bad Request" with the request
        assert _get(f"{url}/verify-email/?email_id={email_id}&secret_code={tampered(code)}") == 400
        statuses = [_get(page) for _ in range(4)]  # over THROTTLE_VERIFY: a 429 warning
        assert 429 in statuses
        assert _post_json(f"{url}/api/verify-email/", {"email_id": email_id, "secret_code": code + "x"}) in (400, 429)
        assert worker.terminate() == 0
    finally:
        worker.stop_quietly()
    logs = {"web": web_log.read_text(), "worker": worker.output()}
    assert "GET /verify-email/ HTTP/1.1" in logs["web"]  # the access log is there, and has no query
    assert "Bad Request: /verify-email/" in logs["web"] and "Too Many Requests: /verify-email/" in logs["web"]
    for name, text in logs.items():
        assert code not in text, f"the code is in the {name} log"
        assert code[:12] not in text, f"part of the code is in the {name} log"
        assert "secret_code=" not in text.replace("secret_code=[redacted]", ""), f"a code parameter in the {name} log"
