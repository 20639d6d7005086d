"""``/account/security/`` and the pages' layout, over HTTP against the running stack: TOTP set up
with its QR code and real codes (pyotp), recovery codes shown once, passkeys registered and used
with a software authenticator answering the options the page hands the browser, sessions logged
out from the page, staff sent to set up a factor before the admin — each tried from the wrong
user or without the proof too."""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import timedelta

import pyotp
import pytest
import requests
from django.utils import timezone

from conftest import message_text, wait_for
from tests.security.test_account_takeover import PASSWORD, Api, Browser
from tests.security.test_second_factor import Authenticator, enrol
from users.models import LoginSession, Passkey, SecurityEvent, TotpDevice, User
from users.tests.authenticator import SoftAuthenticator
from users.tests.factories import UserFactory, with_totp

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PAGE = "/account/security/"
CODES = re.compile(r"<li><code>([^<]+)</code></li>")
KEY = re.compile(r'<code id="totp-secret">([A-Z2-7]+)</code>')


@pytest.fixture
def stack(stack: str, settings) -> str:
    """The shared stack, under another bank's name (the layout must show ``SITE_NAME``)."""
    settings.SITE_NAME = "Northwind Bank"
    return stack


def logged_in(stack: str, username: str = "ada") -> Browser:
    browser = Browser(stack)
    answer = browser.log_in(username)
    assert answer.status_code == 302 and answer.headers["Location"] == "/account/", (answer.status_code, answer.text)
    return browser


def post(browser: Browser, form: str, **fields: str) -> requests.Response:
    return browser.post_form(PAGE, {"form": form, **fields})


def shown_codes(answer: requests.Response) -> list[str]:
    return CODES.findall(answer.text)


def set_up_totp(browser: Browser, **proof: str) -> tuple[pyotp.TOTP, list[str]]:
    """What a user does on the page: the password, scan (here: read the key), type the first code."""
    setup = post(browser, "totp_setup", current_password=PASSWORD, **proof)
    assert setup.status_code == 200, setup.text
    [secret] = KEY.findall(setup.text)
    [qr] = re.findall(r'<img id="totp-qr" src="data:image/svg\+xml;base64,([^"]+)"', setup.text)
    assert base64.b64decode(qr).startswith(b'<svg xmlns="http://www.w3.org/2000/svg"')
    app = pyotp.TOTP(secret)
    confirmed = post(browser, "totp_confirm", code=app.now())
    assert confirmed.status_code == 200, confirmed.text
    return app, shown_codes(confirmed)


def options_in(page: requests.Response) -> dict:
    [raw] = re.findall(r'<script id="passkey-creation-options" type="application/json">(.+?)</script>', page.text)
    return json.loads(html.unescape(raw))


def challenge(browser: Browser, path: str, **fields: str) -> requests.Response:
    """What webauthn.js does for a proof: POST the form (CSRF, no secrets) to the options URL."""
    return browser.post_form(path, fields, form_page=PAGE if path.startswith("/account/") else "/login/verify/")


def add_passkey(browser: Browser, origin: str, name: str = "laptop", **proof: str) -> tuple[SoftAuthenticator, str]:
    begun = post(browser, "passkey_begin", name=name, current_password=PASSWORD, **proof)
    assert begun.status_code == 200, begun.text
    device = SoftAuthenticator(origin=origin)
    finished = post(browser, "passkey_finish", name=name, credential=json.dumps(device.create(options_in(begun))))
    return device, finished.text if finished.status_code == 200 else browser.get(PAGE).text


def test_the_layout_names_the_bank_links_the_pages_and_the_root_leads_to_account_or_log_in(stack, ada):
    visitor = Browser(stack)
    assert visitor.get("/").headers["Location"] == "/login/"
    page = visitor.get("/login/").text
    assert "Northwind Bank" in page and 'href="/signup/"' in page and 'href="/login/"' in page
    assert 'href="/account/security/"' not in page

    browser = logged_in(stack)
    assert browser.get("/").headers["Location"] == "/account/"
    page = browser.get("/account/").text
    assert 'href="/account/security/"' in page and 'href="/account/"' in page and 'action="/logout/"' in page
    assert 'href="/signup/"' not in page
    assert browser.get(PAGE).status_code == 200
    assert visitor.get(PAGE).headers["Location"].startswith("/login/?next=")


def test_totp_set_up_on_the_page_shows_its_qr_code_then_ten_codes_once(stack, ada, smtp_server):
    browser = logged_in(stack)
    wrong = post(browser, "totp_setup", current_password="not my password")
    assert wrong.status_code == 400 and "That is not your current password." in wrong.text
    assert not TotpDevice.objects.filter(user=ada).exists()

    setup = post(browser, "totp_setup", current_password=PASSWORD)
    [secret] = KEY.findall(setup.text)
    app = pyotp.TOTP(secret)
    refused = post(
        browser, "totp_confirm", code=next(c for c in ("000000", "111111") if not app.verify(c, valid_window=1))
    )
    assert refused.status_code == 400 and "That code is not right" in refused.text
    assert "Off." not in browser.get(PAGE).text  # the set-up waits for its first code
    confirmed = post(browser, "totp_confirm", code=app.now())
    codes = shown_codes(confirmed)
    assert len(codes) == 10 and len(set(codes)) == 10 and "shown this once" in confirmed.text
    assert (
        confirmed.headers["Cache-Control"].startswith("max-age=0") and "no-store" in confirmed.headers["Cache-Control"]
    )

    again = browser.get(PAGE).text  # never shown again, nor the key
    assert not shown_codes(browser.get(PAGE)) and secret not in again and "On: log-ins ask for a code" in again
    assert "10 unused." in again
    assert SecurityEvent.objects.filter(user=ada, kind=SecurityEvent.Kind.MFA_ENABLED).count() == 1
    # The next log-in asks for the code, and one of the codes works once.
    second = Browser(stack)
    assert second.log_in("ada").headers["Location"] == "/login/verify/"
    assert second.post_form("/login/verify/", {"code": codes[0]}).headers["Location"] == "/account/"


def test_with_a_factor_every_change_on_the_page_needs_its_proof(stack, ada):
    browser = logged_in(stack)
    app, codes = set_up_totp(browser)
    user_app = Authenticator(ada, app.secret)

    missing = post(browser, "recovery_codes", current_password=PASSWORD)
    assert missing.status_code == 400 and "Give a code from your authenticator app" in missing.text
    wrong = post(browser, "recovery_codes", current_password=PASSWORD, code="ZZZZ-ZZZZ-ZZ")
    assert wrong.status_code == 400 and "That code is wrong or was used already" in wrong.text
    fresh = post(browser, "recovery_codes", current_password=PASSWORD, code=user_app.code())
    new_codes = shown_codes(fresh)
    assert len(new_codes) == 10 and not set(new_codes) & set(codes)
    # The old codes stopped working: one of them can't turn the app off; a new one can.
    refused = post(browser, "totp_disable", current_password=PASSWORD, code=codes[1])
    assert refused.status_code == 400 and TotpDevice.objects.filter(user=ada).exists()
    off = post(browser, "totp_disable", current_password=PASSWORD, code=new_codes[0])
    assert off.status_code == 302 and not TotpDevice.objects.filter(user=ada).exists()
    assert "They come with your first second factor." in browser.get(PAGE).text  # the codes went with it


def test_a_passkey_added_on_the_page_logs_in_at_the_second_step_and_is_removed_with_its_proof(stack, ada, smtp_server):
    browser = logged_in(stack)
    device, page = add_passkey(browser, stack)
    assert len(CODES.findall(page)) == 10, "a first factor comes with its recovery codes"
    assert Passkey.objects.filter(user=ada, name="laptop").count() == 1
    assert "laptop" in browser.get(PAGE).text
    assert SecurityEvent.objects.filter(user=ada, kind=SecurityEvent.Kind.PASSKEY_ADDED).count() == 1

    # The second step of a log-in on the page, with the passkey (options fetched as webauthn.js does).
    other = Browser(stack)
    assert other.log_in("ada").headers["Location"] == "/login/verify/"
    assert "Use your passkey" in other.get("/login/verify/").text
    options = challenge(other, "/login/verify/challenge/").json()["options"]
    assertion = device.get(options)
    assert other.post_form("/login/verify/", {"credential": json.dumps(assertion)}).headers["Location"] == "/account/"
    # The same assertion again (a replay) is the one wrong-proof answer.
    third = Browser(stack)
    third.log_in("ada")
    replay = third.post_form("/login/verify/", {"credential": json.dumps(assertion)})
    assert replay.status_code == 400 and "That code is not right, or was used already" in replay.text

    # Removing it takes the password and a proof: here the passkey itself.
    key = Passkey.objects.get(user=ada)
    no_proof = post(browser, "passkey_remove", passkey=str(key.pk), current_password=PASSWORD)
    assert no_proof.status_code == 400 and Passkey.objects.filter(pk=key.pk).exists()
    proof = device.get(challenge(browser, "/account/security/challenge/").json()["options"])
    gone = post(browser, "passkey_remove", passkey=str(key.pk), current_password=PASSWORD, credential=json.dumps(proof))
    assert gone.status_code == 302 and not Passkey.objects.filter(pk=key.pk).exists()


def test_a_registration_answer_replayed_or_for_someone_else_adds_nothing(stack, ada):
    browser = logged_in(stack)
    begun = post(browser, "passkey_begin", name="laptop", current_password=PASSWORD)
    credential = json.dumps(SoftAuthenticator(origin=stack).create(options_in(begun)))
    assert post(browser, "passkey_finish", name="laptop", credential=credential).status_code == 200
    again = post(browser, "passkey_finish", name="copy", credential=credential)
    assert again.status_code == 302 and "The passkey was not added" in browser.get(PAGE).text
    # Ada sends an answer to options made for Bob (an answer taken from someone else): nothing is added.
    UserFactory(username="bob", email="bob@example.com", is_email_verified=True)
    bobs_options = options_in(post(logged_in(stack, "bob"), "passkey_begin", name="b", current_password=PASSWORD))
    stolen = json.dumps(SoftAuthenticator(origin=stack).create(bobs_options))
    assert post(browser, "passkey_finish", name="stolen", credential=stolen).status_code == 302
    assert list(Passkey.objects.filter(user=ada).values_list("name", flat=True)) == ["laptop"]
    assert not Passkey.objects.filter(user__username="bob").exists()


def test_sessions_are_listed_and_logged_out_from_the_page_but_not_someone_elses(stack, ada):
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    browser = logged_in(stack)
    page = browser.get(PAGE).text
    api_row = LoginSession.objects.get(user=ada, kind=LoginSession.Kind.API)
    assert str(api_row.pk) in page and "this browser" in page

    bob = UserFactory(username="bob", email="bob@example.com", is_email_verified=True)
    bob_api = Api(stack)
    assert bob_api.log_in("bob").status_code == 200
    bob_row = LoginSession.objects.get(user=bob)
    assert post(browser, "session_revoke", session=str(bob_row.pk)).status_code == 302
    assert "No such session of yours is still live." in browser.get(PAGE).text
    assert bob_api.call("GET", "/api/users/me/").status_code == 200

    assert post(browser, "session_revoke", session=str(api_row.pk)).status_code == 302
    assert api.call("GET", "/api/users/me/").status_code == 401
    assert browser.get("/account/").status_code == 200  # this browser stays logged in


def test_staff_without_a_factor_are_sent_to_set_one_up_before_any_admin_page(stack, settings):
    User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    browser = Browser(stack)
    assert browser.log_in("root", path="/admin/login/").status_code == 302
    for path in ("/admin/", "/admin/users/user/", "/admin/queues/", "/account/"):
        assert browser.get(path).headers.get("Location") == PAGE, path
    page = browser.get(PAGE).text
    assert page.count("Your role needs a second factor") == 1  # the page says it; no flash message twice over
    set_up_totp(browser)
    assert browser.get("/admin/").status_code == 200

    settings.MFA_REQUIRED_ROLES = ("none",)
    User.objects.create_superuser(username="free", email="free@example.com", password=PASSWORD, full_name="F")
    other = Browser(stack)
    other.log_in("free", path="/admin/login/")
    assert other.get("/admin/").status_code == 200


def test_a_banker_without_a_factor_gets_the_security_page_a_depositor_the_account(stack):
    UserFactory(username="bank", email="bank@example.com", role=User.Role.BANKER, is_email_verified=True)
    banker = logged_in(stack, "bank")
    assert banker.get("/account/").headers["Location"] == PAGE
    UserFactory(username="dee", email="dee@example.com", is_email_verified=True)
    assert logged_in(stack, "dee").get("/account/").status_code == 200


def test_a_passkey_only_user_resets_the_password_on_the_page_with_the_passkey(stack, ada, smtp_server):
    browser = logged_in(stack)
    device, _ = add_passkey(browser, stack)
    visitor = Browser(stack)
    assert visitor.post_form("/reset-password/", {"email": "ada@example.com"}).status_code == 200
    [mail] = wait_for(lambda: [m for m in smtp_server.to("ada@example.com") if "password" in m["Subject"].lower()])
    url = re.search(r"https?://\S+/reset-password/\?\S+", message_text(mail)).group(0)
    query = dict(re.findall(r"(uid|token)=([^&\s]+)", url))
    form = visitor.http.get(url, timeout=10)
    assert "Use a passkey instead of a code" in form.text
    fields = {"uid": query["uid"], "token": query["token"]}
    options = visitor.post_form("/reset-password/challenge/", fields, form_page=url.removeprefix(stack)).json()
    new = {"new_password1": "a brand new pass phrase", "new_password2": "a brand new pass phrase"}
    refused = visitor.post_form("/reset-password/", {**fields, **new}, form_page=url.removeprefix(stack))
    assert refused.status_code == 400 and "use your passkey" in refused.text
    credential = json.dumps(device.get(options["options"]))
    done = visitor.post_form(
        "/reset-password/", {**fields, **new, "credential": credential}, form_page=url.removeprefix(stack)
    )
    assert done.status_code == 200 and "Your password is changed" in done.text
    assert User.objects.get(pk=ada.pk).check_password("a brand new pass phrase")


def test_the_proof_options_are_for_the_logged_in_user_only(stack, ada):
    app = Authenticator(ada, with_totp(ada))  # no passkey: nothing to ask a browser for
    visitor = Browser(stack)
    anonymous = visitor.post_form("/account/security/challenge/", {}, form_page="/login/")
    assert anonymous.status_code == 403 and anonymous.json() == {"detail": "Your session has ended: log in again."}
    assert visitor.post_form("/login/verify/challenge/", {}, form_page="/login/").status_code == 400
    assert visitor.log_in("ada").headers["Location"] == "/login/verify/"
    assert visitor.post_form("/login/verify/challenge/", {}, form_page="/login/verify/").json() == {
        "detail": "You have no passkey: use a code."
    }
    assert visitor.post_form("/login/verify/", {"code": app.code()}).headers["Location"] == "/account/"
    assert visitor.post_form("/account/security/challenge/", {}, form_page=PAGE).status_code == 400


def test_a_passkey_user_adds_an_authenticator_app_beside_it(stack, ada):
    browser = logged_in(stack)
    device, _ = add_passkey(browser, stack)
    proof = json.dumps(device.get(challenge(browser, "/account/security/challenge/").json()["options"]))
    _app, codes = set_up_totp(browser, credential=proof)
    assert len(codes) == 10 and TotpDevice.objects.get(user=ada).confirmed_at is not None
    assert Passkey.objects.filter(user=ada).count() == 1  # both factors now


def _deep_client_data() -> dict:
    """A well-formed assertion whose clientDataJSON is JSON nested thousands deep."""
    deep = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
    return {
        "id": "AAAA",
        "rawId": "AAAA",
        "type": "public-key",
        "response": {"clientDataJSON": deep, "authenticatorData": "AAAA", "signature": "AAAA"},
        "clientExtensionResults": {},
    }


def test_a_malformed_passkey_answer_is_a_wrong_proof_never_a_500(stack, ada):
    app = Authenticator(ada, with_totp(ada))
    browser = Browser(stack)
    for credential in ("[" * 3000, json.dumps(_deep_client_data()), json.dumps({"x": "a" * 100_000}), "{not json"):
        assert browser.log_in("ada").headers["Location"] == "/login/verify/"
        answer = browser.post_form("/login/verify/", {"credential": credential})
        assert answer.status_code == 400, (credential[:20], answer.status_code)
    assert browser.post_form("/login/verify/", {"code": app.code()}).headers["Location"] == "/account/"
    for credential in ("[" * 3000, json.dumps(_deep_client_data())):
        answer = post(browser, "passkey_finish", name="x", credential=credential)
        assert answer.status_code == 302 and "The passkey was not added" in browser.get(PAGE).text
    # Anonymously, through the API's one-step passkey log-in.
    begun = requests.post(f"{stack}/api/tokens/passkey/begin/", json={}, timeout=10).json()
    for credential in (_deep_client_data(), {"response": "x"}):
        answer = requests.post(
            f"{stack}/api/tokens/passkey/",
            json={"passkey_token": begun["passkey_token"], "credential": credential},
            timeout=10,
        )
        assert answer.status_code == 401, answer.text


def test_guessing_the_first_code_of_a_set_up_locks_out_and_an_old_set_up_expires(stack, ada, settings, smtp_server):
    """A stolen session can't guess its way into a set-up the owner abandoned: wrong first codes
    count as failed log-ins, and a set-up not confirmed in 10 minutes starts again."""
    browser = logged_in(stack)
    [secret] = KEY.findall(post(browser, "totp_setup", current_password=PASSWORD).text)
    app = pyotp.TOTP(secret)
    wrong = next(c for c in (f"{n:06d}" for n in range(10)) if not app.verify(c, valid_window=1))
    for _ in range(settings.AXES_FAILURE_LIMIT):
        post(browser, "totp_confirm", code=wrong)
    locked = post(browser, "totp_confirm", code=app.now())
    assert locked.status_code == 429 and "Too many failed log-ins. Try again in 15 minutes." in locked.text
    assert 840 < int(locked.headers["Retry-After"]) <= 900
    assert not TotpDevice.objects.filter(user=ada, confirmed_at__isnull=False).exists()

    bob = UserFactory(username="bob", email="bob@example.com", is_email_verified=True)
    other = logged_in(stack, "bob")
    [secret] = KEY.findall(post(other, "totp_setup", current_password=PASSWORD).text)
    TotpDevice.objects.filter(user=bob).update(created_at=timezone.now() - timedelta(minutes=11))
    expired = post(other, "totp_confirm", code=pyotp.TOTP(secret).now())
    assert expired.status_code == 302 and not TotpDevice.objects.filter(user=bob).exists()
    assert "The set-up expired" in other.get(PAGE).text
    # Confirmed in time, it is mailed: the owner learns of a factor they did not add.
    [secret] = KEY.findall(post(other, "totp_setup", current_password=PASSWORD).text)
    assert post(other, "totp_confirm", code=pyotp.TOTP(secret).now()).status_code == 200
    wait_for(
        lambda: [m for m in smtp_server.to("bob@example.com") if "authenticator app was set up" in m["Subject"]],
        what="the notice of a new second factor",
    )


def test_a_change_the_page_refuses_anyway_never_spends_the_code_sent_with_it(stack, ada):
    browser = logged_in(stack)
    _app, codes = set_up_totp(browser)
    again = post(browser, "totp_setup", current_password=PASSWORD, code=codes[0])
    assert again.status_code == 302 and "TOTP is already on" in html.unescape(browser.get(PAGE).text)
    gone = post(browser, "passkey_remove", passkey="999999", current_password=PASSWORD, code=codes[0])
    assert gone.status_code == 302 and "You have no such passkey." in html.unescape(browser.get(PAGE).text)
    assert not SecurityEvent.objects.filter(user=ada, kind="recovery_code_used").exists()
    fresh = post(browser, "recovery_codes", current_password=PASSWORD, code=codes[0])
    assert fresh.status_code == 200 and len(shown_codes(fresh)) == 10  # the code still worked


def test_every_other_session_is_logged_out_from_the_page_or_the_api_and_nobody_elses(stack, ada, settings):
    """After adding a factor (or seeing a device they don't know) the user can end every other
    session at once — a session opened with the password alone before the factor existed included
    (a review; ASVS 7.4.3)."""
    first, second, browser = Api(stack), Api(stack), logged_in(stack)
    assert first.log_in("ada").status_code == 200 and second.log_in("ada").status_code == 200
    UserFactory(username="bob", email="bob@example.com", is_email_verified=True)
    bob = Api(stack)
    assert bob.log_in("bob").status_code == 200
    assert 'id="sessions-end-others"' in browser.get(PAGE).text

    assert post(browser, "sessions_end_others").status_code == 302
    assert "Every other session is logged out (2)." in browser.get(PAGE).text
    assert first.call("GET", "/api/users/me/").status_code == 401
    assert second.call("GET", "/api/users/me/").status_code == 401
    assert browser.get("/account/").status_code == 200 and bob.call("GET", "/api/users/me/").status_code == 200
    assert 'id="sessions-end-others"' not in browser.get(PAGE).text  # nothing else to end

    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    ended = api.call("DELETE", "/api/sessions/")
    assert ended.status_code == 200 and ended.json() == {"revoked": 1}
    assert browser.get("/account/").status_code == 302  # the browser is logged out
    assert api.call("GET", "/api/users/me/").status_code == 200  # the caller is not
    assert api.call("DELETE", "/api/sessions/").json() == {"revoked": 0}
    details = SecurityEvent.objects.filter(user=ada, kind="session_revoked").values_list("detail", flat=True)
    assert sorted(details) == ["every other session (1)", "every other session (2)"]
    assert bob.call("GET", "/api/users/me/").status_code == 200

    assert Api(stack).call("DELETE", "/api/sessions/").status_code == 401
    settings.MFA_REQUIRED_ROLES = ("staff", "banker")
    UserFactory(username="bank", email="bank@example.com", role=User.Role.BANKER, is_email_verified=True)
    banker = Api(stack)
    assert banker.log_in("bank").status_code == 200
    refused = banker.call("DELETE", "/api/sessions/")
    assert refused.status_code == 403 and refused.json()["code"] == "mfa_enrollment_required"


def test_a_stolen_token_spending_the_users_requests_cannot_stop_the_owner_ending_it(stack, ada, settings):
    """The account limit counted per user: a thief's 60 cheap requests a minute answered the owner's
    "log it out" with 429, on the API and the page (a review). Ending sessions counts per session;
    ending every other one also ends a log-in still owing its second step."""
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] | {"account": "3/min"}
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"DEFAULT_THROTTLE_RATES": rates}
    thief, owner, browser = Api(stack), Api(stack), logged_in(stack)
    assert thief.log_in("ada").status_code == 200 and owner.log_in("ada").status_code == 200
    assert 429 in [thief.call("GET", "/api/users/me/").status_code for _ in range(4)]
    assert owner.call("GET", "/api/users/me/").status_code == 429  # the rest of the account waits
    assert owner.call("DELETE", f"/api/sessions/{thief.tokens['session_id']}/").status_code == 204
    assert thief.call("GET", "/api/sessions/").status_code == 401
    assert post(browser, "sessions_end_others").status_code == 302
    assert owner.call("GET", "/api/sessions/").status_code == 401  # the page ended it too
    assert browser.get("/account/").status_code == 200


def test_ending_every_other_session_ends_a_log_in_still_owing_its_second_step(stack, ada):
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    app, _ = enrol(api, ada)
    pending = Api(stack).call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD}).json()
    assert pending["code"] == "mfa_required"
    assert api.call("DELETE", "/api/sessions/").json() == {"revoked": 0}
    late = Api(stack).call("POST", "/api/tokens/mfa/", {"mfa_token": pending["mfa_token"], "code": app.code()})
    assert late.status_code == 401


def test_every_password_form_names_its_account_for_the_password_manager(stack, ada):
    """A password manager saves a new password against the account the form names: the change,
    reset and step-up forms named none, so it saved a nameless entry and left the old one stale
    (Chromium: "Password forms should have (optionally hidden) username fields"; a review)."""
    from django.contrib.auth.tokens import default_token_generator
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    browser = logged_in(stack)
    ada.refresh_from_db()  # the log-in changed what the reset token covers
    uid, token = urlsafe_base64_encode(force_bytes(ada.pk)), default_token_generator.make_token(ada)
    pages = {
        "/account/": browser.get("/account/").text,
        PAGE: browser.get(PAGE).text,
        "reset": Browser(stack).http.get(f"{stack}/reset-password/?uid={uid}&token={token}", timeout=60).text,
    }
    # The reset page is opened by whoever holds the link (a forwarded email, a mail scanner) before
    # any second factor: it names no account (a review of this fix).
    reset = pages.pop("reset")
    assert 'type="password"' in reset and 'autocomplete="username"' not in reset and "ada" not in reset
    for where, page in pages.items():
        forms = re.findall(r"<form\b.*?</form>", page, flags=re.DOTALL)
        with_password = [f for f in forms if 'type="password"' in f]
        assert with_password, where
        for form in with_password:
            named = re.search(r'<input[^>]*autocomplete="username"[^>]*>', form)
            assert named and 'value="ada"' in named.group(0) and "name=" not in named.group(0), (where, form[:200])


def test_pages_with_a_per_visitor_form_are_never_cached(stack):
    """The sign-up and resend forms carry the visitor's CSRF token: a shared cache must not hand them
    to the next visitor (a review of the pages)."""
    for path in ("/signup/", "/signup/done/", "/verify-email/resend/"):
        answer = Browser(stack).get(path)
        assert answer.status_code == 200 and "no-store" in answer.headers.get("Cache-Control", ""), path
