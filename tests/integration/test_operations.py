"""What operators rely on: /metrics (web and worker), and one request id from sign-up to inbox."""

import io
import json
import math
import re
import time
import urllib.request
from pathlib import Path

import dramatiq
import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from conftest import WorkerProcess, free_port, wait_for, worker_env
from users.models import OutboundEmail
from users.tasks import refresh_email_stats

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def _samples(text: str, name: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    }


def _scrape(client, path: str = "/metrics", token: str | None = None) -> dict[str, float]:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = client.get(path, **headers)
    assert response.status_code == 200, response.status_code
    return _samples(response.content.decode(), "")


# Series that measure time (not who signed up), and Python's own bookkeeping.
_CLOCK_OR_RUNTIME = ("_sum", "_created", "_bucket", "process_", "python_gc_", "python_info")


def _moves(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        name: after.get(name, 0.0) - before.get(name, 0.0)
        for name in set(before) | set(after)
        if not any(part in name for part in _CLOCK_OR_RUNTIME) and after.get(name, 0.0) != before.get(name, 0.0)
    }


def test_public_metrics_move_alike_for_a_new_and_a_registered_address(client, signup_data, redis_broker, no_throttling):
    owner = signup_data()
    api = APIClient()
    assert api.post("/api/users/", owner, format="json").status_code == 201

    def moves_of(body: dict, url: str = "/api/users/") -> dict[str, float]:
        before = _scrape(client)
        api.post(url, body, format="json")
        return _moves(before, _scrape(client))

    new = moves_of(signup_data())
    registered = moves_of(signup_data(email=owner["email"].upper()))
    assert new == registered and new  # requests, responses by status: the same series, the same steps
    assert not [name for name in _scrape(client) if name.startswith("simplebank_")]
    resend_new = moves_of({"email": "nobody@example.com"}, "/api/users/resend-verification/")
    resend_registered = moves_of({"email": owner["email"]}, "/api/users/resend-verification/")
    assert resend_new == resend_registered


def test_operator_metrics_need_the_token_and_show_queues_and_emails(client, signup_data, redis_broker, settings):
    assert client.get("/metrics/operator").status_code == 404  # not served without METRICS_TOKEN
    settings.METRICS_TOKEN = "scrape-secret-0123456789"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert _scrape(client, token=settings.METRICS_TOKEN)  # the request series, with the token
    assert client.get("/metrics/operator").status_code == 403

    assert APIClient().post("/api/users/", signup_data(), format="json").status_code == 201  # no worker runs
    text = _scrape(client, "/metrics/operator", settings.METRICS_TOKEN)
    assert text['simplebank_queue_messages{queue="critical"}'] == 1.0
    assert text['simplebank_dead_letters{queue="critical"}'] == 0.0
    assert text['simplebank_emails{kind="verification",state="pending"}'] == 1.0  # unsent: counted live
    assert text["simplebank_email_oldest_unsent_age_seconds"] > 0
    # Finished emails come from the scheduler's snapshot, with its age; no scrape counts the table.
    assert 'simplebank_emails{kind="verification",state="sent"}' not in text
    refresh_email_stats()  # what the scheduler sends every minute
    text = _scrape(client, "/metrics/operator", settings.METRICS_TOKEN)
    assert text['simplebank_emails{kind="verification",state="sent"}'] == 0.0
    assert 0 <= text["simplebank_email_stats_age_seconds"] < 60


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
        wait_for(lambda: OutboundEmail.objects.filter(state="sent").exists(), what="row sent")

        def logged() -> list[dict]:
            # Worker processes log through a pipe that the parent copies to its output, so the line can
            # trail the email and the row by a moment.
            lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
            return [line for line in lines if line.get("message") == "processed task"]

        [processed] = wait_for(logged, what="the 'processed task' log line")
        assert processed["request_id"] == "trace-7f3a9c" and processed["email"] == person["email"]
        assert processed["level"] == "INFO" and processed["logger"] == "users.tasks"

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
        [live] = re.findall(r"^(\d+) live worker\(s\)", out.getvalue(), flags=re.MULTILINE)
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


@pytest.mark.usefixtures("no_throttling")
def test_a_sign_up_with_no_worker_running_is_no_live_worker(redis_broker, client):
    """Dramatiq's heartbeat is written by every broker call: the web's enqueue made worker_status
    (and the compose healthcheck) report a live worker with none running (a runbook walk)."""
    body = {"username": "nobody-works", "full_name": "No Body", "email": "nobody@example.com", "password": PASSWORD}
    assert client.post("/api/users/", body, content_type="application/json").status_code == 201
    assert redis_broker.client.zcard(f"{redis_broker.namespace}:__heartbeats__") >= 1  # the web's own beat
    with pytest.raises(CommandError, match="no worker has beaten"):
        call_command("worker_status", stdout=io.StringIO())


def test_a_worker_stopped_at_once_leaves_no_registration_behind(redis_broker):
    """Its registering thread could write after the stop had removed it (a review: 48 stale of 200
    start-stops): worker_status then saw a live worker with none running."""
    from tasks.middleware import workers_key

    for _ in range(20):
        worker = dramatiq.Worker(redis_broker, worker_timeout=50, worker_threads=1)
        worker.start()
        worker.stop(timeout=5_000)
        assert redis_broker.client.zscore(workers_key(redis_broker), redis_broker.broker_id) is None


def test_a_registration_nobody_refreshes_ages_out_whatever_the_heartbeats_say(redis_broker):
    """A killed worker says nothing: its registration stops being refreshed and is dropped, even
    if its broker id beats again (a process that reused it only to enqueue)."""
    from tasks.middleware import registry_refresh_s, workers_key

    now = time.time()
    redis_broker.client.zadd(f"{redis_broker.namespace}:__heartbeats__", {"killed": now * 1000})
    redis_broker.client.zadd(workers_key(redis_broker), {"killed": now - 3 * registry_refresh_s(redis_broker) - 1})
    with pytest.raises(CommandError, match="no worker has beaten"):
        call_command("worker_status", stdout=io.StringIO())
    assert redis_broker.client.zcard(workers_key(redis_broker)) == 0
    # One that registered and has not fetched yet is starting, not dead: kept for its first beat.
    redis_broker.client.zadd(workers_key(redis_broker), {"booting": now})
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("worker_status", stdout=out)
    assert "booting starting: no beat yet" in out.getvalue()
    assert redis_broker.client.zscore(workers_key(redis_broker), "booting") is not None


def test_a_replica_s_healthcheck_counts_the_workers_of_its_own_host(redis_broker):
    """With several worker replicas, one live replica passed every replica's healthcheck (the
    namespace's count): a replica whose workers had all died stayed healthy and was never restarted."""
    from tasks.middleware import host_workers_key, registry_refresh_s, workers_key

    now = time.time()
    redis_broker.client.zadd(f"{redis_broker.namespace}:__heartbeats__", {"elsewhere": now * 1000})
    redis_broker.client.zadd(workers_key(redis_broker), {"elsewhere": now})
    redis_broker.client.zadd(host_workers_key(redis_broker, "another-replica"), {"elsewhere": now})
    call_command("worker_status", stdout=io.StringIO())  # the namespace has a live worker
    with pytest.raises(CommandError, match=r"no worker on host .* has beaten"):
        call_command("worker_status", "--this-host", stdout=io.StringIO())

    worker = dramatiq.Worker(redis_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:

        def this_host_live() -> str | None:
            out = io.StringIO()
            try:
                call_command("worker_status", "--this-host", stdout=out)
            except CommandError:
                return None
            return out.getvalue()

        assert "1 live worker(s) on host" in wait_for(this_host_live, what="this host's worker to register and beat")
        # The host's registrations expire with it: a host that is gone leaves no key behind.
        ttl = redis_broker.client.ttl(host_workers_key(redis_broker))
        assert 0 < ttl <= math.ceil(3 * registry_refresh_s(redis_broker))
    finally:
        worker.stop(timeout=5_000)
    assert redis_broker.client.zscore(host_workers_key(redis_broker), redis_broker.broker_id) is None


def test_a_running_worker_drops_the_registrations_of_killed_ones(redis_broker):
    """A killed worker's registration was dropped only when worker_status ran: with no healthcheck
    reading it, one entry per killed worker stayed in Redis for ever (a review of what piles up)."""
    from tasks.middleware import host_workers_key, registry_refresh_s, workers_key

    stale = time.time() - 3 * registry_refresh_s(redis_broker) - 1
    keys = (workers_key(redis_broker), host_workers_key(redis_broker))  # the namespace's and this host's
    for key in keys:
        redis_broker.client.zadd(key, {"killed-long-ago": stale})
    worker = dramatiq.Worker(redis_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        wait_for(
            lambda: all(redis_broker.client.zscore(key, "killed-long-ago") is None for key in keys),
            what="the running worker to drop the killed one's registrations",
        )
    finally:
        worker.stop(timeout=5_000)


def test_worker_status_says_in_one_line_that_redis_is_unreachable(monkeypatch):
    broker = dramatiq.get_broker()
    monkeypatch.setattr(broker, "client", redis.Redis(port=free_port(), socket_connect_timeout=1))
    with pytest.raises(CommandError, match=r"^Redis unreachable: ConnectionError"):
        call_command("worker_status", stdout=io.StringIO())


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp, IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_the_worker_exporter_listens_on_loopback_unless_told_otherwise(smtp_server, redis_broker, tmp_path):
    port = free_port()
    (tmp_path / "prom").mkdir()
    env = worker_env(
        redis_url=settings.REDIS_URL,
        smtp=smtp_server,
        DRAMATIQ_PROMETHEUS="true",
        dramatiq_prom_port=str(port),
        dramatiq_prom_db=str(tmp_path / "prom"),
    )
    env.pop("dramatiq_prom_host", None)
    worker = WorkerProcess(tmp_path / "worker.log", env).start()
    try:
        addresses = wait_for(lambda: _listening_addresses(port), what="the exporter to listen")
        assert addresses == {"127.0.0.1"}
        assert worker.terminate() == 0
    finally:
        worker.stop_quietly()
