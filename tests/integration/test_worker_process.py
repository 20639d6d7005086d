"""The worker as operators run it, and the sign-up path when Redis is down.

``python manage.py rundramatiq`` runs as a real subprocess (discovery of ``users.tasks``
included); the Redis outage uses a private ``redis-server`` the test starts and stops.
"""

import logging

import dramatiq
import pytest
from django.conf import settings
from dramatiq.brokers.redis import RedisBroker
from rest_framework.test import APIClient

from conftest import WorkerProcess, configured_middleware, links_in, swapped_broker, wait_for, worker_env
from users import dispatch
from users.models import EmailVerification, OutboundEmail, User

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_rundramatiq_discovers_the_actor_and_delivers(signup_data, smtp_server, redis_broker, tmp_path):
    worker = WorkerProcess(tmp_path / "worker.log", worker_env(redis_url=settings.REDIS_URL, smtp=smtp_server))
    worker.start()
    try:
        data = signup_data()
        assert APIClient().post("/api/users/", data, format="json").status_code == 201
        [message] = wait_for(lambda: smtp_server.to(data["email"]), timeout=60, what="email from the worker process")
        [(_, email_id, code)] = links_in(message)
        wait_for(lambda: OutboundEmail.objects.get(verification_id=email_id).state == "sent", what="row marked sent")
        exit_code = worker.terminate()
    finally:
        worker.stop_quietly()
    output = worker.output()
    assert "users.tasks" in output  # django-dramatiq found our actor module
    assert "processed task" in output and data["email"] in output
    assert code not in output  # the secret never reaches the logs
    assert exit_code == 0, output[-2000:]


def test_redis_down_at_commit_still_answers_201_and_keeps_the_email_pending(
    signup_data, smtp_server, private_redis, caplog
):
    broker = RedisBroker(
        url=private_redis.url,
        namespace=settings.DRAMATIQ_NAMESPACE,
        middleware=configured_middleware(),
        socket_connect_timeout=1,
    )
    with swapped_broker(broker):
        data = signup_data()
        with caplog.at_level(logging.WARNING, logger="users.dispatch"):
            response = APIClient().post("/api/users/", data, format="json")
        assert response.status_code == 201
        assert User.objects.filter(username=data["username"]).exists()
        verification = EmailVerification.objects.get(user__username=data["username"])
        assert OutboundEmail.objects.get(verification=verification).state == "pending"
        assert any(r.getMessage().startswith("enqueue failed") for r in caplog.records)

        # Redis is back; dispatching the committed row again (what the redispatch sweep does)
        # delivers it once.
        private_redis.start()
        worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
        worker.start()
        try:
            dispatch.enqueue(dispatch.SEND_VERIFY_EMAIL, verification.pk)
            dispatch.enqueue(dispatch.SEND_VERIFY_EMAIL, verification.pk)  # a second sweep before the first ran
            wait_for(lambda: smtp_server.to(data["email"]), what="the email once Redis is back")
            broker.join("critical")
            worker.join()
        finally:
            worker.stop()
        assert len(smtp_server.to(data["email"])) == 1
