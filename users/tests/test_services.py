"""Unit tests of the users services (PostgreSQL; StubBroker or Django's locmem outbox)."""

from datetime import timedelta

import dramatiq
import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from conftest import links_in
from users import services, tokens
from users.models import EmailVerification, User
from users.tests.factories import UserFactory, create_verification

pytestmark = pytest.mark.django_db

State = EmailVerification.State


@pytest.fixture(autouse=True, params=["update-returning", "portable"])
def claim_path(request, monkeypatch):
    """Every test here runs on both ways of claiming a row (PostgreSQL's and the portable one)."""
    if request.param == "portable":
        monkeypatch.setattr(services, "_update_returning_supported", lambda: False)


def _signup(**overrides):
    data = {
        "username": "alice",
        "full_name": "Alice Example",
        "email": "Alice@Example.COM",
        "password": "correct horse battery staple",
    }
    data.update(overrides)
    return services.user_create(**data)


def test_user_create_saves_user_and_pending_verification(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        user = _signup()
    assert user.pk and user.full_name == "Alice Example"
    assert user.email == "Alice@example.com"  # domain normalised, local part kept
    assert user.check_password("correct horse battery staple")
    assert "correct horse" not in user.password
    assert user.password_changed_at is not None and not user.is_email_verified
    verification = user.email_verifications.get()
    assert verification.state == State.PENDING and verification.email == user.email
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
    assert not User.objects.exists() and not EmailVerification.objects.exists()


def test_taken_username_is_a_field_error_and_writes_nothing():
    _signup()
    with pytest.raises(ValidationError) as excinfo:
        _signup(email="someone-else@example.com")
    assert excinfo.value.message_dict == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1 and EmailVerification.objects.count() == 1


def test_existing_email_creates_nothing_and_queues_the_notice(django_capture_on_commit_callbacks):
    first = _signup()
    with django_capture_on_commit_callbacks() as callbacks:
        stand_in = _signup(username="bob", email="ALICE@example.com", full_name="Bob")
    assert stand_in.pk is None and stand_in.username == "bob" and stand_in.email == "ALICE@example.com"
    assert not stand_in.is_email_verified and stand_in.created_at
    assert User.objects.count() == 1 and EmailVerification.objects.count() == 1
    [callback] = callbacks
    assert callback.func is services.account_exists_dispatch and callback.args == (first.pk,)
    with django_capture_on_commit_callbacks() as again:
        _signup(username="carol", email="alice@example.com")
    assert again == []  # one notice per cooldown


def test_send_renders_multipart_email_with_one_link_and_marks_sent():
    verification = create_verification(UserFactory(full_name="Ada Lovelace"))
    _, sent_now = services.verification_send(verification_id=verification.pk)
    assert sent_now
    [message] = mail.outbox
    assert message.to == [verification.email]
    assert message.subject == "Verify your email address for Simple Bank"
    assert "Ada Lovelace" in message.body
    [(html_body, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    link = services.verification_link(verification)
    assert message.body.count("/verify-email/?") == 1 and link in message.body
    assert html_body.count("/verify-email/?") == 1 and link.replace("&", "&amp;") in html_body
    assert link.startswith("http://127.0.0.1:8000/verify-email/?email_id=")
    assert message.extra_headers["Message-ID"].startswith(f"<verify-email.{verification.pk}.")
    verification.refresh_from_db()
    assert verification.state == State.SENT and verification.sent_at and verification.attempts == 1


def test_send_twice_mails_once():
    verification = create_verification()
    services.verification_send(verification_id=verification.pk)
    _, sent_now = services.verification_send(verification_id=verification.pk)
    assert not sent_now
    assert len(mail.outbox) == 1


def test_send_of_fresh_claim_is_busy_and_stale_claim_is_taken_over(settings):
    verification = create_verification()
    EmailVerification.objects.filter(pk=verification.pk).update(state=State.SENDING, claimed_at=timezone.now())
    with pytest.raises(services.VerificationBusy):
        services.verification_send(verification_id=verification.pk)
    assert mail.outbox == []
    stale = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT + 1)
    EmailVerification.objects.filter(pk=verification.pk).update(claimed_at=stale)
    services.verification_send(verification_id=verification.pk)
    assert len(mail.outbox) == 1


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        (lambda v: v.user.delete(), services.VerificationGone),
        (lambda v: User.objects.filter(pk=v.user_id).update(is_email_verified=True), services.AlreadyVerified),
        (lambda v: services.verification_create(user=v.user), services.VerificationGone),
        (
            lambda v: EmailVerification.objects.filter(pk=v.pk).update(expires_at=timezone.now()),
            services.VerificationExpired,
        ),
    ],
    ids=["user-deleted", "already-verified", "superseded", "expired"],
)
def test_send_refuses_permanently_without_mailing(setup, error):
    verification = create_verification()
    setup(verification)
    with pytest.raises(error):
        services.verification_send(verification_id=verification.pk)
    assert mail.outbox == []


def test_raw_code_is_stored_nowhere():
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    assert len(code) >= 22  # >= 128 bits of base64
    with connection.cursor() as cursor:
        for table in ("users_user", "users_emailverification"):
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            assert code not in repr(cursor.fetchall())


def test_verify_consumes_the_code_once():
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    user = services.email_verify(verification_id=verification.pk, code=code)
    assert user.is_email_verified
    verification.refresh_from_db()
    assert verification.state == State.VERIFIED and verification.verified_at
    with pytest.raises(services.InvalidVerificationCode):
        services.email_verify(verification_id=verification.pk, code=code)


def test_wrong_expired_superseded_and_foreign_codes_are_refused():
    verification = create_verification()
    other = create_verification()
    good = tokens.make_code(verification.pk, verification.nonce)
    for vid, code in [
        (verification.pk, good[:-1] + ("A" if good[-1] != "A" else "B")),  # tampered
        (verification.pk, tokens.make_code(other.pk, other.nonce)),  # another user's code
        (other.pk, good),
        (verification.pk, ""),
        (verification.pk, "x" * 10_000),
        (10**12, good),  # unknown id
    ]:
        with pytest.raises(services.InvalidVerificationCode):
            services.email_verify(verification_id=vid, code=code)
    EmailVerification.objects.filter(pk=verification.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(services.InvalidVerificationCode):
        services.email_verify(verification_id=verification.pk, code=good)
    fresh = create_verification(other.user)  # supersedes `other`
    with pytest.raises(services.InvalidVerificationCode):
        services.email_verify(verification_id=other.pk, code=tokens.make_code(other.pk, other.nonce))
    assert services.email_verify(verification_id=fresh.pk, code=tokens.make_code(fresh.pk, fresh.nonce))
    assert not User.objects.get(pk=verification.user_id).is_email_verified


def test_codes_survive_secret_key_rotation(settings):
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-brand-new-secret-key-" + "x" * 40, [settings.SECRET_KEY]
    assert services.email_verify(verification_id=verification.pk, code=code).is_email_verified


def test_resend_replaces_older_links():
    first = create_verification()
    second = services.verification_resend(user=first.user)
    first.refresh_from_db()
    assert second and first.state == State.SUPERSEDED and second.state == State.PENDING
    services.verification_send(verification_id=second.pk)
    [(_, email_id, _)] = links_in_outbox()
    assert email_id == second.pk


def links_in_outbox():
    import email as email_lib

    message = email_lib.message_from_bytes(mail.outbox[-1].message().as_bytes(), policy=email_lib.policy.default)
    return links_in(message)


# --- Races around the claim (each interleaving forced by hand) -------------------------------------
def test_a_duplicate_at_the_attempt_cap_leaves_a_live_send_alone(settings):
    verification = create_verification()
    EmailVerification.objects.filter(pk=verification.pk).update(
        state=State.SENDING, claimed_at=timezone.now(), attempts=settings.VERIFY_EMAIL_MAX_ATTEMPTS
    )
    with pytest.raises(services.VerificationBusy):
        services.verification_send(verification_id=verification.pk)
    assert EmailVerification.objects.get(pk=verification.pk).state == State.SENDING


def test_retries_exhausted_leaves_a_row_being_sent_or_sent_alone():
    sending, sent, pending = create_verification(), create_verification(), create_verification()
    EmailVerification.objects.filter(pk=sending.pk).update(state=State.SENDING, claimed_at=timezone.now())
    EmailVerification.objects.filter(pk=sent.pk).update(state=State.SENT, sent_at=timezone.now())
    assert not services.verification_mark_failed(verification_id=sending.pk, error="gave up")
    assert not services.verification_mark_failed(verification_id=sent.pk, error="gave up")
    assert services.verification_mark_failed(verification_id=pending.pk, error="gave up")
    states = dict(EmailVerification.objects.values_list("pk", "state"))
    assert states == {sending.pk: State.SENDING, sent.pk: State.SENT, pending.pk: State.FAILED}


def test_a_stale_worker_cannot_release_or_finish_a_claim_taken_over(settings):
    verification = create_verification()
    _, old_token = services._claim(verification.pk)
    stale = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT + 1)
    EmailVerification.objects.filter(pk=verification.pk).update(claimed_at=stale)
    _, new_token = services._claim(verification.pk)  # a second worker takes the stale claim over
    EmailVerification.objects.filter(pk=verification.pk).update(claimed_at=new_token)
    assert services._finish(verification.pk, stale, state=State.PENDING) == 0  # the first one's token
    assert old_token != new_token
    row = EmailVerification.objects.get(pk=verification.pk)
    assert row.state == State.SENDING and row.claimed_at == new_token and row.attempts == 2


def test_a_template_error_gives_the_row_back_for_the_retry(settings):
    verification = create_verification()
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [], "APP_DIRS": False}]  # no email templates
    with pytest.raises(Exception, match="verify_email_subject"):
        services.verification_send(verification_id=verification.pk)
    row = EmailVerification.objects.get(pk=verification.pk)
    assert row.state == State.PENDING and "TemplateDoesNotExist" in row.last_error and mail.outbox == []


def test_verifying_after_the_address_changed_is_refused():
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    User.objects.filter(pk=verification.user_id).update(email="someone-else@example.com")
    with pytest.raises(services.InvalidVerificationCode):
        services.email_verify(verification_id=verification.pk, code=code)
    assert not User.objects.get(pk=verification.user_id).is_email_verified


def test_an_address_that_already_has_an_account_keeps_the_username_it_was_answered_with():
    _signup()
    stand_in = _signup(username="probe", email="alice@EXAMPLE.com")
    assert stand_in.pk is None
    with pytest.raises(ValidationError) as excinfo:  # exactly as if "probe" had been created
        _signup(username="probe", email="fresh@example.com")
    assert "username" in excinfo.value.message_dict
