"""The redispatch sweep: which verifications it queues again, fails, or leaves alone."""

from datetime import timedelta

import dramatiq
import pytest
from django.core.management import call_command
from django.utils import timezone

from users import services
from users.models import EmailVerification
from users.tests.factories import create_verification

pytestmark = pytest.mark.django_db

State = EmailVerification.State


def _age(verification, **fields):
    EmailVerification.objects.filter(pk=verification.pk).update(**fields)


def _queued_ids(broker) -> list[int]:
    queue = broker.queues.get("critical")
    return sorted(dramatiq.Message.decode(m).args[0] for m in (queue.queue if queue else []))


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

    untouched = [fresh, retry_waiting, busy, sent]
    before = {v.pk: EmailVerification.objects.values_list("state", "dispatched_at").get(pk=v.pk) for v in untouched}

    counts = services.verification_redispatch_due()

    assert counts == {"redispatched": 3, "expired": 1, "gave_up": 1}
    assert _queued_ids(stub_broker) == sorted([lost.pk, retry_lost.pk, dead_worker.pk])
    assert EmailVerification.objects.get(pk=expired.pk).state == State.FAILED
    worn = EmailVerification.objects.get(pk=worn_out.pk)
    assert worn.state == State.FAILED and worn.last_error.startswith("gave up after the attempt limit")
    after = {v.pk: EmailVerification.objects.values_list("state", "dispatched_at").get(pk=v.pk) for v in untouched}
    assert after == before
    # A second pass right away queues nothing more: each row waits REDISPATCH_AFTER again.
    assert services.verification_redispatch_due()["redispatched"] == 0


def test_command_prints_the_counts(stub_broker, capsys):
    call_command("redispatch_verifications")
    assert capsys.readouterr().out.strip() == "redispatched=0 expired=0 gave_up=0"


def test_attempt_cap_counts_redeliveries(settings):
    verification = create_verification()
    _age(verification, attempts=settings.VERIFY_EMAIL_MAX_ATTEMPTS)
    with pytest.raises(services.PermanentSendError):
        services.verification_send(verification_id=verification.pk)
    assert EmailVerification.objects.get(pk=verification.pk).state == State.FAILED


def test_retry_of_a_failed_verification_sends_the_same_link(django_capture_on_commit_callbacks):
    verification = create_verification()
    _age(verification, state=State.FAILED, attempts=3, last_error="550 nope")
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.verification_retry(verification_id=verification.pk)
    assert len(callbacks) == 1
    row = EmailVerification.objects.get(pk=verification.pk)
    assert row.state == State.PENDING and row.attempts == 0 and row.nonce == verification.nonce
    assert not services.verification_retry(verification_id=verification.pk)  # not failed any more
