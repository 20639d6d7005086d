"""Deployment settings, passwords and headers."""

import os
import re
import subprocess
import sys

import pytest
import requests
from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import Argon2PasswordHasher, make_password
from django.test import Client, RequestFactory

from conftest import gunicorn
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
    # Features no page uses are refused, and no other site loads our answers (a review, ASVS 3.4).
    for answer in (response, client.get("/api/users/me/"), client.get("/healthz")):
        assert answer["Permissions-Policy"] == "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
        assert answer["Cross-Origin-Resource-Policy"] == "same-origin"


def test_admin_is_for_staff_only(client):
    user = User.objects.create_user(username="u", email="u@example.com", password="pw", full_name="U")
    client.force_login(user)
    assert client.get("/admin/").status_code == 302


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_behind_tls_the_cookies_are_host_only_and_the_api_refuses_plain_http(tmp_path):
    """gunicorn as deployed behind a TLS proxy (``DJANGO_HTTPS=true``, one proxy): a browser's
    cookies carry ``__Host-`` (no subdomain or plain-HTTP page can plant them), and a password sent
    to the API over plain HTTP is refused for all to see rather than redirected (reviews)."""
    User.objects.create_user(
        username="ada", email="ada@example.com", password="correct horse battery staple", is_email_verified=True
    )
    log_path = tmp_path / "web.log"
    with gunicorn(log_path, DJANGO_HTTPS="true", DJANGO_NUM_PROXIES="1", MFA_REQUIRED_ROLES="none") as base:
        port, tls = base.rpartition(":")[2], {"X-Forwarded-Proto": "https"}
        browser = requests.Session()
        form = browser.get(f"{base}/login/", headers=tls, timeout=10)
        assert form.status_code == 200
        assert "__Host-csrftoken=" in form.headers["Set-Cookie"] and "Secure" in form.headers["Set-Cookie"]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        fields = {"csrfmiddlewaretoken": token, "username": "ada", "password": "correct horse battery staple"}
        origin = {"Origin": f"https://127.0.0.1:{port}", "Referer": f"https://127.0.0.1:{port}/login/"}
        cookie = {"Cookie": f"__Host-csrftoken={browser.cookies['__Host-csrftoken']}"}
        logged_in = requests.post(
            f"{base}/login/", data=fields, headers=tls | origin | cookie, timeout=10, allow_redirects=False
        )
        assert logged_in.status_code == 302, logged_in.text[:500]
        session_cookie = logged_in.headers["Set-Cookie"]
        assert "__Host-sessionid=" in session_cookie and "Secure" in session_cookie and "Path=/" in session_cookie
        assert "Domain=" not in session_cookie and "max-age=31536000" in logged_in.headers["Strict-Transport-Security"]
        # The page's one-time messages ride a cookie too: host-only as well, or a sibling subdomain
        # could plant "Your password is changed" on our pages (a review of the pages).
        jar = {"Cookie": f"{cookie['Cookie']}; __Host-sessionid={logged_in.cookies['__Host-sessionid']}"}
        account = requests.get(f"{base}/account/", headers=tls | jar, timeout=10, allow_redirects=False)
        assert account.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', account.text).group(1)
        renamed = requests.post(
            f"{base}/account/",
            data={"csrfmiddlewaretoken": token, "form": "name", "full_name": "Ada King"},
            headers=tls | jar | {"Origin": origin["Origin"], "Referer": f"https://127.0.0.1:{port}/account/"},
            timeout=10,
            allow_redirects=False,
        )
        assert renamed.status_code == 302, renamed.text[:300]
        assert "__Host-messages=" in renamed.headers["Set-Cookie"] and "Secure" in renamed.headers["Set-Cookie"]

        credentials = {"username": "ada", "password": "correct horse battery staple"}
        in_clear = requests.post(f"{base}/api/tokens/", json=credentials, timeout=10, allow_redirects=False)
        assert in_clear.status_code == 403 and in_clear.json()["code"] == "https_required"
        assert requests.post(f"{base}/api/tokens/", json=credentials, headers=tls, timeout=10).status_code == 200
        page_in_clear = requests.get(f"{base}/login/", timeout=10, allow_redirects=False)
        assert page_in_clear.status_code == 301 and page_in_clear.headers["Location"].startswith("https://")


STRONG_KEY = "k8#vW2!pQz7$Lm4@Tx9&Rb6^Yc3*Nd5(Gh1)Jf0-Ks8+Ue2=Vo7"  # a test's key


def _production_settings(show: str = "s.SITE_URL", **env: str) -> subprocess.CompletedProcess:
    """Production settings read in a fresh process, as at start-up, with ``env`` on top; ``show``
    (an expression of the settings module ``s``) printed."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EMAIL_"))}
    environment |= {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": STRONG_KEY, "DATABASE_URL": "sqlite:///:memory:"}
    code = f"import bankproject.settings as s; print({show})"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=environment | env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DJANGO_NUM_PROXIES", "-1"),  # believed the client's own X-Forwarded-For entry; one entry was a 500
        ("LOGIN_LOCKOUT_MINUTES", "0"),  # no lockout at all
        ("LOGIN_LOCKOUT_MINUTES", "-15"),  # no lockout, and every failure deleted every account's
        ("LOGIN_LOCKOUT_MINUTES", "2000000000"),  # every log-in a 500 (a date out of range)
        ("LOGIN_LOCKOUT_FAILURES", "0"),  # everyone locked out for ever
        ("MFA_REQUIRED_ROLES", "none,staff"),  # "none" won
        ("THROTTLE_LOGIN", "20"),  # every log-in a 500
        ("THROTTLE_LOGIN", "20/fortnight"),
        ("THROTTLE_SIGNUP", "0/min"),  # every sign-up refused
        ("SITE_URL", "bank.example.com"),  # links without a scheme, a passkey origin of "://"
        ("SITE_URL", "https://bank.example.com/app"),  # links under a path nothing serves
        ("SITE_URL", "https://bank.example.com?x=1"),
        ("SITE_URL", "https://user:secret@bank.example.com"),  # credentials in every link
        ("SITE_URL", "https://bank.example.com?"),  # links at https://bank.example.com?/verify-email/
        ("SITE_URL", "https://bank.example.com#"),
        ("SITE_URL", "https://bank.example.com:"),
        ("SITE_URL", "https://bank.example.com:443"),  # a WebAuthn origin no browser sends
        ("SITE_URL", "HTTPS://Bank.Example.com"),
        ("SITE_URL", "http://[::1"),  # was a traceback from urlsplit
        ("CACHE_URL", "localhost:6379"),  # every log-in a 500
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_URL", "redis://127.0.0.1:6379/abc"),  # read as database 0
        ("DJANGO_HSTS_SECONDS", "-5"),  # an invalid header browsers ignore: no HSTS
        ("UNVERIFIED_ACCOUNT_MAX_AGE", "0"),  # the purge would delete every sign-up at once
        ("UNVERIFIED_ACCOUNT_MAX_AGE", "99999999999"),  # the hourly purge failed (a date out of range)
        ("ENDED_SESSION_MAX_AGE", "99999999999"),  # "keep for ever": the hourly purge failed every hour
        ("ANONYMOUS_EVENT_MAX_AGE", "1000000000000000000"),
        ("SESSION_IDLE_TIMEOUT", "0"),
        ("ACCESS_TOKEN_LIFETIME", "-1"),
        ("EMAIL_PORT", "70000"),
        ("LOG_LEVEL", "verbose"),
        ("MFA_ENCRYPTION_KEY", "x"),  # every TOTP secret under a one-letter key
        ("ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL", "maybe"),
    ],
)
def test_production_refuses_to_start_with_a_value_that_would_weaken_or_break_it(name, value):
    """Each of these started (``check --deploy`` clean) and then ran insecurely or answered 500s
    (a review): now the start-up stops with one line naming the variable."""
    done = _production_settings(**{name: value})
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert done.returncode != 0 and "ImproperlyConfigured" in last and name in last, done.stderr[-500:]


def test_empty_values_are_the_defaults():
    """Compose passes ``${X:-}`` and a .env file ``X=``: read as false, an empty DJANGO_HTTPS turned
    HTTPS off, and an empty MFA_REQUIRED_ROLES required a factor of nobody (a review)."""
    show = (
        "s.MFA_REQUIRED_ROLES, s.SESSION_COOKIE_SECURE, s.ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL, s.ALLOWED_HOSTS,"
        " s.DEFAULT_FROM_EMAIL, s.LOG_LEVEL, s.SITE_URL, s.DATABASES['default']['ENGINE']"
    )
    names = ["MFA_REQUIRED_ROLES", "DJANGO_HTTPS", "ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL", "DJANGO_ALLOWED_HOSTS"]
    names += ["DEFAULT_FROM_EMAIL", "LOG_LEVEL", "SITE_URL", "DATABASE_URL"]
    done = _production_settings(show, **dict.fromkeys(names, ""))
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == (
        "('staff', 'banker') True True ['127.0.0.1', 'localhost'] noreply@localhost INFO http://127.0.0.1:8000"
        " django.db.backends.sqlite3"
    )


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("LOG_LEVEL", "debug", "DEBUG"),
        ("LOG_LEVEL", "WARN", "WARN"),
        ("THROTTLE_LOGIN", "1000/hr", "1000/hr"),  # DRF reads the period's first letter
        ("THROTTLE_LOGIN", " 20 / minutes ", "20/minutes"),
        ("SITE_URL", "https://bank.example.com/", "https://bank.example.com"),
        ("SITE_URL", "http://[::1]:8000", "http://[::1]:8000"),
        ("SITE_URL", "https://bank.example.com:8443", "https://bank.example.com:8443"),
        (
            "REDIS_URL",
            "unix:///run/redis.sock?db=1",
            "unix:///run/redis.sock?db=1&socket_connect_timeout=2&socket_timeout=5",
        ),
        (
            "REDIS_URL",
            "rediss://:p%40ss@redis.example.com:6380/2",
            "rediss://:p%40ss@redis.example.com:6380/2?socket_connect_timeout=2&socket_timeout=5",
        ),
    ],
)
def test_what_production_accepts_is_read_as_meant(name, value, read):
    show = {
        "LOG_LEVEL": "s.LOG_LEVEL",
        "THROTTLE_LOGIN": "s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['login']",
        "SITE_URL": "s.SITE_URL",
        "REDIS_URL": "s.DRAMATIQ_BROKER['OPTIONS']['url']",
    }[name]
    done = _production_settings(show, **{name: value})
    assert done.returncode == 0 and done.stdout.strip() == read, done.stderr[-500:]


@pytest.mark.parametrize(
    ("name", "value"), [("EMAIL_BACKEND", "nonexistent.Backend"), ("DEFAULT_FROM_EMAIL", "not-an-address")]
)
def test_a_mail_setting_no_email_could_go_out_with_fails_the_system_check(name, value):
    """Sign-up answered 201 with these, and every email retried for hours in the worker (a review)."""
    done = _manage("check", DJANGO_DEBUG="false", DJANGO_SECRET_KEY=STRONG_KEY, **{name: value})
    assert done.returncode != 0 and name in done.stderr, done.stderr[-500:]


def test_the_systemd_web_unit_runs_the_system_checks_before_gunicorn_which_runs_none():
    unit = (settings.BASE_DIR / "deploy" / "systemd" / "simplebank-web.service").read_text()
    assert "ExecStartPre=/srv/simplebank/.venv/bin/python manage.py check --deploy --fail-level ERROR" in unit


def test_a_refused_setting_stops_manage_py_and_gunicorn_with_one_line_naming_it():
    """A refusal was the last line of a 30 to 70 line traceback, and under gunicorn one per worker
    followed by "Worker failed to boot" (a review)."""
    refused = "refusing to start: DJANGO_NUM_PROXIES must be at least 0, not -1"
    done = _manage("check", DJANGO_DEBUG="false", DJANGO_SECRET_KEY=STRONG_KEY, DJANGO_NUM_PROXIES="-1")
    assert done.returncode == 1 and done.stderr.strip() == refused, done.stderr[-500:]
    # Django reads them after its own options: --settings still counts, and help needs none.
    other = _manage("diffsettings", "--settings=bankproject.settings_test", DJANGO_NUM_PROXIES="-1")
    assert other.returncode == 1 and "DJANGO_NUM_PROXIES" in other.stderr  # settings_test reads the same
    assert _manage("help", DJANGO_DEBUG="false").returncode == 0

    environment = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    environment |= {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": STRONG_KEY, "DJANGO_NUM_PROXIES": "-1"}
    environment |= {"DATABASE_URL": "sqlite:///:memory:"}
    served = subprocess.run(
        [sys.executable, "-m", "gunicorn", "bankproject.wsgi", "--bind", "127.0.0.1:0", "--workers", "1"],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 1 and refused in served.stderr, served.stderr[-2000:]
    assert "Traceback" not in served.stderr and "Worker failed to boot" not in served.stderr
