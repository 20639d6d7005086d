"""Idle workers are woken by the enqueue itself (tasks.brokers.WakingRedisBroker), on real Redis."""

import threading
import uuid

import pytest
import redis
from django.conf import settings
from dramatiq import Message

from tasks.brokers import WakingRedisBroker

pytestmark = pytest.mark.integration

QUEUE = "wakeup-test"


def _message() -> Message:
    return Message(queue_name=QUEUE, actor_name="nobody", args=(1,), kwargs={}, options={})


@pytest.fixture
def broker(redis_broker):
    assert isinstance(redis_broker, WakingRedisBroker)  # what settings configure for a Redis URL
    # A broker of its own (same Redis, own namespace): no worker of another test sees this queue.
    own = WakingRedisBroker(url=settings.REDIS_URL, namespace=f"wakeup-{uuid.uuid4().hex}", middleware=[])
    own.declare_queue(QUEUE)
    yield own
    own.flush_all()
    own.close()


def test_an_idle_consumer_takes_a_new_message_at_once_not_at_its_next_poll(broker, monkeypatch):
    consumer = broker.consume(QUEUE, prefetch=1, timeout=60_000)
    consumer.misses = 30  # idle for long: its next poll of Redis is 30-60 s away
    found_nothing = threading.Event()
    fetch = broker.do_fetch

    def watched_fetch(*args):
        messages = fetch(*args)
        if not messages:
            found_nothing.set()
        return messages

    monkeypatch.setattr(broker, "do_fetch", watched_fetch)
    taken = []
    waiting = threading.Thread(target=lambda: taken.append(next(consumer)))
    waiting.start()
    assert found_nothing.wait(10)  # the consumer looked, found the queue empty, and now waits
    sent = broker.enqueue(_message())
    waiting.join(timeout=10)
    assert not waiting.is_alive(), "the consumer slept through the enqueue"
    received = taken[0] or next(consumer)  # woken; the next look takes the message
    assert received.message_id == sent.message_id
    consumer.ack(received)
    consumer.close()


def test_a_failed_wake_up_never_fails_the_enqueue(broker, monkeypatch):
    def down(*args, **kwargs):
        raise redis.ConnectionError("publish lost")

    monkeypatch.setattr(broker.client, "publish", down)
    sent = broker.enqueue(_message())  # queued; only the wake-up is missing
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    received = next(consumer)
    assert received is not None and received.message_id == sent.message_id
    consumer.ack(received)
    consumer.close()
