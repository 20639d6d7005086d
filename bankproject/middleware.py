"""Answers for requests the framework below would turn into a 500."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable
from typing import Any

import django.middleware.common
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.utils.http import parse_header_parameters

logger = logging.getLogger(__name__)

# How long a client should wait before retrying while the database is unreachable.
DATABASE_RETRY_AFTER_S = 5


UNSUPPORTED_CHARSET_JSON = (
    b'{"detail": "The charset of this request is not a text encoding.", "code": "unsupported_charset"}'
)


_STATIC_POLICIES = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
]


def reject_undecodable_charsets(app: Callable) -> Callable:
    """WSGI middleware: ``400`` for a request whose ``charset`` is not a text encoding.

    ``Content-Type: …; charset=rot13`` on any request with a query string made Django's request
    object raise ``LookupError`` while it was being built — before any Django middleware runs —
    so the server answered 500. This wraps the WSGI application (``bankproject/wsgi.py``).
    """

    def application(environ: dict, start_response: Callable) -> Any:
        _, params = parse_header_parameters(environ.get("CONTENT_TYPE", ""))
        charset = params.get("charset")
        if charset and not _is_text_encoding(charset):
            if str(environ.get("PATH_INFO", "")).startswith("/api/"):  # the API's one error shape
                body, kind = UNSUPPORTED_CHARSET_JSON, "application/json"
            else:
                body, kind = b"Bad request: unsupported charset\n", "text/plain; charset=utf-8"
            # Answered before any Django middleware: the headers they give every other answer.
            start_response(
                "400 Bad Request", [("Content-Type", kind), ("Content-Length", str(len(body))), *_STATIC_POLICIES]
            )
            return [body]
        return app(environ, start_response)

    return application


def _is_text_encoding(name: str) -> bool:
    try:
        return bool(codecs.lookup(name)._is_text_encoding)
    except LookupError:
        return True  # Django ignores charsets it does not know and uses the default


class DatabaseUnavailable:
    """``503`` with ``Retry-After`` instead of a ``500`` while PostgreSQL can't be reached: nothing
    was written, and the client may simply try again."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return database_unavailable(request, exception)


def database_unavailable(request: HttpRequest, exception: BaseException | None) -> HttpResponse | None:
    """The ``503`` for an exception that is a database outage, or None. Views' exceptions come here
    through ``DatabaseUnavailable``; a middleware's (a logged-in browser's session is read before
    any view) through the ``500`` handler, ``bankproject.api_errors.server_error``."""
    if not isinstance(exception, OperationalError | InterfaceError) or not _is_outage(exception):
        return None
    cause = exception.__cause__ or exception  # which: a lost connection, a lock or a statement timeout
    first_line = (str(cause).strip().splitlines() or [""])[0][:200]
    logger.error(
        "database unavailable; answered 503",
        extra={"path": request.path, "error": f"{type(cause).__name__}: {first_line}"},
    )
    detail = "The service is briefly unavailable. Please try again in a few seconds."
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": detail}, status=503)
    else:
        response = HttpResponse(detail + "\n", status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


class AdminBadInput:
    """A staff member's malformed filter in the admin (a NUL, an address that is no IP) is a ``400``,
    not a ``500``: Django's admin hands filter values to the database as they come, and the query
    fails only when the list page renders. Only pages read (GET): a write that fails is a bug, a
    ``500``; a malformed selection for an action is refused before it runs (users.admin)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if (
            request.method not in ("GET", "HEAD")
            or not request.path.startswith("/admin/")
            or not isinstance(exception, ValueError | DjangoValidationError | DataError)
        ):
            return None
        logger.warning(
            "admin: malformed input answered 400",
            extra={"path": request.path, "method": request.method, "error": type(exception).__name__},
        )
        return HttpResponseBadRequest(
            "That filter or selection is not valid.\n", content_type="text/plain; charset=utf-8"
        )


def _is_outage(exception: BaseException) -> bool:
    """A lost or refused connection, or a statement that timed out — not a query the database
    refused (those are bugs, and stay 500s)."""
    cause = exception.__cause__
    if type(cause).__module__ == "sqlite3":  # no server to lose: "no such table" is a bug, "locked" is busy
        return "database is locked" in str(cause)
    # psycopg's OperationalError covers refused connections, restarts and timeouts; a bad query
    # is a ProgrammingError or DataError, never an OperationalError.
    # A statement or lock timeout (the web's, gunicorn.conf.py) is one too: the table is busy.
    return cause is None or type(cause).__name__ in _OUTAGES


_OUTAGES = {"OperationalError", "InterfaceError", "QueryCanceled", "LockNotAvailable"}


class CommonMiddleware(django.middleware.common.CommonMiddleware):
    """Django's, but a body sent to an ``/api/`` path without its final slash is a ``404`` (JSON),
    not a redirect: a client that follows a ``301`` re-sends a POST or PATCH as a GET, its body
    lost (and with ``DEBUG`` on Django answers such a request with a ``500``). A fuzz review."""

    def should_redirect_with_slash(self, request: HttpRequest) -> bool:
        if request.path_info.startswith("/api/") and request.method not in ("GET", "HEAD"):
            return False
        return super().should_redirect_with_slash(request)
