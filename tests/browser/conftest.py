"""Headless Chromium for the page tests: Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

# expect() waits 5 s unless told (page.set_default_timeout does not reach it): a loaded machine
# with a live server and Chromium needs the same room as the page's own actions.
expect.set_options(timeout=30_000)

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
    page.set_default_timeout(30_000)
    yield page
    context.close()


def log_in(page: Page, base_url: str, login: str, password: str) -> None:
    """The log-in form, filled and sent as a person does (the first step, for an account with a factor)."""
    page.goto(f"{base_url}/login/")
    page.fill("input[name=username]", login)
    page.fill("input[name=password]", password)
    page.click("main button[type=submit]")
