"""The operator's admin in headless Chromium: log in through the real form (django-axes in the
way), the bank's header, the queue overview, and a dead letter requeued after its confirmation
(real Redis, the configured broker under this run's namespace)."""

from __future__ import annotations

import dataclasses
import re

import dramatiq
import pyotp
import pytest
from playwright.sync_api import Page, expect

from conftest import wait_for
from tasks import send_verify_email
from users.models import OutboundEmail, User
from users.tests.factories import create_verification, email_of, with_totp

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "an operator's long pass phrase"


def _bury(broker, message: dramatiq.Message) -> None:
    """Among the critical queue's dead letters, as Dramatiq's Redis broker leaves a failed message."""
    xq = f"{broker.namespace}:critical.XQ"
    broker.client.zadd(xq, {message.message_id: 1_700_000_000_000})
    broker.client.hset(f"{xq}.msgs", message.message_id, message.encode())


def _queued(broker) -> list[dramatiq.Message]:
    return [dramatiq.Message.decode(m) for m in broker.client.hvals(f"{broker.namespace}:critical.msgs")]


@pytest.fixture
def errors(page: Page) -> list[str]:
    """JavaScript errors and refused resources (actions.js must run under the CSP); the browser's
    own try at /favicon.ico aside."""
    seen: list[str] = []

    def console(message) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            seen.append(f"{message.text} ({message.location.get('url')})")

    page.on("pageerror", lambda error: seen.append(str(error)))
    page.on("console", console)
    return seen


def test_an_operator_requeues_a_dead_letter_after_confirming(page, live_server, redis_broker, errors):
    operator = User.objects.create_superuser(
        username="operator", email="ops@example.com", password=PASSWORD, full_name="Ops"
    )
    app = pyotp.TOTP(with_totp(operator))  # staff need a second factor (MFA_REQUIRED_ROLES)
    verification = create_verification()  # its message is queued on commit: gone with the flush
    redis_broker.flush_all()
    OutboundEmail.objects.filter(verification=verification).update(state="failed", last_error="550 no such user")
    message = send_verify_email.message(verification.pk)
    last_line = f"tasks.errors.SkipRetry: verification email {verification.pk} already failed: 550 no such user"
    traceback = f"Traceback (most recent call last):\n  ...\n{last_line}\n"
    message = dataclasses.replace(message, options={**message.options, "traceback": traceback})
    _bury(redis_broker, message)

    page.goto(f"{live_server.url}/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    expect(page.locator("#site-name")).to_have_text("Simple Bank operations")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page).to_have_url(f"{live_server.url}/login/verify/")
    page.fill("input[name=code]", app.now())
    page.click("#code-form button[type=submit]")
    expect(page).to_have_url(f"{live_server.url}/admin/")
    expect(page.locator("#site-name")).to_have_text("Simple Bank operations")
    expect(page).to_have_title(re.compile(r"Simple Bank operations$"))

    page.click("text=Queues and emails")
    expect(page.locator("h1")).to_have_text("Queues and emails")
    page.locator("tr", has=page.locator("td", has_text=re.compile("^critical$"))).get_by_role("link").click()
    expect(page.locator("h1")).to_have_text("Dead letters of the critical queue")
    row = page.locator(f"tr[data-message-id='{message.message_id}']")
    expect(row).to_contain_text("send_verify_email")
    expect(row).to_contain_text(last_line)
    expect(row).to_contain_text("2023-11-14 22:13:20 UTC")

    # Cancel first: back to the list, nothing done.
    row.locator("input.action-select").check()
    expect(page.locator(".action-counter")).to_have_text("1 of 1 selected")  # the admin's actions.js runs
    page.click("text=Requeue selected")
    expect(page.locator("h1")).to_have_text("Requeue 1 dead letter?")
    page.click("text=Cancel")
    expect(page.locator("h1")).to_have_text("Dead letters of the critical queue")
    assert email_of(verification).state == "failed"
    assert redis_broker.client.zcard(f"{redis_broker.namespace}:critical.XQ") == 1

    row.locator("input.action-select").check()
    page.click("text=Requeue selected")
    expect(page.locator("h1")).to_have_text("Requeue 1 dead letter?")
    expect(page.locator("#requeue-list")).to_contain_text(message.message_id)
    assert email_of(verification).state == "failed"  # not before it is confirmed
    page.click("input[type=submit][value=Confirm]")

    expect(page).to_have_url(f"{live_server.url}/admin/queues/dead-letters/?queue=critical")
    expect(page.locator(".messagelist .success")).to_have_text(
        f"Requeued 1 dead letter of the critical queue: send_verify_email({verification.pk}): email retried."
    )
    expect(page.locator("#content-main")).to_contain_text("No dead letters in the critical queue")
    expect(page.locator(f"tr[data-message-id='{message.message_id}']")).to_have_count(0)
    assert email_of(verification).state == "pending"
    assert redis_broker.client.zcard(f"{redis_broker.namespace}:critical.XQ") == 0
    [queued] = wait_for(lambda: _queued(redis_broker), what="the email's message back in Redis")
    assert (queued.actor_name, queued.args) == ("send_verify_email", (verification.pk,))
    assert errors == []
