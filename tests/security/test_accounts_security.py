"""What an attacker learns from the log-in: one answer and the same work for an unknown account
and a wrong password; a lockout for the admin's log-in too."""

from __future__ import annotations

import statistics
import time
from unittest import mock

import pytest
from django.contrib.auth.hashers import Argon2PasswordHasher
from rest_framework.test import APIClient

from users.models import User

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_throttling")]

PRODUCTION_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]


def _timed_login(username: str, password: str, address: str) -> tuple[int, bytes, float]:
    start = time.perf_counter()
    response = APIClient().post(
        "/api/tokens/", {"username": username, "password": password}, format="json", REMOTE_ADDR=address
    )
    return response.status_code, response.content, (time.perf_counter() - start) * 1000


def test_unknown_user_and_wrong_password_do_the_same_work(settings):
    """One identical answer, and one Argon2 hash on both paths (Django's backend hashes the
    password for an unknown account too), so the time does not tell them apart. The medians are
    printed, not asserted: a busy machine moves them, the work does not."""
    settings.PASSWORD_HASHERS = PRODUCTION_HASHERS  # the real cost is what hides the difference
    User.objects.create_user(username="ada", email="ada@example.com", password="the right pass phrase", full_name="A")
    unknown, wrong = [], []
    hashes: list[str] = []
    real_encode, real_verify = Argon2PasswordHasher.encode, Argon2PasswordHasher.verify

    def counting_encode(self, password, salt):
        hashes.append("encode")
        return real_encode(self, password, salt)

    def counting_verify(self, password, encoded):
        hashes.append("verify")
        return real_verify(self, password, encoded)

    for i in range(20):  # a new client address each time, so the lockout stays out of it
        with (
            mock.patch.object(Argon2PasswordHasher, "encode", counting_encode),
            mock.patch.object(Argon2PasswordHasher, "verify", counting_verify),
        ):
            status_u, body_u, ms_u = _timed_login(f"nobody{i}", "a guessed pass phrase", f"203.0.113.{i}")
            unknown_work, hashes[:] = list(hashes), []
            status_w, body_w, ms_w = _timed_login("ada", "a guessed pass phrase", f"198.51.100.{i}")
            wrong_work, hashes[:] = list(hashes), []
        assert status_u == status_w == 401 and body_u == body_w
        assert unknown_work == ["encode"] and wrong_work == ["verify"], (unknown_work, wrong_work)
        unknown.append(ms_u)
        wrong.append(ms_w)
    gap = abs(statistics.median(unknown) - statistics.median(wrong))
    print(f"median unknown={statistics.median(unknown):.1f} ms wrong={statistics.median(wrong):.1f} ms gap={gap:.1f}")


def test_the_admin_log_in_locks_out_too(client, settings):
    User.objects.create_superuser(
        username="ops", email="ops@example.com", password="the staff pass phrase", full_name="O"
    )
    statuses = [
        client.post("/admin/login/", {"username": "ops", "password": "a wrong guess"}).status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    locked = client.post("/admin/login/", {"username": "ops", "password": "the staff pass phrase"})
    assert locked.status_code == 429 and "Too many failed log-ins" in locked.content.decode()
