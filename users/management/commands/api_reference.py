"""``manage.py api_reference``: the API reference page (``docs/api-reference.md``) written from the
OpenAPI schema drf-spectacular serves at ``/api/schema/`` — one source of truth for routes,
requests, answers and errors. ``--check`` fails when the page is stale (a test runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from drf_spectacular.generators import SchemaGenerator

PAGE = Path(settings.BASE_DIR) / "docs" / "api-reference.md"
METHODS = ("get", "post", "put", "patch", "delete")
HEADER = """# API reference

Every route of the JSON API, generated from the OpenAPI schema the service serves at
`/api/schema/` (Swagger UI at `/api/docs/` when `API_DOCS=true`) by
`python manage.py api_reference --write`; a test fails when this page is stale. The pages
(`/signup/`, `/login/`, `/account/`, `/account/security/`…) are on [API](api.md) and
[Accounts](accounts.md); the mail providers' webhooks on [Delivery feedback](delivery-feedback.md).

Errors share two shapes: a field error is a list under the field's name
(`{"email": ["Enter a valid email address."]}`), anything else `{"detail": "…", "code": "…"}`
where the `code` says which (`mfa_required`, `mfa_enrollment_required`, `throttled`…).
"""


def _ref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _fields(schema: dict[str, Any], body: dict[str, Any] | None) -> list[str]:
    if not body:
        return []
    content = body.get("content", {})
    media: dict[str, Any] = content.get("application/json") or next(iter(content.values()), {})
    node = _ref(schema, media.get("schema", {}))
    required = set(node.get("required", []))
    rows = []
    for name, prop in node.get("properties", {}).items():
        prop = _ref(schema, prop) if "$ref" in prop else prop
        if prop.get("readOnly"):
            continue
        kind = prop.get("type") or ("object" if "properties" in prop else "")
        if kind == "array":
            kind = f"list of {prop.get('items', {}).get('type', 'object')}"
        flag = "required" if name in required else "optional"
        rows.append(f"| `{name}` | {kind} | {flag} | {_cell(prop.get('description', ''))} |")
    return rows


def _answer_fields(schema: dict[str, Any], answer: dict[str, Any]) -> str:
    media = answer.get("content", {}).get("application/json")
    if not media:
        return ""
    node = _ref(schema, media.get("schema", {}))
    if node.get("type") == "array":
        node = _ref(schema, node.get("items", {}))
        prefix = "a list of: "
    else:
        prefix = ""
    names = list(node.get("properties", {}))
    return (prefix + ", ".join(f"`{n}`" for n in names)) if names else ""


def render() -> str:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    lines = [HEADER]
    for path in sorted(schema["paths"]):
        for method in METHODS:
            operation = schema["paths"][path].get(method)
            if operation is None:
                continue
            auth = (
                "Bearer access token"
                if operation.get("security") and any("bearerAuth" in s for s in operation["security"])
                else "none"
            )
            lines.append(f"## `{method.upper()} {path.replace('{', '<').replace('}', '>')}`\n")
            if operation.get("summary"):
                lines.append(f"**{_cell(operation['summary'])}.** Authentication: {auth}.\n")
            if operation.get("description"):
                lines.append(operation["description"].strip() + "\n")
            fields = _fields(schema, operation.get("requestBody"))
            if fields:
                lines += ["| field | type | | meaning |", "|---|---|---|---|", *fields, ""]
            lines += ["| answer | meaning | body |", "|---|---|---|"]
            for status, answer in sorted(operation.get("responses", {}).items()):
                body = _answer_fields(schema, answer)
                meaning = _cell(answer.get("description", "")) or ("success" if status.startswith("2") else "")
                lines.append(f"| `{status}` | {meaning} | {body} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


class Command(BaseCommand):
    help = "Write docs/api-reference.md from the OpenAPI schema (--check: fail if it is stale)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--write", action="store_true", help="write the page")
        parser.add_argument("--check", action="store_true", help="exit non-zero if the page is stale")

    def handle(self, *args: Any, **options: Any) -> None:
        page = render()
        if options["check"]:
            if not PAGE.exists() or PAGE.read_text() != page:
                raise CommandError("docs/api-reference.md is stale: run python manage.py api_reference --write")
            return
        if options["write"]:
            PAGE.write_text(page)
            self.stdout.write(f"wrote {PAGE}")
        else:
            self.stdout.write(page)
