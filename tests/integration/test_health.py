"""/healthz and /readyz, including a Redis that does not answer."""

import pytest
from django.conf import settings
from dramatiq.brokers.redis import RedisBroker

from conftest import configured_middleware, free_port, swapped_broker

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_healthz_and_readyz_answer_when_everything_is_up(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "redis": "ok", "cache": "ok"}


def test_readyz_names_the_dependency_that_is_down(client):
    down = RedisBroker(
        url=f"redis://127.0.0.1:{free_port()}/0",
        namespace=settings.DRAMATIQ_NAMESPACE,
        middleware=configured_middleware(),
        socket_connect_timeout=0.5,
    )
    with swapped_broker(down):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"].startswith("error")


def test_readyz_checks_the_caches_redis_beside_rabbitmq(client, settings):
    """With RabbitMQ as the broker, Redis is still the cache (rate limits, the proof lock) and the
    scheduler's lock: readiness names it when it does not answer."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    from tests.integration.test_brokers import RABBITMQ_URL, _wait_for_rabbitmq

    _wait_for_rabbitmq()
    rabbit = RabbitmqBroker(url=RABBITMQ_URL, middleware=configured_middleware())
    try:
        with swapped_broker(rabbit):
            assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "cache": "ok"}
            settings.CACHES = {
                "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
            }
            response = client.get("/readyz")
    finally:
        rabbit.close()
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "ok" and response.json()["checks"]["cache"].startswith("error")


def test_readyz_names_a_cache_of_its_own_that_does_not_answer(client, settings):
    """CACHE_URL may name a Redis apart from the broker's: readiness asks it too."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == checks["redis"] == "ok" and checks["cache"].startswith("error")
