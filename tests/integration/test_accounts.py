"""Accounts over the real pipeline: Redis, an in-process worker, a real SMTP server."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from conftest import links_in, message_text, wait_for
from users.models import User
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
    answer = _api_for("ada").patch("/api/users/me/", {"email": "Grace@Example.com"}, format="json")
    assert answer.status_code == 200 and answer.json()["pending_email"] == "Grace@example.com"
    [to_grace] = wait_for(lambda: smtp_server.to("grace@example.com"), what="the notice to the owner")
    [to_ada] = wait_for(lambda: smtp_server.to("ada@example.com"), what="the notice to the current address")
    assert links_in(to_grace) == [] and "already has an account" in message_text(to_grace)
    assert "Grace Hopper" in message_text(to_grace)  # her own name, her verified address
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
    assert len(smtp_server.to("ada@example.com")) == 1
