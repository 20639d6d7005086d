"""Dramatiq's dead letters on Redis: messages that were aborted (SkipRetry) or ran out of retries.

The Redis broker keeps them for 7 days in ``<namespace>:<queue>.XQ`` (ids, by time) and
``<namespace>:<queue>.XQ.msgs`` (the encoded messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name, xq_name

from users import services


@dataclass(frozen=True)
class Requeued:
    message_id: str
    actor_name: str
    how: str


def _keys(broker: RedisBroker, queue_name: str) -> tuple[str, str]:
    xq = f"{broker.namespace}:{xq_name(q_name(queue_name))}"
    return xq, f"{xq}.msgs"


def dead_letters(broker: RedisBroker, queue_name: str) -> list[dramatiq.Message]:
    xq, msgs = _keys(broker, queue_name)
    ids = cast("list[bytes]", broker.client.zrange(xq, 0, -1))
    raw = cast("list[bytes | None]", broker.client.hmget(msgs, ids) if ids else [])
    return [dramatiq.Message.decode(data) for data in raw if data is not None]


def requeue(broker: RedisBroker, queue_name: str) -> list[Requeued]:
    """Give every dead letter of ``queue_name`` another chance, then drop it from the dead set.

    A verification email is retried through its row (``verification_retry``: the failed row goes
    back to pending and a new message is queued), since the actor would otherwise refuse the failed
    row again. Any other message is re-enqueued as it was, with its retry count reset.
    """
    xq, msgs = _keys(broker, queue_name)
    done: list[Requeued] = []
    for message in dead_letters(broker, queue_name):
        if message.actor_name == "send_verify_email" and message.args and isinstance(message.args[0], int):
            queued = services.verification_retry(verification_id=message.args[0])
            how = "verification retried" if queued else "verification no longer needs sending"
        else:
            options = {k: v for k, v in message.options.items() if k not in {"retries", "traceback"}}
            broker.enqueue(message.copy(options=options))
            how = "re-enqueued"
        broker.client.zrem(xq, message.message_id)
        broker.client.hdel(msgs, message.message_id)
        done.append(Requeued(message.message_id, message.actor_name, how))
    return done
