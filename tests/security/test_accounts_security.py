"""What an attacker learns from the log-in: one answer and the same time for an unknown account
and a wrong password; a lockout for the admin's log-in too."""

from __future__ import annotations

import statistics
import time

import pytest
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


def test_unknown_user_and_wrong_password_take_the_same_time(settings):
    settings.PASSWORD_HASHERS = PRODUCTION_HASHERS  # the real cost is what hides the difference
    User.objects.create_user(username="ada", email="ada@example.com", password="the right pass phrase", full_name="A")
    unknown, wrong = [], []
    for i in range(20):  # a new client address each time, so the lockout stays out of it
        status_u, body_u, ms_u = _timed_login(f"nobody{i}", "a guessed pass phrase", f"203.0.113.{i}")
        status_w, body_w, ms_w = _timed_login("ada", "a guessed pass phrase", f"198.51.100.{i}")
        assert status_u == status_w == 401 and body_u == body_w
        unknown.append(ms_u)
        wrong.append(ms_w)
    gap = abs(statistics.median(unknown) - statistics.median(wrong))
    print(f"median unknown={statistics.median(unknown):.1f} ms wrong={statistics.median(wrong):.1f} ms gap={gap:.1f}")
    assert gap < max(15.0, 0.25 * statistics.median(wrong)), (unknown, wrong)


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
