"""The admin's dead-letters page (real Redis): who may see it, that a GET or an unconfirmed POST
never requeues, and that the confirmed POST does, saying what each one did."""

from __future__ import annotations

import dataclasses
import uuid

import dramatiq
import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from dramatiq.brokers.redis import RedisBroker

from tasks import send_verify_email
from users.models import OutboundEmail
from users.tests.factories import UserFactory, create_verification, email_of, superuser_with_factor, with_totp

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

URL = "/admin/queues/dead-letters/"
DIED_MS = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "users/tasks.py", line 61, in _deliver\n'
    "tasks.errors.SkipRetry: verification email 5 already failed: 550 5.1.1 User unknown\n"
)


def bury(broker: RedisBroker, message: dramatiq.Message, died_ms: int = DIED_MS) -> dramatiq.Message:
    """Put ``message`` among the dead letters of its queue, as Dramatiq's Redis broker does: under
    the id it gave the enqueue (``redis_message_id``), not the message's own."""
    message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
    xq = f"{broker.namespace}:{message.queue_name}.XQ"
    broker.client.zadd(xq, {message.options["redis_message_id"]: died_ms})
    broker.client.hset(f"{xq}.msgs", message.options["redis_message_id"], message.encode())
    return message


def dead_count(broker: RedisBroker, queue: str = "critical") -> int:
    return broker.client.zcard(f"{broker.namespace}:{queue}.XQ")


def queued(broker: RedisBroker, queue: str = "critical") -> list[dramatiq.Message]:
    return [dramatiq.Message.decode(m) for m in broker.client.hvals(f"{broker.namespace}:{queue}.msgs")]


@pytest.fixture
def failed_verification(redis_broker):
    """A verification whose email failed, and its message among the critical queue's dead letters."""
    verification = create_verification()  # nothing is queued: this test never commits
    OutboundEmail.objects.filter(verification=verification).update(state="failed", last_error="550 no such user")
    message = send_verify_email.message(verification.pk)
    message = dataclasses.replace(message, options={**message.options, "retries": 0, "traceback": TRACEBACK})
    return verification, bury(redis_broker, message)


@pytest.fixture
def operator(client) -> Client:
    admin = superuser_with_factor(username="root")
    client.force_login(admin)
    return client


def test_the_admin_has_the_banks_header(client, operator):
    assert "Simple Bank operations" in Client().get("/admin/login/").content.decode()
    page = operator.get("/admin/").content.decode()
    assert "Simple Bank operations" in page and "Django administration" not in page


def test_anyone_but_staff_is_sent_to_the_admin_log_in(client, failed_verification, redis_broker):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(UserFactory())  # a customer
    for response in (client.get(URL), client.post(URL, {"_selected_action": [failed_verification[1].message_id]})):
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert dead_count(redis_broker) == 1


def test_staff_need_the_permission_to_change_emails(client, failed_verification, redis_broker):
    verification, message = failed_verification
    staff = UserFactory(is_staff=True)
    with_totp(staff)  # staff need a second factor (MFA_REQUIRED_ROLES) before any admin page
    client.force_login(staff)
    assert client.get(URL).status_code == 403
    confirmed = {"_selected_action": [message.message_id], "post": "yes"}
    assert client.post(URL, confirmed).status_code == 403
    assert dead_count(redis_broker) == 1 and email_of(verification).state == "failed"

    staff.user_permissions.add(Permission.objects.get(codename="change_outboundemail"))
    assert client.get(URL).status_code == 200


def test_the_list_shows_each_dead_letter_and_a_get_never_requeues(operator, failed_verification, redis_broker):
    verification, message = failed_verification
    page = operator.get(URL).content.decode()
    assert f'value="{message.message_id}"' in page and 'name="csrfmiddlewaretoken"' in page
    assert "send_verify_email" in page and f"<code>{verification.pk}</code>" in page
    assert "2023-11-14 22:13:20 UTC" in page  # the XQ score, a ms timestamp
    assert "550 5.1.1 User unknown" in page and "Traceback" not in page  # the traceback's last line only
    assert "Requeue selected" in page
    assert message.message_id in operator.get(f"{URL}?queue=critical").content.decode()  # the default queue
    assert dead_count(redis_broker) == 1 and email_of(verification).state == "failed" and queued(redis_broker) == []


def test_the_overview_links_each_dead_letter_count_to_the_page(operator, failed_verification):
    page = operator.get("/admin/queues/").content.decode()
    assert f'<a href="{URL}?queue=critical">1</a>' in page
    assert f'<a href="{URL}?queue=maintenance">0</a>' in page


def test_the_first_post_only_asks_for_confirmation(operator, failed_verification, redis_broker):
    verification, message = failed_verification
    response = operator.post(f"{URL}?queue=critical", {"_selected_action": [message.message_id]})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Requeue 1 dead letter?" in page and message.message_id in page
    assert 'name="post" value="yes"' in page and 'value="Confirm"' in page and 'name="csrfmiddlewaretoken"' in page
    assert f'href="{URL}?queue=critical" class="button cancel-link">Cancel' in page
    assert "retried by its app's handler" in page
    assert dead_count(redis_broker) == 1 and email_of(verification).state == "failed" and queued(redis_broker) == []


def test_the_confirmed_post_requeues_and_says_what_each_did(
    operator, failed_verification, redis_broker, django_capture_on_commit_callbacks
):
    verification, message = failed_verification
    other = bury(redis_broker, dramatiq.Message("critical", "some_other_actor", (7,), {}, {"retries": 3}))
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(URL, {"_selected_action": [message.message_id], "post": "yes"})
    assert response.status_code == 302 and response["Location"] == f"{URL}?queue=critical"
    [success] = [str(m) for m in get_messages(response.wsgi_request)]
    expected = f"Requeued 1 dead letter of the critical queue: send_verify_email({verification.pk}): email retried."
    assert success == expected
    assert email_of(verification).state == "pending"
    assert [m.args for m in queued(redis_broker)] == [(verification.pk,)]
    page = operator.get(URL).content.decode()
    assert message.message_id not in page and other.message_id in page  # only the selected one went

    again = operator.post(URL, {"_selected_action": [message.message_id], "post": "yes"})  # Confirm clicked twice
    assert [str(m) for m in get_messages(again.wsgi_request)] == [
        "1 of the selected dead letters was no longer there (requeued by someone else, or expired)."
    ]
    assert len(queued(redis_broker)) == 1


def test_a_post_without_a_selection_requeues_nothing(operator, failed_verification, redis_broker):
    response = operator.post(URL, {"post": "yes"})
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Select the dead letters to requeue: none was requeued."
    ]
    assert dead_count(redis_broker) == 1


def test_every_form_needs_its_csrf_token(failed_verification, redis_broker):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser_with_factor(username="r"))
    message = failed_verification[1]
    assert client.post(URL, {"_selected_action": [message.message_id]}).status_code == 403
    assert client.post(URL, {"_selected_action": [message.message_id], "post": "yes"}).status_code == 403
    assert dead_count(redis_broker) == 1


def test_an_unknown_queue_is_not_found(operator, redis_broker):
    assert operator.get(f"{URL}?queue=nope").status_code == 404
    assert operator.get(f"{URL}?queue=maintenance").status_code == 200


def test_without_redis_the_page_says_dead_letters_cannot_be_read(operator, stub_broker):
    page = operator.get(URL).content.decode()
    assert "Dead letters can't be read here: the broker is StubBroker, not Redis" in page
    assert "Requeue selected" not in page
    assert operator.post(URL, {"_selected_action": ["x"], "post": "yes"}).status_code == 302
