"""One id per sign-up request, carried into the worker's log lines for the same email.

The web side takes a well-formed ``X-Request-ID`` from the client or the proxy (or makes one),
answers with it, puts it on every log line of the request and on the Dramatiq messages the
request queues (message option ``request_id``). The worker middleware puts it back in place while
the message is processed, so ``grep <id>`` follows a user from request to inbox.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

import dramatiq
from django.http import HttpRequest, HttpResponse
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

_current: ContextVar[str | None] = ContextVar("request_id", default=None)
_WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,64}")
HEADER = "X-Request-ID"


def current() -> str | None:
    return _current.get()


class RequestIdMiddleware:
    """Django middleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if _WELL_FORMED.fullmatch(incoming) else uuid.uuid4().hex
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response


class DramatiqRequestIdMiddleware(Middleware):
    """Dramatiq middleware: the message's ``request_id`` option is current while it is processed."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        _current.set(message.options.get("request_id"))

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        _current.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        _current.set(None)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record made while one is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _current.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True
