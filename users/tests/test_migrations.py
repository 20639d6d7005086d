"""The migrations that brought existing rows to the canonical forms and the delivery records."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("users", "0002_username_reservation")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_apps():
    apps = _migrate(BEFORE)
    yield apps
    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())  # back to the latest schema


def test_existing_rows_get_canonical_forms_and_their_emails_get_delivery_records(old_apps):
    User = old_apps.get_model("users", "User")
    Verification = old_apps.get_model("users", "EmailVerification")
    Reservation = old_apps.get_model("users", "UsernameReservation")
    now = "2026-11-30T12:00:00Z"
    alice = User.objects.create(username="Alice", email="alice@bücher.de", full_name="A", created_at=now)
    twin = User.objects.create(username="alice", email="al@example.com", full_name="B")  # legal before
    wide = User.objects.create(username="ｂｏｂ", email="bob@example.com", full_name="C")
    failed = Verification.objects.create(
        user=alice,
        email="alice@bücher.de",
        nonce="n1",
        state="failed",
        attempts=3,
        last_error="550 no",
        expires_at="2030-01-01T00:00:00Z",
        dispatched_at=now,
    )
    Verification.objects.create(
        user=twin,
        email="al@example.com",
        nonce="n2",
        state="verified",
        attempts=1,
        expires_at="2030-01-01T00:00:00Z",
        dispatched_at=now,
        sent_at=now,
        verified_at=now,
    )
    Reservation.objects.create(username="Probe")
    Reservation.objects.create(username="PROBE")

    apps = _migrate([("users", "0004_outbound_email")])
    User = apps.get_model("users", "User")
    rows = {u.pk: (u.username, u.username_canonical, u.email, u.email_canonical) for u in User.objects.all()}
    assert rows[alice.pk] == ("Alice", "alice", "alice@xn--bcher-kva.de", "alice@xn--bcher-kva.de")
    assert rows[twin.pk][:2] == (f"alice_{twin.pk}", f"alice_{twin.pk}")  # the later account of the two
    assert rows[wide.pk][:2] == ("bob", "bob")
    assert apps.get_model("users", "UsernameReservation").objects.count() == 1
    link = apps.get_model("users", "EmailVerification").objects.get(pk=failed.pk)
    assert (link.email, link.state) == ("alice@xn--bcher-kva.de", "active")  # it still works
    emails = {
        e.verification_id: (e.kind, e.state, e.attempts, e.last_error)
        for e in apps.get_model("users", "OutboundEmail").objects.all()
    }
    assert emails == {
        failed.pk: ("verification", "failed", 3, "550 no"),
        failed.pk + 1: ("verification", "sent", 1, ""),
    }


def test_current_passwords_the_lockout_kept_in_clear_are_masked():
    _migrate([("users", "0013_delivery_feedback")])
    try:
        from axes.models import AccessAttempt

        kept = "form=password\nold_password=my Real Password 1\nnew_password1=********************\nemail=new@x.com"
        row = AccessAttempt.objects.create(
            username="ada",
            ip_address="203.0.113.1",
            user_agent="t",
            path_info="/account/",
            post_data=kept,
            failures_since_start=1,
            get_data="",
            http_accept="",
        )
        _migrate([("users", "0018_mask_new_addresses_in_axes")])  # 0014 the password, 0018 the address
        row.refresh_from_db()
        assert "my Real Password 1" not in row.post_data and "new@x.com" not in row.post_data
        masked = ["form=password", "old_password=" + "*" * 20, "new_password1=" + "*" * 20, "email=" + "*" * 20]
        assert row.post_data.splitlines() == masked
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
