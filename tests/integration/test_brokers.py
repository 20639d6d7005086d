"""Sign-up to inbox over each supported broker: Redis, Redis through Sentinel, RabbitMQ.

Each runs a real `rundramatiq` worker process configured only through the environment, as an
operator would (REDIS_URL; REDIS_SENTINELS + REDIS_SENTINEL_MASTER; DRAMATIQ_BROKER_URL=amqp://).
"""

import os
import subprocess
from collections.abc import Iterator

import pika
import pytest
import redis
from django.conf import settings
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from rest_framework.test import APIClient

from conftest import (
    PrivateRedis,
    WorkerProcess,
    configured_middleware,
    free_port,
    links_in,
    require_service,
    swapped_broker,
    wait_for,
    worker_env,
)
from tasks.brokers import SentinelRedisBroker
from users.models import User

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@pytest.fixture
def master(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sentinel(tmp_path, master) -> Iterator[str]:
    """A real `redis-server --sentinel` watching the private master as "mymaster"."""
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 5000\n"
    )
    process = subprocess.Popen(["redis-server", str(config), "--sentinel"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1)

    def knows_master() -> bool:
        if process.poll() is not None:
            pytest.fail(f"redis-server --sentinel exited with {process.returncode}")
        try:
            host, port = client.sentinel_get_master_addr_by_name("mymaster")
        except TypeError:  # no master known yet
            return False
        return (host.decode() if isinstance(host, bytes) else host, int(port)) == ("127.0.0.1", master.port)

    wait_for(knows_master, timeout=20, what="the sentinel to know the master")
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def _wait_for_rabbitmq() -> None:
    require_service("rabbitmq")
    """RabbitMQ opens its port before it takes AMQP sessions: wait for a real handshake."""
    parameters = pika.URLParameters(RABBITMQ_URL)
    parameters.socket_timeout = parameters.blocked_connection_timeout = 5

    def handshake() -> bool:
        pika.BlockingConnection(parameters).close()
        return True

    wait_for(
        handshake,
        timeout=60,
        interval=0.5,
        errors=(pika.exceptions.AMQPError, OSError),
        what="RabbitMQ on 127.0.0.1:5672 to take an AMQP session (rabbitmq-server -detached starts it)",
    )


def _signup_to_verified(broker, env: dict[str, str], smtp_server, signup_data, tmp_path) -> None:
    with swapped_broker(broker):
        broker.flush_all()
        worker = WorkerProcess(tmp_path / "worker.log", env).start()
        try:
            person = signup_data()
            api = APIClient()
            assert api.post("/api/users/", person, format="json").status_code == 201
            [message] = wait_for(lambda: smtp_server.to(person["email"]), timeout=60, what="the email")
            [(_, email_id, code)] = links_in(message)
            verified = api.post("/api/verify-email/", {"email_id": email_id, "secret_code": code}, format="json")
            assert verified.status_code == 200
            assert User.objects.get(username=person["username"]).is_email_verified
            assert worker.terminate() == 0
        finally:
            worker.stop_quietly()


def test_over_redis(master, smtp_server, signup_data, tmp_path):
    broker = RedisBroker(url=master.url, namespace=settings.DRAMATIQ_NAMESPACE, middleware=configured_middleware())
    env = worker_env(redis_url=master.url, smtp=smtp_server)
    _signup_to_verified(broker, env, smtp_server, signup_data, tmp_path)


def test_over_redis_sentinel(sentinel, smtp_server, signup_data, tmp_path):
    broker = SentinelRedisBroker(
        sentinels=[sentinel],
        master="mymaster",
        namespace=settings.DRAMATIQ_NAMESPACE,
        middleware=configured_middleware(),
    )
    env = worker_env(redis_url="redis://127.0.0.1:1/0", smtp=smtp_server)  # unused: Sentinel wins
    env |= {"REDIS_SENTINELS": sentinel, "REDIS_SENTINEL_MASTER": "mymaster"}
    _signup_to_verified(broker, env, smtp_server, signup_data, tmp_path)


def test_over_rabbitmq(smtp_server, signup_data, tmp_path):
    _wait_for_rabbitmq()
    broker = RabbitmqBroker(url=RABBITMQ_URL, middleware=configured_middleware())
    env = worker_env(redis_url=settings.REDIS_URL, smtp=smtp_server) | {"DRAMATIQ_BROKER_URL": RABBITMQ_URL}
    _signup_to_verified(broker, env, smtp_server, signup_data, tmp_path)
