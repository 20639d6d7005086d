import time
from typing import cast

import dramatiq
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from dramatiq.brokers.redis import RedisBroker


class Command(BaseCommand):
    help = (
        "Worker liveness from the broker's heartbeats: lists the worker consumers Redis has heard from "
        "and exits 1 if none beat within --max-age seconds (default: the broker's heartbeat timeout)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--max-age", type=float, default=None)

    def handle(self, *args, max_age: float | None, **options):
        broker = dramatiq.get_broker()
        if not isinstance(broker, RedisBroker):
            raise CommandError("worker heartbeats can only be read from the Redis broker")
        limit = max_age if max_age is not None else broker.heartbeat_timeout / 1000
        now_ms = time.time() * 1000
        beats = cast(
            "list[tuple[bytes, float]]",
            broker.client.zrange(f"{broker.namespace}:__heartbeats__", 0, -1, withscores=True),
        )
        alive = 0
        for worker_id, beat_ms in beats:
            age = (now_ms - beat_ms) / 1000
            alive += age <= limit
            self.stdout.write(f"{worker_id.decode()} last beat {age:.1f}s ago")
        self.stdout.write(f"{alive} live worker consumer(s) in namespace {settings.DRAMATIQ_NAMESPACE!r}")
        if not alive:
            raise CommandError(f"no worker has beaten in the last {limit:.0f}s")
