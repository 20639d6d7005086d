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
`DJANGO_SETTINGS_MODULE=bankproject.settings_test .venv/bin/python manage.py api_reference --write`
(the test settings, which the test that fails when this page is stale uses too). The pages
(`/signup/`, `/login/`, `/account/`, `/account/security/`…) are on [API](api.md) and
[Accounts](accounts.md); the mail providers' webhooks on [Delivery feedback](delivery-feedback.md).

Errors share two shapes: field errors, a list under each wrong field's name
(`{"email": ["Enter a valid email address."]}`; `non_field_errors` for a body that is not a JSON
object), and anything else `{"detail": "…", "code": "…"}`: `detail` is for people and may change,
`code` is for programs. Tell them apart by `detail`, not `code`: the second factor's field is named
`code` too, so `{"code": ["…"]}` is a field error. Fields a route does not take are ignored, but
`PATCH /api/users/me/` refuses them (its answer would say they were changed). Every `code` an
answer can carry:
"""
FOOTER = """A database outage answers `503` with `Retry-After` and `{"detail": "…"}` alone (no `code`).

A session — its access and refresh tokens — also ends after `SESSION_IDLE_TIMEOUT` (900 s by
default) without a request: `refresh_expires_at` is the latest it can last, not a promise. An app
that sleeps longer than that logs in again; its refresh then answers `401` `token_not_valid`.

`methods`, in the `mfa_required` answer, lists the proofs the account can give at the second
step: `totp` (a code from an authenticator app, as `code`), `passkey` (an assertion answering
`passkey_options`, as `credential`) and `recovery_code` (an unused recovery code, as `code`; listed
only beside another factor and while codes are left).
"""
# Every `code` an error's body can carry: (code, status, meaning).
ERROR_CODES = [
    (
        "invalid_credentials",
        "401",
        "`POST /api/tokens/`: no account matches that username or address and password (one answer for "
        "both); `POST /api/tokens/passkey/`: the passkey is unknown, or its answer is wrong, used or late",
    ),
    (
        "email_not_verified",
        "403",
        "the password (or passkey) is right, but the account's address is not verified yet",
    ),
    (
        "mfa_required",
        "401",
        "`POST /api/tokens/`: the password is right and the account has a second factor. The body also "
        "has `mfa_token` (single use, 5 minutes), `methods` (below) and, when the account has a passkey, "
        "`passkey_options`; go on with `POST /api/tokens/mfa/`",
    ),
    (
        "invalid_second_factor",
        "401",
        "`POST /api/tokens/mfa/`: the code or the passkey's answer is wrong, replayed or used, or the "
        "`mfa_token` is unknown, used, expired or dead (after 5 wrong proofs): log in again",
    ),
    (
        "locked_out",
        "429",
        "too many failed log-ins of this account from this client address (`LOGIN_LOCKOUT_FAILURES` "
        "within `LOGIN_LOCKOUT_MINUTES`): every log-in step, and every request that checks the current "
        "password or a second factor, is refused until `Retry-After` (seconds) has passed, the right "
        "password included",
    ),
    (
        "throttled",
        "429",
        "too many requests from this client (or for this address or user), or another attempt of this account "
        "from this client is being checked right now (`Retry-After: 1`); `Retry-After` says when to try again",
    ),
    (
        "not_authenticated",
        "401",
        "no `Authorization: Bearer <access token>` on a route that needs one",
    ),
    (
        "bad_authorization_header",
        "401",
        "an `Authorization: Bearer` header that is not exactly two values",
    ),
    (
        "token_not_valid",
        "401",
        "an access token that is malformed, expired or not an access token (the body also has "
        "`messages`), or a refresh token that is invalid, expired, spent or unknown (`POST "
        "/api/tokens/refresh/`, `POST /api/tokens/logout/`)",
    ),
    (
        "session_ended",
        "401",
        "the access token is sound but its session has ended (logged out, revoked, blocked by staff, "
        "expired, or the user deactivated): log in again",
    ),
    (
        "mfa_enrollment_required",
        "403",
        "the user's role must have a second factor (`MFA_REQUIRED_ROLES`) and they have none yet: set one "
        "up (`/api/mfa/…`) first",
    ),
    (
        "mfa_state",
        "400",
        "the second factors' state refuses the change (an authenticator app already on, nothing to turn "
        "off, no set-up waiting, the set-up expired)",
    ),
    (
        "permission_denied",
        "403",
        "the caller may not do this (`PATCH /api/users/<username>/`: not a banker, or a target that is "
        "not a depositor)",
    ),
    (
        "not_found",
        "404",
        "no such session, passkey or user (of yours, or one a banker may see), or no such route under `/api/` "
        "(while `DJANGO_DEBUG` is true, Django's debug page instead)",
    ),
    (
        "invalid_link",
        "400",
        "a verification link (`POST /api/verify-email/`) or password reset link (`POST "
        "/api/password-reset/confirm/`, `POST /api/password-reset/challenge/`) that is wrong, used, "
        "expired or replaced: one answer for all",
    ),
    (
        "method_not_allowed",
        "405",
        "the route has no such method",
    ),
    (
        "parse_error",
        "400",
        "the body is not JSON the service accepts (malformed, nested too deeply, a lone surrogate)",
    ),
    (
        "unsupported_charset",
        "400",
        "the `Content-Type`'s `charset` is not a text encoding (`base64`, `hex`…); an unknown charset is read as UTF-8",
    ),
    (
        "unsupported_media_type",
        "415",
        "the body is not `application/json`",
    ),
    (
        "request_too_large",
        "413",
        "the body is over `DATA_UPLOAD_MAX_MEMORY_SIZE` (Django's 2.5 MB)",
    ),
    (
        "bad_request",
        "400",
        "a request refused before any route saw it (a `Host` the service does not answer to; while "
        "`DJANGO_DEBUG` is true, Django's debug page instead)",
    ),
    (
        "server_error",
        "500",
        "the service failed; the request id (`X-Request-ID`) finds it in the logs (while `DJANGO_DEBUG` is "
        "true, Django's debug page instead)",
    ),
]


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
    lines = [HEADER, "| `code` | status | meaning |", "|---|---|---|"]
    lines += [f"| `{code}` | `{status}` | {meaning} |" for code, status, meaning in ERROR_CODES]
    lines += ["", FOOTER]
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
                raise CommandError(
                    "docs/api-reference.md is stale: run "
                    "DJANGO_SETTINGS_MODULE=bankproject.settings_test .venv/bin/python manage.py api_reference --write"
                )
            return
        if options["write"]:
            PAGE.write_text(page)
            self.stdout.write(f"wrote {PAGE}")
        else:
            self.stdout.write(page)
