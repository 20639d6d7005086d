"""Dramatiq's dead letters on Redis: messages that were aborted (SkipRetry) or ran out of retries.

The Redis broker keeps them for 7 days in ``<namespace>:<queue>.XQ`` (ids, by time) and
``<namespace>:<queue>.XQ.msgs`` (the encoded messages). An app whose messages must be retried
some other way than re-enqueueing them registers a handler for its actor (``register_requeue``);
the users app does, so an email is retried through its row.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import q_name, xq_name
from dramatiq.errors import DecodeError

logger = logging.getLogger(__name__)

# actor name -> handler(actor_name, args) returning what it did, for the operator
RequeueHandler = Callable[[str, tuple], str]
_handlers: dict[str, RequeueHandler] = {}


def register_requeue(actor_name: str, handler: RequeueHandler) -> None:
    _handlers[actor_name] = handler


def has_handler(actor_name: str) -> bool:
    """Whether an app retries this actor's dead letters its own way (else they are re-enqueued)."""
    return actor_name in _handlers


@dataclass(frozen=True)
class Requeued:
    message_id: str
    actor_name: str
    how: str
    args: tuple = ()


def _keys(broker: RedisBroker, queue_name: str) -> tuple[str, str]:
    xq = f"{broker.namespace}:{xq_name(q_name(queue_name))}"
    return xq, f"{xq}.msgs"


@dataclass(frozen=True)
class DeadLetter:
    message: dramatiq.Message
    score: float  # when it was dead-lettered: its score in the XQ set, ms since the epoch
    # Its member of the XQ set, as read: the id the Redis broker gave the enqueue
    # (``redis_message_id``), not ``message_id`` — keyed by that, every requeue found its letter
    # "taken by someone else" (an operator's runbook).
    key: str

    @property
    def died_at(self) -> datetime:
        return datetime.fromtimestamp(self.score / 1000, tz=UTC)

    @property
    def error(self) -> str:
        """The last line of the traceback the Retries middleware kept, if any (the exception)."""
        lines = str(self.message.options.get("traceback") or "").strip().splitlines()
        return lines[-1] if lines else ""


def dead_letter_entries(broker: RedisBroker, queue_name: str) -> list[DeadLetter]:
    """The dead letters of ``queue_name``, oldest first, with when each died. An entry that does
    not decode (not a Dramatiq message) is left where it is, and logged."""
    xq, msgs = _keys(broker, queue_name)
    scored = cast("list[tuple[bytes, float]]", broker.client.zrange(xq, 0, -1, withscores=True))
    raw = cast("list[bytes | None]", broker.client.hmget(msgs, [i for i, _ in scored]) if scored else [])
    entries = []
    for (key, score), data in zip(scored, raw, strict=True):
        if data is None:  # expired between the two reads
            continue
        try:
            message = dramatiq.Message.decode(data)
        except DecodeError:
            logger.warning(
                "dead letter does not decode",
                extra={"queue": queue_name, "message_id": key.decode(errors="replace")},
            )
            continue
        entries.append(DeadLetter(message, score, key.decode()))
    return entries


def dead_letters(broker: RedisBroker, queue_name: str) -> list[dramatiq.Message]:
    return [entry.message for entry in dead_letter_entries(broker, queue_name)]


def requeue(broker: RedisBroker, queue_name: str, message_ids: set[str] | None = None) -> list[Requeued]:
    """Give every dead letter of ``queue_name`` (or those named) another chance, then drop it from
    the dead set: through its actor's registered handler, or else re-enqueued as it was with its
    retry count reset.

    Each one is claimed first (removed from the dead set; only the caller that removed it goes
    on), so two operators, or a Confirm clicked twice, never requeue a message twice. If the
    handler or the enqueue fails, it goes back into the dead set as it was.
    """
    xq, msgs = _keys(broker, queue_name)
    done: list[Requeued] = []
    for entry in dead_letter_entries(broker, queue_name):
        message = entry.message
        if message_ids is not None and message.message_id not in message_ids:
            continue
        if not broker.client.zrem(xq, entry.key):
            continue  # someone else took it meanwhile
        try:
            if handler := _handlers.get(message.actor_name):
                how = handler(message.actor_name, tuple(message.args))
            else:
                options = {k: v for k, v in message.options.items() if k not in {"retries", "traceback"}}
                broker.enqueue(dataclasses.replace(message, options=options))  # copy() would merge options
                how = "re-enqueued"
        except BaseException:
            broker.client.zadd(xq, {entry.key: entry.score})
            raise
        broker.client.hdel(msgs, entry.key)
        done.append(Requeued(message.message_id, message.actor_name, how, tuple(message.args)))
    return done
