"""What operators rely on: /metrics (web and worker), and one request id from sign-up to inbox."""

import io
import json
import re
import urllib.request

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from conftest import WorkerProcess, free_port, wait_for, worker_env
from users.models import EmailVerification

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _samples(text: str, name: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    }


def test_web_metrics_show_requests_queue_depth_and_verification_states(client, signup_data, redis_broker):
    assert APIClient().post("/api/users/", signup_data(), format="json").status_code == 201  # no worker runs
    text = client.get("/metrics").content.decode()
    assert _samples(text, "simplebank_queue_messages")['simplebank_queue_messages{queue="critical"}'] == 1.0
    assert _samples(text, "simplebank_dead_letters")['simplebank_dead_letters{queue="critical"}'] == 0.0
    states = _samples(text, "simplebank_verification_emails")
    assert states['simplebank_verification_emails{state="pending"}'] == 1.0
    assert states['simplebank_verification_emails{state="sent"}'] == 0.0
    assert (
        _samples(text, "simplebank_verification_oldest_unsent_age_seconds")[
            "simplebank_verification_oldest_unsent_age_seconds"
        ]
        > 0
    )
    posts = _samples(text, "django_http_requests_total_by_method_total")
    assert posts['django_http_requests_total_by_method_total{method="POST"}'] >= 1
    assert "django_http_requests_latency_seconds_by_view_method_bucket" in text


def test_worker_metrics_and_one_request_id_from_signup_to_inbox(signup_data, smtp_server, redis_broker, tmp_path):
    port = free_port()
    (tmp_path / "prom").mkdir()
    env = worker_env(
        redis_url=settings.REDIS_URL,
        smtp=smtp_server,
        LOG_FORMAT="json",
        DRAMATIQ_PROMETHEUS="true",
        dramatiq_prom_port=str(port),
        dramatiq_prom_host="127.0.0.1",
        dramatiq_prom_db=str(tmp_path / "prom"),
    )
    worker = WorkerProcess(tmp_path / "worker.log", env).start()
    try:
        person = signup_data()
        response = APIClient().post("/api/users/", person, format="json", HTTP_X_REQUEST_ID="trace-7f3a9c")
        assert response.status_code == 201 and response["X-Request-ID"] == "trace-7f3a9c"
        wait_for(lambda: smtp_server.to(person["email"]), what="the email")
        wait_for(lambda: EmailVerification.objects.filter(state="sent").exists(), what="row sent")

        def logged() -> list[dict]:
            # Worker processes log through a pipe that the parent copies to its output, so the line can
            # trail the email and the row by a moment.
            lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
            return [line for line in lines if line.get("message") == "processed task"]

        [processed] = wait_for(logged, what="the 'processed task' log line")
        assert processed["request_id"] == "trace-7f3a9c" and processed["email"] == person["email"]
        assert processed["level"] == "INFO" and processed["logger"] == "tasks.tasks"

        def exported() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                return answer.read().decode()

        def counted() -> float:
            counts = _samples(exported(), "dramatiq_messages_total")
            return sum(v for k, v in counts.items() if 'actor_name="send_verify_email"' in k)

        wait_for(lambda: counted() == 1.0, what="the worker's exporter to count the message")
        assert "dramatiq_message_duration_milliseconds" in exported()

        out = io.StringIO()
        call_command("worker_status", stdout=out)  # the liveness signal the compose healthcheck reads
        [live] = re.findall(r"^(\d+) live worker consumer\(s\)", out.getvalue(), flags=re.MULTILINE)
        assert int(live) >= 1
        assert worker.terminate() == 0
    finally:
        worker.stop_quietly()


def test_malformed_request_ids_are_replaced(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline" + "x" * 100)
    assert response["X-Request-ID"].isalnum() and len(response["X-Request-ID"]) == 32


def test_worker_status_fails_when_no_worker_beats(redis_broker):
    redis_broker.client.delete(f"{redis_broker.namespace}:__heartbeats__")  # no worker ever ran here
    with pytest.raises(CommandError, match="no worker has beaten"):
        call_command("worker_status", stdout=io.StringIO())
