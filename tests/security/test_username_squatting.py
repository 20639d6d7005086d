"""Signing up again with an address that has an account reserves the username it was answered with
(``UsernameReservation``), or trying that username again would tell the address is registered. What
an attacker can learn from the usernames such sign-ups hold, over HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from users.models import User
from users.services import signup
from users.tests.factories import UserFactory, create_verification

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_throttling")]


class LiveApi:
    """The probes go over HTTP to the server on a real port, as the attacker's would."""

    def __init__(self, base: str) -> None:
        self.base, self.http = base, requests.Session()

    def post(self, path: str, body: dict) -> requests.Response:
        return self.http.post(self.base + path, json=body, timeout=10)


@pytest.fixture
def api(live_server) -> LiveApi:
    return LiveApi(live_server.url)


PASSWORD = "correct horse battery staple"
SIGN_UPS = 5


def _signup(api: LiveApi, *, username: str, email: str) -> int:
    body = {"username": username, "full_name": "Some One", "email": email, "password": PASSWORD}
    return api.post("/api/users/", body).status_code


def _held_after_signing_up_with(api: LiveApi, email: str, prefix: str) -> list[bool]:
    """Sign up ``SIGN_UPS`` times with ``email`` and usernames prefix1..prefix5 (each answered
    ``201``), then try each username with an unrelated new address: is it still held?"""
    usernames = [f"{prefix}{n}" for n in range(1, SIGN_UPS + 1)]
    for username in usernames:
        assert _signup(api, username=username, email=email) == 201
    probes = {name: _signup(api, username=name, email=f"probe.{name}@example.com") for name in usernames}
    assert set(probes.values()) <= {201, 400}, probes
    return [probes[username] == 400 for username in usernames]


def test_which_usernames_repeated_sign_ups_hold_does_not_tell_whether_the_address_had_an_account(api):
    """The attacker's view of a victim's registered address and of an address nobody uses: the
    same sign-ups, the same usernames held afterwards."""
    assert _signup(api, username="victim", email="victim@example.com") == 201
    registered = _held_after_signing_up_with(api, "victim@example.com", "reg")
    fresh = _held_after_signing_up_with(api, "nobody@example.com", "new")
    assert registered == fresh, f"held usernames: registered address {registered}, fresh address {fresh}"
    assert User.objects.filter(email="victim@example.com").get().username == "victim"


def test_reserved_usernames_and_accounts_never_verified_free_up_at_the_same_age_for_every_address(settings, api):
    """Squatting is bounded: a sign-up with one's own registered address holds the name it asked for
    only until UNVERIFIED_ACCOUNT_MAX_AGE, and what frees up then is the same for a registered
    address and for an address nobody used."""
    assert _signup(api, username="victim", email="victim@example.com") == 201
    User.objects.filter(username="victim").update(is_email_verified=True)  # a real customer
    registered = [f"reg{n}" for n in range(1, SIGN_UPS + 1)]
    fresh = [f"new{n}" for n in range(1, SIGN_UPS + 1)]
    for reg, new in zip(registered, fresh, strict=True):
        assert _signup(api, username=reg, email="victim@example.com") == 201
        assert _signup(api, username=new, email="nobody@example.com") == 201

    # A moment before the age: nothing is freed; just after it, every name the sign-ups held is.
    almost = timezone.now() + timedelta(seconds=settings.UNVERIFIED_ACCOUNT_MAX_AGE - 60)
    assert signup.stale_signups_purge(now=almost) == {"accounts": 0, "reservations": 0}
    later = timezone.now() + timedelta(seconds=settings.UNVERIFIED_ACCOUNT_MAX_AGE + 1)
    counts = signup.stale_signups_purge(now=later)
    assert counts == {"accounts": 1, "reservations": 2 * SIGN_UPS - 1}
    for name in registered + fresh:
        assert _signup(api, username=name, email=f"later.{name}@example.com") == 201, name
    # The customer's own account and name stay; the never-verified one is gone.
    assert User.objects.filter(username="victim", email="victim@example.com").exists()
    assert not User.objects.filter(email="nobody@example.com").exists()
    assert _signup(api, username="victim", email="someone.else@example.com") == 400


def test_the_purge_spares_anyone_who_logged_in_staff_and_bankers(settings):
    long_ago = timezone.now() - timedelta(seconds=settings.UNVERIFIED_ACCOUNT_MAX_AGE + 60)
    kept = [
        UserFactory(username="logged-in", last_login=long_ago),
        UserFactory(username="staff", is_staff=True),
        UserFactory(username="banker", role=User.Role.BANKER),
        UserFactory(username="verified", is_email_verified=True),
        UserFactory(username="recent"),
    ]
    create_verification(UserFactory(username="stale"))  # a sign-up: it made a link
    kept.append(UserFactory(username="made-by-staff"))  # in the admin: no link, never purged
    User.objects.exclude(username="recent").update(created_at=long_ago)
    assert signup.stale_signups_purge() == {"accounts": 1, "reservations": 0}
    assert set(User.objects.values_list("username", flat=True)) == {user.username for user in kept}
