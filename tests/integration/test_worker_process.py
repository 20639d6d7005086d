"""The worker as operators run it, and the sign-up path when Redis is down.

``python manage.py rundramatiq`` runs as a real subprocess (discovery of ``tasks.tasks``
included); the Redis outage uses a private ``redis-server`` the test starts and stops.
"""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from dramatiq.brokers.redis import RedisBroker
from rest_framework.test import APIClient

from conftest import configured_middleware, free_port, links_in, swapped_broker, wait_for
from users import services
from users.models import EmailVerification, User

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(settings.BASE_DIR)


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def test_rundramatiq_discovers_the_actor_and_delivers(signup_data, smtp_server, redis_broker, tmp_path):
    log_path = tmp_path / "worker.log"
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "bankproject.settings_test",
        "DATABASE_URL": _database_url(),
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": smtp_server.host,
        "EMAIL_PORT": str(smtp_server.port),
    }
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "rundramatiq", "--processes", "1", "--threads", "2"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        data = signup_data()
        assert APIClient().post("/api/users/", data, format="json").status_code == 201
        [message] = wait_for(lambda: smtp_server.to(data["email"]), timeout=60, what="email from the worker process")
        [(_, email_id, code)] = links_in(message)
        wait_for(lambda: EmailVerification.objects.get(pk=email_id).state == "sent", what="row marked sent")
    finally:
        worker.send_signal(signal.SIGTERM)
        exit_code = worker.wait(timeout=60)
    output = log_path.read_text()
    assert "tasks.tasks" in output  # django-dramatiq found our actor module
    assert "processed task" in output and data["email"] in output
    assert code not in output  # the secret never reaches the logs
    assert exit_code == 0, output[-2000:]


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of our own, started and stopped by the test (by PID)."""
    port = free_port()

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        process: subprocess.Popen | None = None

        def start(self) -> None:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
            )
            client = redis.Redis.from_url(self.url)
            wait_for(lambda: _pings(client), timeout=10, what="private redis-server")

        def stop(self) -> None:
            if self.process:
                self.process.terminate()
                self.process.wait(timeout=10)
                self.process = None

    server = Server()
    yield server
    server.stop()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def test_redis_down_at_commit_still_answers_201_and_keeps_the_email_pending(
    signup_data, smtp_server, private_redis, caplog
):
    import dramatiq

    broker = RedisBroker(url=private_redis.url, middleware=configured_middleware(), socket_connect_timeout=1)
    with swapped_broker(broker):
        data = signup_data()
        with caplog.at_level(logging.WARNING, logger="users.services"):
            response = APIClient().post("/api/users/", data, format="json")
        assert response.status_code == 201
        assert User.objects.filter(username=data["username"]).exists()
        verification = EmailVerification.objects.get(user__username=data["username"])
        assert verification.state == "pending"
        assert any(r.getMessage().startswith("enqueue failed") for r in caplog.records)

        # Redis is back; dispatching the committed row again (what the redispatch sweep does)
        # delivers it once.
        private_redis.start()
        worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
        worker.start()
        try:
            services.verification_dispatch(verification.pk)
            services.verification_dispatch(verification.pk)  # a second sweep before the first ran
            wait_for(lambda: smtp_server.to(data["email"]), what="the email once Redis is back")
            broker.join("critical")
            worker.join()
        finally:
            worker.stop()
        assert len(smtp_server.to(data["email"])) == 1
