"""Settings for simplebank users, read from the environment in one place.

Every variable the service reads is parsed here (each is a row of docs/configuration.md). Defaults are
safe for development; an empty value is the default; a value that would weaken or break the service
(out of range, a malformed URL or rate) is refused at start-up naming the variable, and with
``DJANGO_DEBUG=false`` so is a weak secret key.
"""

from __future__ import annotations

import os
import ssl
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str) -> str:
    """A string; empty (compose's ``${X:-}``, a bare ``X=`` in a .env file) is the default."""
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":  # empty is the default: DJANGO_HTTPS= read as false turned HTTPS off
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer, empty for the default; outside ``minimum``..``maximum`` it is refused, never used
    (a lockout of 0 minutes was no lockout, -1 trusted proxies believed the client's own entry)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}")
    return value


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate, ``<requests>/<period>`` (``20/min``), checked here: DRF reads it only at
    the first request it limits, where a typo was a 500 on every log-in. DRF reads the period's
    first letter (s, m, h or d: ``min``, ``hr``, ``hours`` alike), and so does this check."""
    raw = env_str(name, default)
    count, _, period = raw.partition("/")
    count, period = count.strip(), period.strip()
    if not count.isdigit() or int(count) < 1 or period[:1] not in {"s", "m", "h", "d"} or not period.isalpha():
        raise ImproperlyConfigured(f"{name} must be a rate like 20/min (per s, min, hour or day), not {raw!r}")
    return f"{int(count)}/{period}"


def env_list(name: str, default: str) -> list[str]:
    """Comma-separated; a value with no item in it (``,`` or spaces too) is the default."""
    items = [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]
    return items or [item.strip() for item in default.split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)

_DEV_SECRET_KEY = "django-insecure-dev-only-key-do-not-use-in-production"  # noqa: S105
# Keys that were ever published with this project (docs, compose): never good enough.
_PUBLISHED_KEYS = {_DEV_SECRET_KEY, "change-me-in-production-please-0123456789abcdef"}


def _refuse_weak_key(name: str, key: str, *, length: int = 50, replace: str = "") -> None:
    """Outside debugging a key signs every link and token: at least ``length`` characters (50:
    Django's own deploy check) with at least 5 different ones, and not one that was ever published.
    ``replace``: how to replace it, where setting a new one alone would lose data."""
    if key in _PUBLISHED_KEYS or key.startswith("django-insecure-"):
        raise ImproperlyConfigured(f"{name} is a published example key; generate one (docs/configuration.md).{replace}")
    if len(key) < length or len(set(key)) < 5:
        raise ImproperlyConfigured(f"{name} must be at least {length} characters, 5 of them different.{replace}")


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
# Old keys, newest first, that still verify links and tokens signed before a rotation
# (comma separated): rotate by moving the current key here and setting a new one.
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is false.")
    SECRET_KEY = _DEV_SECRET_KEY
elif not DEBUG:
    _refuse_weak_key("DJANGO_SECRET_KEY", SECRET_KEY)
if not DEBUG:
    for _fallback in SECRET_KEY_FALLBACKS:
        _refuse_weak_key("DJANGO_SECRET_KEY_FALLBACKS", _fallback)

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")

INSTALLED_APPS = [
    "anymail",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "axes",
    # django_dramatiq builds the broker from DRAMATIQ_BROKER when its app config is created, so it
    # comes before the apps that declare actors.
    "django_dramatiq",
    "dramatiq_crontab",
    "users",
    "tasks",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "bankproject.request_id.RequestIdMiddleware",
    # Outside everything that can answer early (a Host not allowed is a 400 from SecurityMiddleware,
    # an outage a 503): every answer carries the framing and content policies (a review).
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "bankproject.middleware.DatabaseUnavailable",
    "bankproject.headers.ApiNoStore",
    "bankproject.headers.BrowserPolicies",
    "bankproject.middleware.AdminBadInput",
    "bankproject.api_errors.ApiHttpsOnly",  # behind TLS: the API over plain HTTP is a 403, not a redirect
    "django.middleware.security.SecurityMiddleware",
    "bankproject.api_errors.ApiBodyLimit",  # a body too large for /api/: 413, in every mode
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "bankproject.middleware.CommonMiddleware",  # Django's, but no redirect of a body sent to /api/ without its slash
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # django-axes: turns a locked-out log-in (web, admin) into its 429 page; the API answers its own.
    "axes.middleware.AxesMiddleware",
    # A page form refused for a lockout (a step-up, a reset's second factor) answers 429 + Retry-After.
    "users.middleware.LockedOutMiddleware",
    # Who is asking and from where, for security events; browser sessions are session rows.
    "users.middleware.SecurityContextMiddleware",
    # A log-in's place in the per-address failure limit, given back unless it failed.
    "users.middleware.LoginPlaceMiddleware",
    # MFA_REQUIRED_ROLES on the pages: staff without a factor set one up before any admin page.
    "users.middleware.SecondFactorEnrollmentMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "bankproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "users.context_processors.site",
            ],
        },
    },
]

WSGI_APPLICATION = "bankproject.wsgi.application"
ASGI_APPLICATION = "bankproject.asgi.application"

# --- Database -----------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES: dict[str, Any] = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=env_bool("DATABASE_CONN_HEALTH_CHECKS", True),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that does not answer a connection is out after this many seconds (libpq waits forever).
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options.setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1))
    # How long one statement may run, and wait for a lock, in seconds (0: no limit). gunicorn.conf.py
    # sets both for the web, under gunicorn's 30 s timeout, so a request held by a locked table or a
    # runaway query is answered 503 instead of being killed without an answer; workers, migrations
    # (a long one, an index built concurrently) and commands keep no limit unless these are set.
    _server_settings = [
        f"-c {name}={seconds}s"
        for name, seconds in (
            ("statement_timeout", env_int("DATABASE_STATEMENT_TIMEOUT", 0, minimum=0, maximum=86400)),
            ("lock_timeout", env_int("DATABASE_LOCK_TIMEOUT", 0, minimum=0, maximum=86400)),
        )
        if seconds
    ]
    if _server_settings:
        _db_options["options"] = " ".join([_db_options.get("options", ""), *_server_settings]).strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Users and passwords ------------------------------------------------------------------------
AUTH_USER_MODEL = "users.User"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Eight spaces, or "aaaaaaaa", pass the four above.
    {"NAME": "users.password_validation.VarietyValidator", "OPTIONS": {"min_distinct": 4}},
]

# Pass-phrases are welcome; the cap only bounds the hashing work one request can cause.
PASSWORD_MAX_LENGTH = 128

# --- Logging in -----------------------------------------------------------------------------------
# Log in by username or by address (users/auth.py); django-axes first, so a locked-out attempt
# never reaches the password check.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "users.auth.UsernameOrEmailBackend"]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/account/"
LOGOUT_REDIRECT_URL = "/login/"
# A right password for an unverified address gets 403 email_not_verified instead of tokens.
ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL = env_bool("ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL", True)
ACCESS_TOKEN_LIFETIME = env_int("ACCESS_TOKEN_LIFETIME", 900, minimum=1)
REFRESH_TOKEN_LIFETIME = env_int("REFRESH_TOKEN_LIFETIME", 86400, minimum=1)
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3600, minimum=1)
# A session (API or browser) with no request for this long has ended; REFRESH_TOKEN_LIFETIME bounds
# it in any case. Browser sessions are session rows too (users/middleware.py), so the cookie lives
# as long as an API log-in at most.
SESSION_IDLE_TIMEOUT = env_int("SESSION_IDLE_TIMEOUT", 900, minimum=1)
SESSION_COOKIE_AGE = REFRESH_TOKEN_LIFETIME
# djangorestframework-simplejwt signs and checks the tokens (HS256 under the SECRET_KEY); the
# session row behind each token is ours (users/services/sessions.py).
SIMPLE_JWT: dict[str, Any] = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=ACCESS_TOKEN_LIFETIME),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=REFRESH_TOKEN_LIFETIME),
    "ROTATE_REFRESH_TOKENS": False,  # rotation and reuse detection are the session's
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "LEEWAY": 0,
}
# Brute force (django-axes, attempts in the database, listed in the admin): after
# LOGIN_LOCKOUT_FAILURES failed log-ins for one username (or address) from one client IP, that pair
# is locked out for LOGIN_LOCKOUT_MINUTES (API, web log-in and /admin/login/ alike; a wrong
# current_password counts as a failed log-in); a success resets the count. There is no account-wide
# block: the owner logging in from an address that has not failed is never refused. The per-IP
# rate limit (THROTTLE_LOGIN) counts failed log-ins only.
# No django-axes access log: each successful log-in was a row kept for ever, and writing it made a
# Django session (to hash its key) — a session cookie on every API log-in. The service's own
# log-in sessions and security events say who logged in, when and from where.
AXES_DISABLE_ACCESS_LOG = True
AXES_FAILURE_LIMIT = env_int("LOGIN_LOCKOUT_FAILURES", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=366 * 24 * 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# An attempt refused during a lockout counts nothing: django-axes' default recorded it and restarted
# the 15 minutes, so an app retrying a saved password kept its owner out for ever (a runbook walk).
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success resets its pair's count — done by users.receivers.on_logged_in, by the account's own
# lockout name: django-axes' reset reads the account's username as a typed log-in, and an older
# username holding an "@" would clear the failures of whoever owns that address.
AXES_RESET_ON_SUCCESS = False
AXES_USERNAME_CALLABLE = "users.auth.lockout_username"
AXES_CLIENT_IP_CALLABLE = "users.auth.client_network"  # an IPv6 client counts by its /64
AXES_LOCKOUT_CALLABLE = "users.auth.lockout_response"
# Every field a failed log-in's form can carry but its username (a test submits each form and
# checks): Django's password change form calls the current password "old_password".
AXES_SENSITIVE_PARAMETERS = [
    "password",
    "old_password",
    "current_password",
    "email",  # the new address of an address change: not the lockout's business
    "new_password",
    "new_password1",
    "new_password2",
    "code",
    "mfa_token",
    # A reset page's link (still valid after a refused proof), a passkey's answer, the form's token.
    "token",
    "uid",
    "credential",
    "passkey_token",
    "csrfmiddlewaretoken",
]

# --- Second factor (users/mfa/) ------------------------------------------------------------------
# The issuer an authenticator app shows next to the account (the otpauth:// URI).
SITE_NAME = env_str("SITE_NAME", "Simple Bank")
# Who must have a second factor before using the API (but for log-in, refresh, log-out, /api/mfa/
# and GET /api/users/me/): any of "staff", "banker", "depositor"; "all"; "none".
# Empty is the default, as for every other variable: an empty list required a factor of nobody.
MFA_REQUIRED_ROLES = tuple(role.lower() for role in env_list("MFA_REQUIRED_ROLES", "staff,banker"))
_MFA_ROLES = {"staff", "banker", "depositor", "all", "none"}
if unknown_roles := sorted(set(MFA_REQUIRED_ROLES) - _MFA_ROLES):
    raise ImproperlyConfigured(f"MFA_REQUIRED_ROLES: unknown role(s) {unknown_roles}; use {sorted(_MFA_ROLES)}")
if "none" in MFA_REQUIRED_ROLES and len(MFA_REQUIRED_ROLES) > 1:
    raise ImproperlyConfigured(
        f"MFA_REQUIRED_ROLES: 'none' cannot stand with other roles: {','.join(MFA_REQUIRED_ROLES)}"
    )
# The key of the second factor's secrets at rest (outside debugging at least 32 characters; HKDF
# derives the Fernet key): TOTP secrets are encrypted and recovery codes keyed-hashed under it.
# Empty: DJANGO_SECRET_KEY. Set it in production, so that DJANGO_SECRET_KEY rotates without touching
# anyone's second factor. Every older key still reads (MFA_ENCRYPTION_KEY_FALLBACKS, then
# DJANGO_SECRET_KEY and its fallbacks); `manage.py rotate_mfa_secrets` re-encrypts the TOTP secrets
# under the current one.
MFA_ENCRYPTION_KEY = os.environ.get("MFA_ENCRYPTION_KEY", "")
if MFA_ENCRYPTION_KEY and not DEBUG:  # it guards every TOTP secret: replaced outright, they are unreadable
    _refuse_weak_key(
        "MFA_ENCRYPTION_KEY",
        MFA_ENCRYPTION_KEY,
        length=32,
        replace=" Move it to MFA_ENCRYPTION_KEY_FALLBACKS, set a new one, then run manage.py rotate_mfa_secrets.",
    )
MFA_ENCRYPTION_KEY_FALLBACKS = env_list("MFA_ENCRYPTION_KEY_FALLBACKS", "")

# --- Email verification -------------------------------------------------------------------------
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")


def _refuse_odd_site_url(url: str) -> None:
    """Links, passkeys' relying party and origin are built from it: an origin, nothing more, spelled
    as a browser spells it (lower case, no default port), or the WebAuthn origin would not match."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unclosed [ or a port that is no number
        parts, port = urlsplit(""), None
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username is not None:
        raise ImproperlyConfigured(f"SITE_URL must be an http(s) origin like https://bank.example.com, not {url!r}")
    if any(mark in url for mark in "?#") or parts.path:
        raise ImproperlyConfigured(f"SITE_URL is an origin without a path, query or fragment, not {url!r}")
    default_port = {"http": 80, "https": 443}[parts.scheme]
    if url != url.lower() or port in {0, default_port} or parts.netloc.endswith(":"):
        raise ImproperlyConfigured(f"SITE_URL as a browser writes the origin (lower case, no default port): {url!r}")


_refuse_odd_site_url(SITE_URL)
EMAIL_VERIFICATION_MAX_AGE = env_int("EMAIL_VERIFICATION_MAX_AGE", 86400, minimum=1)
VERIFY_EMAIL_REDISPATCH_AFTER = env_int("VERIFY_EMAIL_REDISPATCH_AFTER", 120, minimum=0)
# An account never verified (and never logged in) is deleted this long after its sign-up, and a
# username reserved by a sign-up answer is freed at the same age (users/services/signup.py).
# Ages are bounded at a century: a date that far back is one Python can still compute (a larger
# "keep for ever" made the hourly purges fail with a date out of range).
_CENTURY = 100 * 365 * 86400
UNVERIFIED_ACCOUNT_MAX_AGE = env_int("UNVERIFIED_ACCOUNT_MAX_AGE", 7 * 86400, minimum=1, maximum=_CENTURY)
# How long log-in history is kept (users.services.retention): sessions after their refresh tokens
# expired, failed log-ins naming no account.
ENDED_SESSION_MAX_AGE = env_int("ENDED_SESSION_MAX_AGE", 30 * 86400, minimum=0, maximum=_CENTURY)
ANONYMOUS_EVENT_MAX_AGE = env_int("ANONYMOUS_EVENT_MAX_AGE", 90 * 86400, minimum=0, maximum=_CENTURY)
# A claimed ("sending") verification whose worker died is claimable again after this many seconds
# (longer than the actor's 120 s time limit, so a live send is never taken over).
VERIFY_EMAIL_CLAIM_TIMEOUT = env_int("VERIFY_EMAIL_CLAIM_TIMEOUT", 180, minimum=1)
# A pending verification that failed before waits for a Dramatiq retry (backoff at most 15 min);
# if none has come this long after the last attempt, the retry was lost and the sweep sends again.
VERIFY_EMAIL_RETRY_STALL_AFTER = env_int("VERIFY_EMAIL_RETRY_STALL_AFTER", 20 * 60, minimum=1)
# Dramatiq retries of send_verify_email: exponential backoff from MIN (plus up to 2x jitter),
# capped at MAX. A system check keeps the whole schedule inside EMAIL_VERIFICATION_MAX_AGE.
VERIFY_EMAIL_MAX_RETRIES = env_int("VERIFY_EMAIL_MAX_RETRIES", 8, minimum=0)
VERIFY_EMAIL_RETRY_MIN_BACKOFF_MS = env_int("VERIFY_EMAIL_RETRY_MIN_BACKOFF_MS", 10_000, minimum=1)
VERIFY_EMAIL_RETRY_MAX_BACKOFF_MS = env_int("VERIFY_EMAIL_RETRY_MAX_BACKOFF_MS", 15 * 60_000, minimum=1)
# Every send attempt of a verification counts here, redeliveries included; then it is failed.
VERIFY_EMAIL_MAX_ATTEMPTS = env_int("VERIFY_EMAIL_MAX_ATTEMPTS", 12, minimum=1)

# At most one verification (or "account exists") email per address per this many seconds.
VERIFY_EMAIL_RESEND_COOLDOWN = env_int("VERIFY_EMAIL_RESEND_COOLDOWN", 180, minimum=0)

# --- Email --------------------------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "bankproject.smtp.EmailBackend",
)
# Django's own SMTP backend cannot be given a CA bundle. Naming it (as docker-compose.yml, the
# tests' worker_env and older .env files do) gets bankproject.smtp.EmailBackend, a drop-in subclass
# that differs only in its TLS context, so EMAIL_SSL_CAFILE applies whichever of the two is named.
if EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend":
    EMAIL_BACKEND = "bankproject.smtp.EmailBackend"
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
# STARTTLS (usually port 587) or implicit TLS from the first byte (usually port 465); at most one.
# Either way the server's certificate and host name are verified, and a failed handshake is an
# error (retried), never a fallback to plain text.
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# PEM bundle of the CAs trusted for the SMTP server's certificate (a company CA, say), instead of
# the system's trust store; empty: the system's store.
EMAIL_SSL_CAFILE = os.environ.get("EMAIL_SSL_CAFILE", "")
# A client certificate (PEM; the key in it or in EMAIL_SSL_KEYFILE), for relays that require one.
EMAIL_SSL_CERTFILE = os.environ.get("EMAIL_SSL_CERTFILE", "") or None
EMAIL_SSL_KEYFILE = os.environ.get("EMAIL_SSL_KEYFILE", "") or None
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured(
        "EMAIL_USE_TLS (STARTTLS, usually port 587) and EMAIL_USE_SSL (implicit TLS, usually port 465) "
        "are mutually exclusive; set one of them."
    )
if EMAIL_SSL_KEYFILE and not EMAIL_SSL_CERTFILE:
    raise ImproperlyConfigured("EMAIL_SSL_KEYFILE is set without EMAIL_SSL_CERTFILE.")

# --- Mail providers and their delivery feedback (django-anymail) ----------------------------------
# Sending through a provider is one setting: EMAIL_BACKEND=anymail.backends.<esp>.EmailBackend
# (mailgun, postmark, amazon_ses, resend…). Every ANYMAIL_<NAME> variable becomes anymail's <NAME>
# setting (ANYMAIL_MAILGUN_API_KEY, ANYMAIL_POSTMARK_SERVER_TOKEN, ANYMAIL_RESEND_API_KEY…).
ANYMAIL: dict[str, Any] = {
    name.removeprefix("ANYMAIL_"): value
    for name, value in os.environ.items()
    if name.startswith("ANYMAIL_") and name != "ANYMAIL_" and value
}
# Two secrets while the provider's configuration changes over ("user:old,user:new"): anymail takes a list.
# Each must be a whole user:password — a comma inside one would otherwise make two short ones.
if "WEBHOOK_SECRET" in ANYMAIL:
    ANYMAIL["WEBHOOK_SECRET"] = [secret.strip() for secret in ANYMAIL["WEBHOOK_SECRET"].split(",")]
    # The password is what stands between the internet and suppressing anyone's address (SES: all
    # there is; the webhook is not throttled): at least 16 characters, as anymail's docs advise.
    if not all(
        user and len(password) >= 16 for user, _, password in (s.partition(":") for s in ANYMAIL["WEBHOOK_SECRET"])
    ):
        raise ImproperlyConfigured(
            "ANYMAIL_WEBHOOK_SECRET: each comma-separated secret is user:password, a user and a password of at least "
            "16 characters (no comma inside one)"
        )
# The tracking webhooks (/anymail/<esp>/tracking/) answer only behind ANYMAIL_WEBHOOK_SECRET
# ("user:password", HTTP basic auth) — plus the provider's signature where it signs (Mailgun:
# ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY; Resend: ANYMAIL_RESEND_SIGNING_SECRET). Without the secret
# they answer 404 (bankproject/urls.py): an open webhook would let anyone suppress an address.
# Amazon SES's events are not signed as anymail checks them: the basic-auth secret is all there is.
if "amazon_ses" in EMAIL_BACKEND and not ANYMAIL.get("WEBHOOK_SECRET"):
    raise ImproperlyConfigured(
        "Amazon SES sends its tracking events unsigned: set ANYMAIL_WEBHOOK_SECRET (user:password) and put it "
        "in the SNS subscription's URL (https://user:password@host/anymail/amazon_ses/tracking/)."
    )
for _name, _path in [
    ("EMAIL_SSL_CAFILE", EMAIL_SSL_CAFILE),
    ("EMAIL_SSL_CERTFILE", EMAIL_SSL_CERTFILE),
    ("EMAIL_SSL_KEYFILE", EMAIL_SSL_KEYFILE),
]:
    if _path and not Path(_path).is_file():
        # Refused here rather than on the first send, where it would be retried for hours.
        raise ImproperlyConfigured(f"{_name}={_path!r} is not a file.")
if EMAIL_SSL_CAFILE:
    try:  # a file with no PEM certificate in it would otherwise fail every send
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=EMAIL_SSL_CAFILE)
    except (ssl.SSLError, OSError) as exc:
        raise ImproperlyConfigured(
            f"EMAIL_SSL_CAFILE={EMAIL_SSL_CAFILE!r} holds no usable CA certificate: {exc}"
        ) from None
# Never let a hung SMTP server hold a worker thread forever; a timeout is a transient error.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)
# Each worker thread keeps its SMTP connection open between emails (see users/mail.py): one idle
# this many seconds is checked with a NOOP before use, and it is renewed after so many messages.
EMAIL_CONNECTION_IDLE_CHECK = env_int("EMAIL_CONNECTION_IDLE_CHECK", 1, minimum=0)
EMAIL_CONNECTION_MAX_MESSAGES = env_int("EMAIL_CONNECTION_MAX_MESSAGES", 100, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "noreply@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Dramatiq on Redis --------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")


def _refuse_odd_redis_url(name: str, url: str) -> None:
    """redis-py refuses these only when it first connects (a traceback naming no variable), and
    reads a database that is no number as database 0."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"} or (parts.scheme != "unix" and not parts.hostname):
        raise ImproperlyConfigured(f"{name} must be a redis://, rediss:// or unix:// URL, not {url!r}")
    if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ImproperlyConfigured(f"{name}: the database after the host is a number, not {parts.path!r}")


_refuse_odd_redis_url("REDIS_URL", REDIS_URL)
# Keys are prefixed with this namespace; tests use their own so they never eat a dev's messages.
DRAMATIQ_NAMESPACE = env_str("DRAMATIQ_NAMESPACE", "dramatiq")


def _with_timeouts(url: str) -> str:
    """redis-py ignores timeout arguments next to a URL, so they go into the URL."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    # Fail fast instead of hanging a web request when Redis does not answer.
    query.setdefault("socket_connect_timeout", "2")
    query.setdefault("socket_timeout", "5")
    if parts.scheme == "unix":  # urlunsplit writes unix:/path, which redis-py refuses
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(query=urlencode(query)))


# The broker: Redis at REDIS_URL by default; Redis through Sentinel when REDIS_SENTINELS is set;
# RabbitMQ when DRAMATIQ_BROKER_URL is an amqp:// URL.
DRAMATIQ_BROKER_URL = os.environ.get("DRAMATIQ_BROKER_URL", "")
REDIS_SENTINELS = env_list("REDIS_SENTINELS", "")
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", "mymaster")
_broker_options: dict[str, Any]
if DRAMATIQ_BROKER_URL.startswith(("amqp://", "amqps://")):
    _broker, _broker_options = "dramatiq.brokers.rabbitmq.RabbitmqBroker", {"url": DRAMATIQ_BROKER_URL}
elif REDIS_SENTINELS:
    _broker = "tasks.brokers.SentinelRedisBroker"
    _broker_options = {"sentinels": REDIS_SENTINELS, "master": REDIS_SENTINEL_MASTER, "namespace": DRAMATIQ_NAMESPACE}
elif DRAMATIQ_BROKER_URL and not DRAMATIQ_BROKER_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured("DRAMATIQ_BROKER_URL must be a redis://, rediss://, amqp:// or amqps:// URL.")
else:
    _redis = _with_timeouts(DRAMATIQ_BROKER_URL or REDIS_URL)
    _broker, _broker_options = "tasks.brokers.WakingRedisBroker", {"url": _redis, "namespace": DRAMATIQ_NAMESPACE}
    if not env_bool("DRAMATIQ_REDIS_WAKEUP", True):  # Dramatiq's plain polling consumer (benchmarks)
        _broker = "dramatiq.brokers.redis.RedisBroker"

DRAMATIQ_BROKER: dict[str, Any] = {
    "BROKER": _broker,
    "OPTIONS": _broker_options,
    # Without an explicit list the broker gets no middleware at all (and `throws=` breaks).
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.ShutdownNotifications",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Pipelines",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.CurrentMessage",
        "django_dramatiq.middleware.AdminMiddleware",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        "bankproject.request_id.DramatiqRequestIdMiddleware",
        "users.worker_middleware.SmtpConnections",
        "users.worker_middleware.WarmUp",
        "tasks.middleware.StopOnce",  # a SIGTERM to the whole process group stops gracefully too
        "tasks.middleware.WorkerRegistry",  # which heartbeats are workers' (manage.py worker_status)
    ],
}
# The worker's Prometheus exporter (messages, errors, retries, durations, in flight) on
# dramatiq_prom_port (9191); it only works under the `rundramatiq` command line.
# django-dramatiq's task table (admin → Tasks): statements in the sign-up request per enqueue and
# more per message processed (what it costs: docs/performance.md). Off by default: the admin's
# verification list and queue overview show what operators need. Turn it on to browse every message
# the queue carried.
DRAMATIQ_TASK_ADMIN = env_bool("DRAMATIQ_TASK_ADMIN", False)
if not DRAMATIQ_TASK_ADMIN:
    DRAMATIQ_BROKER["MIDDLEWARE"].remove("django_dramatiq.middleware.AdminMiddleware")
if env_bool("DRAMATIQ_PROMETHEUS", True):
    DRAMATIQ_BROKER["MIDDLEWARE"].insert(0, "dramatiq.middleware.prometheus.Prometheus")
    # Dramatiq's exporter binds 0.0.0.0 unless told otherwise; here loopback unless the operator
    # opens it (compose does, inside its private network, for Prometheus).
    os.environ.setdefault("dramatiq_prom_host", "127.0.0.1")
    if Path(sys.argv[0]).name in {"dramatiq", "dramatiq-gevent"}:
        # Worker processes share their counters through files, and prometheus_client picks that
        # mode when it is first imported (by Django's apps, before the middleware boots).
        os.environ.setdefault(
            "PROMETHEUS_MULTIPROC_DIR",
            os.environ.get("dramatiq_prom_db", f"{tempfile.gettempdir()}/dramatiq-prometheus"),  # noqa: SIM112 - dramatiq's name
        )
# The actors live in `users/tasks.py` (and plumbing's in `tasks/tasks.py`), which django-dramatiq's
# default discovery ("<app>.tasks") finds.
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
DRAMATIQ_TASKS_DATABASE = "default"
# `manage.py crontab` (dramatiq-crontab) sends the periodic actors; a Redis lock keeps it to one.
DRAMATIQ_CRONTAB = {"REDIS_URL": REDIS_URL}

# --- Metrics ------------------------------------------------------------------------------------
# /metrics (request series) needs this bearer token when set; /metrics/operator (queues, emails by
# state: series that would tell a registered address from a new one) is served only when it is set.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# --- Cache (throttles; shared by every web process) -------------------------------------------------
# django-redis: the same Redis protocol as Django's own backend, plus the raw client the throttles'
# atomic counters use (``get_redis_connection``). Where it lives:
# - CACHE_URL, when set: that Redis, whatever the broker uses (operators may give the cache its own);
# - else, with REDIS_SENTINELS: the master Sentinel names for REDIS_SENTINEL_MASTER (db 0, beside the
#   broker's queues; the keys carry KEY_PREFIX). django-redis's SentinelClient asks the sentinels on
#   every new connection, so after a fail-over the counters go to the new master: a connection to the
#   old one fails once (refused, or READONLY once it is a replica: redis-py drops the connection) and
#   that request is counted in its process; the next one connects to the master the sentinels name.
#   (Its replica pool would serve plain ``cache.get``s; the throttles read and write on the master.)
# - else REDIS_URL.
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL:
    _refuse_odd_redis_url("CACHE_URL", CACHE_URL)
_cache_options: dict[str, Any] = {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 2}  # fail fast in a request
if REDIS_SENTINELS and not CACHE_URL:
    try:
        _sentinel_hosts = [(host, int(port)) for host, port in (s.rsplit(":", 1) for s in REDIS_SENTINELS)]
    except ValueError:
        raise ImproperlyConfigured(
            f"REDIS_SENTINELS={','.join(REDIS_SENTINELS)!r}: expected host:port,host:port,..."
        ) from None
    _cache_location = f"redis://{REDIS_SENTINEL_MASTER}/0"  # the host part is the master's name
    _cache_options |= {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        # The factory is what builds Sentinel-managed pools; the client only checks that it got one
        # (the pool class is the factory's default, named for the reader).
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "CONNECTION_POOL_CLASS": "redis.sentinel.SentinelConnectionPool",
        "SENTINELS": _sentinel_hosts,
        # The sentinels themselves get the same short timeouts: a dead one costs a second at most.
        "SENTINEL_KWARGS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }
else:
    _cache_location = CACHE_URL or REDIS_URL
CACHES: dict[str, Any] = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _cache_location,
        "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "simplebank"),
        "OPTIONS": _cache_options,
    }
}

# --- DRF ----------------------------------------------------------------------------------------
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_SCHEMA_CLASS": "bankproject.api_schema.AutoSchema",
    "EXCEPTION_HANDLER": "bankproject.api_errors.api_exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["bankproject.parsers.StrictJSONParser"],
    "UNAUTHENTICATED_USER": None,
    # Rates per client IP (and per address for resend), counted in the shared cache.
    "DEFAULT_THROTTLE_RATES": {
        "signup": env_rate("THROTTLE_SIGNUP", "20/min"),
        "verify": env_rate("THROTTLE_VERIFY", "30/min"),
        "resend": env_rate("THROTTLE_RESEND", "30/min"),
        "resend_address": env_rate("THROTTLE_RESEND_ADDRESS", "30/hour"),
        "login": env_rate("THROTTLE_LOGIN", "20/min"),
        "refresh": env_rate("THROTTLE_REFRESH", "60/min"),
        "passkey_options": env_rate("THROTTLE_PASSKEY_OPTIONS", "30/min"),
        "password_reset": env_rate("THROTTLE_PASSWORD_RESET", "10/min"),
        "password_reset_address": env_rate("THROTTLE_PASSWORD_RESET_ADDRESS", "10/hour"),
        "account": env_rate("THROTTLE_ACCOUNT", "60/min"),
        "customer_change": env_rate("THROTTLE_CUSTOMER_CHANGE", "10/hour"),
    },
    # The client IP is REMOTE_ADDR; X-Forwarded-For counts only behind this many trusted proxies.
    "NUM_PROXIES": env_int("DJANGO_NUM_PROXIES", 0, minimum=0),
}

# --- I18N, static -------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT: Path | None = BASE_DIR / "staticfiles"
# In development static files are served straight from the apps, without collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Security -----------------------------------------------------------------------------------
HTTPS = env_bool("DJANGO_HTTPS", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
MESSAGE_STORAGE = "bankproject.messages.HostFallbackStorage"
if HTTPS:
    SECURE_SSL_REDIRECT = True
    # Probes and scrapers call a web process directly over plain HTTP (a kubelet, Prometheus): a
    # redirect would count as a passing probe (3xx) and break the scrape. Nothing secret is served there
    # but /metrics/operator's figures, behind METRICS_TOKEN.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^metrics/operator$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # __Host-: the browser takes these cookies only over HTTPS, for this host, path / — no sibling
    # subdomain or plain-HTTP page can plant or overwrite them (ASVS 3.3.1).
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"
    # The page messages' cookie is __Host-messages then (bankproject/messages.py).
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# OpenAPI 3 at /api/schema/, Swagger UI at /api/docs/ (assets served from here, not a CDN): public
# while debugging, off (404) in production unless API_DOCS=true — the map of every endpoint and
# its errors is for the bank's developers, not for whoever probes it.
API_DOCS = env_bool("API_DOCS", DEBUG)
SPECTACULAR_SETTINGS = {
    "TITLE": "simplebank users API",
    "DESCRIPTION": "The user service of Simple Bank: sign-up with email verification, accounts, second factor. "
    "Guarantees and every page: docs/ (make docs).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "bankproject.api_schema.postprocess"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Content Security Policy (django-csp): nothing inline, nothing from elsewhere.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [SELF],
        "object-src": [NONE],
    }
}

# --- Logging ------------------------------------------------------------------------------------
LOG_LEVEL = (os.environ.get("LOG_LEVEL", "").strip() or "INFO").upper()  # "debug" as well as "DEBUG"
if LOG_LEVEL not in {"NOTSET", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}")
# "json": one JSON object per line (for log shippers); anything else: human-readable lines.
LOG_FORMAT = env_str("LOG_FORMAT", "text")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "bankproject.request_id.RequestIdFilter"},
        "redact": {"()": "bankproject.logging.RedactSecrets"},
        "refused_webhook": {"()": "bankproject.logging.RefusedWebhook"},
    },
    "formatters": {
        "text": {"()": "bankproject.logging.FieldsFormatter"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["request_id", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # runserver's request lines: through our handler (and its redaction), not Django's own.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # A forged or unsigned call to a provider's webhook: one WARNING line, not an ERROR traceback.
        "django.security.AnymailWebhookValidationFailure": {
            "handlers": ["console"],
            "level": "INFO",
            "filters": ["refused_webhook"],
            "propagate": False,
        },
        "dramatiq": {"level": "INFO"},
        "apscheduler": {"level": "WARNING"},
    },
}
