"""The state of each user's latest verification email, kept by the database (migration 0007) for the
admin's filter: true after every way an email's state changes, never written back by a stale save,
and written by statements that lock the user before the email, so that they wait for an account
flow holding the user instead of deadlocking with it (PostgreSQL, real connections and threads)."""

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from users.errors import EmailNotWanted, PermanentSendError
from users.models import OutboundEmail, User
from users.services import delivery, links
from users.tests.factories import UserFactory, create_notice, create_verification, email_of

State = OutboundEmail.State


def state_of(user) -> str:
    return User.objects.values_list("verification_state", flat=True).get(pk=getattr(user, "pk", user))


@pytest.mark.django_db
def test_it_follows_the_latest_email_from_sign_up_to_sent_and_through_a_resend(mailoutbox):
    first = create_verification()
    user = first.user
    assert state_of(user) == State.PENDING
    delivery.deliver(verification_id=first.pk)
    assert state_of(user) == State.SENT
    second = create_verification(user)  # a resend: a new link, a new email
    assert state_of(user) == State.PENDING
    # A change to an older email says nothing about the latest one.
    OutboundEmail.objects.filter(pk=email_of(first).pk).update(state=State.FAILED)
    assert state_of(user) == State.PENDING
    delivery.deliver(verification_id=second.pk)
    assert state_of(user) == State.SENT
    assert len(mailoutbox) == 2


@pytest.mark.django_db
def test_a_refused_email_shows_failed_and_its_retry_pending(smtp_server):
    verification = create_verification()
    smtp_server.rcpt_answers = ["550 5.1.1 no such user"]
    with pytest.raises(PermanentSendError):
        delivery.deliver(verification_id=verification.pk)
    assert state_of(verification.user_id) == State.FAILED
    assert delivery.email_retry(email_id=email_of(verification).pk)
    assert state_of(verification.user_id) == State.PENDING


@pytest.mark.django_db
def test_the_sweep_failing_an_expired_email_and_a_newer_link_superseding_it_show_as_such():
    verification = create_verification()
    OutboundEmail.objects.filter(verification_id=verification.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert delivery.redispatch_due()["expired"] == 1
    assert state_of(verification.user_id) == State.FAILED
    with transaction.atomic():
        links.verifications_supersede(user=verification.user, reason="replaced by a newer link")
    assert state_of(verification.user_id) == State.SUPERSEDED


@pytest.mark.django_db
def test_emails_of_other_kinds_leave_it_alone(mailoutbox):
    verification = create_verification()
    delivery.deliver(verification_id=verification.pk)
    notice = create_notice(verification.user)
    delivery.deliver(email_id=notice.pk)
    assert OutboundEmail.objects.get(pk=notice.pk).state == State.SENT
    assert state_of(verification.user_id) == State.SENT
    assert state_of(UserFactory()) == ""  # no verification email yet


@pytest.mark.django_db
def test_deleting_the_latest_email_in_the_admin_shows_the_latest_left(admin_client, mailoutbox):
    first = create_verification()
    delivery.deliver(verification_id=first.pk)
    second = create_verification(first.user)
    assert state_of(first.user_id) == State.PENDING
    latest = email_of(second)
    # An email still owed can't be deleted (its user would never get it): this one failed for good.
    OutboundEmail.objects.filter(pk=latest.pk).update(state=State.FAILED)
    assert state_of(first.user_id) == State.FAILED
    response = admin_client.post(f"/admin/users/outboundemail/{latest.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not OutboundEmail.objects.filter(pk=latest.pk).exists()
    assert state_of(first.user_id) == State.SENT  # the first one's
    OutboundEmail.objects.filter(user_id=first.user_id).delete()
    assert state_of(first.user_id) == ""


@pytest.mark.django_db
def test_saving_a_user_loaded_before_the_email_changed_keeps_the_latest_state(mailoutbox):
    verification = create_verification()
    user = User.objects.get(pk=verification.user_id)  # loaded while its email is pending
    delivery.deliver(verification_id=verification.pk)
    user.full_name = "Renamed Later"
    user.save()
    assert state_of(user) == State.SENT
    assert User.objects.get(pk=user.pk).full_name == "Renamed Later"


def _claim(verification) -> None:
    delivery.deliver(verification_id=verification.pk)


def _mark_failed(verification) -> None:  # what the actor does when the queue's retries ran out
    delivery.mark_failed(verification_id=verification.pk, error="gave up")


def _sweep(verification) -> None:  # the email expired while the account flow held its user
    assert delivery.redispatch_due()["expired"] == 0  # left for the next pass: its user is held


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", [_claim, _mark_failed, _sweep], ids=["claim", "retries-exhausted", "sweep"])
def test_the_engine_waits_for_an_account_flow_holding_the_user_and_never_deadlocks(engine, mailoutbox):
    """A resend (lock the user, supersede its emails, insert a new link) is holding the user while
    the engine changes the old email. Were the email locked first, the flow would wait for the
    email and the engine for the user: PostgreSQL would abort one of them ("deadlock detected").
    The claim and the retries-exhausted mark wait for the user; the sweep skips a held user."""
    verification = create_verification()
    if engine is _sweep:
        OutboundEmail.objects.filter(verification_id=verification.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
    holding, go = threading.Event(), threading.Event()
    errors: dict[str, BaseException] = {}
    flow = _resend_holding_the_user(verification.user_id, holding, go, errors)

    def engine_thread() -> None:
        try:
            engine(verification)
        except EmailNotWanted:
            pass  # the claim found its email superseded: what it should find
        except BaseException as exc:
            errors["engine"] = exc
        finally:
            connection.close()

    flow_thread = threading.Thread(target=flow)
    flow_thread.start()
    assert holding.wait(30)
    worker = threading.Thread(target=engine_thread)
    worker.start()
    _wait_until_waiting_or_done(worker, deadline=time.monotonic() + 30)
    go.set()
    flow_thread.join(60)
    worker.join(60)
    assert not flow_thread.is_alive() and not worker.is_alive()
    assert errors == {}
    old, new = OutboundEmail.objects.order_by("created_at", "id")
    assert old.state == State.SUPERSEDED and new.state == State.PENDING
    assert state_of(verification.user_id) == State.PENDING
    assert mailoutbox == []


def _in_thread(errors: dict, name: str, work: Callable[[], object]) -> threading.Thread:
    """A thread (not started) running ``work`` on a connection of its own, closed after; what it
    raises lands in ``errors[name]``."""

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            errors[name] = exc
        finally:
            connection.close()

    return threading.Thread(target=target)


def _resend_holding_the_user(user_id: int, holding: threading.Event, go: threading.Event, errors: dict) -> Callable:
    """A resend, as a thread's target: it locks the user, says so (``holding``), waits for ``go``,
    then replaces the user's links; an error lands in ``errors["flow"]``."""

    def resend() -> None:
        with transaction.atomic():
            user = User.objects.select_for_update().get(pk=user_id)
            holding.set()
            if not go.wait(30):
                raise TimeoutError("nothing queued behind the user")
            links.verifications_supersede(user=user, reason="replaced by a newer link")
            links.verification_insert(user=user, email=user.email)

    return _in_thread(errors, "flow", resend).run


def _wait_until_waiting_or_done(worker: threading.Thread, deadline: float) -> None:
    """Until the engine waits for a lock (the user's) or has finished without one."""
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] or not worker.is_alive():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the engine neither waited for the user's lock nor finished")
            time.sleep(0.02)


SQLITE_SCRIPT = """
from django.core.management import call_command
from django.db import transaction
from users.models import OutboundEmail, User
from users.services import delivery, links

call_command("migrate", verbosity=0)
user = User.objects.create_user("sq", "sq@example.com", "pw", full_name="S")
state = lambda: User.objects.values_list("verification_state", flat=True).get(pk=user.pk)
with transaction.atomic():
    first = links.verification_insert(user=user, email=user.email)
seen = [state()]
delivery.deliver(verification_id=first.pk)
seen.append(state())
with transaction.atomic():
    links.verifications_supersede(user=user, reason="replaced")
    links.verification_insert(user=user, email=user.email)
OutboundEmail.objects.filter(verification=first).update(state="failed")
seen.append(state())
OutboundEmail.objects.exclude(verification=first).delete()  # the latest one: the older one is left
seen.append(state())
print("states:", *seen)
"""


def test_make_runs_sqlite_database_keeps_it_too(tmp_path):
    """``make run`` is on SQLite: the same column, kept by SQLite's own triggers."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EMAIL_"))}
    environment |= {
        "DJANGO_SETTINGS_MODULE": "bankproject.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_DEBUG": "true",  # make run's settings
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SQLITE_SCRIPT],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "states: pending sent pending failed" in done.stdout, done.stdout + done.stderr


@pytest.mark.django_db(transaction=True)
def test_a_link_used_while_a_flow_holds_its_user_waits_and_never_deadlocks():
    """The link's use changed its row and then locked the user, the other way round from a resend
    (user, then its links): with both at once PostgreSQL aborted one (a review, from the code). Now
    the use waits for the user and finds its link replaced: one refused link, no error."""
    from users import tokens
    from users.errors import InvalidLink

    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    holding, go = threading.Event(), threading.Event()
    errors: dict[str, BaseException] = {}
    flow = _resend_holding_the_user(verification.user_id, holding, go, errors)

    flow_thread = threading.Thread(target=flow)
    flow_thread.start()
    assert holding.wait(30)
    user_thread = _in_thread(errors, "use", lambda: links.email_verify(verification_id=verification.pk, code=code))
    user_thread.start()
    _wait_until_waiting_or_done(user_thread, deadline=time.monotonic() + 30)
    go.set()
    flow_thread.join(60)
    user_thread.join(60)
    assert not flow_thread.is_alive() and not user_thread.is_alive()
    assert "flow" not in errors and isinstance(errors.get("use"), InvalidLink), errors
    assert User.objects.get(pk=verification.user_id).is_email_verified is False


@pytest.mark.django_db(transaction=True)
def test_two_people_asking_for_each_others_address_at_once_never_deadlock():
    """Each request locked its requester, then the other (to tell the address's owner): two at once
    could each hold one and wait for the other. Both now lock the two in one order."""
    from users.services import accounts

    ada = UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    bob = UserFactory(username="bob", email="bob@example.com", is_email_verified=True)
    errors: list[BaseException] = []

    def ask(user: User, address: str, start: threading.Barrier) -> None:
        try:
            for _ in range(15):
                start.wait(30)
                accounts.email_change_request(user=user, new_email=address)
        except BaseException as exc:
            errors.append(exc)
            start.abort()
        finally:
            connection.close()

    start = threading.Barrier(2)
    threads = [
        threading.Thread(target=ask, args=(ada, "bob@example.com", start)),
        threading.Thread(target=ask, args=(bob, "ada@example.com", start)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert User.objects.get(pk=ada.pk).pending_email == "bob@example.com"
    assert User.objects.get(pk=bob.pk).pending_email == "ada@example.com"


@pytest.mark.django_db(transaction=True)
def test_a_banker_changing_name_and_address_while_the_owner_asks_for_the_customers_never_deadlock(monkeypatch):
    """The banker's request wrote the name (locking the customer) and then locked the address's
    owner; the owner asking for the customer's address locks the owner, then the customer (a review
    reproduced "deadlock detected"). The address step now comes first and locks both in pk order."""
    from users.services import accounts

    owner = UserFactory(username="olga", email="olga@example.com", is_email_verified=True)  # the lower pk
    customer = UserFactory(username="carl", email="carl@example.com", is_email_verified=True)
    banker = UserFactory(username="bea", role=User.Role.BANKER, is_email_verified=True)
    name_written, go = threading.Event(), threading.Event()
    errors: dict[str, BaseException] = {}
    real_name_change = accounts._name_change

    def name_change_then_wait(user, full_name, **kwargs):
        changed = real_name_change(user, full_name, **kwargs)
        name_written.set()
        if not go.wait(30):
            raise TimeoutError("the owner's request never queued")
        return changed

    monkeypatch.setattr(accounts, "_name_change", name_change_then_wait)

    first = _in_thread(
        errors,
        "banker",
        lambda: accounts.profile_update_by_banker(
            banker=banker, user=customer, full_name="Carl Newname", email="olga@example.com"
        ),
    )
    first.start()
    assert name_written.wait(30)
    second = _in_thread(
        errors, "owner", lambda: accounts.email_change_request(user=owner, new_email="carl@example.com")
    )
    second.start()
    _wait_until_waiting_or_done(second, deadline=time.monotonic() + 30)
    go.set()
    first.join(60)
    second.join(60)
    assert not first.is_alive() and not second.is_alive()
    assert errors == {}
    assert User.objects.get(pk=customer.pk).pending_email == "olga@example.com"
    assert User.objects.get(pk=owner.pk).pending_email == "carl@example.com"
