"""The HTML pages (Django test client with CSRF checks on)."""

import re

import pytest
from django.test import Client

from users import tokens
from users.models import EmailVerification, User
from users.tests.factories import create_verification

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser() -> Client:
    return Client(enforce_csrf_checks=True)


def _csrf(client: Client, url: str) -> str:
    page = client.get(url)
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


def _form(**overrides):
    data = {
        "username": "dora",
        "full_name": "Dora Explorer",
        "email": "dora@example.com",
        "password1": "correct horse battery staple",
        "password2": "correct horse battery staple",
    }
    return data | overrides


def test_signup_form_creates_user_and_redirects_to_check_inbox(browser):
    token = _csrf(browser, "/signup/")
    response = browser.post("/signup/", _form(csrfmiddlewaretoken=token))
    assert response.status_code == 302 and response["Location"] == "/signup/done/"
    assert "Check your inbox" in browser.get("/signup/done/").content.decode()
    assert User.objects.get(username="dora").email_verifications.count() == 1


def test_signup_form_without_csrf_token_is_refused(browser):
    assert browser.post("/signup/", _form()).status_code == 403
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"password2": "something else entirely"}, "password2", "The two passwords"),
        ({"password1": "password", "password2": "password"}, "password1", "too common"),
        ({"email": "nope"}, "email", "valid email"),
        ({"username": "bad name!"}, "username", "valid username"),
    ],
)
def test_signup_form_shows_errors_beside_the_field(browser, overrides, field, text):
    token = _csrf(browser, "/signup/")
    response = browser.post("/signup/", _form(csrfmiddlewaretoken=token, **overrides))
    assert response.status_code == 400
    page = response.content.decode()
    block = page.split(f'id="field-{field}"', 1)[1].split('<div class="field"', 1)[0]
    assert text in block
    assert not User.objects.exists()


def test_signup_form_answers_a_registered_email_like_a_new_one(browser):
    User.objects.create_user(username="existing", email="Dora@Example.com", password="x", full_name="D")
    token = _csrf(browser, "/signup/")
    response = browser.post("/signup/", _form(csrfmiddlewaretoken=token))
    assert response.status_code == 302 and response["Location"] == "/signup/done/"
    assert list(User.objects.values_list("username", flat=True)) == ["existing"]


def test_signup_form_reports_taken_username_beside_the_field(browser):
    User.objects.create_user(username="dora", email="other@example.com", password="x", full_name="D")
    token = _csrf(browser, "/signup/")
    response = browser.post("/signup/", _form(csrfmiddlewaretoken=token))
    assert response.status_code == 400
    block = response.content.decode().split('id="field-username"', 1)[1].split('<div class="field"', 1)[0]
    assert "already exists" in block


def test_verify_page_get_never_consumes_and_post_verifies(browser):
    verification = create_verification()
    code = tokens.make_code(verification.pk, verification.nonce)
    url = f"/verify-email/?email_id={verification.pk}&secret_code={code}"
    for _ in range(3):  # a mail scanner following the link, twice, then the person
        page = browser.get(url)
        assert page.status_code == 200 and "Verify my email address" in page.content.decode()
        assert page["Referrer-Policy"] == "strict-origin"
    verification.refresh_from_db()
    assert verification.verified_at is None
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    done = browser.post(
        "/verify-email/", {"email_id": verification.pk, "secret_code": code, "csrfmiddlewaretoken": token}
    )
    assert done.status_code == 200 and "is verified" in done.content.decode()
    assert User.objects.get(pk=verification.user_id).is_email_verified
    assert EmailVerification.objects.get(pk=verification.pk).state == "verified"
    again = browser.get(url)
    assert again.status_code == 400 and "invalid or has expired" in again.content.decode()


def test_verify_page_for_bad_links_says_invalid(browser):
    verification = create_verification()
    for url in (
        "/verify-email/",
        "/verify-email/?email_id=abc&secret_code=x",
        f"/verify-email/?email_id={verification.pk}&secret_code=wrong",
    ):
        page = browser.get(url)
        assert page.status_code == 400 and "invalid or has expired" in page.content.decode()
        assert page["Referrer-Policy"] == "strict-origin"


@pytest.mark.django_db
def test_error_pages_keep_the_banks_layout(client, settings):
    """A mistyped address and a form that expired (a stale tab) were Django's bare pages (a review in
    Chromium); the crash page needs no request (Django renders it without one)."""
    from django.template.loader import render_to_string

    missing = client.get("/no-such-page/")
    assert missing.status_code == 404 and settings.SITE_NAME in missing.content.decode()
    assert 'href="/login/"' in missing.content.decode()
    strict = Client(enforce_csrf_checks=True)
    stale = strict.post("/login/", {"username": "ada", "password": "x"})
    assert stale.status_code == 403 and "This form has expired" in stale.content.decode()
    assert settings.SITE_NAME in stale.content.decode()
    assert "Something went wrong on our side" in render_to_string("500.html")
    # The layout's error summary looks for forms without evaluating the lazy CSRF token: a page with
    # no form sets no CSRF cookie (it did on every page, a review).
    assert "csrftoken" not in Client().get("/no-such-page/").cookies


@pytest.mark.django_db
def test_a_session_that_ended_is_told_on_the_pages_only(client, settings):
    """The notice that a session had ended was queued by an API answer and by a log-out too (a review):
    the log-out's user was told "log in again" after logging out."""
    from users.models import LoginSession
    from users.tests.factories import UserFactory

    settings.MFA_REQUIRED_ROLES = ("none",)
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    for path, method in (("/api/users/me/", "get"), ("/logout/", "post"), ("/account/", "get")):
        browser = Client()
        assert (
            browser.post("/login/", {"username": "ada", "password": "correct horse battery staple"}).status_code == 302
        )
        LoginSession.objects.update(revoked_at=LoginSession.objects.first().created_at)
        getattr(browser, method)(path)
        told = "Your session had ended" in browser.get("/login/").content.decode()
        assert told == (path == "/account/"), path


@pytest.mark.django_db
def test_the_session_ended_notice_is_for_a_page_that_sends_to_the_log_in(settings):
    """The notice was queued by any request outside /api/: a second step's JSON challenge, the
    admin's log-out, the page's keep-alive, and the log-in itself sent from a page whose session
    had ended — so a person who had just logged in was told to log in again (a review)."""
    from users.models import LoginSession
    from users.tests.factories import UserFactory

    settings.MFA_REQUIRED_ROLES = ("none",)
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    credentials = {"username": "ada", "password": "correct horse battery staple"}
    for path, method in (
        ("/account/security/challenge/", "post"),
        ("/admin/logout/", "post"),
        ("/account/session/", "get"),
        ("/login/", "post"),
    ):
        browser = Client()
        assert browser.post("/login/", credentials).status_code == 302
        LoginSession.objects.update(revoked_at=LoginSession.objects.first().created_at)
        getattr(browser, method)(path, credentials if path == "/login/" else {})
        if path != "/login/":
            assert browser.post("/login/", credentials).status_code == 302
        page = browser.get("/account/").content.decode()
        assert "Your account" in page and "Your session had ended" not in page, path


@pytest.mark.django_db
def test_a_page_keeps_its_session_without_asking_for_itself_again(settings):
    """The idle warning's "Stay logged in" asked for the page's path again: without its query a
    verification page answered 400 (and spent a verification attempt), and the page said the
    session had ended. /account/session/ answers when the session now ends; nothing else."""
    from users.models import LoginSession
    from users.tests.factories import UserFactory

    settings.MFA_REQUIRED_ROLES = ("none",)
    settings.SESSION_IDLE_TIMEOUT = 900
    UserFactory(username="ada", email="ada@example.com", is_email_verified=True)
    browser = Client()
    browser.post("/login/", {"username": "ada", "password": "correct horse battery staple"})
    answer = browser.get("/account/session/")
    assert answer.status_code == 200 and "no-store" in answer["Cache-Control"]
    assert answer.json()["extensible"] is True and 890 <= answer.json()["ends_in"] <= 900
    assert browser.post("/account/session/").status_code == 405
    LoginSession.objects.update(revoked_at=LoginSession.objects.first().created_at)
    answer = browser.get("/account/session/")
    assert answer.status_code == 403 and answer.json() == {"detail": "Your session has ended: log in again."}


@pytest.mark.django_db
def test_account_pages_name_no_colleague_and_every_id_once(client):
    """The events named staff by username ("staff:root") and a customer's own failed log-in "by
    system"; the address and password forms both had id_code and id_credential, so a label focused
    the other form's field (a review in Chromium)."""
    from collections import Counter

    from users.models import SecurityEvent
    from users.tests.factories import UserFactory, with_totp

    ada = UserFactory(username="ada", is_email_verified=True)
    with_totp(ada)
    SecurityEvent.objects.create(user=ada, kind="profile_changed", actor="staff:root", detail="full_name")
    SecurityEvent.objects.create(user=ada, kind="login_failed", actor="system")
    client.force_login(ada)
    for url in ("/account/", "/account/security/"):
        page = client.get(url).content.decode()
        assert "staff:root" not in page and "a member of our staff" in page and "whoever tried" in page, url
        ids = Counter(re.findall(r'\bid="([^"]+)"', page))
        assert [i for i, n in ids.items() if n > 1] == [], url
        assert "autofocus" not in page, url
