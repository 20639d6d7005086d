"""The statements a sign-up and an email cost, kept fixed: a new query on a hot path shows here."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tasks import send_verify_email
from users.models import EmailVerification, OutboundEmail, User
from users.services import delivery, emails
from users.tasks import send_email
from users.tests.factories import UserFactory, create_notice

pytestmark = pytest.mark.django_db(transaction=True)


def _statements(captured: CaptureQueriesContext) -> list[str]:
    """The kind of each statement; one with a WITH clause by its main verb (the claim's CTE, which
    locks the user first, is part of its UPDATE)."""
    return [_verb(query["sql"]) for query in captured.captured_queries]


def _verb(sql: str) -> str:
    if sql.upper().startswith("WITH "):
        return re.search(r"\)\s+(UPDATE|INSERT|DELETE|SELECT)\s", sql, re.IGNORECASE)[1].upper()
    return sql.split()[0].upper()


def test_an_api_signup_costs_six_statements(signup_data, stub_broker, no_throttling):
    with CaptureQueriesContext(connection) as captured:
        response = APIClient().post("/api/users/", signup_data(), format="json")
    assert response.status_code == 201
    # username free and address unknown (one statement on the two unique indexes), then the user,
    # its link and the link's email in one transaction
    assert _statements(captured) == ["(SELECT", "BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"], (
        captured.captured_queries
    )


def test_sending_one_verification_email_costs_two_statements(signup_data, stub_broker, no_throttling):
    assert APIClient().post("/api/users/", signup_data(), format="json").status_code == 201
    verification = EmailVerification.objects.get()
    with CaptureQueriesContext(connection) as captured:
        send_verify_email(verification.pk)  # the actor's body, as the worker runs it
    assert OutboundEmail.objects.get().state == "sent"
    # claim (conditional UPDATE returning the row, its user and its link), mark sent (fenced UPDATE)
    assert _statements(captured) == ["UPDATE", "UPDATE"], captured.captured_queries


def test_sending_a_notice_costs_two_statements_too(stub_broker):
    notice = create_notice()
    with CaptureQueriesContext(connection) as captured:
        send_email(notice.pk)
    assert OutboundEmail.objects.get(pk=notice.pk).state == "sent"
    assert _statements(captured) == ["UPDATE", "UPDATE"], captured.captured_queries


def test_a_security_notice_costs_one_more_read_its_event(stub_broker):
    from users.models import SecurityEvent
    from users.services import events

    user = UserFactory(is_email_verified=True)
    events.event_record(user=user, kind=SecurityEvent.Kind.PASSWORD_CHANGED, notify=True)
    notice = OutboundEmail.objects.get(kind="security_notice")
    with CaptureQueriesContext(connection) as captured:
        send_email(notice.pk)
    assert OutboundEmail.objects.get(pk=notice.pk).state == "sent"
    # claim, the event the notice tells of (what changed, when, from where), mark sent
    assert _statements(captured) == ["UPDATE", "SELECT", "UPDATE"], captured.captured_queries


def test_an_address_change_notice_costs_one_more_read_too_its_request(stub_broker):
    from users.services import accounts

    user = UserFactory(is_email_verified=True)
    accounts.email_change_request(user=user, new_email="elsewhere@example.org")
    notice = OutboundEmail.objects.get(kind="email_change_notice")
    with CaptureQueriesContext(connection) as captured:
        send_email(notice.pk)
    assert OutboundEmail.objects.get(pk=notice.pk).state == "sent"
    # claim, the request's event (the address it asked for, masked), mark sent
    assert _statements(captured) == ["UPDATE", "SELECT", "UPDATE"], captured.captured_queries


def test_without_update_returning_an_email_costs_one_more_read(signup_data, stub_broker, no_throttling, monkeypatch):
    monkeypatch.setattr(delivery, "update_returning_supported", lambda: False)  # e.g. SQLite
    assert APIClient().post("/api/users/", signup_data(), format="json").status_code == 201
    verification = EmailVerification.objects.get()
    with CaptureQueriesContext(connection) as captured:
        send_verify_email(verification.pk)
    assert OutboundEmail.objects.get().state == "sent"
    assert _statements(captured) == ["UPDATE", "SELECT", "UPDATE"], captured.captured_queries


def test_both_claims_load_the_same_row_user_and_link(signup_data, stub_broker, no_throttling, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    def claim(returning: bool) -> tuple[dict, dict, dict]:
        OutboundEmail.objects.update(state="pending")
        monkeypatch.setattr(delivery, "update_returning_supported", lambda: returning)
        now = timezone.now()
        claimed = delivery._claim_update({"verification_id": verification.pk}, now, now - timedelta(minutes=3))
        assert claimed is not None

        def fields(obj, model) -> dict:
            return {f.attname: getattr(obj, f.attname) for f in model._meta.concrete_fields}

        email = fields(claimed, OutboundEmail) | {"claimed_at": None, "attempts": None}
        # The user as the claim locked it; the database moves its verification_state on after.
        user = fields(claimed.user, User) | {"verification_state": None}
        return email, user, fields(claimed.verification, EmailVerification)

    assert APIClient().post("/api/users/", signup_data(), format="json").status_code == 201
    verification = EmailVerification.objects.get()
    assert claim(True) == claim(False)


def test_the_worker_boot_warm_up_touches_no_table_and_sends_nothing(mailoutbox):
    from django.conf import settings

    assert "users.worker_middleware.WarmUp" in settings.DRAMATIQ_BROKER["MIDDLEWARE"]
    with CaptureQueriesContext(connection) as captured:
        emails.warm_up()
    assert captured.captured_queries == [] and mailoutbox == []


@pytest.mark.usefixtures("no_throttling")
@pytest.mark.parametrize("password", ["the right pass phrase 1", "a wrong pass phrase"])
def test_a_log_in_by_address_looks_its_owner_up_once(password):
    """django-axes asks for the lockout name several times a log-in, and the proof lock once more:
    the address's owner is read once per request."""
    User.objects.create_user(
        username="ada",
        email="ada@example.com",
        password="the right pass phrase 1",
        full_name="A",
        is_email_verified=True,
    )
    with CaptureQueriesContext(connection) as captured:
        APIClient().post("/api/tokens/", {"username": "ADA@example.com", "password": password}, format="json")
    lookups = [
        q["sql"] for q in captured.captured_queries if q["sql"].startswith('SELECT "users_user"."username_canonical"')
    ]
    assert len(lookups) == 1, lookups
