"""Liveness and readiness probes for orchestrators (compose healthchecks, load balancers)."""

from __future__ import annotations

import dramatiq
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_redis import get_redis_connection
from dramatiq.brokers.redis import RedisBroker


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """The database, the broker (Redis, or RabbitMQ) and the cache's Redis answer; 503 names the
    ones that don't."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    broker = dramatiq.get_broker()
    name = "redis" if isinstance(broker, RedisBroker) else "broker"
    try:
        if isinstance(broker, RedisBroker):
            broker.client.ping()
        elif not broker.connection.is_open:  # type: ignore[attr-defined]  # RabbitMQ
            raise ConnectionError("closed")
        checks[name] = "ok"
    except Exception as exc:
        checks[name] = f"error: {type(exc).__name__}"
    # The cache's Redis (rate limits, the proof lock): the broker's unless CACHE_URL names another,
    # and the only Redis asked when RabbitMQ is the broker.
    try:
        get_redis_connection("default").ping()
        checks["cache"] = "ok"
    except Exception as exc:
        checks["cache"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
