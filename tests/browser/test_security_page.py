"""``/account/security/`` in headless Chromium with its virtual WebAuthn authenticator (CDP
``WebAuthn.addVirtualAuthenticator``): a passkey registered on the page, used as the proof of a
step-up there, then as the second step of ``/login/`` — through the browser's own WebAuthn API and
``webauthn.js``, under the site's Content-Security-Policy. The relying party is ``localhost``
(browsers refuse an IP address)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyotp
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import log_in
from users.models import Passkey, TotpDevice, User
from users.tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def ada(settings, live_server) -> User:
    assert live_server.url.startswith("http://localhost:"), live_server.url  # a relying party id browsers accept
    settings.SITE_URL = live_server.url
    settings.SITE_NAME = "Northwind Bank"
    return UserFactory(username="ada", email="ada@example.com", full_name="Ada Lovelace", is_email_verified=True)


@pytest.fixture
def authenticator(page: Page) -> Iterator[dict]:
    """A platform authenticator with user verification that says yes by itself (a phone's unlock)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    options = {
        "protocol": "ctap2",
        "transport": "internal",
        "hasResidentKey": True,
        "hasUserVerification": True,
        "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }
    found = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
    yield {"cdp": cdp, "id": found["authenticatorId"]}


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: seen.append(str(error)))
    return seen


def test_a_passkey_made_on_the_security_page_steps_up_there_then_logs_in(
    page, live_server, ada, authenticator, console_errors, no_throttling
):
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.locator("header .brand")).to_have_text("Northwind Bank")
    log_in(page, live_server.url, "ada", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/account/")
    page.click("header >> text=Security")
    expect(page).to_have_url(f"{live_server.url}/account/security/")

    # Register: a name and the password, then the device makes the passkey.
    page.fill("#passkey-begin-form input[name=name]", "This laptop")
    page.fill("#passkey-begin-form input[name=current_password]", PASSWORD)
    page.click("#passkey-begin-form button[type=submit]")
    page.click("button[data-passkey-create]")
    expect(page.locator(".message")).to_contain_text("The passkey “This laptop” is added.")
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    assert Passkey.objects.filter(user=ada, name="This laptop").count() == 1
    page.click("text=I have kept them")
    expect(page.locator("#passkey-list")).to_contain_text("This laptop")
    expect(page.locator("#recovery-codes")).to_have_count(0)  # shown once

    # A step-up with the passkey: set up an authenticator app too.
    page.fill("#totp-setup-form input[name=current_password]", PASSWORD)
    page.click("#totp-setup-form button[data-passkey-proof]")
    expect(page.locator("#totp-qr")).to_be_visible()
    # Shown, not a broken image's empty box (an SVG without its namespace never loads in an <img>).
    page.wait_for_function(
        "() => { const img = document.querySelector('#totp-qr'); return img.complete && img.naturalWidth > 0 }"
    )
    secret = page.locator("#totp-secret").inner_text()
    page.fill("#totp-confirm-form input[name=code]", pyotp.TOTP(secret).now())
    page.click("#totp-confirm-form button[type=submit]")
    expect(page.locator(".message")).to_contain_text("Your authenticator app is now your second factor.")
    assert TotpDevice.objects.filter(user=ada, confirmed_at__isnull=False).exists()

    # Log out from the layout, log in again: the password, then the passkey.
    page.click("#nav-logout button")
    log_in(page, live_server.url, "ada", PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/login/verify/")
    page.click("#code-form button[data-passkey-proof]")
    expect(page).to_have_url(f"{live_server.url}/account/")
    expect(page.locator("main")).to_contain_text("Logged in as ada")
    assert Passkey.objects.get(user=ada).last_used_at is not None
    assert console_errors == []
