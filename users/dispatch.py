"""The users app's one way onto the queue: the seed's ``TaskDistributor``.

Services never import actors or broker plumbing. They name a task type and its id, and this seam
puts it on the queue — always after the caller's transaction commits (``enqueue_on_commit``), so a
rolled-back use case queues nothing, and never raising: the row in PostgreSQL is the source of
truth and the redispatch sweep covers any enqueue that failed. Tests swap the distributor
(``use_distributor``) to watch what would have been queued.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any, Protocol

import dramatiq
from django.db import transaction

from bankproject import request_id

logger = logging.getLogger(__name__)

# Task types and the name of the argument each carries (for the logs).
SEND_VERIFY_EMAIL = "send_verify_email"  # the verification's id (the contract's actor)
SEND_EMAIL = "send_email"  # an OutboundEmail's id
PROCESS_ADDRESS_REQUEST = "process_address_request"  # an AddressRequest's id (a reset, a resend)
# The task types that send one email (the retries-exhausted hook and the dead letters know them).
EMAIL_PAYLOAD_NAMES = {SEND_VERIFY_EMAIL: "verification_id", SEND_EMAIL: "email_id"}
PAYLOAD_NAMES = EMAIL_PAYLOAD_NAMES | {PROCESS_ADDRESS_REQUEST: "request_id"}


class Distributor(Protocol):
    def distribute(self, task_type: str, argument: int) -> None:
        """Put one task on the queue now; may raise if the queue is unreachable."""


class DramatiqDistributor:
    """Sends to the actor of that name on the configured broker (declared by ``users.tasks``)."""

    def distribute(self, task_type: str, argument: int) -> None:
        actor = dramatiq.get_broker().get_actor(task_type)
        # The request id rides along so the worker's log lines for this email carry it too.
        options: dict[str, Any] = {"request_id": rid} if (rid := request_id.current()) else {}
        message = actor.send_with_options(args=(argument,), **options)
        logger.info(
            "enqueued task",
            extra={
                "type": task_type,
                "payload": {PAYLOAD_NAMES.get(task_type, "id"): argument},
                "queue": message.queue_name,
                "max_retry": actor.options.get("max_retries"),
                "message_id": message.message_id,
            },
        )


_distributor: Distributor = DramatiqDistributor()


def enqueue(task_type: str, argument: int) -> None:
    """Queue now. Never raises: a failed enqueue is logged and left to the sweep."""
    try:
        _distributor.distribute(task_type, argument)
    except Exception:
        logger.warning(
            "enqueue failed; the email stays pending for the sweep",
            exc_info=True,
            extra={"type": task_type, "payload": {PAYLOAD_NAMES.get(task_type, "id"): argument}},
        )


def enqueue_on_commit(task_type: str, argument: int) -> None:
    """Queue once the current transaction commits (at once outside one). The only way services queue."""
    transaction.on_commit(partial(enqueue, task_type, argument), robust=True)


@contextlib.contextmanager
def use_distributor(distributor: Distributor) -> Iterator[Distributor]:
    """Replace the distributor for the duration (tests)."""
    global _distributor
    previous, _distributor = _distributor, distributor
    try:
        yield distributor
    finally:
        _distributor = previous
