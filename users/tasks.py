"""The users app's Dramatiq actors: thin adapters — parse the argument, call the delivery engine,
turn a permanent outcome into ``SkipRetry``. Found by django-dramatiq's discovery of ``<app>.tasks``
(and imported by ``UsersConfig.ready`` so every process declares them, the web's included).

``send_verify_email(verification_id)`` is the contract's actor (``from tasks import
send_verify_email``): it sends the email of a verification link (a sign-up's, or an address
change's). ``send_email(email_id)`` sends any other kind by its ``OutboundEmail`` id.
``process_address_request(request_id)`` looks up the address of a password-reset or resend request
(``AddressRequest``) and queues its email, if one is owed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import dramatiq
from dramatiq_crontab import cron

from tasks import retry_policy
from tasks.errors import SkipRetry
from users import dispatch, metrics
from users.errors import AddressRequestGone, DeliveryError, EmailBusy
from users.services import address_requests, delivery, retention, signup

logger = logging.getLogger(__name__)

EMAIL_ACTOR_OPTIONS: dict[str, Any] = {
    "queue_name": retry_policy.QUEUE,
    "max_retries": retry_policy.MAX_RETRIES,
    "min_backoff": retry_policy.MIN_BACKOFF_MS,
    "max_backoff": retry_policy.MAX_BACKOFF_MS,
    "time_limit": retry_policy.TIME_LIMIT_MS,
    "throws": (SkipRetry,),
    "on_retry_exhausted": "email_retries_exhausted",
}


def _require_id(value: object, *, actor_name: str, payload: Mapping[str, object]) -> int:
    """The argument must be a positive integer id; anything else will never work: SkipRetry."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        logger.warning("skip retry: malformed argument", extra={"type": actor_name, "payload": payload})
        raise SkipRetry(f"malformed id {value!r}")
    return value


def _deliver(actor_name: str, argument: object) -> None:
    name = dispatch.PAYLOAD_NAMES[actor_name]
    payload = {name: argument}
    key = _require_id(argument, actor_name=actor_name, payload=payload)
    try:
        email, sent_now = delivery.deliver(**{name: key})
    except EmailBusy:
        # A duplicate delivery while another holds a fresh claim. If that one dies, its claim
        # goes stale and the redispatch sweep queues the row again: nothing is lost by acking.
        logger.info("skipped task: being sent by another delivery", extra={"type": actor_name, "payload": payload})
        return
    except DeliveryError as exc:
        logger.warning(
            "skip retry: %s", exc, extra={"type": actor_name, "payload": payload, "reason": type(exc).__name__}
        )
        raise SkipRetry(str(exc)) from exc
    if sent_now:
        logger.info(
            "processed task",
            extra={"type": actor_name, "payload": payload, "kind": email.kind, "email": email.recipient},
        )
    else:
        logger.info("skipped task: already sent", extra={"type": actor_name, "payload": payload})


@dramatiq.actor(**EMAIL_ACTOR_OPTIONS)
def send_verify_email(verification_id: int) -> None:
    """Send the email of one verification link, at most once."""
    _deliver(dispatch.SEND_VERIFY_EMAIL, verification_id)


@dramatiq.actor(**EMAIL_ACTOR_OPTIONS)
def send_email(email_id: int) -> None:
    """Send one ``OutboundEmail`` (a notice, a password reset…), at most once."""
    _deliver(dispatch.SEND_EMAIL, email_id)


# No email row to mark failed when its retries run out: the request stays unprocessed and the
# sweep queues it again while it is worth an email.
ADDRESS_REQUEST_ACTOR_OPTIONS = {k: v for k, v in EMAIL_ACTOR_OPTIONS.items() if k != "on_retry_exhausted"}


@dramatiq.actor(**ADDRESS_REQUEST_ACTOR_OPTIONS)
def process_address_request(request_id: int) -> None:
    """Look up the address of a password-reset or resend request and queue its email, at most once."""
    actor_name = dispatch.PROCESS_ADDRESS_REQUEST
    payload = {"request_id": request_id}
    key = _require_id(request_id, actor_name=actor_name, payload=payload)
    try:
        processed_now = address_requests.request_process(request_id=key)
    except AddressRequestGone as exc:
        logger.warning("skip retry: %s", exc, extra={"type": actor_name, "payload": payload})
        raise SkipRetry(str(exc)) from exc
    # Never the address: it is whatever a stranger typed into a public form.
    message = "processed task" if processed_now else "skipped task: already processed"
    logger.info(message, extra={"type": actor_name, "payload": payload})


@dramatiq.actor(queue_name=retry_policy.QUEUE, max_retries=retry_policy.MAX_RETRIES, throws=(SkipRetry,))
def email_retries_exhausted(message_data: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """Record an email whose retries ran out as failed, so the admin shows it."""
    actor_name = message_data.get("actor_name", "")
    if actor_name not in dispatch.EMAIL_PAYLOAD_NAMES:
        raise SkipRetry(f"not an email actor: {actor_name!r}")
    name = dispatch.EMAIL_PAYLOAD_NAMES[actor_name]
    args = message_data.get("args") or [None]
    payload = {name: args[0]}
    key = _require_id(args[0], actor_name="email_retries_exhausted", payload=payload)
    traceback = message_data.get("options", {}).get("traceback", "") or ""
    last_line = traceback.strip().splitlines()[-1] if traceback.strip() else "unknown error"
    delivery.mark_failed(**{name: key}, error=f"gave up after {retry_info.get('retries', 0) + 1} attempts: {last_line}")
    logger.error("retries exhausted", extra={"type": actor_name, "payload": payload})


@cron("* * * * *")
@dramatiq.actor(queue_name=retry_policy.MAINTENANCE_QUEUE, max_retries=0, time_limit=retry_policy.SWEEP_TIME_LIMIT_MS)
def redispatch_verifications() -> None:
    """Every minute: queue again the emails (of every kind) that should have gone by now."""
    delivery.redispatch_due()


@cron("17 * * * *")
@dramatiq.actor(queue_name=retry_policy.MAINTENANCE_QUEUE, max_retries=0, time_limit=retry_policy.SWEEP_TIME_LIMIT_MS)
def purge_stale_signups() -> None:
    """Every hour: delete accounts never verified, and free reserved usernames, past their age."""
    signup.stale_signups_purge()


@cron("37 * * * *")
@dramatiq.actor(queue_name=retry_policy.MAINTENANCE_QUEUE, max_retries=0, time_limit=retry_policy.SWEEP_TIME_LIMIT_MS)
def purge_login_history() -> None:
    """Every hour: delete log-in sessions long over, user-less events past their age, and the
    session engine's expired sessions (users.services.retention)."""
    retention.history_purge()


@cron("* * * * *")
@dramatiq.actor(queue_name=retry_policy.MAINTENANCE_QUEUE, max_retries=0, time_limit=retry_policy.SWEEP_TIME_LIMIT_MS)
def refresh_email_stats() -> None:
    """Every minute: count the emails by kind and state for the operator gauges (so no scrape does)."""
    metrics.email_stats_refresh()
