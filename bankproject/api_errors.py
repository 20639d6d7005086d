"""One shape for every API error that is not about a field: ``{"detail": "…", "code": "…"}``.

DRF answers its own errors (throttled, not authenticated, not found, method not allowed, a body
it cannot parse…) with ``detail`` alone; the ``code`` a client branches on is added here from the
exception's own code (``throttled``, ``not_authenticated``, ``not_found``…). Field errors keep
their shape (``{"field": ["message"]}``)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler


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
