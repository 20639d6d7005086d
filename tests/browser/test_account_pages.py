"""Log in, the account page and password reset in headless Chromium, against a live server, the
real Redis broker, an in-process worker and a real SMTP server."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from rest_framework.test import APIClient

from conftest import message_text, wait_for
from tests.browser.conftest import log_in
from users.models import User
from users.tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def ada(settings, live_server) -> User:
    settings.SITE_URL = live_server.url
    return UserFactory(username="ada", email="ada@example.com", full_name="Ada Lovelace", is_email_verified=True)


def _log_in(page: Page, live_server, login: str, password: str) -> None:
    log_in(page, live_server.url, login, password)


def test_log_in_change_name_and_password_then_log_out(page, live_server, ada, no_throttling):
    api_session = APIClient().post("/api/tokens/", {"username": "ada", "password": PASSWORD}, format="json").json()

    _log_in(page, live_server, "ada@example.com", "not my password")
    expect(page.locator(".errorlist")).to_contain_text("No account matches")
    _log_in(page, live_server, "ADA", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/account/")
    expect(page.locator("main")).to_contain_text("Logged in as ada")

    page.fill("#name-form input[name=full_name]", "Augusta Ada King")
    page.click("#name-form button")
    expect(page.locator(".message")).to_contain_text("Your name is changed")
    assert User.objects.get(pk=ada.pk).full_name == "Augusta Ada King"

    page.fill("input[name=old_password]", "wrong current password")
    page.fill("input[name=new_password1]", "a fresh pass phrase 2026")
    page.fill("input[name=new_password2]", "a fresh pass phrase 2026")
    page.click("#password-form button")
    expect(page.locator("#field-password-old_password .errorlist")).to_be_visible()
    page.fill("input[name=old_password]", PASSWORD)
    page.fill("input[name=new_password1]", "a fresh pass phrase 2026")
    page.fill("input[name=new_password2]", "a fresh pass phrase 2026")
    page.click("#password-form button")
    expect(page.locator(".message")).to_contain_text("Every other session was logged out")
    expect(page.locator("main")).to_contain_text("Logged in as ada")  # this browser stays in
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_session['access']}")
    assert api.get("/api/users/me/").status_code == 401  # the API session ended

    page.click("#logout-form button")
    expect(page).to_have_url(f"{live_server.url}/login/")
    page.goto(f"{live_server.url}/account/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/account/"))


def test_address_change_from_the_account_page_then_the_emailed_link(page, live_server, ada, smtp_server, worker):
    _log_in(page, live_server, "ada", PASSWORD)
    page.fill("#email-form input[name=email]", "ada@lovelace.example.org")
    page.fill("#email-form input[name=current_password]", "not my password")
    page.click("#email-form button")
    expect(page.locator("#email-form")).to_contain_text("That is not your current password.")
    page.fill("#email-form input[name=current_password]", PASSWORD)
    page.click("#email-form button")
    expect(page.locator("#pending-email")).to_contain_text("ada@lovelace.example.org")

    [link_email] = wait_for(lambda: smtp_server.to("ada@lovelace.example.org"), what="the link to the new address")
    [notice] = wait_for(lambda: smtp_server.to("ada@example.com"), what="the notice to the current address")
    assert "/verify-email/?" not in message_text(notice)
    url = re.search(r"https?://\S+/verify-email/\?\S+", message_text(link_email)).group(0)
    assert User.objects.get(pk=ada.pk).email == "ada@example.com"  # not before the link is used

    page.goto(url)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("verified")
    page.click("text=Go to your account")  # still logged in here: the verified page leads to the account
    expect(page).to_have_url(re.compile(r"/account/$"))
    assert User.objects.get(pk=ada.pk).email == "ada@lovelace.example.org"


def test_password_reset_by_email_in_the_browser(page, live_server, ada, smtp_server, worker):
    page.goto(f"{live_server.url}/login/")
    page.click("text=Forgot your password?")
    page.fill("input[name=email]", "ADA@example.com")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Check your inbox")
    [message] = wait_for(lambda: smtp_server.to("ada@example.com"), what="the reset email")
    url = re.search(r"https?://\S+/reset-password/\?uid=\S+", message_text(message)).group(0)

    page.goto(url)
    page.fill("input[name=new_password1]", "my brand new pass phrase")
    page.fill("input[name=new_password2]", "my brand new pass phrase")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Your password is changed")
    page.goto(url)  # the link worked once
    expect(page.locator("h1")).to_contain_text("invalid or has expired")

    _log_in(page, live_server, "ada", "my brand new pass phrase")
    expect(page).to_have_url(f"{live_server.url}/account/")


def test_the_web_log_in_locks_out_after_repeated_failures(page, live_server, ada, settings, smtp_server, worker):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _log_in(page, live_server, "ada", "a wrong guess")
    expect(page.locator("main")).to_contain_text("Too many failed log-ins")
    _log_in(page, live_server, "ada", PASSWORD)
    expect(page.locator("main")).to_contain_text("Too many failed log-ins")  # locked, right password or not
    expect(page.locator("main")).to_contain_text("Please wait 15 minutes and try again.")
    # The way out it names is a link, and it works: a reset lets its owner in from here again.
    page.click("main a:has-text('Reset your password')")
    page.fill("input[name=email]", "ada@example.com")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Check your inbox")
    # Through the worker twice (the request, then its email): room for a loaded machine.
    [message] = wait_for(lambda: smtp_server.to("ada@example.com"), what="the reset email", timeout=60)
    page.goto(re.search(r"https?://\S+/reset-password/\?uid=\S+", message_text(message)).group(0))
    page.fill("input[name=new_password1]", "a brand new pass phrase")
    page.fill("input[name=new_password2]", "a brand new pass phrase")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Your password is changed")
    _log_in(page, live_server, "ada", "a brand new pass phrase")
    expect(page).to_have_url(f"{live_server.url}/account/")


def test_a_form_that_comes_back_with_errors_is_announced_first_and_named_in_the_title(
    page, live_server, ada, no_throttling
):
    """A wrong password came back with the error above the fields, unannounced, the title unchanged
    and the focus on the username field; password rules were never shown on the account page, and
    fields pointed (aria-describedby) at help texts that did not exist (an accessibility review)."""
    _log_in(page, live_server, "ada", "not my password")
    expect(page).to_have_title(re.compile(r"^Error: Log in"))
    summary = page.locator("#error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("No account matches")

    _log_in(page, live_server, "ada", PASSWORD)
    expect(page).to_have_title(re.compile(r"^Your account"))
    expect(page.locator("#error-summary")).to_have_count(0)
    page.fill("input[name=old_password]", PASSWORD)
    page.fill("input[name=new_password1]", "short")
    page.fill("input[name=new_password2]", "short")
    page.click("#password-form button")
    expect(page).to_have_title(re.compile(r"^Error: "))
    expect(page.locator("#error-summary")).to_be_focused()
    page.locator("#error-summary a").first.click()  # each error links to its field
    expect(page.locator("#password-form input:focus")).to_have_count(1)
    expect(page.locator("#field-password-new_password1 .helptext")).to_contain_text("at least")
    dangling = page.evaluate(
        """() => [...document.querySelectorAll('[aria-describedby]')].flatMap(el =>
               el.getAttribute('aria-describedby').split(/\\s+/).filter(id => !document.getElementById(id)))"""
    )
    assert dangling == []


def test_a_page_warns_before_its_idle_session_ends_and_keeps_it_on_request(page, live_server, ada, no_throttling):
    """A logged-in page ended its session after SESSION_IDLE_TIMEOUT without a word, and the form
    being typed was lost (WCAG 2.2.1, an accessibility review). The browser's clock is Playwright's,
    so no test waits for real minutes."""
    page.clock.install()
    _log_in(page, live_server, "ada", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/account/")
    warning = page.locator("#idle-warning")
    expect(warning).to_have_attribute("data-scheduled", "true")  # the timers exist before the clock moves
    expect(warning).to_be_hidden()
    page.clock.run_for("12:00")  # 720 s of the 900: not yet
    expect(warning).to_be_hidden()
    page.clock.run_for("01:30")  # within the last two minutes
    expect(warning).to_be_visible()
    expect(page.locator("#idle-stay")).to_be_focused()
    expect(warning).to_contain_text("logged out in about 2 minutes")
    with page.expect_response(
        lambda answer: answer.url.startswith(f"{live_server.url}/account/session/?session=")
    ) as kept:
        page.click("#idle-stay")
    assert kept.value.status == 200
    expect(warning).to_be_hidden()
    expect(warning).not_to_have_attribute("aria-busy", "true")  # the new end is scheduled
    # Left alone past the end, the page says the session has ended, not that it is about to (a review).
    page.fill("#name-form input[name=full_name]", "typed, not sent")
    page.clock.run_for("16:00")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("Your session has ended")
    expect(page.locator("#idle-stay")).to_be_hidden()
    expect(page.locator("#idle-login")).to_be_visible()
    expect(page.locator("#name-form input[name=full_name]")).to_have_value("typed, not sent")


def test_a_banker_setting_up_a_factor_is_warned_again_after_staying(page, live_server, no_throttling, settings):
    """The keep-alive asked for /account/, which a banker without a factor is sent away from: the
    session was kept, but the warning never came back (a review)."""
    settings.SITE_URL = live_server.url
    UserFactory(username="bob", email="bob@example.com", role=User.Role.BANKER, is_email_verified=True)
    page.clock.install()
    _log_in(page, live_server, "bob", PASSWORD)
    expect(page).to_have_url(re.compile(r"/account/security/"))
    warning = page.locator("#idle-warning")
    expect(warning).to_have_attribute("data-scheduled", "true")
    page.clock.run_for("13:30")
    expect(warning).to_be_visible()
    with page.expect_response(lambda answer: "/account/session/" in answer.url) as kept:
        page.click("#idle-stay")
    assert kept.value.status == 200
    expect(warning).to_be_hidden()
    expect(warning).not_to_have_attribute("aria-busy", "true")
    page.clock.run_for("13:30")
    expect(warning).to_be_visible()


def test_a_verification_page_keeps_its_session_on_request(page, live_server, ada, no_throttling):
    """Stay logged in asked for the page's path again: without its query a verification link's page
    answered 400 (a verification attempt spent), and the page said the session had ended (a review)."""
    page.clock.install()
    _log_in(page, live_server, "ada", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/account/")
    page.goto(f"{live_server.url}/verify-email/?email_id=1&secret_code=not-a-code")
    warning = page.locator("#idle-warning")
    expect(warning).to_have_attribute("data-scheduled", "true")
    page.clock.run_for("13:30")
    expect(warning).to_be_visible()
    page.click("#idle-stay")
    expect(warning).not_to_have_attribute("aria-busy", "true")
    expect(warning).to_be_hidden()
    page.clock.run_for("12:00")  # the session's new end is a full idle timeout away
    expect(warning).to_be_hidden()
    page.goto(f"{live_server.url}/account/")
    expect(page).to_have_url(f"{live_server.url}/account/")  # still logged in


def test_a_tab_left_open_does_not_warn_while_another_is_in_use(page, live_server, ada, no_throttling):
    """The session is the browser's: a tab left open warned, then said "ended", while the person
    worked in another tab that kept the session alive (a review)."""
    page.clock.install()
    _log_in(page, live_server, "ada", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/account/")
    expect(page.locator("#idle-warning")).to_have_attribute("data-scheduled", "true")
    other = page.context.new_page()
    page.clock.run_for("10:00")
    other.goto(f"{live_server.url}/account/security/")  # activity in the other tab
    expect(other.locator("#idle-warning")).to_have_attribute("data-scheduled", "true")
    page.clock.run_for("05:00")  # past the first tab's own end
    expect(page.locator("#idle-warning")).to_be_hidden()
    page.clock.run_for("08:30")  # within two minutes of the end the other tab set
    expect(page.locator("#idle-warning")).to_be_visible()
    expect(page.locator("#idle-warning")).to_contain_text("logged out in about")
    expect(other.locator("#idle-warning")).to_be_visible()


def test_a_tab_whose_session_ended_keeps_saying_so_after_another_log_in(page, live_server, ada, no_throttling):
    """One tab's news hid another's "Your session has ended", and another person's log-in in this
    browser made the first person's page offer to stay (a review): a page speaks for its own log-in."""
    UserFactory(username="bob", email="bob@example.com", is_email_verified=True)
    page.clock.install()
    _log_in(page, live_server, "ada", PASSWORD)
    expect(page.locator("#idle-warning")).to_have_attribute("data-scheduled", "true")
    other = page.context.new_page()
    other.goto(f"{live_server.url}/account/")
    other.click("#nav-logout button")  # Log out
    _log_in(other, live_server, "bob", PASSWORD)  # another person's log-in, this browser
    expect(other.locator("#idle-warning")).to_have_attribute("data-scheduled", "true")
    warning = page.locator("#idle-warning")
    page.clock.run_for("13:30")
    expect(warning).to_be_visible()  # ada's page: its own end, not bob's
    page.click("#idle-stay")
    expect(warning).to_contain_text("Your session has ended")  # bob's live session is not ada's
    other.click("#nav-logout button")
    _log_in(other, live_server, "ada", PASSWORD)  # ada again, in the other tab: a new log-in
    expect(other.locator("#idle-warning")).to_have_attribute("data-scheduled", "true")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("Your session has ended")


def test_an_admin_tab_in_use_keeps_the_account_tab_from_warning(page, live_server, settings, no_throttling):
    """Admin pages published nothing: a member of staff working in the admin saw the account tab
    say the session had ended (a review). The admin warns before the end too."""
    settings.MFA_REQUIRED_ROLES = ("none",)
    UserFactory(username="op", email="op@example.com", is_email_verified=True, is_staff=True, is_superuser=True)
    page.clock.install()
    _log_in(page, live_server, "op", PASSWORD)
    expect(page.locator("#idle-warning")).to_have_attribute("data-scheduled", "true")
    admin = page.context.new_page()
    page.clock.run_for("10:00")
    admin.goto(f"{live_server.url}/admin/users/user/")
    expect(admin.locator("#idle-warning")).to_have_attribute("data-scheduled", "true")
    page.clock.run_for("05:00")
    expect(page.locator("#idle-warning")).to_be_hidden()
    page.clock.run_for("08:30")
    expect(admin.locator("#idle-warning")).to_be_visible()
    expect(admin.locator("#idle-warning")).to_contain_text("logged out in about")


def test_the_log_in_page_says_why_a_session_ended(page, live_server, ada, no_throttling):
    from users.models import LoginSession

    _log_in(page, live_server, "ada", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/account/")
    LoginSession.objects.filter(user=ada).update(
        last_used_at=LoginSession.objects.get(user=ada).created_at.replace(year=2000)
    )
    page.fill("#name-form input[name=full_name]", "Augusta Ada King")
    page.click("#name-form button")
    expect(page).to_have_url(re.compile(r"/login/"))
    expect(page.locator(".message")).to_contain_text("Your session had ended")
