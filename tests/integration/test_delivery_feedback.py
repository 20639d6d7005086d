"""Delivery feedback end to end, against the running stack: a real sign-up mailed through the SMTP
sink with its ``Message-ID``, the provider's signed event posted to anymail's own webhook view
(``/anymail/mailgun/tracking/``), then what a person and an operator see — the email
``undeliverable`` with its timeline in the admin, the address suppressed for every kind of email
(sign-up, resend, reset, notices) with the same answers as before, and mail again once staff lift it.
(Each provider's own formats: ``test_delivery_feedback_providers.py``.)"""

from __future__ import annotations

import ast
import hashlib
import hmac
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from django.test import Client
from django.utils import timezone

from conftest import wait_for
from users.metrics import email_stats_refresh
from users.models import (
    AddressRequest,
    DeliveryEvent,
    EmailVerification,
    OutboundEmail,
    SecurityEvent,
    Suppression,
    User,
)
from users.services import delivery
from users.tests.factories import UserFactory, superuser_with_factor

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WEBHOOK_AUTH = ("feedback", "a long webhook secret 7f3a")
SIGNING_KEY = "mailgun-signing-key-for-tests"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def stack(live_server, smtp_server, worker, settings, no_throttling) -> Iterator[str]:
    settings.SITE_URL = live_server.url
    settings.ANYMAIL = {"WEBHOOK_SECRET": ":".join(WEBHOOK_AUTH), "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    yield live_server.url


def mailgun_event(message_id: str, recipient: str, event: str = "failed", **data: object) -> dict:
    """A Mailgun webhook body as Mailgun signs it (HMAC-SHA256 of timestamp and token)."""
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(SIGNING_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    event_data = {
        "event": event,
        "id": secrets.token_urlsafe(16),
        "timestamp": time.time(),
        "recipient": recipient,
        "message": {"headers": {"message-id": message_id.strip("<>")}},
        **data,
    }
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}


def hard_bounce(message_id: str, recipient: str) -> dict:
    return mailgun_event(
        message_id,
        recipient,
        severity="permanent",
        reason="bounce",
        **{"delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist"}},
    )


def post_event(stack: str, body: dict, auth: tuple[str, str] | None = WEBHOOK_AUTH) -> requests.Response:
    return requests.post(f"{stack}/anymail/mailgun/tracking/", json=body, auth=auth, timeout=10)


def sign_up(stack: str, username: str, email: str) -> requests.Response:
    body = {"username": username, "full_name": "Ada Lovelace", "email": email, "password": PASSWORD}
    return requests.post(f"{stack}/api/users/", json=body, timeout=10)


def resend(stack: str, email: str) -> requests.Response:
    return requests.post(f"{stack}/api/users/resend-verification/", json={"email": email}, timeout=10)


def _email(user, *, kind: str = "security_notice", **fields: object) -> OutboundEmail:
    """An email row as the engine leaves it (``fields``: its state, as a test needs it)."""
    now = timezone.now()
    defaults = {"expires_at": now + timedelta(days=1), "dispatched_at": now}
    return OutboundEmail.objects.create(kind=kind, user=user, recipient=user.email, **(defaults | fields))


def _past_the_cooldown(address: str) -> None:
    """As if the resend cooldown (one email per address per few minutes) had passed."""
    OutboundEmail.objects.filter(recipient=address).update(created_at=timezone.now() - timedelta(hours=1))


def settled(email_id: int, *states: str) -> OutboundEmail:
    return wait_for(
        lambda: OutboundEmail.objects.filter(pk=email_id, state__in=states).first(), what=f"email {email_id} {states}"
    )


def test_a_bounce_reported_by_the_provider_suppresses_the_address_until_staff_lift_it(stack, smtp_server):
    assert sign_up(stack, "ada", "ada@example.com").status_code == 201
    [mailed] = wait_for(lambda: smtp_server.to("ada@example.com"), what="the verification email")
    email = settled(OutboundEmail.objects.get(recipient="ada@example.com").pk, "sent")
    assert mailed["Message-ID"] == email.message_id  # the header the provider's events name

    answer = post_event(stack, hard_bounce(mailed["Message-ID"], "ada@example.com"))
    assert answer.status_code == 200, answer.text
    email.refresh_from_db()
    assert email.state == "undeliverable" and "5.1.1 The email account does not exist" in email.last_error
    [event] = DeliveryEvent.objects.filter(email=email)
    assert (event.esp, event.event_type, event.reason) == ("Mailgun", "bounced", "bounced")
    assert Suppression.objects.active().filter(address="ada@example.com").count() == 1
    assert SecurityEvent.objects.filter(user=email.user, kind="address_suppressed").count() == 1

    # The operator sees it: the email's state, its timeline, the suppression list.
    staff = Client()
    staff.force_login(superuser_with_factor(username="ops"))
    page = staff.get(f"/admin/users/outboundemail/{email.pk}/change/").content.decode()
    assert "undeliverable" in page and "bounced (Mailgun)" in page and "5.1.1" in page
    assert page.index("queued") < page.index("sent (the server said 250)") < page.index("bounced (Mailgun)")
    listing = staff.get("/admin/users/outboundemail/?state__exact=undeliverable").content.decode()
    assert "ada@example.com" in listing
    assert "ada@example.com" in staff.get("/admin/users/suppression/").content.decode()

    # A resend answers as before and changes nothing: no email, and the link Ada has keeps working
    # (superseding it for a new one that can't go out would let anyone kill it; a review found that).
    before, emails = len(smtp_server.messages), OutboundEmail.objects.count()
    _past_the_cooldown("ada@example.com")
    unknown = resend(stack, "nobody-here@example.com")
    known = resend(stack, "ada@example.com")
    assert known.status_code == unknown.status_code == 202 and known.json() == unknown.json()
    wait_for(
        lambda: not AddressRequest.objects.filter(processed_at__isnull=True).exists(), what="the worker's look-ups"
    )
    assert OutboundEmail.objects.count() == emails and len(smtp_server.messages) == before
    assert EmailVerification.objects.get(user=email.user).state == "active"
    # Staff's "send a new verification email" says why it sent none.
    ada = email.user
    answer = staff.post(
        "/admin/users/user/", {"action": "resend_verification", "_selected_action": [ada.pk]}, follow=True
    )
    assert "1 to a suppressed address" in answer.content.decode()
    assert OutboundEmail.objects.count() == emails

    # Staff lift it: the next resend is mailed again.
    suppression = Suppression.objects.get(address="ada@example.com")
    lifted = staff.post("/admin/users/suppression/", {"action": "lift", "_selected_action": [suppression.pk]})
    assert lifted.status_code == 302
    suppression.refresh_from_db()
    assert suppression.lifted_at is not None and suppression.lifted_by.username == "ops"
    # The account's trail says so with the address masked, as every event names one (a review).
    [event] = SecurityEvent.objects.filter(kind="address_suppression_lifted")
    assert event.user.username == "ada" and event.detail == "a••@example.com"
    _past_the_cooldown("ada@example.com")
    assert resend(stack, "ada@example.com").status_code == 202
    wait_for(lambda: len(smtp_server.to("ada@example.com")) == 2, what="the verification email after the lift")


def test_a_suppressed_address_gets_no_reset_link_and_no_security_notice(stack, smtp_server):
    ada = UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    Suppression.objects.create(address="ada@example.com", reason="complained")
    unknown = requests.post(f"{stack}/api/password-reset/", json={"email": "nobody@example.com"}, timeout=10)
    known = requests.post(f"{stack}/api/password-reset/", json={"email": "ada@example.com"}, timeout=10)
    assert known.status_code == unknown.status_code and known.json() == unknown.json()
    reset = wait_for(
        lambda: OutboundEmail.objects.filter(user=ada, kind="password_reset", state="suppressed").first(),
        what="the reset link recorded as not sent",
    )
    assert reset.sent_at is None
    staff = Client()
    staff.force_login(superuser_with_factor(username="ops"))
    page = staff.get(f"/admin/users/outboundemail/{reset.pk}/change/").content.decode()
    assert "not sent: the address is suppressed" in page

    # Someone signs up with the address: the same 201 as for a new one; the "account exists"
    # notice is recorded as not sent.
    taken = sign_up(stack, "mallory", "ada@example.com")
    fresh = sign_up(stack, "newbie", "newbie@example.com")
    assert taken.status_code == fresh.status_code == 201 and taken.json().keys() == fresh.json().keys()
    wait_for(
        lambda: OutboundEmail.objects.filter(user=ada, kind="account_exists", state="suppressed").first(),
        what="the account-exists notice recorded as not sent",
    )

    tokens = requests.post(f"{stack}/api/tokens/", json={"username": "ada", "password": PASSWORD}, timeout=10).json()
    changed = requests.patch(
        f"{stack}/api/users/me/",
        json={"password": "a new long pass phrase 2026", "current_password": PASSWORD},
        headers={"Authorization": f"Bearer {tokens['access']}"},
        timeout=10,
    )
    assert changed.status_code == 200, changed.text
    notice = wait_for(
        lambda: OutboundEmail.objects.filter(user=ada, kind="security_notice", state="suppressed").first(),
        what="the security notice recorded as not sent",
    )
    assert notice.sent_at is None and smtp_server.to("ada@example.com") == []


def test_an_event_for_an_email_still_sending_is_applied_and_the_sweep_leaves_it(stack, smtp_server, settings):
    """A worker sent the email (the server said 250) and died before recording it: the provider's
    report is the only word that it left. It must not be sent again."""
    ada = UserFactory(username="ada", email="ada@example.com")
    hour_ago = timezone.now() - timedelta(hours=1)  # a stale claim: the sweep would take it
    crashed = _email(ada, state="sending", attempts=1, claimed_at=hour_ago, dispatched_at=hour_ago)
    delivered = post_event(stack, mailgun_event(crashed.message_id, "ada@example.com", event="delivered"))
    assert delivered.status_code == 200
    crashed.refresh_from_db()
    assert crashed.state == "sent" and crashed.delivered_at is not None
    assert delivery.redispatch_due()["redispatched"] == 0  # the sweep would have sent it again

    other = _email(ada, state="sending", attempts=1, claimed_at=hour_ago, dispatched_at=hour_ago)
    assert post_event(stack, hard_bounce(other.message_id, "ada@example.com")).status_code == 200
    other.refresh_from_db()
    assert other.state == "undeliverable" and other.sent_at is not None
    assert delivery.redispatch_due()["redispatched"] == 0
    assert smtp_server.messages == []


def test_a_replay_an_unknown_message_and_a_bad_signature_change_nothing(stack):
    ada = UserFactory(username="ada", email="ada@example.com")
    email = _email(ada, state="sent", sent_at=timezone.now())
    body = mailgun_event(email.message_id, "ada@example.com", event="delivered")
    assert post_event(stack, body).status_code == 200
    assert post_event(stack, body).status_code == 200  # the same event again
    assert DeliveryEvent.objects.filter(email=email).count() == 1

    forged = f"<security-notice.{email.pk}.{'0' * 24}@localhost>"  # right shape, wrong HMAC
    assert post_event(stack, hard_bounce(forged, "ada@example.com")).status_code == 200
    unknown = "<20261206.abc@mail.example.net>"
    assert post_event(stack, hard_bounce(unknown, "ada@example.com")).status_code == 200
    assert not Suppression.objects.exists() and DeliveryEvent.objects.count() == 1

    tampered = hard_bounce(email.message_id, "ada@example.com")
    tampered["signature"]["signature"] = "0" * 64
    assert post_event(stack, tampered).status_code == 400
    assert (
        post_event(stack, hard_bounce(email.message_id, "ada@example.com"), auth=("feedback", "wrong")).status_code
        == 400
    )
    assert not Suppression.objects.exists()
    email.refresh_from_db()
    assert email.state == "sent"


def test_a_sender_with_a_display_name_gives_ids_its_domain_and_events_find_them(stack, settings):
    """``Simple Bank <noreply@…>`` is Django's usual sender: its domain was read as ``bank.example>``
    (a review), so the ids ended ``>>`` and the metadata path matched nothing."""
    from types import SimpleNamespace

    from users.services import emails, feedback

    settings.DEFAULT_FROM_EMAIL = "Simple Bank <noreply@mail.bank.example>"
    ada = UserFactory(username="ada", email="ada@example.com")
    email = _email(ada, kind="password_reset", state="sending")
    assert email.message_id.endswith("@mail.bank.example>") and email.message_id.count(">") == 1
    # Postmark's and Resend's way: the metadata sent with the email, no header, no provider id.
    event = SimpleNamespace(message_id=None, esp_event={}, metadata={emails.FEEDBACK_METADATA: email.feedback_ref})
    assert feedback.email_for(event) == email
    assert post_event(stack, hard_bounce(email.message_id, "ada@example.com")).status_code == 200
    email.refresh_from_db()
    assert email.state == "undeliverable"


def test_a_report_on_an_email_sent_before_a_key_rotation_still_finds_it(stack, settings):
    settings.DEFAULT_FROM_EMAIL = "Simple Bank <noreply@mail.bank.example>"
    ada = UserFactory(username="ada", email="ada@example.com")
    email = _email(ada, kind="password_reset", state="sent", sent_at=timezone.now())
    sent_as = email.message_id
    other_kind = sent_as.replace("<password-reset.", "<verification.")  # the HMAC of another email's name
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "the secret key after a rotation " + "7f3a" * 8
    assert email.message_id != sent_as

    assert post_event(stack, hard_bounce(other_kind, "ada@example.com")).status_code == 200
    # The id matched exactly, as it was sent: another domain (cut short, or another host) is not ours.
    domain = sent_as.rpartition("@")[2].rstrip(">")
    for elsewhere in (sent_as.replace(f"@{domain}", f"@{domain[:-1]}"), sent_as.replace(f"@{domain}", "@evil.example")):
        assert post_event(stack, hard_bounce(elsewhere, "ada@example.com")).status_code == 200
    assert not DeliveryEvent.objects.exists()
    assert post_event(stack, hard_bounce(sent_as, "ada@example.com")).status_code == 200
    email.refresh_from_db()
    assert email.state == "undeliverable" and Suppression.objects.active().filter(address="ada@example.com").exists()

    assert post_event(stack, mailgun_event(sent_as.replace(f"@{domain}", f"@{domain.upper()}"), "ada@example.com"))
    assert DeliveryEvent.objects.filter(email=email).count() == 2  # a domain is a domain in any case

    settings.SECRET_KEY_FALLBACKS = []  # once the old key is dropped, its ids name nothing
    Suppression.objects.all().delete()
    assert post_event(stack, mailgun_event(sent_as, "ada@example.com", event="complained")).status_code == 200
    assert not Suppression.objects.exists()


def test_the_webhook_secret_can_be_two_while_the_provider_changes_over(stack, settings):
    parsed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings as s; "
            "print(repr(s.ANYMAIL['WEBHOOK_SECRET']))",
        ],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bankproject.settings",
            "DJANGO_DEBUG": "true",
            "ANYMAIL_WEBHOOK_SECRET": "feedback:the old one 4b1e9c, feedback:the new one 8d2f7a",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert parsed.returncode == 0, parsed.stderr
    secrets_ = ast.literal_eval(parsed.stdout.strip().splitlines()[-1])
    assert secrets_ == ["feedback:the old one 4b1e9c", "feedback:the new one 8d2f7a"]
    settings.ANYMAIL = settings.ANYMAIL | {"WEBHOOK_SECRET": secrets_}
    ada = UserFactory(username="ada", email="ada@example.com")
    email = _email(ada, state="sent", sent_at=timezone.now())
    for auth in (("feedback", "the old one 4b1e9c"), ("feedback", "the new one 8d2f7a")):
        assert post_event(stack, mailgun_event(email.message_id, "ada@example.com", event="delivered"), auth=auth).ok
    both_as_one = ("feedback", "the old one 4b1e9c, feedback:the new one 8d2f7a")
    refused = post_event(stack, hard_bounce(email.message_id, "ada@example.com"), auth=both_as_one)
    assert refused.status_code == 400 and not Suppression.objects.exists()
    assert DeliveryEvent.objects.filter(email=email).count() == 2


@pytest.mark.parametrize(
    "secret",
    [
        "feedback:a long password,ss",
        "feedback:a long password 1,",
        ":no user at all 0123456",
        "no-password:",
        "feedback:15 characters!!",
    ],
)
def test_a_webhook_secret_that_would_split_into_a_short_one_refuses_to_start(secret):
    """A comma inside a password made two secrets, one of them a fragment with no user; a password
    under 16 characters guards too little (it is all SES events have, and the webhook is not
    throttled): reviews."""
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bankproject.settings",
            "DJANGO_DEBUG": "true",
            "ANYMAIL_WEBHOOK_SECRET": secret,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0 and "ANYMAIL_WEBHOOK_SECRET" in started.stderr


def test_without_the_webhook_secret_there_is_no_webhook(live_server, settings):
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    answer = requests.post(f"{live_server.url}/anymail/mailgun/tracking/", json={}, timeout=10)
    assert answer.status_code == 404


def test_amazon_ses_without_the_webhook_secret_refuses_to_start():
    env = {
        "EMAIL_BACKEND": "anymail.backends.amazon_ses.EmailBackend",
        "DJANGO_SETTINGS_MODULE": "bankproject.settings",
    }
    code = "import django; django.setup()"
    started = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "ANYMAIL_WEBHOOK_SECRET": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0 and "Amazon SES sends its tracking events unsigned" in started.stderr
    env["ANYMAIL_WEBHOOK_SECRET"] = "user:a secret of 16+ chars"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, timeout=60).returncode == 0


def test_the_operator_metric_counts_bounces_and_complaints_by_kind(stack, settings):
    settings.METRICS_TOKEN = "metrics-token-for-tests-0123456789"
    ada = UserFactory(username="ada", email="ada@example.com")
    email = _email(ada, kind="password_reset", state="sent", sent_at=timezone.now())
    assert post_event(stack, mailgun_event(email.message_id, "ada@example.com", event="complained")).status_code == 200
    email_stats_refresh()
    page = requests.get(
        f"{stack}/metrics/operator", headers={"Authorization": f"Bearer {settings.METRICS_TOKEN}"}, timeout=10
    ).text
    assert 'simplebank_email_feedback{event="complained",kind="password_reset"} 1.0' in page
    assert 'simplebank_email_feedback{event="bounced",kind="password_reset"} 0.0' in page


def test_a_logged_in_person_is_told_their_address_could_not_be_reached_and_no_one_else(stack):
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    UserFactory(username="bob", email="bob@example.com", is_email_verified=True)
    Suppression.objects.create(address="ada@example.com", reason="bounced")
    ada, bob, visitor = Client(), Client(), Client()
    assert ada.post("/login/", {"username": "ada", "password": PASSWORD}).status_code == 302
    assert bob.post("/login/", {"username": "bob", "password": PASSWORD}).status_code == 302
    for path in ("/verify-email/resend/", "/account/"):
        told = ada.get(path).content.decode()
        assert 'id="address-unreachable"' in told and "ada@example.com" in told, path
        assert 'id="address-unreachable"' not in bob.get(path).content.decode(), path
    assert 'id="address-unreachable"' not in visitor.get("/verify-email/resend/").content.decode()
    # An address Bob is moving to says nothing, suppressed or not: it would tell that we mailed it.
    User.objects.filter(username="bob").update(pending_email="ada@example.com")
    assert 'id="address-unreachable"' not in bob.get("/account/").content.decode()
    # Lifted: nothing more to say.
    Suppression.objects.update(lifted_at=timezone.now())
    assert 'id="address-unreachable"' not in ada.get("/account/").content.decode()
