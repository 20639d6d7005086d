"""Dead letters of an actor nobody registered a handler for are re-enqueued as they were (real Redis)."""

import uuid

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from tasks import dead_letters

pytestmark = pytest.mark.integration


def test_a_dead_letter_without_a_handler_is_re_enqueued_with_its_retries_reset(redis_broker: RedisBroker):
    message = dramatiq.Message(
        queue_name="critical",
        actor_name="some_other_actor",
        args=(7,),
        kwargs={},
        options={"retries": 3, "traceback": "boom"},
    )
    message = _bury(redis_broker, message)
    xq = f"{redis_broker.namespace}:critical.XQ"
    assert [m.message_id for m in dead_letters.dead_letters(redis_broker, "critical")] == [message.message_id]

    [done] = dead_letters.requeue(redis_broker, "critical")
    assert (done.actor_name, done.how) == ("some_other_actor", "re-enqueued")
    assert redis_broker.client.zcard(xq) == 0
    [queued] = [
        dramatiq.Message.decode(m) for m in redis_broker.client.hvals(f"{redis_broker.namespace}:critical.msgs")
    ]
    assert queued.args == (7,) and "retries" not in queued.options and "traceback" not in queued.options


def _bury(broker: RedisBroker, message: dramatiq.Message, score: int = 1) -> dramatiq.Message:
    """As Dramatiq's Redis broker does: under the id it gave the enqueue, not the message's own."""
    message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
    xq = f"{broker.namespace}:critical.XQ"
    broker.client.zadd(xq, {message.options["redis_message_id"]: score})
    broker.client.hset(f"{xq}.msgs", message.options["redis_message_id"], message.encode())
    return message


def test_a_dead_letter_whose_handler_fails_stays_dead_as_it_was(redis_broker: RedisBroker, monkeypatch):
    def broken(actor_name: str, args: tuple) -> str:
        raise RuntimeError("database down")

    monkeypatch.setitem(dead_letters._handlers, "flaky_actor", broken)
    message = dramatiq.Message("critical", "flaky_actor", (1,), {}, {})
    _bury(redis_broker, message, score=1_700_000_000_123)
    with pytest.raises(RuntimeError):
        dead_letters.requeue(redis_broker, "critical")
    [entry] = dead_letters.dead_letter_entries(redis_broker, "critical")
    assert entry.message.message_id == message.message_id and entry.score == 1_700_000_000_123


def test_a_dead_letter_taken_meanwhile_is_not_requeued_twice(redis_broker: RedisBroker, monkeypatch):
    message = dramatiq.Message("critical", "some_other_actor", (7,), {}, {})
    _bury(redis_broker, message)
    seen = dead_letters.dead_letter_entries(redis_broker, "critical")
    assert [requeued.how for requeued in dead_letters.requeue(redis_broker, "critical")] == ["re-enqueued"]
    # A second operator who listed it before the first one requeued it:
    monkeypatch.setattr(dead_letters, "dead_letter_entries", lambda broker, queue_name: seen)
    assert dead_letters.requeue(redis_broker, "critical", message_ids={message.message_id}) == []
    assert redis_broker.client.hlen(f"{redis_broker.namespace}:critical.msgs") == 1  # enqueued once


def test_an_entry_that_does_not_decode_is_skipped_and_kept(redis_broker: RedisBroker):
    xq = f"{redis_broker.namespace}:critical.XQ"
    redis_broker.client.zadd(xq, {"garbage": 1})
    redis_broker.client.hset(f"{xq}.msgs", "garbage", b"\xff not json")
    traceback = "Traceback (most recent call last):\n  ...\nValueError: x\n"
    message = dramatiq.Message("critical", "some_other_actor", (7,), {}, {"traceback": traceback})
    _bury(redis_broker, message, score=2)
    [entry] = dead_letters.dead_letter_entries(redis_broker, "critical")
    assert entry.error == "ValueError: x"
    assert [r.message_id for r in dead_letters.requeue(redis_broker, "critical")] == [message.message_id]
    assert redis_broker.client.zrange(xq, 0, -1) == [b"garbage"]
