"""Deployment settings, passwords and headers."""

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import Argon2PasswordHasher, make_password
from django.test import Client, RequestFactory

from users.models import User

pytestmark = pytest.mark.django_db

PRODUCTION_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EMAIL_"))}
    environment |= {"DJANGO_SETTINGS_MODULE": "bankproject.settings", "DATABASE_URL": "sqlite:///:memory:"} | env
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=environment, capture_output=True, text=True
    )


def test_production_settings_pass_check_deploy_with_no_warnings():
    done = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="k8#vW2!pQz7$Lm4@Tx9&Rb6^Yc3*Nd5(Gh1)Jf0-Ks8+Ue2=Vo7",
        DJANGO_ALLOWED_HOSTS="bank.example.com",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_production_refuses_to_start_without_a_secret_key():
    done = _manage("check", DJANGO_DEBUG="false")
    assert done.returncode != 0 and "DJANGO_SECRET_KEY is required" in done.stderr


def test_production_hashers_are_argon2id_first_at_or_above_the_owasp_floor():
    from bankproject import settings as production  # the tests themselves hash with MD5

    assert production.PASSWORD_HASHERS == PRODUCTION_HASHERS
    hasher = Argon2PasswordHasher()
    assert hasher.memory_cost >= 19 * 1024 and hasher.time_cost >= 2 and hasher.parallelism >= 1
    import argon2

    assert hasher.params().type == argon2.Type.ID


def test_pbkdf2_hashes_still_verify_and_are_upgraded_on_login(settings):
    settings.PASSWORD_HASHERS = PRODUCTION_HASHERS
    user = User.objects.create_user(username="old", email="old@example.com", password=None, full_name="Old")
    changed_at = user.password_changed_at
    User.objects.filter(pk=user.pk).update(password=make_password("an old pass phrase", hasher="pbkdf2_sha256"))
    login = RequestFactory().post("/login/")  # django-axes watches every log-in, so it has a request
    assert authenticate(login, username="old", password="an old pass phrase") is not None
    user.refresh_from_db()
    assert user.password.startswith("argon2$argon2id$")
    assert user.password_changed_at == changed_at  # a rehash is not a password change


def test_password_changed_at_moves_when_the_password_changes():
    user = User.objects.create_user(username="p", email="p@example.com", password="first pass phrase", full_name="P")
    before = user.password_changed_at
    user.set_password("second pass phrase")
    user.save()
    assert user.password_changed_at > before


def test_pass_phrases_up_to_128_characters_are_welcome(client):
    phrase = "a long pass phrase that keeps going " * 3 + "x" * 20
    assert len(phrase) <= 128
    response = Client().post(
        "/api/users/",
        {"username": "phrase", "full_name": "P", "email": "phrase@example.com", "password": phrase},
        content_type="application/json",
    )
    assert response.status_code == 201


def test_pages_carry_a_content_security_policy(client):
    response = client.get("/signup/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response["X-Frame-Options"] == "DENY"


def test_admin_is_for_staff_only(client):
    user = User.objects.create_user(username="u", email="u@example.com", password="pw", full_name="U")
    client.force_login(user)
    assert client.get("/admin/").status_code == 302
