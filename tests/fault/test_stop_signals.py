"""Stopping ``manage.py rundramatiq`` is graceful whichever way the SIGTERM comes.

Orchestrators stop a worker in one of two ways: a SIGTERM to its main process only (``docker
compose stop``, Kubernetes, systemd's ``KillMode=mixed``) or a SIGTERM to every process of it
(systemd's default ``KillMode=control-group``, ``kill -TERM -<pgid>``, honcho under ``make run``).
In the second case each worker process gets two SIGTERMs within milliseconds, its own and the one
the main process forwards, and Dramatiq takes a second SIGTERM for "kill now"
(``tasks.middleware.StopOnce`` folds the duplicate into one).

Graceful means: the worker exits 0 within its grace period without "Killing worker process", the
email in flight is delivered once, and a retry waiting in a worker's delay queue is handed back
to Redis at once, so a new worker sends it when it is due, long before the broker's heartbeat
timeout would have returned it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from rest_framework.test import APIClient

from conftest import wait_for
from tests.fault.conftest import emails_per_address

# Two worker start-ups, a grace period of a minute and a retry due after up to 40 s on a busy
# machine: 7 minutes a test.
pytestmark = [
    pytest.mark.fault,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("no_throttling"),
    pytest.mark.timeout(420),
]

# Far longer than any wait below: a message returned by the heartbeat would fail the test.
HEARTBEAT_TIMEOUT_MS = 300_000
# The first retry waits 20-40 s (Dramatiq keeps 50-100 % of the cap as jitter): still waiting in
# the worker's delay queue when the stop comes — the second sign-up and its email reaching DATA
# must fit in those 20 s, on a loaded machine too — and due long before the heartbeat timeout.
RETRY_BACKOFF_MS = 40_000
STOP_ENV = {
    "TEST_DRAMATIQ_HEARTBEAT_TIMEOUT_MS": str(HEARTBEAT_TIMEOUT_MS),
    "VERIFY_EMAIL_RETRY_MIN_BACKOFF_MS": str(RETRY_BACKOFF_MS),
    "VERIFY_EMAIL_RETRY_MAX_BACKOFF_MS": str(RETRY_BACKOFF_MS),
    "VERIFY_EMAIL_RETRY_STALL_AFTER": "120",  # must exceed the backoff (system check tasks.E002)
}
# Compose's stop_grace_period; systemd's TimeoutStopSec is longer still.
GRACE_PERIOD_S = 60


def _signup(data: dict[str, str]) -> None:
    response = APIClient().post("/api/users/", data, format="json")
    assert response.status_code == 201, response.content


def _acks(broker, suffix: str) -> int:
    """Messages fetched by some worker and not yet acked, on the queue named ``suffix``."""
    keys = broker.client.keys(f"{broker.namespace}:__acks__.*")
    return sum(broker.client.scard(key) for key in keys if key.decode().endswith(f".{suffix}"))


def _queued(broker) -> dict[str, int]:
    return {name: broker.client.llen(f"{broker.namespace}:{name}") for name in ("critical", "critical.DQ")}


def _send(worker, how: str, sig: signal.Signals = signal.SIGTERM) -> None:
    if how == "process group":  # systemd's KillMode=control-group, kill -TERM -<pgid>, honcho
        os.killpg(worker.process.pid, sig)  # start_new_session: the main process leads the group
    else:  # docker compose stop, Kubernetes, systemd's KillMode=mixed
        worker.process.send_signal(sig)


@pytest.mark.parametrize("how", ["process group", "main process"])
def test_sigterm_finishes_the_email_in_flight_and_hands_back_the_scheduled_retry(
    how, signup_data, broker, start_worker, smtp_server
):
    worker = start_worker(processes=2, threads=2, **STOP_ENV)
    retried, in_flight = signup_data(), signup_data()

    # One email fails transiently: its retry waits in a worker's delay queue, unacked in Redis.
    smtp_server.rcpt_answers = ["451 4.3.0 try later"]
    _signup(retried)
    wait_for(lambda: _acks(broker, "critical.DQ") == 1, what="the retry held in a worker's delay queue")
    failed_at = time.monotonic()
    # Another is in flight: the SMTP server holds its DATA until told.
    smtp_server.data_gate = threading.Event()
    _signup(in_flight)
    wait_for(lambda: smtp_server.attempts == 2, what="the second email in flight")

    _send(worker, how)
    wait_for(
        lambda: worker.output().count("Shutting down...") == 2 or worker.process.poll() is not None,
        what="both worker processes to stop taking messages",
    )
    smtp_server.data_gate.set()  # the email in flight completes during the shutdown
    code = worker.process.wait(timeout=GRACE_PERIOD_S)
    output = worker.output()
    assert "Killing worker process" not in output
    assert code == 0
    assert output.count("Worker has been shut down.") == 2
    assert emails_per_address(smtp_server) == {in_flight["email"]: 1}

    # Handed back to Redis at once (to the delay queue, or the queue itself had it fallen due),
    # not left in the dead worker's unacked set until the heartbeat timeout.
    assert _acks(broker, "critical.DQ") == _acks(broker, "critical") == 0
    assert sum(_queued(broker).values()) == 1, _queued(broker)

    # A new worker sends it once when it is due: well before the heartbeat could have returned it.
    start_worker(**STOP_ENV)
    wait_for(lambda: smtp_server.to(retried["email"]), timeout=RETRY_BACKOFF_MS / 1000 + 60, what="the retry")
    # (The heartbeat would have returned it only HEARTBEAT_TIMEOUT_MS after the shutdown; the queue
    # above already showed it handed back. A worker's start-up on a busy machine takes seconds.)
    assert time.monotonic() - failed_at < HEARTBEAT_TIMEOUT_MS / 1000
    assert emails_per_address(smtp_server) == {in_flight["email"]: 1, retried["email"]: 1}
    assert smtp_server.attempts == 3


def test_sigterm_repeated_after_the_first_still_kills(signup_data, broker, start_worker, smtp_server):
    """Dramatiq's escape hatch stays: a SIGTERM repeated well after the first kills at once."""
    worker = start_worker(processes=1, threads=1, **STOP_ENV)
    smtp_server.data_gate = threading.Event()  # an email stuck in flight holds up the shutdown
    try:
        _signup(signup_data())
        wait_for(lambda: smtp_server.attempts == 1, what="an email in flight")
        _send(worker, "process group")
        wait_for(lambda: "Shutting down..." in worker.output(), what="the worker to stop")

        def sent_again_and_killed() -> bool:
            _send(worker, "main process")  # the main process forwards each one
            return "Killing worker process" in worker.output()

        wait_for(sent_again_and_killed, interval=0.25, what="a repeated SIGTERM to kill the worker process")
        assert worker.process.wait(timeout=GRACE_PERIOD_S) == 1  # Dramatiq's RET_KILLED
    finally:
        smtp_server.data_gate.set()
