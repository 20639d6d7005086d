"""The OpenAPI schema's shared pieces: the error shape of every answer that is not about a field,
the ``429``, and the schema class that documents the ``429`` of every throttled operation."""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, inline_serializer
from rest_framework import serializers

# Every error that is not about a field (bankproject.api_errors adds the code to DRF's own).
ERROR = inline_serializer(
    "Error",
    {
        "detail": serializers.CharField(help_text="What went wrong, for a person."),
        "code": serializers.CharField(help_text="Which error, for a program: `throttled`, `not_found`…"),
    },
)
THROTTLED = OpenApiResponse(
    response=ERROR,
    description="Too many requests from this client (or for this address or user); see the Retry-After header.",
    examples=[
        OpenApiExample(
            "throttled",
            value={"detail": "Request was throttled. Expected available in 42 seconds.", "code": "throttled"},
        )
    ],
)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, and every operation of a throttled view documents its ``429`` (a view
    with throttles answers it whether or not its own declaration says so)."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction == "response" and getattr(self.view, "throttle_classes", None) and "429" not in responses:
            responses["429"] = self._get_response_for_code(THROTTLED, "429", direction=direction)
        return responses
