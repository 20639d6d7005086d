"""Signing up again with an address that has an account reserves the username it was answered with
(``UsernameReservation``), or trying that username again would tell the address is registered. What
an attacker can learn from the usernames such sign-ups hold, over HTTP."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from users.models import User

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_throttling")]

PASSWORD = "correct horse battery staple"
SIGN_UPS = 5


def _signup(api: APIClient, *, username: str, email: str) -> int:
    body = {"username": username, "full_name": "Some One", "email": email, "password": PASSWORD}
    return api.post("/api/users/", body, format="json").status_code


def _held_after_signing_up_with(api: APIClient, email: str, prefix: str) -> list[bool]:
    """Sign up ``SIGN_UPS`` times with ``email`` and usernames prefix1..prefix5 (each answered
    ``201``), then try each username with an unrelated new address: is it still held?"""
    usernames = [f"{prefix}{n}" for n in range(1, SIGN_UPS + 1)]
    for username in usernames:
        assert _signup(api, username=username, email=email) == 201
    probes = {name: _signup(api, username=name, email=f"probe.{name}@example.com") for name in usernames}
    assert set(probes.values()) <= {201, 400}, probes
    return [probes[username] == 400 for username in usernames]


def test_which_usernames_repeated_sign_ups_hold_does_not_tell_whether_the_address_had_an_account():
    """The attacker's view of a victim's registered address and of an address nobody uses: the
    same sign-ups, the same usernames held afterwards."""
    api = APIClient()
    assert _signup(api, username="victim", email="victim@example.com") == 201
    registered = _held_after_signing_up_with(api, "victim@example.com", "reg")
    fresh = _held_after_signing_up_with(api, "nobody@example.com", "new")
    assert registered == fresh, f"held usernames: registered address {registered}, fresh address {fresh}"
    assert User.objects.filter(email="victim@example.com").get().username == "victim"
