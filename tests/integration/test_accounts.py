"""Accounts over the real pipeline: Redis, an in-process worker, a real SMTP server."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from conftest import expire_cooldowns, links_in, message_text, wait_for
from users import dispatch
from users.models import AddressRequest, OutboundEmail, User
from users.services import delivery
from users.tasks import process_address_request
from users.tests.factories import UserFactory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("no_throttling"),
]

PASSWORD = "correct horse battery staple"


def _api_for(username: str) -> APIClient:
    tokens = APIClient().post("/api/tokens/", {"username": username, "password": PASSWORD}, format="json").json()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    return api


def test_address_change_to_a_taken_address_sends_no_link_and_tells_both_owners(smtp_server, worker):
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    UserFactory(username="grace", email="grace@example.com", full_name="Grace Hopper", is_email_verified=True)
    body = {"email": "Grace@Example.com", "current_password": PASSWORD}
    answer = _api_for("ada").patch("/api/users/me/", body, format="json")
    assert answer.status_code == 200 and answer.json()["pending_email"] == "Grace@example.com"
    [to_grace] = wait_for(lambda: smtp_server.to("grace@example.com"), what="the notice to the owner")
    [to_ada] = wait_for(lambda: smtp_server.to("ada@example.com"), what="the notice to the current address")
    assert links_in(to_grace) == [] and "already has an account" in message_text(to_grace)
    assert "Grace Hopper" not in message_text(to_grace) and "grace" not in message_text(to_grace)  # bank's words
    assert links_in(to_ada) == [] and "G••" in message_text(to_ada)
    assert User.objects.get(username="ada").email == "ada@example.com"


def test_password_reset_by_api_end_to_end(smtp_server, worker):
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    api = APIClient()
    assert api.post("/api/password-reset/", {"email": "ADA@example.com"}, format="json").status_code == 202
    [message] = wait_for(lambda: smtp_server.to("ada@example.com"), what="the reset email")
    assert message["Subject"] == "Choose a new password for Simple Bank"
    text = message_text(message)
    uid, token = re.search(r"/reset-password/\?uid=([\w-]+)&token=([\w-]+)", text).groups()
    body = {"uid": uid, "token": token, "new_password": "a new pass phrase 2026"}
    assert api.post("/api/password-reset/confirm/", body, format="json").status_code == 204
    assert (
        api.post("/api/tokens/", {"username": "ada", "password": "a new pass phrase 2026"}, format="json").status_code
        == 200
    )
    # Then the notice that the password was reset (no link in it); the reset link went out once.
    wait_for(lambda: len(smtp_server.to("ada@example.com")) == 2, what="the reset notice")
    notice = smtp_server.to("ada@example.com")[1]
    assert notice["Subject"].startswith("Your password was reset") and "/reset-password/?" not in message_text(notice)
    assert AddressRequest.objects.get().processed_at is not None


class Unreachable:
    """A queue that is down: every enqueue raises (``dispatch.enqueue`` logs it and goes on)."""

    def distribute(self, task_type: str, argument: int) -> None:
        raise ConnectionError("the queue is unreachable")


def _control(smtp_server) -> None:
    """A request that does send proves the worker was running while the test looked for nothing."""
    UserFactory(username="control", email="control@example.com", is_email_verified=True)
    assert APIClient().post("/api/password-reset/", {"email": "control@example.com"}, format="json").status_code == 202
    wait_for(lambda: smtp_server.to("control@example.com"), what="the control email")


def _processed() -> bool:
    return not AddressRequest.objects.unprocessed().exists()


def test_unknown_addresses_get_nothing_and_their_requests_are_processed(smtp_server, worker):
    api = APIClient()
    assert api.post("/api/password-reset/", {"email": "nobody@example.com"}, format="json").status_code == 202
    body = {"email": "nobody-else@example.com"}
    assert api.post("/api/users/resend-verification/", body, format="json").status_code == 202
    wait_for(_processed, what="the worker to process both requests")
    _control(smtp_server)
    assert smtp_server.to("nobody@example.com") == [] and smtp_server.to("nobody-else@example.com") == []
    assert AddressRequest.objects.filter(processed_at__isnull=False).count() == 3


def test_resend_by_api_end_to_end(smtp_server, worker):
    api = APIClient()
    person = {"username": "ada", "full_name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    assert api.post("/api/users/", person, format="json").status_code == 201
    wait_for(lambda: smtp_server.to("ada@example.com"), what="the sign-up's email")
    expire_cooldowns()
    assert api.post("/api/users/resend-verification/", {"email": "ADA@example.com"}, format="json").status_code == 202
    wait_for(lambda: len(smtp_server.to("ada@example.com")) == 2, what="the new link")
    wait_for(_processed, what="the request processed")
    [(_, email_id, code)] = links_in(smtp_server.to("ada@example.com")[1])
    assert api.post("/api/verify-email/", {"email_id": email_id, "secret_code": code}, format="json").status_code == 200
    assert User.objects.get(username="ada").is_email_verified
    assert len(smtp_server.to("ada@example.com")) == 2


@pytest.mark.parametrize("path", ["/api/password-reset/", "/api/users/resend-verification/"])
def test_a_lost_request_message_is_recovered_by_the_sweep_and_mailed_once(smtp_server, worker, settings, path):
    UserFactory(username="ada", email="ada@example.com", is_email_verified=path == "/api/password-reset/")
    with dispatch.use_distributor(Unreachable()):
        assert APIClient().post(path, {"email": "ada@example.com"}, format="json").status_code == 202
    [request] = AddressRequest.objects.all()
    assert request.processed_at is None and not OutboundEmail.objects.exists()  # nothing looked it up
    assert delivery.redispatch_due()["requests_requeued"] == 0  # too soon: its message may be on its way
    long_ago = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_REDISPATCH_AFTER + 1)
    AddressRequest.objects.update(dispatched_at=long_ago)
    assert delivery.redispatch_due()["requests_requeued"] == 1
    [message] = wait_for(lambda: smtp_server.to("ada@example.com"), what="the recovered email")
    wait_for(lambda: OutboundEmail.objects.filter(state="sent").count() == 1, what="the email recorded as sent")
    # Once more: a second sweep and a duplicate of the message send nothing.
    AddressRequest.objects.update(dispatched_at=long_ago)
    assert delivery.redispatch_due() == {
        "redispatched": 0,
        "expired": 0,
        "gave_up": 0,
        "requests_requeued": 0,
        "requests_deleted": 0,
    }
    process_address_request.send(request.pk)
    _control(smtp_server)
    assert len(smtp_server.to("ada@example.com")) == 1
    assert ("/reset-password/?uid=" if path == "/api/password-reset/" else "/verify-email/?") in message_text(message)


def test_a_redelivered_request_message_sends_nothing_twice(smtp_server, worker):
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    with dispatch.use_distributor(Unreachable()):
        assert APIClient().post("/api/password-reset/", {"email": "ada@example.com"}, format="json").status_code == 202
    request = AddressRequest.objects.get()
    for _ in range(3):  # as if the broker delivered it again (a worker killed before its ack)
        process_address_request.send(request.pk)
    wait_for(lambda: smtp_server.to("ada@example.com"), what="the reset email")
    wait_for(_processed, what="the request processed")
    _control(smtp_server)
    assert len(smtp_server.to("ada@example.com")) == 1
    assert OutboundEmail.objects.filter(user__username="ada").count() == 1
