"""gunicorn's settings for this project (gunicorn reads ./gunicorn.conf.py by itself).

The access log names the path without its query string (``%(U)s``) and no referrer: links carry
their secret in the query string (a verification code, a password reset token), and a secret in
a log line is a secret given away. gunicorn's own error log, which prints a failing request's
full URI, goes through the same redaction as Django's logs (``bankproject.logging.RedactSecrets``).

Both logs go through that filter, which also escapes control characters: gunicorn escapes only
``"`` in its atoms and writes the rest as it came (``%(U)s`` is the path after percent-decoding, so
``%0a`` is a line feed; ``%(a)s`` is the User-Agent, where C1 bytes such as NEL and CSI are
allowed), so a request could otherwise start a forged line of the access log or send a terminal
its escape codes (tests/security/test_logs.py sends them to a real gunicorn).
"""

import logging
import os
import subprocess
import sys

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")

# A request is killed without an answer at gunicorn's timeout (30 s): a statement ends before it,
# with a 503 the client may retry (bankproject.middleware.database_unavailable), when a table is
# locked (a migration, a long transaction) or a query runs away. Read by bankproject/settings.py.
os.environ.setdefault("DATABASE_STATEMENT_TIMEOUT", "20")
os.environ.setdefault("DATABASE_LOCK_TIMEOUT", "10")
access_log_format = '%(h)s - %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s" request_id=%({x-request-id}o)s'


_READ_SETTINGS = """
import sys
from django.core.exceptions import ImproperlyConfigured
from django.conf import settings
try:
    settings.INSTALLED_APPS
except ImproperlyConfigured as exc:
    sys.exit(str(exc))
"""


def on_starting(server):
    """In the master, before the workers fork (they inherit the filter). The settings are read here
    first: a value they refuse stops gunicorn with one line naming it, where each worker printed a
    traceback and "Worker failed to boot" (and systemd restarted it every 5 s)."""
    # In a child: the master itself keeps no settings, so a reload (SIGHUP) still reads them afresh.
    read = subprocess.run(  # noqa: S603 - this interpreter, a fixed program
        [sys.executable, "-c", _READ_SETTINGS],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env={"DJANGO_SETTINGS_MODULE": "bankproject.settings"} | dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
    )
    if read.returncode != 0:
        lines = read.stderr.strip().splitlines() or ["the settings could not be read"]
        server.log.error("refusing to start: %s", lines[-1])
        sys.exit(1)

    from bankproject.logging import RedactSecrets

    for name in ("gunicorn.error", "gunicorn.access"):
        logging.getLogger(name).addFilter(RedactSecrets())
