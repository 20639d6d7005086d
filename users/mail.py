"""Sending email over one SMTP connection per thread, kept open between messages.

Opening a connection (TCP, greeting, EHLO, then QUIT) costs more than sending a message to a
nearby relay, so each worker thread keeps its connection. Before a connection that sat idle is
used again, a NOOP checks that the server has not dropped it; after any error it is thrown away
(the next message opens a new one), and it is renewed after ``EMAIL_CONNECTION_MAX_MESSAGES``.
A send that fails is never repeated here: the caller decides (the actor retries).
"""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

_local = threading.local()


def _config() -> tuple[Any, ...]:
    # A connection is only reused while the settings it was opened with still hold.
    return (
        settings.EMAIL_BACKEND,
        settings.EMAIL_HOST,
        settings.EMAIL_PORT,
        settings.EMAIL_HOST_USER,
        settings.EMAIL_USE_TLS,
        settings.EMAIL_USE_SSL,
        settings.EMAIL_SSL_CAFILE,
        settings.EMAIL_SSL_CERTFILE,
        settings.EMAIL_SSL_KEYFILE,
    )


def send(message: EmailMessage) -> None:
    """Send one message on this thread's connection; raise what the backend raises."""
    backend = _backend()
    try:
        backend.send_messages([message])
    except BaseException:
        discard()
        raise
    _local.sent += 1
    _local.last_used = time.monotonic()


def _backend() -> Any:
    backend = getattr(_local, "backend", None)
    if backend is not None and _local.sent >= settings.EMAIL_CONNECTION_MAX_MESSAGES:
        close()
        backend = None
    if backend is not None and (
        _local.config != _config()
        or (time.monotonic() - _local.last_used >= settings.EMAIL_CONNECTION_IDLE_CHECK and not _alive(backend))
    ):
        discard()
        backend = None
    if backend is None:
        backend = get_connection(fail_silently=False)
        backend.open()  # raises on failure; the SMTP backend keeps the connection until close()
        _local.backend, _local.config, _local.sent, _local.last_used = backend, _config(), 0, time.monotonic()
    return backend


def _alive(backend: Any) -> bool:
    smtp = getattr(backend, "connection", None)
    if not isinstance(smtp, smtplib.SMTP):
        return True  # console, locmem, file backends: nothing to go stale
    try:
        return smtp.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def discard() -> None:
    """Drop this thread's connection without a word to the server (it may be what broke)."""
    backend: Any = getattr(_local, "backend", None)
    _local.backend = None
    smtp = getattr(backend, "connection", None)
    if isinstance(smtp, smtplib.SMTP):
        smtp.close()
        backend.connection = None


def close() -> None:
    """Say QUIT and close this thread's connection, if it has one (at thread shutdown, say)."""
    backend = getattr(_local, "backend", None)
    _local.backend = None
    if backend is not None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            backend.close()
