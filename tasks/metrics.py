"""Queue depths and dead letters, for operators (``/metrics/operator`` and the admin's overview).

- ``simplebank_queue_messages{queue}``: messages waiting in each Dramatiq queue (and its delay queue)
- ``simplebank_dead_letters{queue}``: dead-lettered messages kept for each queue

Not on the public ``/metrics``: a sign-up with a registered address queues a notice only once per
cooldown, so a queue's depth could tell the two apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq
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


class QueueCollector(Collector):
    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("simplebank_queue_messages", "", labels=["queue"])
        yield GaugeMetricFamily("simplebank_dead_letters", "", labels=["queue"])

    def collect(self) -> Iterator[Metric]:
        stats = queue_stats()
        if stats is None:
            return
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
