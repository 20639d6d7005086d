"""A person signs up in headless Chromium, opens the emailed link and confirms.

Real browser (Debian's chromium driven by Playwright), live server, real Redis broker,
in-process worker and a real SMTP server.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conftest import links_in, wait_for
from users.models import User

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _fill(page: Page, **fields: str) -> None:
    for name, value in fields.items():
        page.fill(f"input[name={name}]", value)


def test_signup_form_then_emailed_link_verifies_the_address(page, live_server, settings, smtp_server, worker):
    settings.SITE_URL = live_server.url
    page.goto(f"{live_server.url}/signup/")
    _fill(
        page,
        username="grace",
        full_name="Grace Hopper",
        email="grace@example.com",
        password1="cobol is a fine language",
        password2="cobol is a fine language",
    )
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your inbox")

    [message] = wait_for(lambda: smtp_server.to("grace@example.com"), what="the verification email")
    [(url, _, _)] = links_in(message)
    assert url.startswith(live_server.url)

    page.goto(url)
    expect(page.locator("h1")).to_have_text("Verify your email address")
    assert not User.objects.get(username="grace").is_email_verified  # opening the link is not enough
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Your email address is verified")
    assert User.objects.get(username="grace").is_email_verified

    page.goto(url)  # the link works once
    expect(page.locator("h1")).to_have_text("This link is invalid or has expired")


def test_signup_form_shows_errors_beside_the_fields(page, live_server):
    page.goto(f"{live_server.url}/signup/")
    _fill(
        page,
        username="bad name",
        full_name="X",
        email="x@example.com",
        password1="cobol is a fine language",
        password2="cobol is a fine languagE",
    )
    page.click("button[type=submit]")
    expect(page.locator("#field-username .errorlist")).to_contain_text("valid username")
    expect(page.locator("#field-password2 .errorlist")).to_contain_text("The two passwords")
    assert page.input_value("input[name=email]") == "x@example.com"  # what was typed is kept
    assert page.input_value("input[name=password1]") == ""  # passwords are not echoed back
    assert not User.objects.exists()
