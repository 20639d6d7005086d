"""Every look-up of an account by its address or username has an index behind it (PostgreSQL's
plans, with sequential scans priced out so that only a missing index can produce one)."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from users.tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_throttling")]

TABLES = ("users_user", "users_outboundemail", "users_usernamereservation", "users_emailverification")


def _scans(plan: dict) -> list[tuple[str, str]]:
    found = [(plan["Node Type"], plan.get("Relation Name", ""))]
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


def _sequential_scans(captured: CaptureQueriesContext) -> list[tuple[str, str]]:
    bad = []
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for query in captured.captured_queries:
            sql = query["sql"]
            if not sql.lstrip("(").upper().startswith(("SELECT", "UPDATE")) or not any(t in sql for t in TABLES):
                continue
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
            [[document]] = cursor.fetchall()
            plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
            bad += [(node, table, sql[:120]) for node, table in _scans(plan) if node == "Seq Scan" and table in TABLES]
    return bad


@pytest.fixture
def accounts():
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    UserFactory(username="newbie", email="newbie@example.com")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (
            "/api/users/",
            {"username": "fresh", "full_name": "F", "email": "fresh@example.com", "password": "correct horse 1"},
        ),
        (
            "/api/users/",
            {"username": "again", "full_name": "A", "email": "ADA@example.com", "password": "correct horse 1"},
        ),
        ("/api/users/resend-verification/", {"email": "Newbie@example.com"}),
        ("/api/password-reset/", {"email": "ada@EXAMPLE.com"}),
        ("/api/tokens/", {"username": "Ada@example.com", "password": "correct horse battery staple"}),
        ("/api/tokens/", {"username": "ADA", "password": "correct horse battery staple"}),
    ],
    ids=["sign-up", "sign-up-taken-address", "resend", "reset", "log-in-by-address", "log-in-by-username"],
)
def test_lookups_by_address_or_username_use_an_index(accounts, url, body):
    with CaptureQueriesContext(connection) as captured:
        response = APIClient().post(url, body, format="json")
    assert response.status_code < 300, response.content
    assert _sequential_scans(captured) == []


def test_the_check_catches_a_lookup_without_an_index(accounts):
    """The control: what the look-ups used to be (UPPER(email) = UPPER(…)) has no index."""
    from users.models import User

    with CaptureQueriesContext(connection) as captured:
        assert User.objects.filter(email__iexact="ADA@example.com").exists()
    assert [node for node, table, _ in _sequential_scans(captured)] == ["Seq Scan"]


def test_the_purge_finds_the_notices_of_the_events_it_deletes_by_an_index(accounts, settings):
    """Deleting a security event sets the notices that told of it to no event: that UPDATE read
    every email there is, once per batch of the hourly purge (a retention review)."""
    from datetime import timedelta

    from django.utils import timezone

    from users.models import SecurityEvent
    from users.services import retention

    SecurityEvent.objects.create(user=None, kind="login_failed", actor="system")  # append-only: aged by `now`
    later = timezone.now() + timedelta(seconds=settings.ANONYMOUS_EVENT_MAX_AGE + 60)
    with CaptureQueriesContext(connection) as captured:
        assert retention.history_purge(now=later)["anonymous_events"] == 1
    assert any("users_outboundemail" in query["sql"] for query in captured.captured_queries)
    assert _sequential_scans(captured) == []
