import socket
import time
from typing import cast

import dramatiq
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from dramatiq.brokers.redis import RedisBroker

from tasks.middleware import host_workers_key, registry_max_age_s, workers_key


class Command(BaseCommand):
    help = (
        "Worker liveness: lists the worker processes whose broker heartbeat Redis has heard "
        "and exits 1 if none beat within --max-age seconds (default: the broker's heartbeat timeout). "
        "Web and scheduler processes write heartbeats too when they enqueue; only brokers a worker "
        "registered (tasks.middleware.WorkerRegistry) count. With --this-host, only the worker "
        "processes of the host it runs on (a replica's own healthcheck)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--max-age", type=float, default=None)
        parser.add_argument(
            "--this-host",
            action="store_true",
            help="count only the worker processes on this host (its name: socket.gethostname())",
        )

    def handle(self, *args, max_age: float | None, this_host: bool, **options):
        broker = dramatiq.get_broker()
        if not isinstance(broker, RedisBroker):
            raise CommandError("worker heartbeats can only be read from the Redis broker")
        limit = max_age if max_age is not None else broker.heartbeat_timeout / 1000
        registered_since = time.time() - registry_max_age_s(broker)
        try:
            registry = host_workers_key(broker) if this_host else workers_key(broker)
            broker.client.zremrangebyscore(registry, "-inf", registered_since)
            workers = cast("list[bytes]", broker.client.zrange(registry, 0, -1))
            beats = dict(
                cast(
                    "list[tuple[bytes, float]]",
                    broker.client.zrange(f"{broker.namespace}:__heartbeats__", 0, -1, withscores=True),
                )
            )
        except redis.RedisError as exc:
            raise CommandError(f"Redis unreachable: {exc.__class__.__name__}: {exc}") from None
        now_ms = time.time() * 1000
        alive = 0
        for worker_id in sorted(workers):
            if worker_id not in beats:  # registered, and has not fetched yet (it is booting)
                self.stdout.write(f"{worker_id.decode()} starting: no beat yet")
                continue
            age = (now_ms - beats[worker_id]) / 1000
            alive += age <= limit
            self.stdout.write(f"{worker_id.decode()} last beat {age:.1f}s ago")
        where = f" on host {socket.gethostname()!r}" if this_host else ""
        self.stdout.write(f"{alive} live worker(s){where} in namespace {settings.DRAMATIQ_NAMESPACE!r}")
        if not alive:
            raise CommandError(f"no worker{where} has beaten in the last {limit:.0f}s")
