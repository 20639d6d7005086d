"""The providers' tracking webhooks: anymail's own views, and for Mailgun what its documentation
asks of a receiver and anymail leaves out.

Mailgun signs ``timestamp + token`` only, not the event: a captured request could carry another
event under the same signature, for ever. So a Mailgun signature is refused when its timestamp is
more than ``SIGNATURE_MAX_AGE`` from now, or when its token came before with another body (the same
body again is Mailgun's own retry, let through: the event's id makes it change nothing). The tokens
are kept in the shared cache for as long as their timestamp can pass; with the cache down the check
is skipped (logged), the basic auth and the signature still hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, cast

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.webhooks.mailgun import MailgunTrackingWebhookView as AnymailMailgunTracking
from django.core.cache import cache

logger = logging.getLogger(__name__)

SIGNATURE_MAX_AGE_S = 12 * 3600  # Mailgun retries a failed delivery for 8 hours
CLOCK_SKEW_S = 300


def _signature(request: Any) -> tuple[str, str]:
    """The token and timestamp anymail just checked (JSON webhooks, or the legacy form fields)."""
    if request.content_type == "application/json":
        block = json.loads(request.body.decode("utf-8"))["signature"]
        return str(block["token"]), str(block["timestamp"])
    return str(request.POST["token"]), str(request.POST["timestamp"])


def _body_digest(request: Any) -> str:
    """What the event said: the JSON body's bytes, or a legacy form's fields (a multipart body can't
    be read again once Django parsed it)."""
    if request.content_type == "application/json":
        return hashlib.sha256(request.body).hexdigest()
    fields = sorted((name, values) for name, values in request.POST.lists())
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


class MailgunTrackingWebhookView(AnymailMailgunTracking):
    """anymail's view: its validators (basic auth, then the signature) run first, once each; the
    replay checks run here, on a request they passed, before the events are read."""

    def parse_events(self, request: Any) -> list[Any]:
        _refuse_replay(request)
        try:
            return cast("list[Any]", super().parse_events(request))
        except OSError as exc:  # a timestamp the platform's clock can't hold (1e18): the body's fault
            raise ValueError("Mailgun event timestamp out of range") from exc


def _refuse_replay(request: Any) -> None:
    token, timestamp = _signature(request)
    try:
        age = time.time() - float(timestamp)
    except ValueError:
        raise AnymailWebhookValidationFailure("Mailgun webhook signed with no timestamp") from None
    if not -CLOCK_SKEW_S <= age <= SIGNATURE_MAX_AGE_S:
        raise AnymailWebhookValidationFailure("Mailgun webhook signature too old (or from the future)")
    key = "feedback:mailgun-token:" + hashlib.sha256(token.encode()).hexdigest()
    body = _body_digest(request)
    try:
        kept = body if cache.add(key, body, timeout=SIGNATURE_MAX_AGE_S + CLOCK_SKEW_S) else cache.get(key)
    except Exception as exc:  # the cache is down: the signature and basic auth still hold
        logger.warning("delivery feedback: Mailgun token unchecked", extra={"error": type(exc).__name__})
        return
    if kept != body:
        raise AnymailWebhookValidationFailure("Mailgun webhook signature used before for another event")
