"""The delivery engine: send once, refuse what is no longer wanted, fence every write by the claim
(PostgreSQL; Django's locmem outbox, or aiosmtpd for SMTP answers)."""

import smtplib
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from users import tokens
from users.errors import EmailBusy, EmailExpired, EmailGone, EmailNotWanted, PermanentSendError
from users.models import DeliveryEvent, EmailVerification, OutboundEmail, User
from users.services import accounts, delivery, emails, links, signup
from users.tests.factories import UserFactory, create_notice, create_verification, email_of

pytestmark = pytest.mark.django_db

State = OutboundEmail.State


@pytest.fixture(autouse=True, params=["update-returning", "portable"])
def claim_path(request, monkeypatch):
    """Every test here runs on both ways of claiming a row (PostgreSQL's and the portable one)."""
    if request.param == "portable":
        monkeypatch.setattr(delivery, "update_returning_supported", lambda: False)


def _update(verification, **fields):
    OutboundEmail.objects.filter(verification_id=verification.pk).update(**fields)


def test_send_renders_multipart_email_with_one_link_and_marks_sent():
    verification = create_verification(UserFactory(full_name="Ada Lovelace"))
    _, sent_now = delivery.deliver(verification_id=verification.pk)
    assert sent_now
    [message] = mail.outbox
    assert message.to == [verification.email]
    assert message.subject == "Verify your email address for Simple Bank"
    # Nothing the sign-up typed reaches an address that has not proven it is theirs.
    assert "Ada Lovelace" not in message.body and verification.user.username not in message.body
    [(html_body, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    link = emails.verification_link(verification)
    assert message.body.count("/verify-email/?") == 1 and link in message.body
    assert html_body.count("/verify-email/?") == 1 and link.replace("&", "&amp;") in html_body
    assert link.startswith("http://127.0.0.1:8000/verify-email/?email_id=")
    email = email_of(verification)
    assert message.extra_headers["Message-ID"] == email.message_id
    assert email.message_id.startswith(f"<verification.{email.pk}.")
    assert email.state == State.SENT and email.sent_at and email.attempts == 1


@pytest.mark.parametrize(
    ("sender", "domain"),
    [
        ("noreply@bank.example", "bank.example"),
        ("Simple Bank <noreply@Bank.Example>", "bank.example"),
        ("Bänk <noreply@bänk.example>", "xn--bnk-qla.example"),  # an encoded header was no Message-ID
        ("noreply", "localhost"),
    ],
)
def test_the_message_id_carries_the_senders_domain_as_mail_headers_need_it(settings, sender, domain):
    settings.DEFAULT_FROM_EMAIL = sender
    email = email_of(create_verification())
    assert email.message_id.isascii() and email.message_id.endswith(f"@{domain}>") and email.message_id.count(">") == 1
    message = emails.build(email)
    assert message.message()["Message-ID"] == email.message_id


def test_every_email_names_the_bank_by_site_name(settings):
    """SITE_NAME is the bank's name in emails too (the contract): subject, text and HTML."""
    settings.SITE_NAME = "Smith & Sons"
    verification = create_verification()
    delivery.deliver(verification_id=verification.pk)
    [message] = mail.outbox
    html = message.alternatives[0][0]
    assert message.subject == "Verify your email address for Smith & Sons"  # plain text: not escaped
    assert "Smith & Sons" in message.body and "Smith &amp; Sons" in html
    assert "Simple Bank" not in message.subject + message.body + html


def test_send_twice_mails_once():
    verification = create_verification()
    delivery.deliver(verification_id=verification.pk)
    _, sent_now = delivery.deliver(verification_id=verification.pk)
    assert not sent_now
    assert len(mail.outbox) == 1


def test_a_notice_goes_through_the_same_engine_once():
    notice = create_notice(UserFactory(full_name="Ada Lovelace", is_email_verified=True))
    _, sent_now = delivery.deliver(email_id=notice.pk)
    _, again = delivery.deliver(email_id=notice.pk)
    assert sent_now and not again
    [message] = mail.outbox
    assert message.to == [notice.recipient] and "Ada Lovelace" not in message.body  # the bank's words only
    assert "/verify-email/?" not in message.body
    assert message.extra_headers["Message-ID"] == notice.message_id
    assert OutboundEmail.objects.get(pk=notice.pk).state == State.SENT


def test_send_of_fresh_claim_is_busy_and_stale_claim_is_taken_over(settings):
    verification = create_verification()
    _update(verification, state=State.SENDING, claimed_at=timezone.now())
    with pytest.raises(EmailBusy):
        delivery.deliver(verification_id=verification.pk)
    assert mail.outbox == []
    stale = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT + 1)
    _update(verification, claimed_at=stale)
    delivery.deliver(verification_id=verification.pk)
    assert len(mail.outbox) == 1


@pytest.mark.parametrize(
    ("setup", "error", "state"),
    [
        (lambda v: v.user.delete(), EmailGone, None),
        (
            lambda v: User.objects.filter(pk=v.user_id).update(is_email_verified=True),
            EmailNotWanted,
            State.SUPERSEDED,
        ),
        (lambda v: signup.verification_resend(user=v.user), EmailNotWanted, State.SUPERSEDED),
        (
            lambda v: OutboundEmail.objects.filter(verification=v).update(expires_at=timezone.now()),
            EmailExpired,
            State.FAILED,
        ),
        (
            lambda v: User.objects.filter(pk=v.user_id).update(email="changed@example.com"),
            EmailNotWanted,
            State.SUPERSEDED,
        ),
    ],
    ids=["user-deleted", "already-verified", "superseded", "expired", "address-changed"],
)
def test_send_refuses_permanently_without_mailing(setup, error, state):
    verification = create_verification()
    setup(verification)
    with pytest.raises(error):
        delivery.deliver(verification_id=verification.pk)
    assert mail.outbox == []
    if state:
        assert email_of(verification).state == state


def test_raw_code_is_stored_nowhere():
    from django.db import connection

    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    assert len(code) >= 22  # >= 128 bits of base64
    with connection.cursor() as cursor:
        for table in ("users_user", "users_emailverification", "users_outboundemail"):
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names
            assert code not in repr(cursor.fetchall())


# --- Races around the claim (each interleaving forced by hand) -------------------------------------
def test_a_duplicate_at_the_attempt_cap_leaves_a_live_send_alone(settings):
    verification = create_verification()
    _update(verification, state=State.SENDING, claimed_at=timezone.now(), attempts=settings.VERIFY_EMAIL_MAX_ATTEMPTS)
    with pytest.raises(EmailBusy):
        delivery.deliver(verification_id=verification.pk)
    assert email_of(verification).state == State.SENDING


def test_retries_exhausted_leaves_a_row_being_sent_or_sent_alone():
    sending, sent, pending = create_verification(), create_verification(), create_verification()
    _update(sending, state=State.SENDING, claimed_at=timezone.now())
    _update(sent, state=State.SENT, sent_at=timezone.now())
    assert not delivery.mark_failed(verification_id=sending.pk, error="gave up")
    assert not delivery.mark_failed(verification_id=sent.pk, error="gave up")
    assert delivery.mark_failed(verification_id=pending.pk, error="gave up")
    states = {v.pk: email_of(v).state for v in (sending, sent, pending)}
    assert states == {sending.pk: State.SENDING, sent.pk: State.SENT, pending.pk: State.FAILED}


def test_a_stale_worker_cannot_release_or_finish_a_claim_taken_over(settings):
    verification = create_verification()
    key = {"verification_id": verification.pk}
    email, old_token = delivery._claim(key)
    stale = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT + 1)
    _update(verification, claimed_at=stale)
    _, new_token = delivery._claim(key)  # a second worker takes the stale claim over
    _update(verification, claimed_at=new_token)
    assert delivery._finish(email, stale, state=State.PENDING) == 0  # the first one's token
    assert old_token != new_token
    row = email_of(verification)
    assert row.state == State.SENDING and row.claimed_at == new_token and row.attempts == 2


def test_a_provider_report_before_the_row_says_sent_is_no_double_send_alarm(caplog):
    """The provider's "delivered" can beat the worker's own "sent" (it settles the row first): the
    worker's record then changes nothing, and that is said at INFO, not as an email going out twice."""
    verification = create_verification()
    email, token = delivery._claim({"verification_id": verification.pk})
    row = email_of(verification)
    DeliveryEvent.objects.create(email=row, esp="Postmark", event_key="k", event_type="delivered")
    delivery.feedback_delivered(row, at=timezone.now())
    delivery._mark_sent(email, token)
    assert email_of(verification).state == State.SENT
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert "the provider's report had already settled its row" in caplog.text

    other = create_verification()  # a claim taken over, the provider said only "queued": an alarm
    email, token = delivery._claim({"verification_id": other.pk})
    DeliveryEvent.objects.create(email=email_of(other), esp="Mailgun", event_key="q", event_type="queued")
    OutboundEmail.objects.filter(pk=email.pk).update(claimed_at=timezone.now() + timedelta(seconds=1))
    delivery._mark_sent(email, token)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "email sent after this attempt's claim was taken over: it may go out twice"
    ]


def test_a_template_error_gives_the_row_back_for_the_retry(settings):
    verification = create_verification()
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [], "APP_DIRS": False}]  # no email templates
    with pytest.raises(Exception, match="verify_email_subject"):
        delivery.deliver(verification_id=verification.pk)
    row = email_of(verification)
    assert row.state == State.PENDING and "TemplateDoesNotExist" in row.last_error and mail.outbox == []


# --- What the SMTP server answers (a real aiosmtpd server) ------------------------------------------
def _refusing_data(smtp_server, answer: str):
    async def handle_data(server, session, envelope):
        smtp_server.attempts += 1
        return answer

    smtp_server.handle_DATA = handle_data


@pytest.mark.parametrize(
    ("stage", "answer"),
    [
        ("RCPT", "550 5.1.1 <x>: no such user"),
        # Our relay verifying the recipient quotes the recipient's server: about the recipient.
        ("RCPT", "550 5.1.1 <x@b.example>: host mx.b.example said: 554 5.7.1 Relay access denied"),
        ("DATA", "550 5.7.1 rejected by policy"),
        ("DATA", "554 no thanks"),
    ],
)
def test_a_5xx_about_the_email_fails_it_at_once_with_the_answer(smtp_server, stage, answer):
    verification = create_verification()
    if stage == "RCPT":
        smtp_server.rcpt_answers = [answer]
    else:
        _refusing_data(smtp_server, answer)
    with pytest.raises(PermanentSendError, match=answer.split()[0]):
        delivery.deliver(verification_id=verification.pk)
    row = email_of(verification)
    assert row.state == State.FAILED and row.attempts == 1 and answer in row.last_error
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("stage", "answer"),
    [
        ("DATA", "552 5.2.2 mailbox full"),
        ("RCPT", "452 4.2.2 over quota"),
        ("RCPT", "550 4.2.0 try again later"),  # the enhanced code's class decides
        ("DATA", "451 4.3.0 try later"),
    ],
)
def test_transient_answers_give_the_row_back_for_a_retry(smtp_server, stage, answer):
    verification = create_verification()
    if stage == "RCPT":
        smtp_server.rcpt_answers = [answer]
    else:
        _refusing_data(smtp_server, answer)
    with pytest.raises((smtplib.SMTPException, OSError)):
        delivery.deliver(verification_id=verification.pk)
    row = email_of(verification)
    assert row.state == State.PENDING and answer in row.last_error


@pytest.mark.parametrize(
    "answer",
    [
        "530 5.7.0 Authentication required",
        "550 5.7.8 bad credentials",
        "554 5.7.1 Relay access denied",  # Postfix
        "550 5.7.1 Relaying denied",  # Sendmail
        "550 relay not permitted",  # Exim
        "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",  # Exchange
    ],
)
def test_a_relay_refusing_us_at_rcpt_is_retried_as_configuration(smtp_server, answer):
    """Some relays ask for our credentials only at RCPT: the person's address is not to blame, and
    the email must go out once the configuration is fixed (a review saw these fail for good)."""
    verification = create_verification()
    before = delivery.SMTP_CONFIGURATION_ERRORS._value.get()
    smtp_server.rcpt_answers = [answer]
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        delivery.deliver(verification_id=verification.pk)
    row = email_of(verification)
    assert row.state == State.PENDING and answer in row.last_error
    assert delivery.SMTP_CONFIGURATION_ERRORS._value.get() == before + 1


def test_a_refusal_of_our_credentials_is_retried_and_logged_as_configuration(smtp_server, settings, caplog):
    verification = create_verification()
    before = delivery.SMTP_CONFIGURATION_ERRORS._value.get()

    async def refuse_sender(server, session, envelope, address, mail_options):
        return "530 5.7.0 Authentication required"

    smtp_server.handle_MAIL = refuse_sender
    with pytest.raises(smtplib.SMTPSenderRefused):
        delivery.deliver(verification_id=verification.pk)
    row = email_of(verification)
    assert row.state == State.PENDING and "530" in row.last_error
    assert delivery.SMTP_CONFIGURATION_ERRORS._value.get() == before + 1
    [record] = [r for r in caplog.records if "SMTP configuration problem" in r.getMessage()]
    assert record.levelname == "ERROR"


def test_535_at_login_is_retried_as_configuration(settings, caplog):
    """Our credentials are wrong: a real server answers 535 to AUTH (no address is to blame)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from conftest import SmtpSink, free_port

    sink = SmtpSink(port=free_port())
    controller = Controller(
        sink,
        hostname=sink.host,
        port=sink.port,
        auth_require_tls=False,
        authenticator=lambda *args: AuthResult(success=False, handled=False),  # the server answers 535
    )
    controller.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = sink.host, sink.port, False
        settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "bank", "wrong"
        verification = create_verification()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            delivery.deliver(verification_id=verification.pk)
    finally:
        controller.stop()
    row = email_of(verification)
    assert row.state == State.PENDING and row.last_error.startswith("535")
    assert any(r.levelname == "ERROR" and "configuration" in r.getMessage() for r in caplog.records)
    assert sink.messages == []


def test_an_address_change_then_retry_failed_mails_nothing_to_the_old_address(smtp_server):
    """A failed link email of the old address is never retried once the account moved (staff change
    an address through this same flow: see test_admin)."""
    verification = create_verification(UserFactory(email="old@example.com"))
    smtp_server.rcpt_answers = ["550 5.1.1 no such user"]
    with pytest.raises(PermanentSendError):
        delivery.deliver(verification_id=verification.pk)
    failed = email_of(verification)
    assert failed.state == State.FAILED
    accounts.email_change_request(user=verification.user, new_email="new@example.com")
    change = EmailVerification.objects.get(purpose="change")
    links.email_verify(verification_id=change.pk, code=tokens.make_code(change.pk, change.nonce))
    assert User.objects.get(pk=verification.user_id).email == "new@example.com"
    assert OutboundEmail.objects.get(pk=failed.pk).state == State.SUPERSEDED
    assert not delivery.email_retry(email_id=failed.pk)  # "retry failed" in the admin
    assert delivery.retry_dead_letter("send_verify_email", (verification.pk,)) == "email no longer needs sending"
    # And a row that somehow stayed failed is refused at retry time too: the address changed.
    OutboundEmail.objects.filter(pk=failed.pk).update(state=State.FAILED)
    assert not delivery.email_retry(email_id=failed.pk)
    assert smtp_server.to("old@example.com") == []
    assert EmailVerification.objects.get(pk=verification.pk).state == EmailVerification.State.SUPERSEDED


def test_an_email_sent_while_the_database_stayed_out_is_not_sent_again(settings, monkeypatch, caplog):
    """The "sent" update is retried for at most 60 s; past that (a failover of 76 s in a review) the
    row stayed claimed, the sweep took it back once the claim went stale, and the person got the
    email twice. The acceptance is now noted in Redis, where the next attempt looks first."""
    from django.core.cache import cache
    from django.db import OperationalError

    settings.VERIFY_EMAIL_CLAIM_TIMEOUT = 0.2  # _mark_sent waits half of it: 0.1 s
    verification = create_verification()
    finish = delivery._finish

    def database_out(email, token, **fields):
        if fields.get("state") == State.SENT:
            raise OperationalError("server closed the connection unexpectedly")
        return finish(email, token, **fields)

    monkeypatch.setattr(delivery, "_finish", database_out)
    with pytest.raises(OperationalError):
        delivery.deliver(verification_id=verification.pk)
    assert len(mail.outbox) == 1 and email_of(verification).state == State.SENDING
    monkeypatch.setattr(delivery, "_finish", finish)  # PostgreSQL is back
    _update(verification, claimed_at=timezone.now() - timedelta(minutes=5))  # the claim went stale: the sweep's turn
    _, sent_now = delivery.deliver(verification_id=verification.pk)
    assert not sent_now and len(mail.outbox) == 1  # recorded, not sent again
    row = email_of(verification)
    assert row.state == State.SENT and row.sent_at is not None and row.attempts == 2
    assert cache.get(delivery._sent_note_key(row)) is None
    assert "recorded now, not sent again" in caplog.text


def test_a_note_of_a_sent_email_speaks_for_its_own_row_only(settings):
    """The note was keyed by the row's id alone: a row that came to have that id (a database
    restored, a replica behind promoted, a deployment sharing Redis) was recorded sent and never
    sent, its link lost (a review)."""
    from django.core.cache import cache

    verification = create_verification()
    row = email_of(verification)
    delivery._note_sent(row, timezone.now())
    OutboundEmail.objects.filter(pk=row.pk).update(
        created_at=row.created_at + timedelta(seconds=1)
    )  # another row, that id
    OutboundEmail.objects.filter(pk=row.pk).update(attempts=1)  # a retry: the next claim makes it 2
    _, sent_now = delivery.deliver(verification_id=verification.pk)
    assert sent_now and len(mail.outbox) == 1 and email_of(verification).state == State.SENT
    assert cache.get(delivery._sent_note_key(row)) is not None  # not its row's: left to expire
