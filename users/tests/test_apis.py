"""The JSON API as a client sees it (DRF test client, PostgreSQL)."""

import json

import pytest
from rest_framework.test import APIClient

from users import tokens
from users.models import OutboundEmail, User
from users.tests.factories import create_verification

pytestmark = pytest.mark.django_db


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def test_signup_returns_201_with_public_fields_only(api, signup_data, django_capture_on_commit_callbacks):
    data = signup_data()
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post("/api/users/", data, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"username", "full_name", "email", "is_email_verified", "created_at"}
    assert body["username"] == data["username"] and body["is_email_verified"] is False
    assert data["password"] not in response.content.decode()
    assert "pbkdf2" not in response.content.decode() and "md5" not in response.content.decode()
    assert len(callbacks) == 1
    assert OutboundEmail.objects.filter(user__username=data["username"], kind="verification", state="pending").exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"username": ""}, "username"),
        ({"username": "no spaces allowed"}, "username"),
        ({"username": "x" * 151}, "username"),
        # The API's own routes under /api/users/<username>/: "me" could never be reached there.
        ({"username": "me"}, "username"),
        ({"username": "ME"}, "username"),
        ({"username": "ｍｅ"}, "username"),
        ({"username": "resend-verification"}, "username"),
        ({"full_name": ""}, "full_name"),
        ({"email": "not-an-email"}, "email"),
        ({"password": "short"}, "password"),
        ({"password": "password123"}, "password"),  # too common
        ({"password": "12345678901234"}, "password"),  # entirely numeric
        ({"password": "p" * 129}, "password"),
    ],
)
def test_invalid_values_get_field_errors(api, signup_data, overrides, field):
    response = api.post("/api/users/", signup_data(**overrides), format="json")
    assert response.status_code == 400
    errors = response.json()
    assert field in errors and isinstance(errors[field], list) and errors[field]
    assert not User.objects.exists()


def test_missing_fields_and_malformed_bodies_are_400(api):
    response = api.post("/api/users/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"username", "full_name", "email", "password"}
    assert api.post("/api/users/", "[1, 2]", content_type="application/json").status_code == 400
    assert api.post("/api/users/", "{not json", content_type="application/json").status_code == 400


def test_existing_email_is_answered_like_a_new_signup(api, signup_data):
    first = api.post("/api/users/", signup_data(email="Erin@example.com"), format="json")
    again = api.post("/api/users/", signup_data(email="erin@EXAMPLE.com", full_name="Not Erin"), format="json")
    assert first.status_code == again.status_code == 201
    assert set(first.json()) == set(again.json())
    assert again.json()["is_email_verified"] is False
    assert User.objects.count() == 1


def test_taken_username_is_400(api, signup_data):
    assert api.post("/api/users/", signup_data(username="carol"), format="json").status_code == 201
    response = api.post("/api/users/", signup_data(username="carol"), format="json")
    assert response.status_code == 400
    assert response.json() == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1


def test_verify_api_accepts_the_code_once_and_answers_all_bad_codes_alike(api):
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    ok = api.post("/api/verify-email/", {"email_id": verification.pk, "secret_code": code}, format="json")
    assert ok.status_code == 200 and ok.json() == {"is_verified": True}
    assert User.objects.get(pk=verification.user_id).is_email_verified

    other = create_verification()
    answers = [
        api.post("/api/verify-email/", payload, format="json")
        for payload in (
            {"email_id": verification.pk, "secret_code": code},  # used
            {"email_id": other.pk, "secret_code": code},  # another user's
            {"email_id": other.pk, "secret_code": "A" * 43},  # wrong
            {"email_id": 999_999_999, "secret_code": code},  # unknown
        )
    ]
    assert {r.status_code for r in answers} == {400}
    assert len({r.content for r in answers}) == 1


def test_verify_api_rejects_malformed_input_with_field_errors(api):
    response = api.post("/api/verify-email/", {"email_id": "abc"}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"email_id", "secret_code"}


def test_an_account_that_has_a_reserved_username_keeps_it_and_the_admin_still_saves_it():
    """Reserved names are refused for new accounts only: one made before keeps its name, and staff
    can still change or deactivate it."""
    user = User.objects.create(username="me", email="me@example.com", full_name="Me Too")
    user.is_active = False
    user.full_clean(exclude=["password"])
    user.save()
    assert User.objects.get(pk=user.pk).username == "me"


@pytest.mark.django_db
def test_what_never_reaches_a_view_still_answers_json_under_api(client):
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE and a route that does not exist: the API's JSON shape
    (a review got Django's HTML page and an ERROR traceback for a 3 MB passkey answer)."""
    huge = json.dumps({"passkey_token": "x", "credential": {"rawId": "A" * 3_000_000}})
    for path in ("/api/tokens/passkey/", "/api/tokens/"):
        answer = client.post(path, huge, content_type="application/json")
        assert answer.status_code == 413 and answer.json()["code"] == "request_too_large", path
        assert "no-store" in answer["Cache-Control"]
    missing = client.get("/api/no-such-route/")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found.", "code": "not_found"}
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_a_body_too_large_is_a_413_while_debugging_too(client, settings):
    """make run debugs: Django's error handlers are skipped then, and a review got its HTML 400."""
    settings.DEBUG = True
    huge = json.dumps({"username": "ada", "password": "A" * 3_000_000})
    answer = client.post("/api/tokens/", huge, content_type="application/json")
    assert answer.status_code == 413 and answer.json()["code"] == "request_too_large"
