"""Test settings: the real stack (PostgreSQL, Redis), a private Redis namespace, fast hashing."""

import os

# Set before the main settings read the environment; subprocesses (real workers) inherit them.
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/simplebank")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_HTTPS", "false")
os.environ.setdefault("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
# In-process test workers have no exporter process; the metrics test turns it on for its worker.
os.environ.setdefault("DRAMATIQ_PROMETHEUS", "false")
# The contract tests read the schema; production keeps it off by default (a test checks that).
os.environ.setdefault("API_DOCS", "true")
# One namespace per test run, so a developer's `make run` worker never eats test messages.
os.environ.setdefault("DRAMATIQ_NAMESPACE", f"simplebank-test-{os.getpid()}")

from bankproject.settings import *  # noqa: F403
from bankproject.settings import DATABASES, DRAMATIQ_BROKER

# Worker threads must not keep connections open past a message: tests drop the database at the end.
# (Fault tests run worker processes with production-like persistent connections instead.)
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("TEST_CONN_MAX_AGE", "0"))

# Fault tests make a killed worker's messages come back within seconds instead of a minute.
if "Redis" in DRAMATIQ_BROKER["BROKER"]:
    DRAMATIQ_BROKER["OPTIONS"]["heartbeat_timeout"] = int(os.environ.get("TEST_DRAMATIQ_HEARTBEAT_TIMEOUT_MS", "60000"))
    DRAMATIQ_BROKER["OPTIONS"]["maintenance_chance"] = int(os.environ.get("TEST_DRAMATIQ_MAINTENANCE_CHANCE", "1000"))

# Throttle counters (and the operator snapshot) of this run live under their own prefix in the shared Redis.
CACHES["default"]["KEY_PREFIX"] = os.environ["DRAMATIQ_NAMESPACE"]  # noqa: F405

# Hashing strength is not under test here (a dedicated test covers the production hasher list).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Tests serve no collected static files (the admin's CSS is found by the finders).
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True

# aiosmtpd (the tests' SMTP server) logs every command at INFO.
LOGGING["loggers"]["mail.log"] = {"level": "WARNING"}  # noqa: F405
