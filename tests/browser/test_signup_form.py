"""A person signs up in headless Chromium, opens the emailed link and confirms.

Real browser (Debian's chromium driven by Playwright), live server, real Redis broker,
in-process worker and a real SMTP server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conftest import links_in, wait_for
from users.models import User

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        message = f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must never skip the browser tests
        pytest.skip(message)
    # Playwright's sync API keeps an event loop in this thread; the database work pytest-django and
    # the tests do between page actions is plain synchronous code.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


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
