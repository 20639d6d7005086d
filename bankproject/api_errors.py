"""One shape for every API error that is not about a field: ``{"detail": "…", "code": "…"}``.

DRF answers its own errors (throttled, not authenticated, not found, method not allowed, a body
it cannot parse…) with ``detail`` alone; the ``code`` a client branches on is added here from the
exception's own code (``throttled``, ``not_authenticated``, ``not_found``…). Field errors keep
their shape (``{"field": ["message"]}``).

What never reaches a DRF view — a route that does not exist, a body over
``DATA_UPLOAD_MAX_MEMORY_SIZE``, a ``Host`` not allowed, a crash — is answered by Django's error
handlers: under ``/api/`` in the same JSON shape (``bad_request``, ``not_found``, ``server_error``),
elsewhere with Django's pages."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from bankproject.middleware import database_unavailable


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if (
        response is not None
        and isinstance(exc, APIException)
        and not isinstance(exc, ValidationError)
        and isinstance(response.data, dict)
        and "detail" in response.data
        and "code" not in response.data
    ):
        code = exc.get_codes()
        if isinstance(code, str):
            response.data["code"] = code
    return response


def _api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return _too_large()
    return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _api(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    # Called while Django handles the exception: one from a middleware may be a database outage.
    if (unavailable := database_unavailable(request, sys.exc_info()[1])) is not None:
        return unavailable
    if not _api(request):
        return defaults.server_error(request)
    return JsonResponse({"detail": "A server error occurred.", "code": "server_error"}, status=500)


def _too_large() -> JsonResponse:
    return JsonResponse({"detail": "The request body is too large.", "code": "request_too_large"}, status=413)


class ApiHttpsOnly:
    """Behind TLS (``DJANGO_HTTPS``), a request to ``/api/`` over plain HTTP is a ``403``, not the
    pages' redirect: its password or bearer token has crossed the network in clear already, and a
    client that follows a redirect would never learn it (ASVS 4.1.2). Before ``SecurityMiddleware``
    (whose redirect it replaces for the API)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.SECURE_SSL_REDIRECT and _api(request) and not request.is_secure():
            return JsonResponse(
                {"detail": "The API answers over HTTPS only: use an https:// address.", "code": "https_required"},
                status=403,
            )
        return self.get_response(request)


class ApiBodyLimit:
    """A body under ``/api/`` whose ``Content-Length`` is over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a
    413 before anything reads it, in every mode (Django's error handlers, ``bad_request`` included,
    are skipped while ``DEBUG`` is on) and without the ERROR traceback Django logs for one. (A body
    sent without a length, chunked, is read as empty under WSGI: nothing to stop.) After
    ``SecurityMiddleware``, so the answer carries its headers too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and _api(request):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                return _too_large()
        return self.get_response(request)
