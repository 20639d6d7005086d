"""The second step of the page log-ins (``/login/`` then ``/login/verify/``, and ``/admin/login/``
the same way), tried over HTTP against the running stack with real TOTP codes from pyotp: what a
browser gets — redirects, cookies, whether a session works — and what the API then lists."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from tests.security.test_account_takeover import PASSWORD, Browser, _behind_a_proxy
from tests.security.test_second_factor import Authenticator, _kinds, _wrong, first_step, second_step
from users.mfa import recovery_codes
from users.models import LoginSession, MfaLoginToken, User
from users.tests.factories import UserFactory, with_totp

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

VERIFY = "/login/verify/"
WRONG_CODE = "That code is not right, or was used already"
EXPIRED = "Your log-in expired: start again."


@pytest.fixture
def app(ada) -> Authenticator:
    return Authenticator(ada, with_totp(ada))


def _session_key(browser: Browser) -> str | None:
    return browser.http.cookies.get(django_settings.SESSION_COOKIE_NAME)


def _plant(browser: Browser, session_key: str) -> None:
    """A session cookie set for the site as the server would set it (someone else's, or planted)."""
    browser.get("/login/")  # the CSRF cookie: where the site's cookies live
    [csrf] = [c for c in browser.http.cookies if c.name == django_settings.CSRF_COOKIE_NAME]
    browser.http.cookies.set(django_settings.SESSION_COOKIE_NAME, session_key, domain=csrf.domain, path="/")


def _password_step(browser: Browser, username: str = "ada", path: str = "/login/") -> None:
    answer = browser.log_in(username, path=path)
    assert answer.status_code == 302 and answer.headers["Location"] == VERIFY, (answer.status_code, answer.text)


def _code_step(browser: Browser, code: str):
    return browser.post_form(VERIFY, {"code": code})


def test_two_steps_on_the_login_page_open_a_browser_session_the_password_alone_none(stack, ada, app):
    recovery_codes.codes_replace(user=ada)
    browser = Browser(stack)
    _password_step(browser)
    assert browser.get("/account/").headers["Location"] == "/login/?next=/account/"  # no session yet
    assert not LoginSession.objects.filter(user=ada).exists()
    assert not _kinds(ada, "login")

    page = browser.get(VERIFY)
    assert page.status_code == 200 and page.headers["Cache-Control"].startswith("max-age=0")
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page.text)
    assert "authenticator app" in text and "recovery codes" in text  # the proofs she has
    assert not re.search(r"\bada\b|Lovelace|example\.com", text, re.IGNORECASE)  # not whose account it is

    done = _code_step(browser, app.code())
    assert done.status_code == 302 and done.headers["Location"] == "/account/"
    account = browser.get("/account/")
    assert account.status_code == 200 and "Logged in as <strong>ada</strong>" in account.text
    assert [e.detail for e in _kinds(ada, "login")] == ["browser"]

    api, mfa_token = first_step(stack)
    assert second_step(api, mfa_token, app.code()).status_code == 200
    listed = api.call("GET", "/api/sessions/").json()
    listed = listed["results"] if isinstance(listed, dict) else listed
    assert sorted(s["kind"] for s in listed) == ["api", "browser"]


def test_the_session_key_changes_at_each_step_and_a_planted_one_is_worth_nothing(stack, ada, app):
    planted = SessionStore()
    planted["planted"] = True
    planted.create()
    browser = Browser(stack)
    _plant(browser, planted.session_key)
    assert browser.get("/login/").status_code == 200
    assert _session_key(browser) == planted.session_key  # the browser sends the planted key

    _password_step(browser)
    between = _session_key(browser)
    assert between and between != planted.session_key
    assert not SessionStore().exists(planted.session_key)
    assert _code_step(browser, app.code()).status_code == 302
    after = _session_key(browser)
    assert after and after not in (between, planted.session_key)
    assert browser.get("/account/").status_code == 200

    # Whoever holds the key of the step between logs in to nothing.
    for key in (planted.session_key, between):
        thief = Browser(stack)
        _plant(thief, key)
        assert thief.get("/account/").headers["Location"] == "/login/?next=/account/"


def test_a_replayed_totp_code_and_a_used_recovery_code_are_refused_on_the_page(stack, ada, app):
    codes = recovery_codes.codes_replace(user=ada)
    browser = Browser(stack)
    _password_step(browser)
    assert _code_step(browser, app.code()).status_code == 302

    other = Browser(stack)
    _password_step(other)
    replay = _code_step(other, app.used_code())
    assert replay.status_code == 400 and WRONG_CODE in replay.text
    assert other.get("/account/").status_code == 302
    assert _code_step(other, codes[0]).status_code == 302  # the same step goes on with a right proof
    assert other.get("/account/").status_code == 200

    third = Browser(stack)
    _password_step(third)
    used = _code_step(third, codes[0])
    assert used.status_code == 400 and WRONG_CODE in used.text
    assert third.get("/account/").status_code == 302
    wrong = [e for e in _kinds(ada, "login_failed") if e.detail == "wrong second factor"]
    assert len(wrong) == 2


def test_five_wrong_codes_lock_the_account_from_that_address_and_count_as_failed_log_ins(stack, ada, app, settings):
    _behind_a_proxy(settings)
    attacker = Browser(stack)
    attacker.http.headers["X-Forwarded-For"] = "203.0.113.7"
    _password_step(attacker)
    answers = [_code_step(attacker, _wrong(app)).status_code for _ in range(settings.AXES_FAILURE_LIMIT)]
    assert answers == [400] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    assert len([e for e in _kinds(ada, "login_failed") if e.detail == "wrong second factor"]) == 5
    locked = attacker.log_in("ada")
    assert locked.status_code == 429 and "Retry-After" in locked.headers  # even with the right password
    assert not LoginSession.objects.filter(user=ada).exists()

    owner = Browser(stack)
    owner.http.headers["X-Forwarded-For"] = "198.51.100.9"
    _password_step(owner)
    assert _code_step(owner, app.code()).headers["Location"] == "/account/"


def test_a_missing_expired_or_dead_step_goes_back_to_the_login_page(stack, ada, app, settings):
    settings.AXES_FAILURE_LIMIT = 50  # the token's own limit, not the lockout, ends the last step here
    browser = Browser(stack)
    gone = browser.get(VERIFY)  # nothing in the session
    assert gone.status_code == 302 and gone.headers["Location"] == "/login/"
    assert EXPIRED in browser.get("/login/").text

    _password_step(browser)
    MfaLoginToken.objects.filter(user=ada).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = _code_step(browser, app.code())
    assert expired.status_code == 302 and expired.headers["Location"] == "/login/"
    assert EXPIRED in browser.get("/login/").text
    assert browser.get("/account/").status_code == 302

    _password_step(browser)
    assert [_code_step(browser, _wrong(app)).status_code for _ in range(5)] == [400] * 5
    dead = _code_step(browser, app.code())  # the right code, on a step that 5 wrong ones ended
    assert dead.status_code == 302 and dead.headers["Location"] == "/login/"
    assert EXPIRED in browser.get("/login/").text
    assert browser.get("/account/").status_code == 302


def test_staff_with_a_factor_pass_the_admin_login_in_two_steps(stack):
    root = User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    app = Authenticator(root, with_totp(root))
    browser = Browser(stack)
    _password_step(browser, "root", path="/admin/login/")
    assert browser.get("/admin/").headers["Location"].startswith("/admin/login/")
    done = _code_step(browser, app.code())
    assert done.status_code == 302 and done.headers["Location"] == "/admin/"
    assert browser.get("/admin/").status_code == 200

    # The admin's own next is kept; staff without a factor still log in with the password alone.
    other = Browser(stack)
    _password_step(other, "root", path="/admin/login/?next=/admin/users/user/")
    assert _code_step(other, app.code()).headers["Location"] == "/admin/users/user/"
    UserFactory(username="ops", is_staff=True, is_email_verified=True)
    plain = Browser(stack).log_in("ops", path="/admin/login/")
    assert plain.status_code == 302 and plain.headers["Location"] == "/admin/"


def test_an_open_redirect_in_next_is_ignored(stack, ada, app):
    root = User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    root_app = Authenticator(root, with_totp(root))
    for path, who, code, landing in (
        ("/login/", "ada", app.code, "/account/"),
        ("/admin/login/", "root", root_app.code, "/admin/"),
    ):
        browser = Browser(stack)
        answer = browser.post_form(path, {"username": who, "password": PASSWORD, "next": "https://evil.example/"})
        assert answer.status_code == 302 and answer.headers["Location"] == VERIFY, path
        done = _code_step(browser, code())
        assert done.status_code == 302 and done.headers["Location"] == landing, path
