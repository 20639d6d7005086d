"""The statements a sign-up and an email cost, kept fixed: a new query on a hot path shows here."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tasks.tasks import send_verify_email
from users import services
from users.models import EmailVerification, User

pytestmark = pytest.mark.django_db(transaction=True)


def _statements(captured: CaptureQueriesContext) -> list[str]:
    return [query["sql"].split()[0].upper() for query in captured.captured_queries]


def test_an_api_signup_costs_six_statements(signup_data, stub_broker, no_throttling):
    with CaptureQueriesContext(connection) as captured:
        response = APIClient().post("/api/users/", signup_data(), format="json")
    assert response.status_code == 201
    # username free? address known? then the user and its verification in one transaction
    assert _statements(captured) == ["(SELECT", "SELECT", "BEGIN", "INSERT", "INSERT", "COMMIT"], (
        captured.captured_queries
    )


def test_sending_one_verification_email_costs_three_statements(signup_data, stub_broker, no_throttling):
    assert APIClient().post("/api/users/", signup_data(), format="json").status_code == 201
    verification = EmailVerification.objects.get()
    with CaptureQueriesContext(connection) as captured:
        send_verify_email(verification.pk)  # the actor's body, as the worker runs it
    assert EmailVerification.objects.get().state == "sent"
    # claim (conditional UPDATE returning the row and its user), mark sent (fenced UPDATE)
    assert _statements(captured) == ["UPDATE", "UPDATE"], captured.captured_queries


def test_without_update_returning_an_email_costs_one_more_read(signup_data, stub_broker, no_throttling, monkeypatch):
    monkeypatch.setattr(services, "_update_returning_supported", lambda: False)  # e.g. SQLite
    assert APIClient().post("/api/users/", signup_data(), format="json").status_code == 201
    verification = EmailVerification.objects.get()
    with CaptureQueriesContext(connection) as captured:
        send_verify_email(verification.pk)
    assert EmailVerification.objects.get().state == "sent"
    assert _statements(captured) == ["UPDATE", "SELECT", "UPDATE"], captured.captured_queries


def test_both_claims_load_the_same_row_and_user(signup_data, stub_broker, no_throttling, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    def claim(returning: bool) -> tuple[dict, dict]:
        EmailVerification.objects.update(state="pending")
        monkeypatch.setattr(services, "_update_returning_supported", lambda: returning)
        now = timezone.now()
        claimed = services._claim_update(verification.pk, now, now - timedelta(minutes=3))
        assert claimed is not None
        fields = {f.attname: getattr(claimed, f.attname) for f in EmailVerification._meta.concrete_fields}
        user = {f.attname: getattr(claimed.user, f.attname) for f in User._meta.concrete_fields}
        return fields | {"claimed_at": None, "attempts": None}, user

    assert APIClient().post("/api/users/", signup_data(), format="json").status_code == 201
    verification = EmailVerification.objects.get()
    assert claim(True) == claim(False)


def test_the_worker_boot_warm_up_touches_no_table_and_sends_nothing(mailoutbox):
    from django.conf import settings

    from users import services

    assert "tasks.middleware.WarmUp" in settings.DRAMATIQ_BROKER["MIDDLEWARE"]
    with CaptureQueriesContext(connection) as captured:
        services.emails_warm_up()
    assert captured.captured_queries == [] and mailoutbox == []
