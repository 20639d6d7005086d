"""Sign-up → commit → Redis → worker → SMTP → link → verified, on the real components.

Real PostgreSQL (committed transactions), the configured RedisBroker on the real Redis, an
in-process Dramatiq worker and a real SMTP server (aiosmtpd). Tests here need
``transaction=True``: the worker threads read what the web side committed.
"""

import io

import pytest
from django.core.management import call_command
from dramatiq import Message
from rest_framework.test import APIClient

from conftest import html_links_in, links_in, message_text, wait_for
from tasks import send_verify_email
from users import tokens
from users.models import OutboundEmail, User
from users.tests.factories import superuser_with_factor

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def fast_retries(monkeypatch):
    """Shrink the backoff (not the mechanism) so retries happen within the test's patience."""
    monkeypatch.setitem(send_verify_email.options, "min_backoff", 20)
    monkeypatch.setitem(send_verify_email.options, "max_backoff", 200)


def _verification(username: str) -> OutboundEmail:
    """The user's verification email (its delivery record; ``verification_id`` is the link's id)."""
    return OutboundEmail.objects.get(user__username=username, kind="verification")


def test_signup_email_link_verified(api, signup_data, smtp_server, worker):
    data = signup_data()
    response = api.post("/api/users/", data, format="json")
    assert response.status_code == 201

    [message] = wait_for(lambda: smtp_server.to(data["email"]), what="the verification email")
    assert message["Subject"] == "Verify your email address for Simple Bank"
    assert message.is_multipart() and message.get_content_type() == "multipart/alternative"
    [(url, email_id, code)] = links_in(message)
    assert html_links_in(message) == [(url, email_id, code)]
    assert url.startswith("http://127.0.0.1:8000/verify-email/?")
    verification = wait_for(
        lambda: _verification(data["username"]) if _verification(data["username"]).sent_at else None
    )
    assert email_id == verification.verification_id and verification.state == "sent"
    assert message["Message-ID"] == verification.message_id
    # An automatic email says so (RFC 3834: vacation replies and ticket systems leave it alone), its
    # date has a known zone (Django's default "-0000" means "unknown"), and every part is 7-bit,
    # since the client never declares BODY=8BITMIME to the relay (a review of the emails).
    assert message["Auto-Submitted"] == "auto-generated"
    assert str(message["Date"]).endswith("+0000")
    for part in message.walk():
        if not part.is_multipart():
            assert part["Content-Transfer-Encoding"] in ("7bit", "quoted-printable"), part["Content-Transfer-Encoding"]
    assert "—" in message_text(message) or "·" in message_text(message)  # the non-ASCII text survives

    verified = api.post("/api/verify-email/", {"email_id": email_id, "secret_code": code}, format="json")
    assert verified.status_code == 200 and verified.json() == {"is_verified": True}
    assert User.objects.get(username=data["username"]).is_email_verified
    again = api.post("/api/verify-email/", {"email_id": email_id, "secret_code": code}, format="json")
    assert again.status_code == 400
    assert len(smtp_server.to(data["email"])) == 1


def test_the_message_in_redis_carries_the_verification_id_and_nothing_else(api, signup_data, redis_broker):
    data = signup_data()
    assert api.post("/api/users/", data, format="json").status_code == 201  # no worker: it waits in Redis
    verification = _verification(data["username"]).verification
    [raw] = redis_broker.client.hvals(f"{redis_broker.namespace}:critical.msgs")
    message = Message.decode(raw)
    assert (message.actor_name, message.args, message.kwargs) == ("send_verify_email", (verification.pk,), {})
    code = tokens.make_code(verification.pk, verification.nonce)
    for secret in (code, verification.nonce, data["password"], data["email"]):
        assert secret.encode() not in raw


def test_many_signups_each_get_exactly_one_email(api, signup_data, smtp_server, worker):
    people = [signup_data() for _ in range(20)]
    for data in people:
        assert api.post("/api/users/", data, format="json").status_code == 201
    wait_for(lambda: len(smtp_server.messages) >= len(people), what="20 emails")
    wait_for(lambda: OutboundEmail.objects.filter(state="sent").count() == len(people), what="all marked sent")
    assert sorted(str(m["To"]) for m in smtp_server.messages) == sorted(d["email"] for d in people)


def test_smtp_451_is_retried_with_backoff_then_delivered_once(api, signup_data, smtp_server, worker, fast_retries):
    smtp_server.rcpt_answers = ["451 4.7.1 Greylisted, try again later"] * 2
    data = signup_data()
    assert api.post("/api/users/", data, format="json").status_code == 201
    wait_for(lambda: smtp_server.to(data["email"]), what="the email after two refusals")
    verification = wait_for(lambda: (v := _verification(data["username"])).state == "sent" and v)
    assert verification.attempts == 3 and verification.last_error == ""
    assert smtp_server.attempts == 3 and len(smtp_server.to(data["email"])) == 1


def test_smtp_550_fails_at_once_and_the_admin_says_why(api, client, signup_data, smtp_server, worker, redis_broker):
    data = signup_data()
    smtp_server.reject.add(data["email"])
    assert api.post("/api/users/", data, format="json").status_code == 201
    verification = wait_for(lambda: (v := _verification(data["username"])).state == "failed" and v)
    assert verification.attempts == 1 and smtp_server.attempts == 1
    assert verification.last_error.startswith("550 5.1.1")
    # Aborted, not retried: the message sits in the dead-letter set with no retry count.
    [dead_id] = wait_for(lambda: redis_broker.client.zrange(f"{redis_broker.namespace}:critical.XQ", 0, -1))
    dead = Message.decode(redis_broker.client.hget(f"{redis_broker.namespace}:critical.XQ.msgs", dead_id))
    assert dead.args == (verification.verification_id,) and dead.options.get("retries") is None
    assert smtp_server.messages == []

    admin = superuser_with_factor(username="ops")
    client.force_login(admin)
    page = client.get("/admin/users/user/?verification_state=failed").content.decode()
    assert data["username"] in page and "failed" in page
    detail = client.get(f"/admin/users/outboundemail/{verification.pk}/change/").content.decode()
    assert "550 5.1.1" in detail

    # The operator fixes the address's mailbox and requeues the dead letter, as the runbook says:
    # the email goes through its row again, and the dead set is empty (it found nothing to requeue
    # when it looked the letter up by the wrong id).
    smtp_server.reject.clear()
    out = io.StringIO()
    call_command("requeue_dead_letters", stdout=out)
    assert "1 dead letter(s) handled" in out.getvalue(), out.getvalue()
    assert redis_broker.client.zcard(f"{redis_broker.namespace}:critical.XQ") == 0
    wait_for(lambda: smtp_server.to(data["email"]), what="the email requeued from the dead letters")
    assert len(smtp_server.to(data["email"])) == 1


def test_retries_stop_and_the_verification_is_marked_failed(
    api, signup_data, smtp_server, worker, fast_retries, monkeypatch
):
    monkeypatch.setitem(send_verify_email.options, "max_retries", 2)
    smtp_server.rcpt_answers = ["421 4.3.2 Service not available"] * 50
    data = signup_data()
    assert api.post("/api/users/", data, format="json").status_code == 201
    verification = wait_for(lambda: (v := _verification(data["username"])).state == "failed" and v, timeout=30)
    assert verification.attempts == 3 and smtp_server.attempts == 3
    assert verification.last_error.startswith("gave up after 3 attempts")
    assert smtp_server.messages == []
