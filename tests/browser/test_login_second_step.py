"""The two-step log-in of an account with TOTP, in headless Chromium against a live server."""

from __future__ import annotations

import time

import pyotp
import pytest
from playwright.sync_api import expect

from users.models import User
from users.tests.factories import UserFactory, with_totp

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def ada(settings, live_server) -> User:
    settings.SITE_URL = live_server.url
    return UserFactory(username="ada", email="ada@example.com", full_name="Ada Lovelace", is_email_verified=True)


def test_log_in_with_the_password_then_the_totp_code(page, live_server, ada, no_throttling):
    app = pyotp.TOTP(with_totp(ada))
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")

    expect(page).to_have_url(f"{live_server.url}/login/verify/")
    expect(page.locator("#methods")).to_contain_text("authenticator app")
    expect(page.locator("input[name=code]")).to_be_focused()
    window = {app.at(time.time() + offset) for offset in (-30, 0, 30)}  # what the server would accept
    page.fill("input[name=code]", next(code for code in ("000000", "111111", "222222") if code not in window))
    page.click("#code-form button[type=submit]")
    expect(page.locator("#field-code .errorlist")).to_contain_text("That code is not right, or was used already")

    page.fill("input[name=code]", app.now())
    page.click("#code-form button[type=submit]")
    expect(page).to_have_url(f"{live_server.url}/account/")
    expect(page.locator("main")).to_contain_text("Logged in as ada")
