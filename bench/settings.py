"""Settings for the processes the benchmark starts: production settings, plus the no-op actor."""

import os

from bankproject.settings import *  # noqa: F403
from bankproject.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]

if os.environ.get("BENCH_FAST_HASHER") == "1":
    # The load phase measures the queue, not password hashing (that has its own phase).
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The benchmark renders admin pages but serves no static files: no collectstatic manifest needed.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
