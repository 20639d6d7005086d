"""What the mail provider says after an email left: its tracking webhooks, through django-anymail's
own views (``/anymail/<esp>/tracking/``, signed or behind ``ANYMAIL_WEBHOOK_SECRET``), arrive here
as anymail's ``tracking`` signal (``tracking_event_record``).

An event is tied to the email it is about by the email's ``Message-ID`` header, matched exactly
(deterministic per email, an HMAC: ``OutboundEmail.message_id``; under a fallback key too, and the
sender's domain in any case) — as the provider echoes the header
or the metadata an anymail backend sent with the email (``emails.FEEDBACK_METADATA``) — or by the
provider's id recorded when it accepted the email. It is kept once (a replay — the same provider event id — changes
nothing) and then:

- a permanent bounce, a complaint, a rejection (whatever its reason: the provider would refuse
  again): the email is ``undeliverable`` and its address is suppressed — nothing more of any kind
  is sent to it (``users.services.delivery`` checks in the claim) until staff lift it; the answers
  of sign-up, resend and reset stay the same. A soft bounce (a full mailbox) is kept as a deferral.
- ``delivered``: the delivery time is recorded.
- ``deferred`` and the rest (opened, clicked…): kept in the timeline, nothing else.

An event can come before the row says ``sent`` (a worker that died after the provider's 250): it is
applied all the same, and marks such an email sent, so the sweep never sends it again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from users.models import DeliveryEvent, OutboundEmail, SecurityEvent, Suppression, User
from users.services import delivery, emails, events

logger = logging.getLogger(__name__)

State = OutboundEmail.State
SUPPRESSING = ("bounced", "rejected", "complained")
# Our Message-ID: <kind.pk.mac@domain> (OutboundEmail.message_id).
MESSAGE_ID = re.compile(r"^<?([a-z-]+)\.(\d{1,19})\.([0-9a-f]{24})@([^>]*)>?$")


def _event_key(esp_name: str, event: Any) -> str:
    """The provider's own event id; without one (Postmark's deliveries), a digest of what the event
    says — the same delivery reported twice is then the same key."""
    if getattr(event, "event_id", None):
        return f"{esp_name}:{event.event_id}"[:200]
    fields = (event.event_type, event.message_id, event.recipient, event.timestamp and event.timestamp.isoformat())
    return f"{esp_name}:sha256:" + hashlib.sha256(repr(fields).encode()).hexdigest()


def _header_ids(event: Any) -> list[str]:
    """The Message-ID headers an event names: anymail's ``message_id`` when it is one (Mailgun),
    the headers of the sent mail where the provider echoes them (Amazon SES's ``mail``, Resend's
    ``data``), and the metadata sent with it (``emails.FEEDBACK_METADATA``: Postmark and Resend
    echo it; it has no domain, and is returned with ours)."""
    found = [event.message_id] if isinstance(event.message_id, str) else []
    raw = _mapping(event.esp_event)
    mail = _mapping(raw.get("mail"))
    common = _mapping(mail.get("commonHeaders"))
    if isinstance(common.get("messageId"), str):
        found.append(common["messageId"])
    for headers in (mail.get("headers"), _mapping(raw.get("data")).get("headers")):
        for header in headers if isinstance(headers, list) else []:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
                found.append(str(header.get("value", "")))
    ref = _mapping(getattr(event, "metadata", None)).get(emails.FEEDBACK_METADATA)
    if isinstance(ref, str):
        found.append(f"{ref}@{OutboundEmail.message_id_domain()}")  # the Message-ID without its domain
    return found


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def email_for(event: Any) -> OutboundEmail | None:
    """The email an event is about, or None (not ours, or unknown)."""
    provider_id = (
        event.message_id if isinstance(event.message_id, str | int) and not isinstance(event.message_id, bool) else None
    )
    # An id we could never have recorded — one PostgreSQL can't hold (a NUL, a lone surrogate), a
    # control character, longer than the column — is unknown, and never reaches the query.
    if provider_id not in (None, "") and _text(provider_id, 255) == str(provider_id):
        email = OutboundEmail.objects.filter(provider_message_id=str(provider_id)).first()
        if email is not None:
            return email
    for header in _header_ids(event):
        header = header.strip()
        match = MESSAGE_ID.match(header)
        if match is None:
            continue
        kind, pk, mac, domain = match.groups()
        if domain.lower() != OutboundEmail.message_id_domain().lower():  # a domain is any case
            continue
        email = OutboundEmail.objects.filter(pk=int(pk)).first()
        if email is not None and email.is_message_id(kind, mac):  # the HMAC matches: it is ours
            return email
    return None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _text(value: object, limit: int) -> str:
    """What a provider relays from a receiving mail server (its diagnostic text is anyone's to
    write), fit for the database and the admin: no NUL (PostgreSQL refuses it), no other control
    character, no lone surrogate."""
    text = str(value).encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub(" ", text)[:limit]


# Provider events happened after this and before now (give or take a clock a day off).
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)


def event_time_check(event: Any) -> None:
    """``ValueError`` (the webhook's ``400``) for an event whose time no clock holds: PostgreSQL
    would keep a year before Christ that Python can't read back (every page of the email, and
    every later event for it, would fail). A time it holds is kept in UTC: PostgreSQL refuses an
    offset of ±16 h or more, or one with a fraction of a second, which Python reads (500s, retried
    by the provider for ever: a review)."""
    when = event.timestamp
    if when is None:
        return
    try:
        utc = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("an event time out of range") from exc
    if not EARLIEST_EVENT <= utc <= timezone.now() + timedelta(days=1):
        raise ValueError("an event time out of range")
    event.timestamp = utc


def tracking_event_record(*, esp_name: str, event: Any) -> DeliveryEvent | None:
    """Keep one provider event and apply it (see the module). None when it changes nothing: an
    unknown email, or a replay."""
    email = email_for(event)
    if email is None:
        logger.info("delivery feedback for an unknown email", extra={"esp": esp_name, "event_type": event.event_type})
        return None
    description = " — ".join(str(part) for part in (event.description, event.mta_response) if part)
    event_type = str(event.event_type)
    if event_type == "unknown" and _mapping(event.esp_event).get("eventType") == "DeliveryDelay":
        event_type, description = "deferred", "delivery delayed (Amazon SES)"  # anymail 15 has no name for it
    if event_type == "bounced" and not _permanent_bounce(event):
        event_type = "deferred"  # a soft bounce: the provider may still get it through, or we will next time
    try:
        with transaction.atomic():
            row = DeliveryEvent.objects.create(
                email=email,
                esp=esp_name[:32],
                event_key=_text(_event_key(esp_name, event), 200),
                event_type=event_type[:16],
                reason=_text(event.reject_reason or "", 32),
                description=_text(description, 2000),
                occurred_at=event.timestamp,
            )
            _apply(email, row)
    except IntegrityError:  # the same event again: already kept and applied
        logger.info("delivery feedback replayed", extra={"esp": esp_name, "email_id": email.pk})
        return None
    logger.info("delivery feedback", extra={"esp": esp_name, "email_id": email.pk, "event_type": row.event_type})
    return row


# Postmark's bounce types that mean the address will never take mail (the rest — SoftBounce,
# Transient, DnsError, AutoResponder… — may pass next time).
POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "SpamComplaint", "Blocked"}


def _permanent_bounce(event: Any) -> bool:
    """anymail calls every provider's bounce ``bounced``; only a permanent one suppresses. A full
    mailbox (Postmark's SoftBounce, SES's Transient bounce) must not stop a person's password
    resets until staff notice: it is kept as a deferral."""
    raw = _mapping(event.esp_event)
    if isinstance(raw.get("Type"), str):  # Postmark
        return raw["Type"] in POSTMARK_HARD
    bounce = _mapping(raw.get("bounce")) or _mapping(_mapping(raw.get("data")).get("bounce"))  # SES, Resend
    kind = bounce.get("bounceType", bounce.get("type"))
    if isinstance(kind, str):
        return kind.lower() == "permanent"
    return True  # Mailgun: anymail names only its permanent failures "bounced" (temporary: deferred)


def _apply(email: OutboundEmail, row: DeliveryEvent) -> None:
    # A soft bounce was recorded as "deferred" already (tracking_event_record): a bounce here is
    # permanent. A rejection suppresses whatever its reason: the provider refuses to send to the
    # address (its own suppression list, an address it deactivated, a policy), and would again.
    if row.event_type in SUPPRESSING:
        delivery.feedback_undeliverable(email, reason=f"{row.event_type}: {row.description or row.reason}")
        _suppress(email, row)
    elif row.event_type == "delivered":
        delivery.feedback_delivered(email, at=row.occurred_at or row.received_at)


def _suppress(email: OutboundEmail, row: DeliveryEvent) -> None:
    address = email.recipient.lower()
    if Suppression.objects.covering(address).exists():
        return
    with transaction.atomic():  # a savepoint: two events racing for one address make one row
        try:
            Suppression.objects.create(
                address=address, reason=row.event_type, detail=row.description[:2000], email=email
            )
        except IntegrityError:
            return
    events.event_record(
        user=email.user, kind=SecurityEvent.Kind.ADDRESS_SUPPRESSED, detail=f"{row.event_type} ({row.esp})"
    )


# --- For the pages and the admin -------------------------------------------------------------------
def is_suppressed(address: str) -> bool:
    return Suppression.objects.covering(address).exists()


def suppression_lift(*, suppression: Suppression, by: User) -> bool:
    """Staff lift a suppression (the address can be mailed again). False if it was lifted already."""
    with transaction.atomic():
        lifted = Suppression.objects.active().filter(pk=suppression.pk).update(lifted_at=timezone.now(), lifted_by=by)
        if lifted and (owner := User.objects.filter(email__iexact=suppression.address).first()) is not None:
            events.event_record(
                user=owner,
                kind=SecurityEvent.Kind.ADDRESS_SUPPRESSION_LIFTED,
                detail=emails.masked(suppression.address),
            )
    return bool(lifted)
