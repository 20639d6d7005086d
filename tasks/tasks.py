"""Dramatiq actors. Thin adapters: parse the argument, call a service, classify the outcome.

Discovered by django-dramatiq as ``tasks.tasks`` (it imports ``<app>.tasks`` of every app).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import dramatiq
from django_dramatiq.tasks import delete_old_tasks
from dramatiq_crontab import cron

from tasks import retry_policy
from tasks.errors import SkipRetry
from users import services

logger = logging.getLogger(__name__)


EMAIL_ACTOR_OPTIONS: dict[str, Any] = {
    "queue_name": retry_policy.QUEUE,
    "max_retries": retry_policy.MAX_RETRIES,
    "min_backoff": retry_policy.MIN_BACKOFF_MS,
    "max_backoff": retry_policy.MAX_BACKOFF_MS,
    "time_limit": retry_policy.TIME_LIMIT_MS,
    "throws": (SkipRetry,),
}


def _require_id(value: object, *, actor_name: str, payload: Mapping[str, object]) -> int:
    """The argument must be a positive integer id; anything else will never work: SkipRetry."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        logger.warning("skip retry: malformed argument", extra={"type": actor_name, "payload": payload})
        raise SkipRetry(f"malformed id {value!r}")
    return value


def _skip(exc: Exception, *, actor_name: str, payload: Mapping[str, object]) -> SkipRetry:
    logger.warning("skip retry: %s", exc, extra={"type": actor_name, "payload": payload, "reason": type(exc).__name__})
    return SkipRetry(str(exc))


@dramatiq.actor(**EMAIL_ACTOR_OPTIONS, on_retry_exhausted="verify_email_retries_exhausted")
def send_verify_email(verification_id: int) -> None:
    """Send the verification email of one ``EmailVerification``, at most once."""
    name, payload = "send_verify_email", {"verification_id": verification_id}
    verification_id = _require_id(verification_id, actor_name=name, payload=payload)
    try:
        verification, sent_now = services.verification_send(verification_id=verification_id)
    except services.VerificationBusy:
        # A duplicate delivery while another holds a fresh claim. If that one dies, its claim
        # goes stale and the redispatch sweep queues the row again: nothing is lost by acking.
        logger.info("skipped task: being sent by another delivery", extra={"type": name, "payload": payload})
        return
    except services.VerificationError as exc:
        raise _skip(exc, actor_name=name, payload=payload) from exc
    if sent_now:
        logger.info("processed task", extra={"type": name, "payload": payload, "email": verification.email})
    else:
        logger.info("skipped task: already sent", extra={"type": name, "payload": payload})


@dramatiq.actor(**EMAIL_ACTOR_OPTIONS)
def send_account_exists_email(user_id: int) -> None:
    """Tell the owner of an address that someone tried to sign up with it again (no verify link)."""
    name, payload = "send_account_exists_email", {"user_id": user_id}
    user_id = _require_id(user_id, actor_name=name, payload=payload)
    try:
        user = services.account_exists_send(user_id=user_id)
    except services.VerificationError as exc:
        raise _skip(exc, actor_name=name, payload=payload) from exc
    logger.info("processed task", extra={"type": name, "payload": payload, "email": user.email})


@dramatiq.actor(queue_name=retry_policy.QUEUE, max_retries=retry_policy.MAX_RETRIES, throws=(SkipRetry,))
def verify_email_retries_exhausted(message_data: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """Record a verification email whose retries ran out as failed, so the admin shows it."""
    args = message_data.get("args") or [None]
    payload = {"verification_id": args[0]}
    verification_id = _require_id(args[0], actor_name="verify_email_retries_exhausted", payload=payload)
    traceback = message_data.get("options", {}).get("traceback", "") or ""
    last_line = traceback.strip().splitlines()[-1] if traceback.strip() else "unknown error"
    services.verification_mark_failed(
        verification_id=verification_id,
        error=f"gave up after {retry_info.get('retries', 0) + 1} attempts: {last_line}",
    )
    logger.error("retries exhausted", extra={"type": "send_verify_email", "payload": payload})


@cron("* * * * *")
@dramatiq.actor(queue_name=retry_policy.MAINTENANCE_QUEUE, max_retries=0, time_limit=retry_policy.SWEEP_TIME_LIMIT_MS)
def redispatch_verifications() -> None:
    """Every minute: queue again the verification emails that should have gone by now."""
    services.verification_redispatch_due()


# django-dramatiq's task rows (the admin's task list) are kept for a day, cleaned every hour.
cron("17 * * * *")(delete_old_tasks)
