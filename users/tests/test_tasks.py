"""Unit tests of the actors on a StubBroker with an in-process worker (no Redis, locmem email)."""

import pytest
from django.core import mail

from tasks import SkipRetry, send_verify_email
from users.dispatch import use_distributor
from users.models import OutboundEmail
from users.tasks import email_retries_exhausted, send_email
from users.tests.factories import create_notice, create_verification, email_of

pytestmark = pytest.mark.django_db(transaction=True)


def _run(broker, *args):
    message = send_verify_email.send(*args)
    broker.join(send_verify_email.queue_name, fail_fast=False)
    return message


def _dead(broker):
    return list(broker.dead_letters)


def test_actor_is_importable_from_tasks_and_declares_skip_retry():
    assert send_verify_email.actor_name == "send_verify_email"
    assert send_verify_email.queue_name == "critical"
    assert send_verify_email.options["throws"] == (SkipRetry,)
    assert 0 < send_verify_email.options["max_retries"] <= 10


def test_actor_sends_the_email_and_marks_it_sent(stub_broker, stub_worker):
    verification = create_verification()
    _run(stub_broker, verification.pk)
    assert [m.to for m in mail.outbox] == [[verification.email]]
    assert email_of(verification).state == "sent"


def test_send_email_sends_a_notice_by_its_id_once(stub_broker, stub_worker):
    notice = create_notice()
    for _ in range(2):
        send_email.send(notice.pk)
        stub_broker.join(send_email.queue_name, fail_fast=False)
    assert [m.to for m in mail.outbox] == [[notice.recipient]]
    assert OutboundEmail.objects.get(pk=notice.pk).state == "sent"
    assert stub_broker.dead_letters == []


def test_redelivered_message_does_not_mail_twice(stub_broker, stub_worker):
    verification = create_verification()
    _run(stub_broker, verification.pk)
    _run(stub_broker, verification.pk)
    assert len(mail.outbox) == 1
    assert stub_broker.dead_letters == []


@pytest.mark.parametrize("argument", ["12", None, -1, 0, 1.5, True, [1]])
def test_malformed_argument_fails_at_once_without_retries(stub_broker, stub_worker, argument, caplog):
    _run(stub_broker, argument)
    [dead] = _dead(stub_broker)
    assert dead.options.get("retries") is None  # aborted, never retried
    assert mail.outbox == []
    assert len([r for r in caplog.records if r.getMessage().startswith("skip retry")]) == 1


class _Held:
    """A distributor that keeps the messages a use case queues (none reaches the worker)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def distribute(self, task_type: str, argument: int) -> None:
        self.sent.append((task_type, argument))


def test_deleted_user_fails_at_once_without_retries(stub_broker, stub_worker):
    # The sign-up's own message is held back: the worker would otherwise race this test to it and
    # send the email before the user is deleted (seen under load).
    with use_distributor(_Held()) as held:
        verification = create_verification()
    assert held.sent == [("send_verify_email", verification.pk)]
    verification.user.delete()
    _run(stub_broker, verification.pk)
    [dead] = _dead(stub_broker)
    assert dead.options.get("retries") is None
    assert mail.outbox == []


def test_retries_exhausted_marks_the_email_failed():
    verification, notice = create_verification(), create_notice()
    for message in (send_verify_email.message(verification.pk), send_email.message(notice.pk)):
        data = message.asdict() | {"options": {"traceback": "Traceback...\nSMTPServerDisconnected: gone"}}
        email_retries_exhausted(data, {"retries": 8, "max_retries": 8})
    for email in (email_of(verification), OutboundEmail.objects.get(pk=notice.pk)):
        assert email.state == "failed"
        assert email.last_error == "gave up after 9 attempts: SMTPServerDisconnected: gone"


def test_retry_policy_fits_inside_the_link_lifetime(settings):
    from django.core import checks

    from tasks import retry_policy

    assert retry_policy.worst_case_retry_span_ms() < settings.EMAIL_VERIFICATION_MAX_AGE * 1000
    assert not [e for e in checks.run_checks() if e.id == "tasks.E001"]
    settings.EMAIL_VERIFICATION_MAX_AGE = 600
    assert [e.id for e in checks.run_checks() if e.id == "tasks.E001"] == ["tasks.E001"]
