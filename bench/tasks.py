"""The no-op actor of the queue-ceiling phase. It only counts itself, in Redis."""

import time

import dramatiq

QUEUE = "bench"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def bench_noop() -> None:
    client = dramatiq.get_broker().client  # type: ignore[attr-defined]
    now = repr(time.time())
    with client.pipeline(transaction=False) as pipe:
        pipe.incr("bench:noop:count")
        pipe.setnx("bench:noop:first", now)
        pipe.set("bench:noop:last", now)
        pipe.execute()
