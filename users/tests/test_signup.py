"""Sign-up and asking for a new link (PostgreSQL; StubBroker or Django's locmem outbox)."""

from datetime import timedelta

import dramatiq
import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from users import dispatch
from users.models import AddressRequest, EmailVerification, OutboundEmail, User
from users.services import signup
from users.tests.factories import create_verification, email_of, process_address_requests

pytestmark = pytest.mark.django_db


def _signup(**overrides):
    data = {
        "username": "alice",
        "full_name": "Alice Example",
        "email": "Alice@Example.COM",
        "password": "correct horse battery staple",
    }
    data.update(overrides)
    return signup.user_create(**data)


def test_user_create_saves_user_and_pending_verification(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        user = _signup()
    assert user.pk and user.full_name == "Alice Example"
    assert user.email == "Alice@example.com"  # domain normalised, local part kept
    assert user.check_password("correct horse battery staple")
    assert "correct horse" not in user.password
    assert user.password_changed_at is not None and not user.is_email_verified
    verification = user.email_verifications.get()
    assert verification.state == EmailVerification.State.ACTIVE and verification.email == user.email
    email = email_of(verification)
    assert email.state == OutboundEmail.State.PENDING and email.kind == "verification"
    assert email.recipient == user.email
    expected = timedelta(days=1)
    assert abs((verification.expires_at - verification.created_at) - expected) < timedelta(seconds=1)
    assert len(callbacks) == 1  # the email is queued only once the transaction commits


def test_commit_enqueues_only_the_verification_id(stub_broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        user = _signup()
    [message] = stub_broker.queues["critical"].queue
    decoded = dramatiq.Message.decode(message)
    assert decoded.actor_name == "send_verify_email"
    assert decoded.args == (user.email_verifications.get().pk,)
    assert decoded.kwargs == {}


def test_rollback_sends_nothing(stub_broker, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        _signup()
        raise RuntimeError("something after the sign-up failed")
    assert callbacks == []
    assert stub_broker.queues.get("critical") is None or stub_broker.queues["critical"].qsize() == 0
    assert not User.objects.exists() and not EmailVerification.objects.exists() and not OutboundEmail.objects.exists()


def test_taken_username_is_a_field_error_and_writes_nothing():
    _signup()
    with pytest.raises(ValidationError) as excinfo:
        _signup(email="someone-else@example.com")
    assert excinfo.value.message_dict == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1 and EmailVerification.objects.count() == 1


@pytest.mark.parametrize("spelling", ["ALICE", "Alice", "ａｌｉｃｅ"])
def test_a_username_is_taken_in_every_case_and_compatibility_form(spelling):
    _signup(username="alice")
    with pytest.raises(ValidationError) as excinfo:
        _signup(username=spelling, email="other@example.com")
    assert "username" in excinfo.value.message_dict
    assert User.objects.count() == 1


def test_existing_email_creates_nothing_and_queues_the_notice(django_capture_on_commit_callbacks):
    first = _signup()
    with django_capture_on_commit_callbacks() as callbacks:
        stand_in = _signup(username="bob", email="ALICE@example.com", full_name="Bob")
    assert stand_in.pk is None and stand_in.username == "bob" and stand_in.email == "ALICE@example.com"
    assert not stand_in.is_email_verified and stand_in.created_at
    assert User.objects.count() == 1 and EmailVerification.objects.count() == 1
    [notice] = OutboundEmail.objects.filter(kind="account_exists")
    assert notice.user_id == first.pk and notice.recipient == first.email
    [callback] = callbacks
    assert callback.func is dispatch.enqueue and callback.args == (dispatch.SEND_EMAIL, notice.pk)
    with django_capture_on_commit_callbacks() as again:
        _signup(username="carol", email="alice@example.com")
    assert again == []  # one email to an address per cooldown: its rows say so
    assert OutboundEmail.objects.filter(kind="account_exists").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_sign_up_with_a_registered_address_is_written_whole_or_not_at_all(monkeypatch):
    """The username's reservation committed on its own, then the database went away before the
    owner's notice: the client was answered 503 ("try again"), and trying again answered 400 (the
    username taken) — and the owner was never told (a fault review)."""
    from django.db import OperationalError

    _signup()
    notify = signup.account_exists_notify

    def database_gone(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(signup, "account_exists_notify", database_gone)
    with pytest.raises(OperationalError):
        _signup(username="bob", email="alice@example.com")
    monkeypatch.setattr(signup, "account_exists_notify", notify)
    assert _signup(username="bob", email="alice@example.com").pk is None  # the same answer as the first time
    assert OutboundEmail.objects.filter(kind="account_exists").count() == 1


def test_an_address_that_already_has_an_account_keeps_the_username_it_was_answered_with():
    _signup()
    stand_in = _signup(username="probe", email="alice@EXAMPLE.com")
    assert stand_in.pk is None
    with pytest.raises(ValidationError) as excinfo:  # exactly as if "probe" had been created
        _signup(username="probe", email="fresh@example.com")
    assert "username" in excinfo.value.message_dict


def test_resend_replaces_older_links_and_their_unsent_emails():
    first = create_verification()
    assert signup.verification_resend(user=first.user)
    first.refresh_from_db()
    second = first.user.email_verifications.exclude(pk=first.pk).get()
    assert first.state == EmailVerification.State.SUPERSEDED and second.state == EmailVerification.State.ACTIVE
    assert email_of(first).state == OutboundEmail.State.SUPERSEDED
    assert email_of(second).state == OutboundEmail.State.PENDING


def test_resend_request_holds_the_cooldown_from_the_rows_without_the_cache(
    settings, django_capture_on_commit_callbacks
):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}  # remembers nothing
    user = create_verification().user
    with django_capture_on_commit_callbacks() as callbacks:
        for spelling in (user.email, user.email.upper()):
            signup.verification_resend_request(email=spelling)
        assert process_address_requests() == 2
    assert _emails_queued(callbacks) == []  # the sign-up's own email started the cooldown
    OutboundEmail.objects.update(created_at=OutboundEmail.objects.get().created_at - timedelta(hours=1))
    with django_capture_on_commit_callbacks() as callbacks:
        for _ in range(5):
            signup.verification_resend_request(email=user.email)
        assert process_address_requests() == 5
    assert len(_emails_queued(callbacks)) == 1


def _emails_queued(callbacks) -> list:
    """The emails queued among the on-commit callbacks (not the requests' own messages)."""
    return [c for c in callbacks if c.args[0] != dispatch.PROCESS_ADDRESS_REQUEST]


def test_resend_request_for_unknown_verified_or_malformed_addresses_sends_nothing(django_capture_on_commit_callbacks):
    verified = create_verification().user
    User.objects.filter(pk=verified.pk).update(is_email_verified=True)
    OutboundEmail.objects.update(created_at=OutboundEmail.objects.get().created_at - timedelta(hours=1))
    with django_capture_on_commit_callbacks() as callbacks:
        for address in ("nobody@example.com", verified.email, "not an address", "a\ud800@example.com"):
            signup.verification_resend_request(email=address)
        assert process_address_requests() == 2  # the malformed ones are not even recorded
    assert _emails_queued(callbacks) == []
    assert not AddressRequest.objects.unprocessed().exists()
