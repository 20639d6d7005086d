"""The numbers an operator asks for first: queue depths, dead letters, verification emails by
state, the oldest unsent one. Exported on /metrics and shown on the admin's queue overview.

- ``simplebank_queue_messages{queue}``: messages waiting in each Dramatiq queue (and its delay queue)
- ``simplebank_dead_letters{queue}``: dead-lettered messages kept for each queue
- ``simplebank_verification_emails{state}``: verification emails by state
- ``simplebank_verification_oldest_unsent_age_seconds``: age of the oldest pending/sending one
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq
from django.db.models import Count, Min
from django.utils import timezone
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, xq_name
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from tasks import retry_policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueStats:
    queue: str
    waiting: int
    delayed: int
    dead: int


def queue_stats() -> list[QueueStats] | None:
    """Per queue, from Redis in one round trip; None if the broker isn't Redis or doesn't answer."""
    broker = dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        return None
    # The web process declares actors lazily, so name our queues explicitly too.
    queues = sorted(set(broker.get_declared_queues()) | {retry_policy.QUEUE, retry_policy.MAINTENANCE_QUEUE})
    try:
        with broker.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(f"{broker.namespace}:{queue}")
                pipe.llen(f"{broker.namespace}:{dq_name(queue)}")
                pipe.zcard(f"{broker.namespace}:{xq_name(queue)}")
            answers = pipe.execute()
    except (RedisError, OSError):
        logger.warning("queue stats: Redis unreachable")
        return None
    return [QueueStats(queue, *answers[3 * i : 3 * i + 3]) for i, queue in enumerate(queues)]


def verification_stats() -> tuple[dict[str, int], float]:
    """Verification emails by state, and the age in seconds of the oldest unsent one (0 if none)."""
    from users.models import EmailVerification

    counts = dict(EmailVerification.objects.values_list("state").annotate(n=Count("id")).order_by())
    by_state = {state: counts.get(state, 0) for state in EmailVerification.State.values}
    unsent = EmailVerification.objects.filter(state__in=["pending", "sending"])
    oldest = unsent.aggregate(at=Min("created_at"))["at"]
    return by_state, (timezone.now() - oldest).total_seconds() if oldest else 0.0


class OperatorCollector(Collector):
    def describe(self) -> Iterator[Metric]:
        # Registration asks for names only; without this it would call collect() (and query the
        # database) while the app registry is still loading.
        yield GaugeMetricFamily("simplebank_queue_messages", "", labels=["queue"])
        yield GaugeMetricFamily("simplebank_dead_letters", "", labels=["queue"])
        yield GaugeMetricFamily("simplebank_verification_emails", "", labels=["state"])
        yield GaugeMetricFamily("simplebank_verification_oldest_unsent_age_seconds", "")

    def collect(self) -> Iterator[Metric]:
        stats = queue_stats()
        if stats is not None:
            depth = GaugeMetricFamily(
                "simplebank_queue_messages", "Messages waiting in a Dramatiq queue.", labels=["queue"]
            )
            dead = GaugeMetricFamily(
                "simplebank_dead_letters", "Dead-lettered messages kept for a queue.", labels=["queue"]
            )
            for row in stats:
                depth.add_metric([row.queue], row.waiting)
                depth.add_metric([dq_name(row.queue)], row.delayed)
                dead.add_metric([row.queue], row.dead)
            yield depth
            yield dead
        by_state, oldest_age = verification_stats()
        states = GaugeMetricFamily("simplebank_verification_emails", "Verification emails by state.", labels=["state"])
        for state, count in by_state.items():
            states.add_metric([state], count)
        yield states
        yield GaugeMetricFamily(
            "simplebank_verification_oldest_unsent_age_seconds",
            "Age of the oldest verification email not sent yet (0 when none).",
            value=oldest_age,
        )
