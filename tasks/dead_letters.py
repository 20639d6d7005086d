"""Dramatiq's dead letters on Redis: messages that were aborted (SkipRetry) or ran out of retries.

The Redis broker keeps them for 7 days in ``<namespace>:<queue>.XQ`` (ids, by time) and
``<namespace>:<queue>.XQ.msgs`` (the encoded messages). An app whose messages must be retried
some other way than re-enqueueing them registers a handler for its actor (``register_requeue``);
the users app does, so an email is retried through its row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name, xq_name

# actor name -> handler(actor_name, args) returning what it did, for the operator
RequeueHandler = Callable[[str, tuple], str]
_handlers: dict[str, RequeueHandler] = {}


def register_requeue(actor_name: str, handler: RequeueHandler) -> None:
    _handlers[actor_name] = handler


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


def requeue(broker: RedisBroker, queue_name: str, message_ids: set[str] | None = None) -> list[Requeued]:
    """Give every dead letter of ``queue_name`` (or those named) another chance, then drop it from
    the dead set: through its actor's registered handler, or else re-enqueued as it was with its
    retry count reset."""
    xq, msgs = _keys(broker, queue_name)
    done: list[Requeued] = []
    for message in dead_letters(broker, queue_name):
        if message_ids is not None and message.message_id not in message_ids:
            continue
        if handler := _handlers.get(message.actor_name):
            how = handler(message.actor_name, tuple(message.args))
        else:
            options = {k: v for k, v in message.options.items() if k not in {"retries", "traceback"}}
            broker.enqueue(dataclasses.replace(message, options=options))  # copy() would merge options
            how = "re-enqueued"
        broker.client.zrem(xq, message.message_id)
        broker.client.hdel(msgs, message.message_id)
        done.append(Requeued(message.message_id, message.actor_name, how))
    return done
