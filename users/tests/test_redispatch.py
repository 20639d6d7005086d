"""The redispatch sweep: which emails (of every kind) it queues again, fails, or leaves alone."""

from datetime import timedelta

import dramatiq
import pytest
from django.core.management import call_command
from django.utils import timezone

from users.errors import PermanentSendError
from users.models import AddressRequest, OutboundEmail
from users.services import address_requests, delivery
from users.tests.factories import create_notice, create_verification, email_of

pytestmark = pytest.mark.django_db

State = OutboundEmail.State


def _age(verification, **fields):
    OutboundEmail.objects.filter(verification_id=verification.pk).update(**fields)


def _queued(broker) -> list[tuple[str, int]]:
    queue = broker.queues.get("critical")
    messages = [dramatiq.Message.decode(m) for m in (queue.queue if queue else [])]
    return sorted((m.actor_name, m.args[0]) for m in messages)


def test_sweep_queues_what_should_have_gone_and_nothing_else(stub_broker, settings):
    now = timezone.now()
    old = now - timedelta(seconds=settings.VERIFY_EMAIL_REDISPATCH_AFTER + 1)
    lost = create_verification()  # never attempted, queued long ago: the message was lost
    _age(lost, dispatched_at=old)
    fresh = create_verification()  # just signed up: its message is on its way
    retry_lost = create_verification()  # failed once, and no retry came for too long
    _age(retry_lost, dispatched_at=old, attempts=1, claimed_at=now - timedelta(hours=1))
    retry_waiting = create_verification()  # failed once a minute ago: Dramatiq's retry is pending
    _age(retry_waiting, dispatched_at=old, attempts=1, claimed_at=now - timedelta(minutes=1))
    dead_worker = create_verification()  # claimed by a worker that died
    _age(dead_worker, dispatched_at=old, attempts=1, state=State.SENDING, claimed_at=now - timedelta(hours=1))
    busy = create_verification()  # being sent right now
    _age(busy, dispatched_at=old, attempts=1, state=State.SENDING, claimed_at=now)
    sent = create_verification()
    _age(sent, dispatched_at=old, attempts=1, state=State.SENT, sent_at=now)
    expired = create_verification()
    _age(expired, dispatched_at=old, expires_at=now - timedelta(seconds=1))
    worn_out = create_verification()
    _age(worn_out, dispatched_at=old, attempts=settings.VERIFY_EMAIL_MAX_ATTEMPTS, claimed_at=now - timedelta(hours=1))
    # Being sent right now, claimed just before its expiry: the worker records what the server said.
    expiring_in_flight = create_verification()
    _age(
        expiring_in_flight,
        dispatched_at=old,
        attempts=1,
        state=State.SENDING,
        claimed_at=now,
        expires_at=now - timedelta(seconds=1),
    )
    lost_notice = create_notice()  # an "account exists" notice whose message was lost: same promise
    OutboundEmail.objects.filter(pk=lost_notice.pk).update(dispatched_at=old)

    untouched = [email_of(v) for v in (fresh, retry_waiting, busy, sent, expiring_in_flight)]
    before = {e.pk: OutboundEmail.objects.values_list("state", "dispatched_at").get(pk=e.pk) for e in untouched}

    counts = delivery.redispatch_due()

    assert counts == {"redispatched": 4, "expired": 1, "gave_up": 1, "requests_requeued": 0, "requests_deleted": 0}
    assert _queued(stub_broker) == sorted(
        [("send_verify_email", v.pk) for v in (lost, retry_lost, dead_worker)] + [("send_email", lost_notice.pk)]
    )
    assert email_of(expired).state == State.FAILED
    worn = email_of(worn_out)
    assert worn.state == State.FAILED and worn.last_error.startswith("gave up after the attempt limit")
    after = {e.pk: OutboundEmail.objects.values_list("state", "dispatched_at").get(pk=e.pk) for e in untouched}
    assert after == before
    # A second pass right away queues nothing more: each row waits REDISPATCH_AFTER again.
    assert delivery.redispatch_due()["redispatched"] == 0


def test_command_prints_the_counts(stub_broker, capsys):
    call_command("redispatch_verifications")
    assert capsys.readouterr().out.strip() == (
        "redispatched=0 expired=0 gave_up=0 requests_requeued=0 requests_deleted=0"
    )


def test_attempt_cap_counts_redeliveries(settings):
    verification = create_verification()
    _age(verification, attempts=settings.VERIFY_EMAIL_MAX_ATTEMPTS)
    with pytest.raises(PermanentSendError):
        delivery.deliver(verification_id=verification.pk)
    assert email_of(verification).state == State.FAILED


def test_retry_of_a_failed_email_sends_the_same_link(django_capture_on_commit_callbacks):
    verification = create_verification()
    _age(verification, state=State.FAILED, attempts=3, last_error="550 nope")
    email = email_of(verification)
    with django_capture_on_commit_callbacks() as callbacks:
        assert delivery.email_retry(email_id=email.pk)
    assert len(callbacks) == 1
    row = email_of(verification)
    assert row.state == State.PENDING and row.attempts == 0
    assert row.verification.nonce == verification.nonce  # the same link
    assert not delivery.email_retry(email_id=email.pk)  # not failed any more


def test_sweep_queues_requests_whose_message_was_lost_and_deletes_old_ones(stub_broker, settings):
    now = timezone.now()
    old = now - timedelta(seconds=settings.VERIFY_EMAIL_REDISPATCH_AFTER + 1)

    def request(**fields) -> AddressRequest:
        address_requests.request_record(kind=AddressRequest.Kind.PASSWORD_RESET, email="someone@example.com")
        row = AddressRequest.objects.latest("pk")
        AddressRequest.objects.filter(pk=row.pk).update(**fields)
        return row

    lost = request(dispatched_at=old, created_at=old)  # recorded, its message never arrived
    request()  # just recorded: its message is on its way
    request(dispatched_at=old, created_at=old, processed_at=now)  # done
    too_old = now - timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE + 1)
    request(dispatched_at=too_old, created_at=too_old)  # no longer worth an email
    request(created_at=now - timedelta(days=8), dispatched_at=old, processed_at=now - timedelta(days=8))

    counts = delivery.redispatch_due()

    assert counts == {"redispatched": 0, "expired": 0, "gave_up": 0, "requests_requeued": 1, "requests_deleted": 1}
    assert _queued(stub_broker) == [("process_address_request", lost.pk)]
    assert AddressRequest.objects.count() == 4
    # A second pass right away queues nothing more: the row waits REDISPATCH_AFTER again.
    assert delivery.redispatch_due()["requests_requeued"] == 0
