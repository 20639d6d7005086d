"""The OpenAPI schema's shared pieces: the error shape of every answer that is not about a field,
the ``429``, the schema class that documents the ``429`` of every throttled operation, and the
hook that says what drf-spectacular cannot (field errors keyed by field name; answers whose every
field is always present)."""

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


FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "description": 'One entry per wrong field, named by the field: `{"<field>": ["<message>", ...]}`; '
    "`non_field_errors` for a body that is not a JSON object. (A second-factor field is also named "
    "`code`: an error body is a field error unless it has a string `detail`.)",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``: a 400 is field errors or an ``Error``
    (``parse_error`` for a body that is not JSON, ``mfa_state``, ``invalid_link``…), and every field
    of an answer (``…Output``) is present in it, null where the schema says nullable."""
    schemas = result["components"]["schemas"]
    schemas["FieldErrors"] = FIELD_ERRORS_SCHEMA
    for name, schema in schemas.items():
        if name.endswith("Output") and "properties" in schema:
            schema["required"] = sorted(schema["properties"])
    field_errors = {"$ref": "#/components/schemas/FieldErrors"}
    for operations in result["paths"].values():
        for operation in operations.values():
            body = operation.get("responses", {}).get("400", {}).get("content", {}).get("application/json")
            if body and body.get("schema") == field_errors:
                body["schema"] = {"oneOf": [field_errors, {"$ref": "#/components/schemas/Error"}]}
    return result
