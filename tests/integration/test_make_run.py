"""`make run`'s script as a newcomer runs it: web, worker and scheduler, SQLite, console email."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from conftest import free_port, wait_for

# A fresh migrate and five processes starting on a busy machine, then the link and the shutdown.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

EXPORTER_PORT = 9191  # Dramatiq's default, which a second checkout or another worker may hold


def _clean_env(**extra: str) -> dict[str, str]:
    """A newcomer's shell: none of the variables the test settings put into this process."""
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    return keep | extra


def _post(url: str, body: dict) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status


def test_links_follow_web_address_and_the_exporter_port_is_left_alone(tmp_path: Path, private_redis):
    private_redis.start()
    port = free_port()
    holder = socket.socket()  # someone else's exporter on 9191, if nobody holds it already
    with contextlib.suppress(OSError):  # taken already: all the better for the check
        holder.bind(("127.0.0.1", EXPORTER_PORT))
        holder.listen()
    log_path = tmp_path / "run.log"
    env = _clean_env(
        WEB_ADDRESS=f"127.0.0.1:{port}",
        REDIS_URL=private_redis.url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        DRAMATIQ_NAMESPACE=f"make-run-test-{port}",
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["bash", "scripts/run.sh"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output() -> str:
        return log_path.read_text(errors="replace")

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"make run exited with {process.returncode}:\n{output()[-3000:]}")
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
        return "Worker process is ready" in output()

    try:
        wait_for(ready, timeout=120, interval=0.2, what="make run's web server and worker")
        person = {
            "username": "newcomer",
            "full_name": "New Comer",
            "email": "newcomer@example.com",
            "password": "correct horse battery staple",
        }
        assert _post(f"http://127.0.0.1:{port}/api/users/", person) == 201
        link = re.compile(r"(https?://[^\s/]+)/verify-email/\?email_id=\d+&secret_code=[\w-]+")
        [origin] = wait_for(lambda: link.findall(output()), timeout=60, what="the link in the worker's output")
        assert origin == f"http://127.0.0.1:{port}"
        # Opening the link: runserver logs the request line, but not the code in it.
        url = re.findall(r"https?://[^\s\"]+/verify-email/\?email_id=\d+&secret_code=[\w-]+", output())[0]
        code = url.rsplit("secret_code=", 1)[1]
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.status == 200

        def web_lines() -> list[str]:
            return [line for line in output().splitlines() if " web.1 " in line.split("|", 1)[0]]

        wait_for(lambda: any("GET /verify-email/?" in line for line in web_lines()), what="runserver's request line")
        assert not [line for line in web_lines() if code in line]  # the email (worker) has it, no web log line
        assert "Traceback" not in output(), output()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        holder.close()
