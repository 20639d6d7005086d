"""Housekeeping: the periodic schedule, and re-enqueueing dead letters (real Redis)."""

import dramatiq
import pytest
from django.core.management import call_command
from dramatiq_crontab import scheduler

from tasks import send_verify_email
from users.models import OutboundEmail
from users.tasks import redispatch_verifications
from users.tests.factories import create_verification, email_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_scheduler_runs_the_sweep_every_minute_and_cleans_task_rows_hourly():
    import tasks.tasks  # noqa: F401 - the scheduler (`manage.py crontab`) loads every app's tasks module

    jobs = {job.name: job for job in scheduler.get_jobs()}
    sweep = jobs["redispatch_verifications"]
    assert sweep.func == redispatch_verifications.send
    assert {f.name: str(f) for f in sweep.trigger.fields}["minute"] == "*"
    cleanup = jobs["delete_old_tasks"]
    assert {f.name: str(f) for f in cleanup.trigger.fields}["minute"] == "17"
    assert redispatch_verifications.queue_name == "maintenance"


@pytest.mark.integration
def test_dead_letters_are_listed_and_requeued(redis_broker, capsys):
    verification = create_verification()  # its own message is queued on commit
    redis_broker.flush_all()
    OutboundEmail.objects.filter(verification=verification).update(state="failed", last_error="550 no such user")
    message = send_verify_email.message(verification.pk)
    xq = f"{redis_broker.namespace}:critical.XQ"
    redis_broker.client.zadd(xq, {message.message_id: 1})
    redis_broker.client.hset(f"{xq}.msgs", message.message_id, message.encode())

    call_command("requeue_dead_letters", "--list")
    assert f"{message.message_id} send_verify_email({verification.pk},)" in capsys.readouterr().out

    call_command("requeue_dead_letters")
    assert "email retried" in capsys.readouterr().out
    assert redis_broker.client.zcard(xq) == 0
    assert email_of(verification).state == "pending"
    [queued] = [
        dramatiq.Message.decode(m) for m in redis_broker.client.hvals(f"{redis_broker.namespace}:critical.msgs")
    ]
    assert queued.args == (verification.pk,)
