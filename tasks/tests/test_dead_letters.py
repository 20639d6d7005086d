"""Dead letters of an actor nobody registered a handler for are re-enqueued as they were (real Redis)."""

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
    xq = f"{redis_broker.namespace}:critical.XQ"
    redis_broker.client.zadd(xq, {message.message_id: 1})
    redis_broker.client.hset(f"{xq}.msgs", message.message_id, message.encode())
    assert [m.message_id for m in dead_letters.dead_letters(redis_broker, "critical")] == [message.message_id]

    [done] = dead_letters.requeue(redis_broker, "critical")
    assert (done.actor_name, done.how) == ("some_other_actor", "re-enqueued")
    assert redis_broker.client.zcard(xq) == 0
    [queued] = [
        dramatiq.Message.decode(m) for m in redis_broker.client.hvals(f"{redis_broker.namespace}:critical.msgs")
    ]
    assert queued.args == (7,) and "retries" not in queued.options and "traceback" not in queued.options
