"""The API keeps the promises of its OpenAPI document: schemathesis generates requests from
/api/schema/ and checks every answer (no 5xx, documented status codes, bodies match the schema)."""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from users.models import User
from users.services import sessions
from users.tests.factories import with_totp

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_throttling", "keep_test_connection")]


@pytest.fixture
def keep_test_connection():
    """As Django's test client does: requests must not close the test's database connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Loaded at collection (pytest-django has configured Django by then); /api/schema/ needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture
def bearer() -> dict[str, str]:
    """A real access token of a verified banker with a second factor (so every endpoint is reachable:
    ``MFA_REQUIRED_ROLES`` keeps a banker without one out of most)."""
    user = User.objects.create_user(
        username="contract",
        email="contract@example.com",
        password="correct horse battery staple",
        full_name="Contract Test",
        is_email_verified=True,
        role=User.Role.BANKER,
    )
    with_totp(user)
    tokens = sessions.session_start(user=user, user_agent="schemathesis", client_ip="127.0.0.1")
    return {"Authorization": f"Bearer {tokens.access}"}


@schema.parametrize()
@settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=bool(os.environ.get("CI"))
)
def test_api_conforms_to_its_schema(case, bearer):
    # A well-formed request may still be refused: a code that is wrong, a username that is taken.
    case.call_and_validate(headers=bearer, excluded_checks=[positive_data_acceptance])


def test_schema_and_docs_are_served(client):
    document = client.get("/api/schema/?format=json").json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/users/",
        "/api/verify-email/",
        "/api/users/resend-verification/",
        "/api/tokens/",
        "/api/tokens/refresh/",
        "/api/tokens/logout/",
        "/api/users/me/",
        "/api/users/me/security-events/",
        "/api/users/{username}/",
        "/api/sessions/",
        "/api/sessions/{session_id}/",
        "/api/password-reset/",
        "/api/password-reset/confirm/",
        "/api/password-reset/challenge/",
        "/api/tokens/mfa/",
        "/api/mfa/",
        "/api/mfa/totp/setup/",
        "/api/mfa/totp/confirm/",
        "/api/mfa/totp/",
        "/api/mfa/recovery-codes/",
        "/api/mfa/challenge/",
        "/api/mfa/passkeys/begin/",
        "/api/mfa/passkeys/",
        "/api/mfa/passkeys/{passkey_id}/",
        "/api/tokens/passkey/begin/",
        "/api/tokens/passkey/",
    }
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    signup = document["paths"]["/api/users/"]["post"]["responses"]
    assert set(signup) == {"201", "400", "429"}
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    assert "unsafe-inline" not in docs["Content-Security-Policy"]


def test_error_and_answer_bodies_match_what_the_schema_promises(client):
    """The schema's 400 was ``{"field": [...]}`` — a generated client lost every real field name —
    and also stood for ``{detail, code}`` answers; fields every answer carries were optional (a
    client developer's review). Real answers are checked against the served schema's own types."""
    import jsonschema

    document = client.get("/api/schema/?format=json").json()

    def check(body: object, schema: dict) -> None:
        jsonschema.validate(body, {**schema, "components": document["components"]})

    def response_schema(path: str, method: str, status: str) -> dict:
        return document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]

    bad = response_schema("/api/users/", "post", "400")
    taken = client.post("/api/users/", {"username": "x", "email": "not an address"}, content_type="application/json")
    assert taken.status_code == 400 and "email" in taken.json()
    check(taken.json(), bad)
    garbled = client.post("/api/users/", '{"username":', content_type="application/json")
    assert garbled.status_code == 400 and garbled.json()["code"] == "parse_error"
    check(garbled.json(), bad)
    with pytest.raises(jsonschema.ValidationError):
        check({"username": "a string, not a list"}, bad)
    assert "field" not in document["components"]["schemas"]["FieldErrors"].get("properties", {})
    user = document["components"]["schemas"]["UserOutput"]
    assert set(user["required"]) == set(user["properties"])
    assert "code" in document["components"]["schemas"]["AuthError"]["required"]
