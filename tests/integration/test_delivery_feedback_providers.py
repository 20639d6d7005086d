"""Delivery feedback in each provider's own format: Mailgun, Postmark, Amazon SES and Resend post
their events — signed, or behind the webhook's basic auth, as each does it — over HTTP to anymail's
own views (``/anymail/<esp>/tracking/`` on the live server), and what a person and an operator see
follows: the email's state and delivery time, the address suppressed or not, the timeline.

For each provider: a hard bounce, a complaint, a deferral, a delivery, an event about a message that
is not ours, a replay, and forged calls (a bad signature, bad or no basic auth). Each payload is
built as the provider sends it; where it comes from is said next to it. (The story end to end, with
a real SMTP sink and worker: ``test_delivery_feedback.py``.)

How an event names its email: Mailgun and Amazon SES echo our ``Message-ID`` header (Mailgun's
``message-id``, SES's ``mail.commonHeaders.messageId``: SES sends its own Message-ID but reports the
one we gave); Postmark and Resend name the id they gave when they accepted the email, which the
send recorded (``OutboundEmail.provider_message_id``), and echo the metadata anymail sent with it
(``simplebank_email``: our Message-ID without its domain) — what finds an email whose send was
never recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from datetime import timezone as fixed_offset

import pytest
import requests
from django.core import mail
from django.core.mail import get_connection
from django.utils import timezone
from svix.webhooks import Webhook

from users.models import DeliveryEvent, OutboundEmail, SecurityEvent, Suppression, User
from users.services import delivery, emails, feedback
from users.tests.factories import UserFactory, create_notice, superuser_with_factor

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WEBHOOK_AUTH = ("feedback", "a long webhook secret 7f3a")  # ANYMAIL_WEBHOOK_SECRET, every provider
MAILGUN_SIGNING_KEY = "mailgun-signing-key-for-tests"
RESEND_SIGNING_SECRET = "whsec_" + base64.b64encode(b"resend signing secret for tests").decode()
FROM = "Simple Bank <no-reply@simplebank.example>"
SUBJECT = "A security notice from Simple Bank"


@pytest.fixture
def server(live_server, settings) -> Iterator[str]:
    settings.SITE_URL = live_server.url
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": ":".join(WEBHOOK_AUTH),
        "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_SIGNING_KEY,
        "RESEND_SIGNING_SECRET": RESEND_SIGNING_SECRET,
    }
    yield live_server.url


@dataclass(frozen=True)
class Sent:
    """What a provider's event can name an email by."""

    header: str  # our Message-ID header
    provider_id: str  # the id the provider gave when it accepted the email
    recipient: str
    metadata: dict | None = None  # what we sent the provider as anymail's metadata, as it echoes it


@dataclass(frozen=True)
class Hook:
    """One webhook call as the provider makes it."""

    path: str
    body: bytes
    headers: dict[str, str]
    auth: tuple[str, str] | None = WEBHOOK_AUTH

    def post(self, server: str) -> requests.Response:
        return requests.post(server + self.path, data=self.body, headers=self.headers, auth=self.auth, timeout=10)


def _iso_z(moment: datetime) -> str:
    """2026-03-01T12:00:00.123Z, as Amazon SNS/SES and Resend write times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- Mailgun -------------------------------------------------------------------------------------
# Shapes: anymail's tests/test_mailgun_webhooks.py (test_failed_permanent_event,
# test_complained_event, test_failed_temporary_event, test_delivered_event — "an actual, complete
# (sanitized) delivered event as received from Mailgun"); signature block as in its
# mailgun_sign_payload: HMAC-SHA256(signing key, timestamp + token), hex.
MAILGUN_EVENTS: dict[str, dict] = {
    "bounce": {
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "log-level": "error",
        "delivery-status": {
            "tls": True,
            "mx-host": "mx.example.com",
            "attempt-no": 1,
            "description": "",
            "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist.",
        },
    },
    "complaint": {"event": "complained", "log-level": "warn"},
    # anymail's test_rejected_event: Mailgun refused to send (its own suppression list, a policy).
    "rejection": {
        "event": "rejected",
        "log-level": "warn",
        "reject": {"reason": "Not delivering to previously bounced address", "description": ""},
        "flags": {"is-test-mode": False},
    },
    "deferral": {
        "event": "failed",
        "severity": "temporary",
        "reason": "generic",
        "log-level": "warn",
        "delivery-status": {
            "attempt-no": 3,
            "description": "No MX for example.com",
            "retry-seconds": 1800,
            "code": 498,
            "message": "No MX for example.com",
        },
    },
    "delivery": {
        "event": "delivered",
        "log-level": "info",
        "delivery-status": {"tls": True, "mx-host": "mx.example.com", "attempt-no": 1, "code": 250, "message": "OK"},
    },
}


def mailgun(
    kind: str,
    sent: Sent,
    at: datetime,
    *,
    signing_key: str = MAILGUN_SIGNING_KEY,
    signed_at: datetime | None = None,
    token: str | None = None,
) -> Hook:
    event_data = MAILGUN_EVENTS[kind] | {
        "id": secrets.token_urlsafe(16),
        "timestamp": at.timestamp(),
        "recipient": sent.recipient,
        "recipient-domain": sent.recipient.rpartition("@")[2],
        "message": {
            "headers": {
                "to": sent.recipient,
                "message-id": sent.header.strip("<>"),  # Mailgun drops the angle brackets
                "from": FROM,
                "subject": SUBJECT,
            },
            "attachments": [],
            "size": 4211,
        },
        "tags": [],
        "user-variables": {},
    }
    timestamp, token = str(int((signed_at or at).timestamp())), token or secrets.token_hex(25)
    signature = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    body = {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}
    return Hook("/anymail/mailgun/tracking/", json.dumps(body).encode(), {"Content-Type": "application/json"})


# --- Postmark ------------------------------------------------------------------------------------
# Shapes: anymail's tests/test_postmark_webhooks.py (test_bounce_event, test_spam_event,
# test_delivered_event) and Postmark's bounce webhook docs for the deferral: a Bounce record of
# Type "Transient" ("Message delayed", TypeCode 2), which anymail maps to deferred. Postmark signs
# nothing: basic auth is all there is.
EDT = fixed_offset(timedelta(hours=-4))


def _postmark_time(moment: datetime) -> str:
    """2016-04-27T16:28:50.3963930-04:00: Postmark's seven fractional digits and local offset."""
    return moment.astimezone(EDT).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0-04:00"


def postmark(kind: str, sent: Sent, at: datetime) -> Hook:
    common = {
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": sent.provider_id,
        "Tag": "",
        "Metadata": sent.metadata or {},
    }
    bounce = common | {
        "ID": secrets.randbelow(10**9),  # Postmark's bounce id: anymail's event_id
        "Email": sent.recipient,
        "From": FROM,
        "BouncedAt": _postmark_time(at),
        "DumpAvailable": True,
        "Subject": SUBJECT,
        "Content": "…",
    }
    events = {
        "bounce": bounce
        | {
            "RecordType": "Bounce",
            "Type": "HardBounce",
            "TypeCode": 1,
            "Name": "Hard bounce",
            "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Inactive": True,
            "CanActivate": True,
        },
        "complaint": bounce
        | {
            "RecordType": "SpamComplaint",
            "Type": "SpamComplaint",
            "TypeCode": 512,
            "Name": "Spam complaint",
            "Description": "",
            "Details": "Test spam complaint details",
            "Inactive": True,
            "CanActivate": False,
        },
        "deferral": bounce
        | {
            "RecordType": "Bounce",
            "Type": "Transient",
            "TypeCode": 2,
            "Name": "Message delayed",
            "Description": "The server could not temporarily deliver your message (ex: Message is delayed due to "
            "network troubles).",
            "Details": "smtp;421 4.4.2 Connection timed out",
            "Inactive": False,
            "CanActivate": True,
        },
        # No "ID" in a delivery: anymail gives no event_id (the feedback keys it by its fields).
        "delivery": common
        | {
            "RecordType": "Delivery",
            "Recipient": sent.recipient,
            "DeliveredAt": _postmark_time(at),
            "Details": "smtp;250 2.0.0 OK",
        },
    }
    # An address Postmark deactivated (after a hard bounce or a complaint): anymail's "rejected".
    events["rejection"] = events["bounce"] | {
        "Type": "ManuallyDeactivated",
        "TypeCode": 16,
        "Name": "Manually deactivated",
        "Description": "The email was manually deactivated.",
        "Details": "",
    }
    # A full mailbox: Postmark's SoftBounce, which anymail also calls "bounced".
    events["soft_bounce"] = events["bounce"] | {
        "Type": "SoftBounce",
        "TypeCode": 4096,
        "Name": "Soft bounce",
        "Details": "smtp;452 4.2.2 Mailbox full",
        "Inactive": False,
    }
    event = events[kind]
    return Hook("/anymail/postmark/tracking/", json.dumps(event).encode(), {"Content-Type": "application/json"})


# --- Amazon SES ----------------------------------------------------------------------------------
# Shapes: anymail's tests/test_amazon_ses_webhooks.py (test_bounce_event, "a complete Amazon SES
# example event", test_complaint_event, test_delivery_event; post_from_sns for the SNS envelope and
# its x-amz-sns-* headers, posted as text/plain) and the SES developer guide, "Examples of event
# data that Amazon SES publishes to Amazon SNS" (event publishing's "eventType" records, the
# DeliveryDelay record). The SNS signature is not checked by anymail: basic auth is all there is.
def _ses_mail(sent: Sent, at: datetime, *, original_headers: bool = True) -> dict:
    mail_object = {
        "timestamp": _iso_z(at - timedelta(seconds=5)),
        "source": FROM,
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/simplebank.example",
        "sendingAccountId": "123456789012",
        "messageId": sent.provider_id,
        "destination": [sent.recipient],
    }
    if original_headers:  # "Include original headers" (on by default for event publishing)
        mail_object |= {
            "headersTruncated": False,
            "headers": [
                {"name": "From", "value": FROM},
                {"name": "To", "value": sent.recipient},
                {"name": "Subject", "value": SUBJECT},
                {"name": "Message-ID", "value": sent.header},
                {"name": "MIME-Version", "value": "1.0"},
            ],
            "commonHeaders": {"from": [FROM], "to": [sent.recipient], "messageId": sent.header, "subject": SUBJECT},
        }
    return mail_object


def amazon_ses(kind: str, sent: Sent, at: datetime, *, original_headers: bool = True) -> Hook:
    recipient = sent.recipient
    events = {
        "bounce": {
            "eventType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": recipient,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": _iso_z(at),
                "feedbackId": f"{secrets.token_hex(8)}-{uuid.uuid4()}-000000",
                "reportingMTA": "dsn; mta.example.com",
            },
        },
        "complaint": {
            "eventType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": recipient}],
                "timestamp": _iso_z(at),
                "feedbackId": f"{secrets.token_hex(8)}-{uuid.uuid4()}-000000",
                "userAgent": "AnyCompany Feedback Loop (V0.01)",
                "complaintFeedbackType": "abuse",
                "arrivalDate": _iso_z(at),
            },
        },
        "deferral": {
            "eventType": "DeliveryDelay",
            "deliveryDelay": {
                "timestamp": _iso_z(at),
                "delayType": "TransientCommunicationFailure",
                "expirationTime": _iso_z(at + timedelta(hours=12)),
                "delayedRecipients": [
                    {
                        "emailAddress": recipient,
                        "status": "4.4.1",
                        "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to remote host",
                    }
                ],
            },
        },
        "delivery": {
            "eventType": "Delivery",
            "delivery": {
                "timestamp": _iso_z(at),
                "processingTimeMillis": 546,
                "recipients": [recipient],
                "smtpResponse": "250 ok:  Message 64111812 accepted",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
                "remoteMtaIp": "127.0.2.0",
            },
        },
    }
    # A full mailbox: a Transient bounce, which anymail also calls "bounced".
    events["soft_bounce"] = {
        "eventType": "Bounce",
        "bounce": events["bounce"]["bounce"] | {"bounceType": "Transient", "bounceSubType": "MailboxFull"},
    }
    event = events[kind] | {"mail": _ses_mail(sent, at, original_headers=original_headers)}
    notification = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),  # the SNS notification's id: anymail's event_id
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Subject": "Amazon SES Email Event Notification",
        "Message": json.dumps(event) + "\n",
        "Timestamp": _iso_z(at),  # anymail's event timestamp
        "SignatureVersion": "1",
        "Signature": "EXAMPLE-SIGNATURE==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-12345abcde.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn...",
    }
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",  # SNS posts its JSON as text/plain
        "x-amz-sns-message-type": "Notification",
        "x-amz-sns-message-id": notification["MessageId"],
        "x-amz-sns-topic-arn": notification["TopicArn"],
    }
    return Hook("/anymail/amazon_ses/tracking/", json.dumps(notification).encode(), headers)


# --- Resend --------------------------------------------------------------------------------------
# Shapes: anymail's tests/test_resend_webhooks.py (test_hard_bounced_event, test_complained_event,
# test_delivery_delayed_event — Resend's documented sample —, test_delivered_event) and Resend's
# webhook docs (bounce type/subType). Signed with Svix as its client_post_signed does: svix-id,
# svix-timestamp, svix-signature over the body.
RESEND_EVENTS = {
    "bounce": "email.bounced",
    "complaint": "email.complained",
    "deferral": "email.delivery_delayed",
    "delivery": "email.delivered",
}
RESEND_HARD_BOUNCE = (
    "The recipient's email provider sent a hard bounce message, but didn't specify the reason for the hard "
    "bounce. We recommend removing the recipient's email address from your mailing list."
)


def resend(
    kind: str,
    sent: Sent,
    at: datetime,
    *,
    signing_secret: str = RESEND_SIGNING_SECRET,
    signed_at: datetime | None = None,
) -> Hook:
    data = {
        "created_at": _iso_z(at - timedelta(seconds=5)),  # when the email was created
        "email_id": sent.provider_id,
        "from": FROM,
        "to": [sent.recipient],
        "subject": SUBJECT,
    }
    if kind == "bounce":
        data["bounce"] = {"message": RESEND_HARD_BOUNCE, "subType": "General", "type": "Permanent"}
    if sent.metadata is not None:  # Resend echoes the custom headers it sent (anymail's X-Metadata among them)
        data["headers"] = [{"name": "X-Metadata", "value": json.dumps(sent.metadata)}]
    body = json.dumps({"type": RESEND_EVENTS[kind], "created_at": _iso_z(at), "data": data})
    svix_id = f"msg_{secrets.token_urlsafe(20)}"  # Svix's message id: anymail's event_id
    signed_at = signed_at or datetime.now(UTC)
    headers = {
        "Content-Type": "application/json",
        "svix-id": svix_id,
        "svix-timestamp": str(int(signed_at.timestamp())),
        "svix-signature": Webhook(signing_secret).sign(msg_id=svix_id, timestamp=signed_at, data=body),
    }
    return Hook("/anymail/resend/tracking/", body.encode(), headers)


# --- The providers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provider:
    esp: str  # anymail's esp_name, as the timeline shows it
    build: Callable[..., Hook]
    names_its_own_id: bool  # its events name the provider's id, not our Message-ID header
    new_id: Callable[[], str]  # an id such as the provider gives an accepted email
    deferred_as: str = "deferred"
    bounce_words: str = "5.1.1"  # what the bounce tells, kept in the email's last error


PROVIDERS = {
    "mailgun": Provider(
        esp="Mailgun",
        build=mailgun,
        names_its_own_id=False,
        new_id=lambda: f"<{timezone.now():%Y%m%d%H%M%S}.1.{secrets.token_hex(8).upper()}@mg.example>",
    ),
    "postmark": Provider(esp="Postmark", build=postmark, names_its_own_id=True, new_id=lambda: str(uuid.uuid4())),
    "amazon_ses": Provider(
        esp="Amazon SES",
        build=amazon_ses,
        names_its_own_id=False,  # found by the Message-ID SES reports (its own id is tested apart)
        new_id=lambda: f"{secrets.token_hex(8)}-{uuid.uuid4()}-000000",
        # anymail 15.2 has no name for SES's DeliveryDelay ("unknown"): users.services.feedback calls it deferred.
        deferred_as="deferred",
    ),
    "resend": Provider(
        esp="Resend",
        build=resend,
        names_its_own_id=True,
        new_id=lambda: str(uuid.uuid4()),
        bounce_words="hard bounce message",
    ),
}
each_provider = pytest.mark.parametrize("provider", PROVIDERS.values(), ids=PROVIDERS.keys())


def _moment() -> datetime:
    """A recent time to milliseconds (what every provider's format can carry)."""
    now = timezone.now() - timedelta(seconds=30)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def sent_email(
    provider: Provider, *, provider_id: bool | None = None, user: User | None = None, crashed: bool = False
) -> tuple[OutboundEmail, Sent]:
    """A security notice the provider accepted, as the send left its row (with the provider's id
    recorded where the events name it by that id, or as ``provider_id`` says) — or, ``crashed``, as
    a worker that died after the provider accepted it left it: ``sending``, its claim an hour old
    (the sweep would take it over), no provider id."""
    ada = user or UserFactory(username="ada", email="ada@example.com")
    now = timezone.now()
    sent = Sent(header="", provider_id=provider.new_id(), recipient=ada.email)
    record_id = (provider.names_its_own_id if provider_id is None else provider_id) and not crashed
    claimed = now - timedelta(hours=1) if crashed else now
    email = OutboundEmail.objects.create(
        kind="security_notice",
        user=ada,
        recipient=ada.email,
        state="sending" if crashed else "sent",
        attempts=1,
        sent_at=None if crashed else now,
        dispatched_at=claimed,
        claimed_at=claimed,
        expires_at=now + timedelta(days=1),
        provider_message_id=sent.provider_id if record_id else None,
    )
    return email, replace(sent, header=email.message_id)


def assert_unchanged(email: OutboundEmail) -> None:
    email.refresh_from_db()
    assert (email.state, email.delivered_at, email.last_error) == ("sent", None, "")
    assert not Suppression.objects.exists()
    assert not SecurityEvent.objects.filter(kind="address_suppressed").exists()


# --- Tests ---------------------------------------------------------------------------------------
@each_provider
@pytest.mark.parametrize(("kind", "event_type"), [("bounce", "bounced"), ("complaint", "complained")])
def test_a_hard_bounce_or_a_complaint_suppresses_the_address(server, provider, kind, event_type):
    email, sent = sent_email(provider)
    answer = provider.build(kind, sent, _moment()).post(server)
    assert answer.status_code == 200, answer.text

    email.refresh_from_db()
    assert email.state == "undeliverable" and email.last_error.startswith(f"{event_type}:")
    if kind == "bounce":
        assert provider.bounce_words in email.last_error
    [event] = DeliveryEvent.objects.filter(email=email)
    assert (event.esp, event.event_type) == (provider.esp, event_type)
    [suppression] = Suppression.objects.active()
    assert (suppression.address, suppression.reason, suppression.email_id) == ("ada@example.com", event_type, email.pk)
    assert SecurityEvent.objects.filter(user=email.user, kind="address_suppressed").count() == 1
    assert feedback.is_suppressed("Ada@Example.com")


@pytest.mark.parametrize("provider_key", ["mailgun", "postmark"])
def test_a_rejection_suppresses_the_address_whatever_its_reason(server, provider_key):
    """The provider refused to send to the address (its own suppression list, an address it
    deactivated): it would refuse again, so nothing more is handed to it."""
    provider = PROVIDERS[provider_key]
    email, sent = sent_email(provider)
    answer = provider.build("rejection", sent, _moment()).post(server)
    assert answer.status_code == 200, answer.text
    email.refresh_from_db()
    assert email.state == "undeliverable" and email.last_error.startswith("rejected:")
    [suppression] = Suppression.objects.active()
    assert (suppression.address, suppression.reason) == ("ada@example.com", "rejected")
    assert feedback.is_suppressed("ada@example.com")


@each_provider
def test_a_deferral_is_kept_in_the_timeline_and_changes_nothing_else(server, provider):
    email, sent = sent_email(provider)
    answer = provider.build("deferral", sent, _moment()).post(server)
    assert answer.status_code == 200, answer.text

    [event] = DeliveryEvent.objects.filter(email=email)
    assert (event.esp, event.event_type) == (provider.esp, provider.deferred_as)
    assert_unchanged(email)


@pytest.mark.parametrize("provider_key", ["postmark", "amazon_ses"])
def test_a_soft_bounce_is_a_deferral_and_never_suppresses(server, provider_key):
    """A full mailbox must not stop a person's password resets until staff notice."""
    provider = PROVIDERS[provider_key]
    email, sent = sent_email(provider)
    answer = provider.build("soft_bounce", sent, _moment()).post(server)
    assert answer.status_code == 200, answer.text
    [event] = DeliveryEvent.objects.filter(email=email)
    assert (event.esp, event.event_type) == (provider.esp, "deferred")
    assert_unchanged(email)


@each_provider
def test_a_delivery_records_when_the_provider_delivered_it(server, provider):
    email, sent = sent_email(provider)
    at = _moment()
    answer = provider.build("delivery", sent, at).post(server)
    assert answer.status_code == 200, answer.text

    email.refresh_from_db()
    assert email.state == "sent" and email.delivered_at is not None
    assert abs(email.delivered_at - at) < timedelta(milliseconds=1)  # the provider's time, not ours
    [event] = DeliveryEvent.objects.filter(email=email)
    assert (event.esp, event.event_type) == (provider.esp, "delivered")
    assert not Suppression.objects.exists()


@each_provider
def test_an_event_about_a_message_that_is_not_ours_changes_nothing(server, provider):
    """A bounce for some other message (another system's, or an email since purged): answered 200,
    so the provider does not retry it for days, and nothing is kept or suppressed."""
    email, _ = sent_email(provider)
    other = Sent(
        header=f"<{uuid.uuid4().hex}@mail.example.net>", provider_id=provider.new_id(), recipient=email.recipient
    )
    answer = provider.build("bounce", other, _moment()).post(server)
    assert answer.status_code == 200, answer.text

    assert not DeliveryEvent.objects.exists()
    assert_unchanged(email)


@each_provider
@pytest.mark.parametrize("kind", ["bounce", "delivery"])
def test_a_replayed_event_is_kept_and_applied_once(server, provider, kind):
    """Providers retry an event they think was lost (Postmark's deliveries carry no id: the same
    fields make the same event). A replay adds nothing — not even once staff lifted the address."""
    email, sent = sent_email(provider)
    hook = provider.build(kind, sent, _moment())
    assert hook.post(server).status_code == 200
    email.refresh_from_db()
    first = (email.state, email.delivered_at)

    if kind == "bounce":
        feedback.suppression_lift(suppression=Suppression.objects.get(), by=superuser_with_factor(username="ops"))
    assert hook.post(server).status_code == 200

    assert DeliveryEvent.objects.filter(email=email).count() == 1
    email.refresh_from_db()
    assert (email.state, email.delivered_at) == first
    assert not Suppression.objects.active().exists()  # lifted stays lifted; a delivery never suppressed
    assert Suppression.objects.count() == SecurityEvent.objects.filter(kind="address_suppressed").count()
    assert Suppression.objects.count() == (1 if kind == "bounce" else 0)


def _wrong_auth(hook: Hook) -> Hook:
    return replace(hook, auth=(WEBHOOK_AUTH[0], "not the secret"))


def _no_auth(hook: Hook) -> Hook:
    return replace(hook, auth=None)


# What a forger may try, and what anymail answers: 400 (SuspiciousOperation) for a failed signature
# or basic auth; Amazon SES answers 401 with a Basic challenge when there is no auth at all (SNS
# sends the credentials of the subscription's URL only after that challenge).
FORGERIES: list[tuple[str, str, Callable[[Sent, datetime], Hook], int]] = [
    ("mailgun", "signed with another key", lambda s, at: mailgun("bounce", s, at, signing_key="not-the-key"), 400),
    ("mailgun", "wrong basic auth", lambda s, at: _wrong_auth(mailgun("bounce", s, at)), 400),
    ("postmark", "wrong basic auth", lambda s, at: _wrong_auth(postmark("bounce", s, at)), 400),
    ("postmark", "no basic auth", lambda s, at: _no_auth(postmark("bounce", s, at)), 400),
    ("amazon_ses", "wrong basic auth", lambda s, at: _wrong_auth(amazon_ses("bounce", s, at)), 400),
    ("amazon_ses", "no basic auth", lambda s, at: _no_auth(amazon_ses("bounce", s, at)), 401),
    (
        "resend",
        "signed with another secret",
        lambda s, at: resend("bounce", s, at, signing_secret="whsec_" + base64.b64encode(b"another").decode()),
        400,
    ),
    (
        "resend",
        "signed an hour ago",  # Svix refuses a timestamp more than five minutes off: a captured call
        lambda s, at: resend("bounce", s, at, signed_at=datetime.now(UTC) - timedelta(hours=1)),
        400,
    ),
    ("resend", "wrong basic auth", lambda s, at: _wrong_auth(resend("bounce", s, at)), 400),
]


@pytest.mark.parametrize(
    ("provider_key", "forge", "status"),
    [(key, forge, status) for key, _, forge, status in FORGERIES],
    ids=[f"{key}-{how.replace(' ', '-')}" for key, how, _, _ in FORGERIES],
)
def test_a_forged_event_is_refused_and_changes_nothing(server, provider_key, forge, status):
    email, sent = sent_email(PROVIDERS[provider_key])
    answer = forge(sent, _moment()).post(server)
    assert answer.status_code == status, answer.text
    if status == 401:
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="Anymail WEBHOOK_SECRET"'

    assert not DeliveryEvent.objects.exists()
    assert_unchanged(email)


def test_amazon_ses_names_the_email_by_its_own_id_when_the_original_headers_are_not_included(server):
    """Without "Include original headers" an SES event carries no Message-ID of ours: the id SES gave
    at the send (recorded then) is what finds the email."""
    provider = PROVIDERS["amazon_ses"]
    email, sent = sent_email(provider, provider_id=True)
    answer = amazon_ses("bounce", sent, _moment(), original_headers=False).post(server)
    assert answer.status_code == 200, answer.text
    email.refresh_from_db()
    assert email.state == "undeliverable"
    assert Suppression.objects.active().filter(address="ada@example.com").count() == 1

    # Another notice whose id was never recorded (a worker that died after SES accepted it): unknown.
    unrecorded, unrecorded_sent = sent_email(provider, provider_id=False, user=email.user)
    assert amazon_ses("delivery", unrecorded_sent, _moment(), original_headers=False).post(server).status_code == 200
    unrecorded.refresh_from_db()
    assert unrecorded.delivered_at is None and not DeliveryEvent.objects.filter(email=unrecorded).exists()


PROVIDER_BACKENDS = {
    "postmark": ("anymail.backends.postmark.EmailBackend", {"POSTMARK_SERVER_TOKEN": "server-token-for-tests"}),
    "resend": ("anymail.backends.resend.EmailBackend", {"RESEND_API_KEY": "re_key_for_tests"}),
}


def _metadata_sent(provider_key: str, message: object) -> dict:
    """The metadata in the request anymail's backend makes to the provider's API for ``message``."""
    payload = get_connection().build_message_payload(message, {})
    if provider_key == "postmark":
        return payload.data["Metadata"]
    return json.loads(payload.data["headers"]["X-Metadata"])


@pytest.mark.parametrize("provider_key", PROVIDER_BACKENDS)
def test_a_bounce_for_an_email_whose_send_was_never_recorded_still_suppresses(server, settings, provider_key):
    """A worker died after the provider accepted the email: the row still says ``sending`` and the
    provider's id was never recorded, and Postmark and Resend name an email by that id only. They
    echo the metadata sent with it, which names the email: the bounce is applied and the sweep does
    not send it again to the address that bounced (a review: the event was dropped with a 200)."""
    settings.EMAIL_BACKEND, keys = PROVIDER_BACKENDS[provider_key]
    settings.ANYMAIL = settings.ANYMAIL | keys
    provider = PROVIDERS[provider_key]
    email, sent = sent_email(provider, crashed=True)
    ada = email.user
    sent = replace(sent, metadata=_metadata_sent(provider_key, emails.build(email)))

    answer = provider.build("bounce", sent, _moment()).post(server)
    assert answer.status_code == 200, answer.text
    email.refresh_from_db()
    assert email.state == "undeliverable" and email.sent_at is not None
    assert Suppression.objects.active().filter(address="ada@example.com").count() == 1
    assert delivery.redispatch_due()["redispatched"] == 0

    # Metadata naming an email by a forged HMAC names none.
    other, _ = sent_email(provider, provider_id=False, user=ada)
    forged = {"simplebank_email": f"security-notice.{other.pk}.{'0' * 24}"}
    forged_sent = Sent(header="", provider_id=provider.new_id(), recipient=ada.email, metadata=forged)
    assert provider.build("delivery", forged_sent, _moment()).post(server).status_code == 200
    other.refresh_from_db()
    assert other.delivered_at is None and not DeliveryEvent.objects.filter(email=other).exists()


@pytest.mark.parametrize("provider_key", ["postmark", "resend"])
def test_a_provider_id_postgresql_cannot_hold_is_an_unknown_message_not_a_500(server, provider_key):
    """A NUL in the provider's id reached the database lookup and answered 500, which the provider
    retries for hours (a review)."""
    provider = PROVIDERS[provider_key]
    email, sent = sent_email(provider)
    for odd in ("\x00", "a" * 300, "\ud800x"):  # (a lone surrogate: a 500 too, retried for ever)
        answer = provider.build("bounce", replace(sent, provider_id=odd), _moment()).post(server)
        assert answer.status_code == 200, answer.text
    assert_unchanged(email)


@pytest.mark.django_db
def test_an_email_sent_through_an_anymail_backend_records_the_providers_id(settings):
    """What the provider called the email (``anymail_status.message_id``) is kept with the row: the
    id Postmark's and Resend's events name it by."""
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    email = create_notice(UserFactory(email="ada@example.com"))
    _, sent_now = delivery.deliver(email_id=email.pk)
    assert sent_now
    [message] = mail.outbox
    assert message.anymail_status.message_id is not None
    email.refresh_from_db()
    assert email.state == "sent"
    assert email.provider_message_id == str(message.anymail_status.message_id)
    assert message.extra_headers["Message-ID"] == email.message_id
    assert message.metadata == {"simplebank_email": email.message_id.strip("<>").partition("@")[0]}


def test_smtp_sends_no_metadata_and_postal_none_it_would_refuse(settings):
    """SMTP has nothing to carry anymail's metadata; anymail's Postal backend refuses metadata (an
    unsupported feature) rather than drop it: neither gets any, so every email still goes."""
    email = OutboundEmail(pk=7, kind="security_notice", recipient="ada@example.com", user=User(email="ada@example.com"))
    for backend in ("bankproject.smtp.EmailBackend", "anymail.backends.postal.EmailBackend"):
        settings.EMAIL_BACKEND = backend
        assert not hasattr(emails.build(email), "metadata"), backend


@each_provider
@pytest.mark.parametrize("body", [b"not json", b"{}", b"[]", b'{"Type": 5, "Message": 7}', b'{"data": null}'])
def test_a_malformed_body_behind_the_right_secret_is_never_a_500(server, provider, body):
    """What reaches the view with the right basic auth but no event anymail can read is refused
    (400; a 500 would have the provider retry it for days), or — where anymail reads it as an event
    naming no message of ours — answered 200; either way nothing is kept."""
    path = provider.build("delivery", sent_email(provider)[1], _moment()).path
    answer = requests.post(
        server + path, data=body, headers={"Content-Type": "application/json"}, auth=WEBHOOK_AUTH, timeout=10
    )
    assert answer.status_code in (200, 400), (answer.status_code, answer.text[:200])
    assert not DeliveryEvent.objects.exists()


# What each provider relays of the receiving server's words, and that text with a NUL and an
# escape sequence in it (the JSON escapes, once more inside SES's JSON-in-JSON).
HOSTILE_TEXT = {
    "mailgun": (b"5.1.1 The email account", b"5.1.1 The\\u0000email\\u001b[31m account"),
    "postmark": (b"5.1.1 The email account", b"5.1.1 The\\u0000email\\u001b[31m account"),
    "amazon_ses": (b"5.1.1 user unknown", b"5.1.1 user\\\\u0000unknown\\\\u001b[31m"),
}


@pytest.mark.parametrize("provider_key", HOSTILE_TEXT)
def test_a_bounce_whose_text_carries_control_characters_is_kept_without_them(server, provider_key):
    """A receiving mail server writes the bounce's text: a NUL in it (which PostgreSQL refuses) must
    not turn the bounce into a 500 the provider retries for days while the address stays mailed."""
    provider = PROVIDERS[provider_key]
    email, sent = sent_email(provider)
    hook = provider.build("bounce", sent, _moment())
    plain, hostile = HOSTILE_TEXT[provider_key]
    assert plain in hook.body
    answer = replace(hook, body=hook.body.replace(plain, hostile)).post(server)
    assert answer.status_code == 200, answer.text

    email.refresh_from_db()
    [event] = DeliveryEvent.objects.filter(email=email)
    assert email.state == "undeliverable" and Suppression.objects.active().count() == 1
    for text in (event.description, email.last_error):
        assert "\x00" not in text and "\x1b" not in text and "5.1.1" in text


@pytest.mark.parametrize("timestamp", [1e300, 1e18])  # OverflowError; OSError ("Value too large")
def test_a_timestamp_no_clock_can_hold_is_a_400(server, timestamp):
    provider = PROVIDERS["mailgun"]
    email, sent = sent_email(provider)
    hook = provider.build("bounce", sent, _moment())
    body = json.loads(hook.body)
    body["event-data"]["timestamp"] = timestamp
    assert replace(hook, body=json.dumps(body).encode()).post(server).status_code == 400
    assert_unchanged(email)


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+14:00",  # PostgreSQL kept 1 BC, which Python can't read back: every page failed
        "9999-12-31T23:59:59-23:59",  # PostgreSQL refused the offset: a 500
        "1970-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z",
    ],
)
def test_an_event_time_no_clock_holds_is_a_400_and_the_email_stays_readable(server, client, when):
    """A review posted these; the email's admin pages and its later events must keep working."""
    provider = PROVIDERS["postmark"]
    email, sent = sent_email(provider)
    for kind, field in (("delivery", "DeliveredAt"), ("bounce", "BouncedAt")):
        hook = provider.build(kind, sent, _moment())
        body = json.loads(hook.body)
        body[field] = when
        assert replace(hook, body=json.dumps(body).encode()).post(server).status_code == 400
    assert_unchanged(email)
    assert provider.build("bounce", sent, _moment()).post(server).status_code == 200  # a real one still counts
    email.refresh_from_db()
    assert email.state == "undeliverable"


@pytest.mark.parametrize(
    "offset",
    [timedelta(hours=20), -timedelta(hours=23, minutes=59), timedelta(hours=16), timedelta(hours=5, seconds=30.5)],
)
def test_an_event_time_with_an_offset_postgresql_refuses_is_kept_as_the_same_instant(server, offset):
    """Python reads offsets PostgreSQL refuses (±16 h and more, fractions of a second): a time so written
    was a 500, which the provider sends again for ever (a review). Kept in UTC, the same instant."""
    provider = PROVIDERS["postmark"]
    email, sent = sent_email(provider)
    at = _moment()
    hook = provider.build("delivery", sent, at)
    body = json.loads(hook.body)
    body["DeliveredAt"] = at.astimezone(fixed_offset(offset)).isoformat()
    assert replace(hook, body=json.dumps(body).encode()).post(server).status_code == 200
    email.refresh_from_db()
    assert email.delivered_at is not None and abs(email.delivered_at - at) < timedelta(milliseconds=1)


@pytest.mark.parametrize("provider_key", ["amazon_ses", "postmark", "mailgun"])
def test_json_nested_past_the_parser_is_a_400_with_or_without_the_secret(server, provider_key):
    """anymail's SES validator parses the body before the basic auth: a RecursionError was a 500."""
    deep = b"[" * 100_000 + b"]" * 100_000
    path = PROVIDERS[provider_key].build("delivery", sent_email(PROVIDERS[provider_key])[1], _moment()).path
    for auth in (("x", "y"), WEBHOOK_AUTH):
        answer = requests.post(
            server + path, data=deep, auth=auth, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert answer.status_code in (400, 401, 403), (auth, answer.status_code)


def test_a_legacy_mailgun_form_webhook_is_read_and_its_signature_kept_to_its_own_event(server):
    """Mailgun's older webhooks post form fields (multipart), the signature among them."""
    email, sent = sent_email(PROVIDERS["mailgun"])
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(MAILGUN_SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    signed = {"timestamp": timestamp, "token": token, "signature": signature}

    def post(event: str) -> requests.Response:
        fields = {"event": event, "Message-Id": sent.header, "recipient": sent.recipient, **signed}
        multipart = {name: (None, value) for name, value in fields.items()}
        return requests.post(server + "/anymail/mailgun/tracking/", files=multipart, auth=WEBHOOK_AUTH, timeout=10)

    assert post("delivered").status_code == 200
    assert post("delivered").status_code == 200  # Mailgun's retry
    assert post("bounced").status_code == 400  # the same signature, another event
    email.refresh_from_db()
    assert email.delivered_at is not None and email.state == "sent" and not Suppression.objects.exists()


def test_a_subscription_that_cannot_be_confirmed_says_so_in_the_log_not_as_a_crash(server, caplog, monkeypatch):
    """Amazon SNS asks the webhook to confirm its subscription; anymail does it with AWS credentials.
    Without them (or without the permission) it is ours to fix: a 503 and one clear log line."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": secrets.token_hex(50),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL included.",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336",
        "Timestamp": _iso_z(_moment()),
        "SignatureVersion": "1",
        "Signature": "EXAMPLE-SIGNATURE==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-12345abcde.pem",
    }
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": "SubscriptionConfirmation",
        "x-amz-sns-message-id": confirmation["MessageId"],
        "x-amz-sns-topic-arn": confirmation["TopicArn"],
    }
    answer = Hook("/anymail/amazon_ses/tracking/", json.dumps(confirmation).encode(), headers).post(server)
    assert answer.status_code == 503, answer.text
    assert "Amazon SNS subscription not confirmed" in caplog.text and "Traceback" not in caplog.text


def test_the_suppression_event_names_no_client_the_provider_is_not_one(server):
    """The account's trail shows who did what from where: a provider's server is neither."""
    provider = PROVIDERS["mailgun"]
    _, sent = sent_email(provider)
    hook = provider.build("bounce", sent, _moment())
    answer = replace(hook, headers=hook.headers | {"User-Agent": "mailgun/treq-1.0"}).post(server)
    assert answer.status_code == 200
    [event] = SecurityEvent.objects.filter(kind="address_suppressed")
    assert (event.client_ip, event.user_agent, event.actor) == (None, "", "system")


def test_a_mailgun_signature_works_for_its_own_event_only_and_not_for_ever(server):
    """Mailgun signs the timestamp and a token, not the event: a captured request's signature must
    not carry another event, nor serve for ever. Mailgun's own retry (the same body) still counts."""
    provider = PROVIDERS["mailgun"]
    email, sent = sent_email(provider)
    stale = mailgun("bounce", sent, _moment(), signed_at=timezone.now() - timedelta(hours=13))
    assert stale.post(server).status_code == 400
    assert_unchanged(email)

    signed = timezone.now()
    delivered = mailgun("delivery", sent, _moment(), signed_at=signed)
    assert delivered.post(server).status_code == 200
    token = json.loads(delivered.body)["signature"]["token"]
    stolen = mailgun("bounce", sent, _moment(), signed_at=signed, token=token)  # the same signature, another event
    assert json.loads(stolen.body)["signature"] == json.loads(delivered.body)["signature"]
    assert stolen.post(server).status_code == 400
    assert delivered.post(server).status_code == 200  # Mailgun's retry of the same event
    email.refresh_from_db()
    assert email.state == "sent" and email.delivered_at is not None and not Suppression.objects.exists()
    assert DeliveryEvent.objects.filter(email=email).count() == 1


def test_a_failure_to_record_an_event_is_a_500_so_the_provider_sends_it_again(server, monkeypatch):
    """Ours, not the body's: the provider must retry, and the retry is applied once."""
    provider = PROVIDERS["mailgun"]
    email, sent = sent_email(provider)
    hook = provider.build("bounce", sent, _moment())

    def down(**kwargs):
        raise KeyError("as if the database had failed mid-way")

    monkeypatch.setattr(feedback, "tracking_event_record", down)
    assert hook.post(server).status_code == 500
    monkeypatch.undo()
    assert hook.post(server).status_code == 200
    email.refresh_from_db()
    assert email.state == "undeliverable" and Suppression.objects.active().count() == 1


def test_a_provider_whose_signing_key_is_missing_is_answered_503_and_changes_nothing(server, settings, caplog):
    """Mailgun's webhook needs its signing key: without it anymail's view can't be built. Ours to
    fix, so a 503 the provider retries (it was a 500 with a traceback per event), said in the log."""
    provider = PROVIDERS["mailgun"]
    email, sent = sent_email(provider)
    hook = provider.build("bounce", sent, _moment())
    settings.ANYMAIL = {key: value for key, value in settings.ANYMAIL.items() if key != "MAILGUN_WEBHOOK_SIGNING_KEY"}
    # A stranger (no basic auth, or a wrong one) learns nothing of it and writes no error line.
    for auth in (None, ("feedback", "a guess")):
        assert replace(hook, auth=auth).post(server).status_code == 400
    assert "this provider's webhook is not configured" not in caplog.text
    answer = hook.post(server)
    assert answer.status_code == 503 and "not configured" in answer.text
    assert_unchanged(email)
    assert "this provider's webhook is not configured" in caplog.text
