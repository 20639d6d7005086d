"""The second factor, tried over HTTP against the running stack (issue "A second factor"): Django on
a real port, PostgreSQL, Redis, an in-process worker and an SMTP sink; real TOTP codes from pyotp.
Each test looks at what a user notices: the answers, the mail, whether a session works."""

from __future__ import annotations

import html
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import StringIO

import pyotp
import pytest
from django.contrib.auth.tokens import default_token_generator
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from conftest import message_text, wait_for
from tests.security.test_account_takeover import CSRF, NEW_PASSWORD, PASSWORD, Api, Browser, _behind_a_proxy
from users import proofs
from users.account_views import PROOF_MISSING, PROOF_WRONG
from users.models import LoginSession, MfaLoginToken, OutboundEmail, SecurityEvent, TotpDevice, User
from users.tests.factories import UserFactory, superuser_with_factor, with_totp

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SECOND_STEP_REFUSED = "That code is wrong or was used already, or the log-in took too long: log in again."


class Authenticator:
    """The user's app: the secret from the set-up; a code for a step no code was accepted for yet."""

    def __init__(self, user: User, secret: str) -> None:
        self.user, self.totp = user, pyotp.TOTP(secret)

    def code(self) -> str:
        """A fresh code: the current step's, or — when it was used already — as if 30 s had passed
        (the last accepted step is moved back in the database instead of sleeping)."""
        step = int(time.time() // 30)
        device = TotpDevice.objects.get(user=self.user)
        if device.last_step is not None and device.last_step >= step - 1:
            TotpDevice.objects.filter(pk=device.pk).update(last_step=step - 2)
        return self.totp.generate_otp(step)

    def used_code(self) -> str:
        """The code of the last accepted step (a replay)."""
        return self.totp.generate_otp(TotpDevice.objects.get(user=self.user).last_step)


def enrol(api: Api, user: User) -> tuple[Authenticator, list[str]]:
    """Set up and confirm TOTP through the API, as a user with their app would."""
    setup = api.call("POST", "/api/mfa/totp/setup/", {"current_password": PASSWORD})
    assert setup.status_code == 200, setup.text
    body = setup.json()
    assert body["otpauth_uri"].startswith("otpauth://totp/") and body["qr_svg"].startswith("<svg")
    app = Authenticator(user, body["secret"])
    confirmed = api.call("POST", "/api/mfa/totp/confirm/", {"code": app.totp.now()})
    assert confirmed.status_code == 200, confirmed.text
    return app, confirmed.json()["recovery_codes"]


def logged_in_with_factor(stack: str, user: User) -> tuple[Api, Authenticator, list[str]]:
    api = Api(stack)
    assert api.log_in(user.username).status_code == 200
    app, codes = enrol(api, user)
    return api, app, codes


def first_step(stack: str, username: str = "ada", *, ip: str | None = None) -> tuple[Api, str]:
    api = Api(stack, ip=ip)
    answer = api.call("POST", "/api/tokens/", {"username": username, "password": PASSWORD})
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["code"] == "mfa_required" and "access" not in body and "refresh" not in body
    return api, body["mfa_token"]


def second_step(api: Api, mfa_token: str, code: str):
    answer = api.call("POST", "/api/tokens/mfa/", {"mfa_token": mfa_token, "code": code})
    if answer.status_code == 200:
        api.http.headers["Authorization"] = f"Bearer {answer.json()['access']}"
    return answer


def _wrong(app: Authenticator) -> str:
    """A code the app does not show for any step of the window."""
    window = {app.totp.at(time.time() + offset) for offset in (-30, 0, 30)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in window)


def _kinds(user: User, kind: str) -> list[SecurityEvent]:
    return list(SecurityEvent.objects.filter(user=user, kind=kind))


# Set-up and the two-step log-in --------------------------------------------------------------------------
def test_set_up_confirm_and_log_in_in_two_steps(stack, ada, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    api, app, codes = logged_in_with_factor(stack, ada)
    assert len(codes) == 10
    assert api.call("GET", "/api/mfa/").json() == {"totp": True, "recovery_codes_left": 10, "passkeys": []}
    assert [e.detail for e in _kinds(ada, "mfa_enabled")] == ["totp"]

    sessions_before = LoginSession.objects.filter(user=ada).count()
    logins_before = len(_kinds(ada, "login"))
    client, mfa_token = first_step(stack)
    answer = client.call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD})
    assert answer.json()["methods"] == ["totp", "recovery_code"]
    # The right password alone: no session, no log-in.
    assert LoginSession.objects.filter(user=ada).count() == sessions_before
    assert len(_kinds(ada, "login")) == logins_before
    assert client.call("GET", "/api/users/me/").status_code == 401

    done = second_step(client, mfa_token, app.code())
    assert done.status_code == 200, done.text
    assert set(done.json()) == {"access", "refresh", "access_expires_at", "refresh_expires_at", "session_id", "user"}
    assert done.json()["user"]["username"] == "ada"
    assert client.call("GET", "/api/users/me/").status_code == 200
    assert len(_kinds(ada, "login")) == logins_before + 1

    # The secret and the codes are nowhere after the set-up: the API, the logs.
    secret = app.totp.secret
    for path in ("/api/mfa/", "/api/users/me/", "/api/users/me/security-events/"):
        assert secret not in api.call("GET", path).text
    logged = caplog.text
    assert secret not in logged and mfa_token not in logged
    assert not any(code in logged or code.replace("-", "") in logged for code in codes)


def test_a_replayed_totp_code_and_a_used_recovery_code_are_refused_alike(stack, ada, smtp_server):
    _, app, codes = logged_in_with_factor(stack, ada)
    client, mfa_token = first_step(stack)
    assert second_step(client, mfa_token, app.code()).status_code == 200

    client, mfa_token = first_step(stack)
    replay = second_step(client, mfa_token, app.used_code())
    assert replay.status_code == 401 and replay.json()["detail"] == SECOND_STEP_REFUSED

    assert second_step(client, mfa_token, codes[0]).status_code == 200
    [notice] = wait_for(lambda: [m for m in smtp_server.to("ada@example.com") if "recovery code" in m["Subject"]])
    assert "recovery code was used" in message_text(notice).lower()
    assert "by the bank's systems" not in message_text(notice)
    assert [e.actor for e in _kinds(ada, "recovery_code_used")] == ["self"]
    client, mfa_token = first_step(stack)
    again = second_step(client, mfa_token, codes[0])
    assert again.status_code == 401 and again.json() == replay.json()


def test_the_right_password_with_a_wrong_second_step_tells_the_owner_once_an_hour(stack, ada, smtp_server):
    """If it was not the owner, their password is known: they hear of it (from where, when) — once
    an hour at most, so whoever has the password can't fill their inbox."""
    _, app, _ = logged_in_with_factor(stack, ada)
    for _ in range(3):
        client, mfa_token = first_step(stack)
        assert second_step(client, mfa_token, _wrong(app)).status_code == 401
    [notice] = wait_for(
        lambda: [m for m in smtp_server.to("ada@example.com") if "not your second factor" in m["Subject"]],
        what="the notice of a failed second step",
    )
    text = message_text(notice)
    assert "127.0.0.1" in text and "change your password" in text and "/account/" in text
    [event] = _kinds(ada, "second_step_failed")
    assert (event.actor, event.client_ip) == ("self", "127.0.0.1")
    assert OutboundEmail.objects.filter(kind="security_notice", event__kind="second_step_failed").count() == 1
    assert len(_kinds(ada, "login_failed")) == 3  # every failure is still counted for the lockout


def test_an_mfa_token_works_once_expires_and_dies_after_five_wrong_codes(stack, ada, settings):
    settings.AXES_FAILURE_LIMIT = 50  # the token's own limit, not the lockout, is under test here
    _, app, codes = logged_in_with_factor(stack, ada)
    client, mfa_token = first_step(stack)
    assert second_step(client, mfa_token, app.code()).status_code == 200
    used = second_step(Api(stack), mfa_token, codes[0])
    assert used.status_code == 401 and used.json()["detail"] == SECOND_STEP_REFUSED

    client, mfa_token = first_step(stack)
    MfaLoginToken.objects.filter(used_at__isnull=True).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert second_step(client, mfa_token, codes[0]).json()["detail"] == SECOND_STEP_REFUSED

    client, mfa_token = first_step(stack)
    for _ in range(5):
        wrong = second_step(client, mfa_token, _wrong(app))
        assert wrong.status_code == 401 and wrong.json()["detail"] == SECOND_STEP_REFUSED
    dead = second_step(client, mfa_token, codes[0])
    assert dead.status_code == 401 and dead.json()["detail"] == SECOND_STEP_REFUSED
    assert second_step(*first_step(stack), codes[0]).status_code == 200  # the code itself was not spent


def test_wrong_second_step_codes_count_as_failed_log_ins_and_lock_the_account_from_that_address(stack, ada, settings):
    _, app, _codes = logged_in_with_factor(stack, ada)
    _behind_a_proxy(settings)
    attacker_ip = "203.0.113.7"
    answers = []
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client, mfa_token = first_step(stack, ip=attacker_ip)
        answers.append(second_step(client, mfa_token, _wrong(app)).status_code)
    # django-axes locks the pair with the failure that reaches the limit, as for wrong passwords.
    assert answers == [401] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    assert len([e for e in _kinds(ada, "login_failed") if e.detail == "wrong second factor"]) == 5
    locked = Api(stack, ip=attacker_ip).call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD})
    assert locked.status_code == 429 and locked.json()["code"] == "locked_out"
    # The owner, from an address that has not failed, still logs in.
    client, mfa_token = first_step(stack, ip="198.51.100.9")
    assert second_step(client, mfa_token, app.code()).status_code == 200


def test_no_answer_carrying_a_token_a_secret_or_codes_may_be_stored_by_a_cache(stack, ada):
    """Tokens, the TOTP secret, recovery codes and the account's data: Cache-Control no-store on every
    JSON answer (a review found none; ASVS 14.3.2, RFC 6749 §5.1)."""
    api = Api(stack)
    answers = [api.call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD})]
    api.http.headers["Authorization"] = f"Bearer {answers[0].json()['access']}"
    answers.append(api.call("GET", "/api/users/me/"))
    answers.append(api.call("GET", "/api/sessions/"))
    answers.append(api.call("POST", "/api/mfa/totp/setup/", {"current_password": PASSWORD}))
    answers.append(api.call("POST", "/api/tokens/", {"username": "ada", "password": "wrong"}))
    for answer in answers:
        assert "no-store" in answer.headers.get("Cache-Control", ""), (answer.request.url, answer.headers)
    assert answers[3].status_code == 200 and "secret" in answers[3].json()


# Step-up on sensitive changes -------------------------------------------------------------------------------
def test_changing_the_address_or_password_needs_a_code_once_there_is_a_factor(stack, ada, smtp_server):
    api, app, codes = logged_in_with_factor(stack, ada)
    for body in ({"email": "new@example.com"}, {"password": NEW_PASSWORD}):
        missing = api.call("PATCH", "/api/users/me/", body | {"current_password": PASSWORD})
        assert missing.status_code == 400 and set(missing.json()) == {"code"}
        wrong = api.call("PATCH", "/api/users/me/", body | {"current_password": PASSWORD, "code": "ABCD-EFGH-JKMN"})
        assert wrong.status_code == 400 and set(wrong.json()) == {"code"}
    assert User.objects.get(pk=ada.pk).pending_email == ""
    changed = api.call(
        "PATCH", "/api/users/me/", {"email": "new@example.com", "current_password": PASSWORD, "code": app.code()}
    )
    assert changed.status_code == 200 and changed.json()["pending_email"] == "new@example.com"
    changed = api.call(
        "PATCH", "/api/users/me/", {"password": NEW_PASSWORD, "current_password": PASSWORD, "code": codes[0]}
    )
    assert changed.status_code == 200
    assert len([e for e in _kinds(ada, "login_failed") if e.detail == "wrong second factor"]) == 2


def test_factor_changes_need_the_password_and_a_code(stack, ada, smtp_server):
    api, app, codes = logged_in_with_factor(stack, ada)
    assert api.call("POST", "/api/mfa/recovery-codes/", {"current_password": PASSWORD}).status_code == 400
    fresh = api.call("POST", "/api/mfa/recovery-codes/", {"current_password": PASSWORD, "code": app.code()})
    assert fresh.status_code == 200 and len(fresh.json()["recovery_codes"]) == 10
    assert api.call("DELETE", "/api/mfa/totp/", {"current_password": PASSWORD, "code": codes[1]}).status_code == 400
    off = api.call(
        "DELETE", "/api/mfa/totp/", {"current_password": PASSWORD, "code": fresh.json()["recovery_codes"][0]}
    )
    assert off.status_code == 204
    assert api.call("GET", "/api/mfa/").json() == {"totp": False, "recovery_codes_left": 0, "passkeys": []}
    [notice] = wait_for(lambda: [m for m in smtp_server.to("ada@example.com") if "turned off" in m["Subject"]])
    assert app.totp.secret not in message_text(notice)
    assert Api(stack).log_in("ada").status_code == 200  # the password alone again


def test_removing_a_factor_ends_the_other_sessions_and_setting_one_up_ends_none(stack, ada, settings):
    """A session opened by whoever held a factor now removed must not outlive it (a review: it lived
    until REFRESH_TOKEN_LIFETIME). Setting a factor up keeps the other sessions: the contract lets an
    enrolled banker's sessions work at once."""
    settings.MFA_REQUIRED_ROLES = ("none",)
    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302
    api, app, codes = logged_in_with_factor(stack, ada)
    assert browser.get("/account/").status_code == 200
    other = Api(stack)
    first = other.call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD}).json()
    done = other.call("POST", "/api/tokens/mfa/", {"mfa_token": first["mfa_token"], "code": codes[0]})
    assert done.status_code == 200
    other.http.headers["Authorization"] = f"Bearer {done.json()['access']}"
    assert api.call("DELETE", "/api/mfa/totp/", {"current_password": PASSWORD, "code": app.code()}).status_code == 204
    assert other.call("GET", "/api/users/me/").status_code == 401
    assert other.call("POST", "/api/tokens/refresh/", {"refresh": done.json()["refresh"]}).status_code == 401
    assert browser.get("/account/").status_code == 302  # logged out at its next request
    assert api.call("GET", "/api/users/me/").status_code == 200  # the session that made the change stays


def test_a_reset_needs_the_code_and_a_refused_one_leaves_the_link_usable(stack, ada):
    _, app, _codes = logged_in_with_factor(stack, ada)
    ada.refresh_from_db()
    uid, token = urlsafe_base64_encode(force_bytes(ada.pk)), default_token_generator.make_token(ada)
    body = {"uid": uid, "token": token, "new_password": NEW_PASSWORD}
    missing = Api(stack).call("POST", "/api/password-reset/confirm/", body)
    assert missing.status_code == 400 and set(missing.json()) == {"code"}
    wrong = Api(stack).call("POST", "/api/password-reset/confirm/", body | {"code": _wrong(app)})
    assert wrong.status_code == 400 and set(wrong.json()) == {"code"}
    assert Api(stack).log_in("ada", NEW_PASSWORD).status_code == 401  # unchanged
    done = Api(stack).call("POST", "/api/password-reset/confirm/", body | {"code": app.code()})
    assert done.status_code == 204
    client = Api(stack)
    answer = client.call("POST", "/api/tokens/", {"username": "ada", "password": NEW_PASSWORD})
    assert answer.json()["code"] == "mfa_required"  # the factor survives a reset


def test_a_request_refused_for_another_reason_never_spends_its_one_time_code(stack, ada):
    """A weak new password, or a change the factors' state refuses, is answered before the proof is
    checked: the recovery code or TOTP code sent with it still works for the right request."""
    api, app, codes = logged_in_with_factor(stack, ada)

    def left() -> int:
        return api.call("GET", "/api/mfa/").json()["recovery_codes_left"]

    weak = api.call("PATCH", "/api/users/me/", {"password": "short", "current_password": PASSWORD, "code": codes[0]})
    assert weak.status_code == 400 and set(weak.json()) == {"password"}, weak.text
    twice = api.call("POST", "/api/mfa/totp/setup/", {"current_password": PASSWORD, "code": codes[0]})
    assert twice.status_code == 400 and twice.json()["code"] == "mfa_state"
    assert left() == 10 and not _kinds(ada, "recovery_code_used")
    changed = api.call(
        "PATCH", "/api/users/me/", {"password": NEW_PASSWORD, "current_password": PASSWORD, "code": codes[0]}
    )
    assert changed.status_code == 200 and left() == 9

    ada.refresh_from_db()
    uid, token = urlsafe_base64_encode(force_bytes(ada.pk)), default_token_generator.make_token(ada)
    code = app.code()
    body = {"uid": uid, "token": token, "code": code}
    weak = Api(stack).call("POST", "/api/password-reset/confirm/", body | {"new_password": "short"})
    assert weak.status_code == 400 and set(weak.json()) == {"new_password"}, weak.text
    done = Api(stack).call("POST", "/api/password-reset/confirm/", body | {"new_password": "a third long passphrase 7"})
    assert done.status_code == 204, done.text  # the same TOTP code: the refused request did not spend it


# Enforcement -----------------------------------------------------------------------------------------------
def test_a_banker_without_a_factor_is_sent_to_enrol_and_then_works(stack, settings):
    settings.MFA_REQUIRED_ROLES = ("staff", "banker")
    banker = UserFactory(username="bob", role=User.Role.BANKER, is_email_verified=True)
    api = Api(stack)
    assert api.log_in("bob").status_code == 200
    for method, path in (
        ("GET", "/api/sessions/"),
        ("GET", "/api/users/me/security-events/"),
        ("PATCH", "/api/users/me/"),
    ):
        refused = api.call(method, path, {"full_name": "Bob"} if method == "PATCH" else None)
        assert refused.status_code == 403 and refused.json()["code"] == "mfa_enrollment_required", (method, path)
    assert api.call("GET", "/api/users/me/").status_code == 200
    assert api.call("GET", "/api/mfa/").status_code == 200
    enrol(api, banker)
    assert api.call("GET", "/api/sessions/").status_code == 200  # at once, the same session

    settings.MFA_REQUIRED_ROLES = ("none",)
    depositor = UserFactory(username="carl", is_email_verified=True)
    other = Api(stack)
    assert other.log_in(depositor.username).status_code == 200
    assert other.call("GET", "/api/sessions/").status_code == 200


def test_a_banker_without_a_factor_can_only_set_one_up_on_the_security_page_too(stack, settings):
    """The page did what the API refuses (a hostile review): listed sessions and events, and logged a
    session out, before the banker had a factor."""
    settings.MFA_REQUIRED_ROLES = ("staff", "banker")
    banker = UserFactory(username="bob", role=User.Role.BANKER, is_email_verified=True)
    api = Api(stack)
    assert api.log_in("bob").status_code == 200
    browser = Browser(stack)
    assert browser.log_in("bob").status_code == 302
    page = browser.get("/account/security/").text
    assert 'id="enrollment-required"' in page and '<section id="totp">' in page
    assert 'id="session-list"' not in page and 'id="security-events"' not in page
    assert api.tokens["session_id"] not in page

    revoked = browser.post_form("/account/security/", {"form": "session_revoke", "session": api.tokens["session_id"]})
    assert revoked.status_code == 302
    assert LoginSession.objects.get(pk=api.tokens["session_id"]).revoked_at is None
    assert api.call("GET", "/api/users/me/").status_code == 200  # the API session still works

    enrol(api, banker)
    page = browser.get("/account/security/").text  # this session too: no new log-in
    assert 'id="session-list"' in page and api.tokens["session_id"] in page


# Admin ----------------------------------------------------------------------------------------------------------
def test_staff_reset_a_customers_factors_and_never_see_a_secret(stack, ada, smtp_server, settings):
    settings.MFA_REQUIRED_ROLES = ("none",)
    customer, app, codes = logged_in_with_factor(stack, ada)
    User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    staff = Browser(stack)
    assert staff.log_in("root", path="/admin/login/").status_code == 302
    page = staff.get(f"/admin/users/user/{ada.pk}/change/")
    assert page.status_code == 200 and "TOTP on; 10 recovery code(s) left" in page.text
    device = TotpDevice.objects.get(user=ada)
    assert app.totp.secret not in page.text and bytes(device.secret).decode() not in page.text
    assert not any(code in page.text for code in codes)

    fields = {"action": "reset_second_factors", "_selected_action": str(ada.pk), "index": "0"}
    assert staff.post_form("/admin/users/user/", fields).status_code == 302
    assert not TotpDevice.objects.filter(user=ada).exists()
    assert [e.actor for e in _kinds(ada, "mfa_reset_by_staff")] == ["staff:root"]
    assert customer.call("GET", "/api/users/me/").status_code == 401  # every session of hers ended (the phone too)
    wait_for(lambda: [m for m in smtp_server.to("ada@example.com") if "reset by our staff" in m["Subject"]])
    assert Api(stack).log_in("ada").status_code == 200  # the password alone again: she sets up a new app


def test_staff_reset_only_the_factors_of_users_they_may_change(stack, ada, settings):
    """A clerk with the change permission resets a customer's factors — never a superuser's, another
    staff member's or their own (that is /account/security/'s, with its step-up)."""
    from django.contrib.auth.models import Permission

    settings.MFA_REQUIRED_ROLES = ("none",)  # the clerk logs in with the password alone here
    boss = User.objects.create_superuser(username="boss", email="boss@example.com", password=PASSWORD, full_name="B")
    other = UserFactory(username="ops2", is_staff=True, is_email_verified=True)
    clerk = UserFactory(username="clerk", is_staff=True, is_email_verified=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_user", "change_user"]))
    for user in (boss, other, ada):
        with_totp(user)
    app = Authenticator(clerk, with_totp(clerk))
    staff = Browser(stack)
    assert staff.log_in("clerk", path="/admin/login/").headers["Location"] == "/login/verify/"
    assert staff.post_form("/login/verify/", {"code": app.code()}).headers["Location"] == "/admin/"
    targets = [str(user.pk) for user in (boss, other, clerk, ada)]
    fields = {"action": "reset_second_factors", "_selected_action": targets, "index": "0"}
    assert staff.post_form("/admin/users/user/", fields).status_code == 302
    kept = set(TotpDevice.objects.values_list("user__username", flat=True))
    assert kept == {"boss", "ops2", "clerk"}  # only the customer's factors went
    assert [e.actor for e in _kinds(ada, "mfa_reset_by_staff")] == ["staff:clerk"]


def test_the_admins_own_password_form_sends_staff_to_the_account_page(stack, settings):
    """Django's /admin/password_change/ asks for no second factor and counts no wrong password:
    one's own password is changed on /account/ (with both), never there."""
    root = User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    app = Authenticator(root, with_totp(root))
    staff = Browser(stack)
    assert staff.log_in("root", path="/admin/login/").headers["Location"] == "/login/verify/"
    assert staff.post_form("/login/verify/", {"code": app.code()}).headers["Location"] == "/admin/"
    assert 'href="/admin/password_change/"' in staff.get("/admin/").text  # the header's link
    assert staff.get("/admin/password_change/").headers["Location"] == "/account/#password-form"
    fields = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    answer = staff.post_form("/admin/password_change/", fields, form_page="/admin/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/account/#password-form"
    assert User.objects.get(pk=root.pk).check_password(PASSWORD)  # unchanged
    for spelling in (f"{root.pk}", f"0{root.pk}", f"{root.pk}%20"):  # Django reads each as the same row
        own = staff.get(f"/admin/users/user/{spelling}/password/")
        assert own.status_code == 302 and own.headers["Location"] == "/account/#password-form", spelling


def test_a_clerk_blocks_sessions_and_resends_links_only_of_users_they_may_change(stack, ada, settings, smtp_server):
    """The admin's actions follow the change form's rule: a clerk with the change permissions
    blocks a customer's session and sends a customer a new link — never a superuser's or another
    member of staff's, and the page says how many were not theirs."""
    from django.contrib.auth.models import Permission

    settings.MFA_REQUIRED_ROLES = ("none",)
    User.objects.create_superuser(username="boss", email="boss@example.com", password=PASSWORD, full_name="B")
    ops = UserFactory(username="ops3", email="ops3@example.com", is_staff=True)  # address not verified yet
    dora = UserFactory(username="dora", email="dora@example.com")  # address not verified yet
    clerk = UserFactory(username="clerk", is_staff=True, is_email_verified=True)
    codenames = ["view_user", "change_user", "delete_user", "view_loginsession", "change_loginsession"]
    codenames.append("delete_loginsession")
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    app = Authenticator(clerk, with_totp(clerk))
    boss_api, ada_api = Api(stack), Api(stack)
    assert boss_api.log_in("boss").status_code == 200 and ada_api.log_in("ada").status_code == 200
    staff = Browser(stack)
    assert staff.log_in("clerk", path="/admin/login/").headers["Location"] == "/login/verify/"
    assert staff.post_form("/login/verify/", {"code": app.code()}).headers["Location"] == "/admin/"

    rows = [
        str(pk) for pk in LoginSession.objects.filter(user__username__in=["boss", "ada"]).values_list("pk", flat=True)
    ]
    fields = {"action": "block", "_selected_action": rows, "index": "0"}
    assert staff.post_form("/admin/users/loginsession/", fields).status_code == 302
    assert "1 not yours to act on" in html.unescape(staff.get("/admin/users/loginsession/").text)
    assert ada_api.call("GET", "/api/users/me/").status_code == 401
    assert boss_api.call("GET", "/api/users/me/").status_code == 200  # the superuser is still logged in

    fields = {"action": "resend_verification", "_selected_action": [str(ops.pk), str(dora.pk)], "index": "0"}
    assert staff.post_form("/admin/users/user/", fields).status_code == 302
    assert "1 not yours to act on" in html.unescape(staff.get("/admin/users/user/").text)
    wait_for(lambda: smtp_server.to("dora@example.com"))
    assert not OutboundEmail.objects.filter(user=ops).exists()

    # Nor by deleting: not the superuser, not her sessions, and no bulk delete to get around it.
    boss = User.objects.get(username="boss")
    [boss_session] = LoginSession.objects.filter(user=boss)
    assert staff.get(f"/admin/users/user/{boss.pk}/delete/").status_code == 403
    assert staff.get(f"/admin/users/loginsession/{boss_session.pk}/delete/").status_code == 403
    assert 'value="delete_selected"' not in staff.get("/admin/users/loginsession/").text
    assert 'value="delete_selected"' not in staff.get("/admin/users/user/").text


def test_the_account_page_asks_for_a_code_only_once_there_is_a_factor(stack, ada):
    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302  # before the factor: the password alone
    assert 'name="code"' not in browser.get("/account/").text
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    app, _codes = enrol(api, ada)
    assert 'name="code"' in browser.get("/account/").text

    fields = {"form": "email", "email": "new@example.com", "current_password": PASSWORD}
    refused = browser.post_form("/account/", fields)
    assert refused.status_code == 400 and PROOF_MISSING in html.unescape(refused.text)
    refused = browser.post_form("/account/", fields | {"code": _wrong(app)})
    assert refused.status_code == 400 and PROOF_WRONG in html.unescape(refused.text)
    assert User.objects.get(pk=ada.pk).pending_email == ""
    assert browser.post_form("/account/", fields | {"code": app.code()}).status_code == 302
    assert User.objects.get(pk=ada.pk).pending_email == "new@example.com"

    password = {"form": "password", "old_password": PASSWORD, "new_password1": NEW_PASSWORD}
    password["new_password2"] = NEW_PASSWORD
    refused = browser.post_form("/account/", password | {"code": _wrong(app)})
    assert refused.status_code == 400 and PROOF_WRONG in html.unescape(refused.text)
    assert browser.post_form("/account/", password | {"code": app.code()}).status_code == 302
    assert Api(stack).call("POST", "/api/tokens/", {"username": "ada", "password": NEW_PASSWORD}).status_code == 401
    assert Api(stack).call("POST", "/api/tokens/", {"username": "ada", "password": NEW_PASSWORD}).json()["code"] == (
        "mfa_required"
    )


def test_the_lockout_keeps_no_field_of_a_failed_log_in_but_its_username(stack, ada):
    """django-axes keeps each failure's form: every field but the username is masked — the account
    page's current password (``old_password``) and address change, the log-in page — in its rows
    and on its admin pages."""
    from axes.models import AccessAttempt

    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302
    guesses = ["a wrong guess 1", "a wrong guess 2", "a wrong guess 3"]
    password = {"form": "password", "old_password": guesses[0], "new_password1": NEW_PASSWORD}
    assert browser.post_form("/account/", password | {"new_password2": NEW_PASSWORD}).status_code == 400
    email = {"form": "email", "email": "new@example.com", "current_password": guesses[1]}
    assert browser.post_form("/account/", email).status_code == 400
    assert Browser(stack).log_in("ada", guesses[2]).status_code == 400

    rows = list(AccessAttempt.objects.all())
    kept = "\n".join(row.post_data for row in rows)
    assert "old_password=" in kept and "email=" in kept and "current_password=" in kept  # every form's failure
    for row in rows:
        for line in row.post_data.splitlines():
            key, equals, value = line.partition("=")
            assert not equals or key in ("username", "form") or value == "*" * 20, (key, value)  # "-----" separates
    root = superuser_with_factor()
    admin = Client()
    admin.force_login(root)
    for row in AccessAttempt.objects.all():
        page = admin.get(f"/admin/axes/accessattempt/{row.pk}/change/").content.decode()
        assert not any(guess in page for guess in guesses) and PASSWORD not in page


def test_the_reset_page_asks_for_the_code_and_a_refused_one_leaves_the_link_usable(stack, ada):
    _, app, _codes = logged_in_with_factor(stack, ada)
    ada.refresh_from_db()
    uid, token = urlsafe_base64_encode(force_bytes(ada.pk)), default_token_generator.make_token(ada)
    page = f"/reset-password/?uid={uid}&token={token}"
    browser = Browser(stack)
    assert 'name="code"' in browser.get(page).text
    fields = {"uid": uid, "token": token, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    refused = browser.post_form("/reset-password/", fields | {"code": _wrong(app)}, form_page=page)
    assert refused.status_code == 400 and PROOF_WRONG in html.unescape(refused.text)
    # The failure is kept (django-axes), the link's token is not: it still works until it expires.
    from axes.models import AccessAttempt

    kept = " ".join(attempt.post_data for attempt in AccessAttempt.objects.all())
    assert kept and token not in kept and uid not in kept
    done = browser.post_form("/reset-password/", fields | {"code": app.code()}, form_page=page)
    assert done.status_code == 200 and 'name="code"' not in done.text
    assert Api(stack).call("POST", "/api/tokens/", {"username": "ada", "password": NEW_PASSWORD}).json()["code"] == (
        "mfa_required"
    )


# Guesses in parallel --------------------------------------------------------------------------------------
def _failures(user: User, detail: str) -> int:
    return SecurityEvent.objects.filter(user=user, kind="login_failed", detail=detail).count()


def _at_once(calls: list) -> Counter:
    with ThreadPoolExecutor(len(calls)) as pool:
        return Counter(answer.status_code for answer in pool.map(lambda call: call(), calls))


def test_guesses_sent_all_at_once_get_no_more_tries_than_guesses_sent_one_by_one(stack, ada, settings, monkeypatch):
    """The lockout reads "locked?", checks, then counts: requests in flight together all read "not
    locked" first, and a burst got some thirty guesses where five are allowed (a hostile review,
    with a right code in the burst accepted). A password at the log-in, a second step and a
    step-up's password, each tried by 20 requests at once: exactly five are tried."""
    limit = settings.AXES_FAILURE_LIMIT
    burst = 20
    monkeypatch.setattr(proofs, "WAIT_S", 60)  # five hashes in a row on a loaded machine: no one gives up waiting

    guess = {"username": "ada", "password": "not the password"}
    statuses = _at_once([lambda: Api(stack).call("POST", "/api/tokens/", guess) for _ in range(burst)])
    assert _failures(ada, "wrong password or unknown account") == limit
    assert statuses == Counter({401: limit - 1, 429: burst - limit + 1})  # the fifth failure locks, with its 429
    call_command("axes_reset", stdout=StringIO())

    api, app, _ = logged_in_with_factor(stack, ada)
    pending = [first_step(stack) for _ in range(burst // 4)]  # four wrong codes each: no token dies of it
    wrong = _wrong(app)
    statuses = _at_once([lambda c=c, t=t: second_step(c, t, wrong) for c, t in pending for _ in range(4)])
    assert _failures(ada, "wrong second factor") == limit
    assert statuses == Counter({401: limit - 1, 429: burst - limit + 1})
    call_command("axes_reset", stdout=StringIO())

    change = {"email": "ada.new@example.com", "current_password": "not the password", "code": app.code()}
    statuses = _at_once([lambda: api.call("PATCH", "/api/users/me/", change) for _ in range(burst)])
    assert _failures(ada, "wrong current password") == limit
    assert statuses == Counter({400: limit - 1, 429: burst - limit + 1})
    assert User.objects.get(pk=ada.pk).email == "ada@example.com"


def test_a_burst_naming_many_accounts_from_one_address_gets_no_more_tries_than_the_address_limit(stack, ada, settings):
    """THROTTLE_LOGIN counts failed log-ins per address: it read the count, and the failures were
    added after the passwords were checked, so 30 guesses at 30 accounts sent at once all passed
    a limit of 10 (a review of the proof lock). Each log-in holds its place while it is checked
    now, and gives it back unless it failed: a success still counts nothing."""
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {
        "DEFAULT_THROTTLE_RATES": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] | {"login": "10/min"}
    }
    for _ in range(12):  # successes give their place back
        assert Api(stack).log_in("ada").status_code == 200
    guesses = [{"username": f"someone{n}", "password": "not the password"} for n in range(30)]
    statuses = _at_once([lambda g=g: Api(stack).call("POST", "/api/tokens/", g) for g in guesses])
    assert statuses == Counter({401: 10, 429: 20})
    assert SecurityEvent.objects.filter(kind="login_failed").count() == 10


# One account, spelled as the forms accept it: they strip spaces, and the admin's NFKC-normalises
# (a fullwidth "＠" is an address there). The lock must not tell any two of them apart.
SPELLINGS = [
    "ada", " ada", "ada ", "\tada", "\u3000ada", "ADA", "Ada", " ADA ", "ada\n", "\u2003ada", "ada\t", "aDa",
    "ａｄａ", "ada@example.com", "ada＠example.com", "ada﹫example.com", "ada＠example.com.", "ADA＠EXAMPLE.COM..",
]  # fmt: skip


@pytest.mark.parametrize("page", ["/login/", "/admin/login/"])
def test_log_in_pages_sent_all_at_once_try_no_more_passwords_than_the_lockout_allows(
    stack, ada, settings, monkeypatch, page
):
    limit, burst = settings.AXES_FAILURE_LIMIT, len(SPELLINGS)
    monkeypatch.setattr(proofs, "WAIT_S", 60)  # five hashes in a row on a loaded machine: no one gives up waiting
    forms = []
    for spelling in SPELLINGS:  # each its own browser, with its CSRF token, before the burst
        browser = Browser(stack)
        token = CSRF.search(browser.get(page).text).group(1)
        forms.append((browser, {"csrfmiddlewaretoken": token, "username": spelling, "password": "not the password"}))

    def post(browser: Browser, fields: dict):
        return lambda: browser.http.post(
            stack + page, data=fields, headers={"Referer": stack + page}, timeout=30, allow_redirects=False
        )

    statuses = _at_once([post(browser, fields) for browser, fields in forms])
    assert _failures(ada, "wrong password or unknown account") == limit
    assert statuses[429] == burst - limit + 1, statuses  # the rest: the form again, with its error


def test_a_proof_that_waits_too_long_for_its_turn_is_told_to_try_again_not_locked_out(stack, ada, monkeypatch):
    """A double submit or a retry waits for the one in flight; past ``WAIT_S`` it is answered
    "busy" (429, Retry-After 1), never as a 15-minute lockout, and nothing is counted."""
    monkeypatch.setattr(proofs, "WAIT_S", 0.3)
    with proofs.one_at_a_time("ada", "127.0.0.1"):  # another request of ada's from here, in its turn
        answer = Api(stack).call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD})
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
    assert answer.json()["code"] == "throttled" and "try again in a second" in answer.json()["detail"]
    assert _failures(ada, "wrong password or unknown account") == 0
    assert Api(stack).log_in("ada").status_code == 200  # its turn free again


# Key rotation ------------------------------------------------------------------------------------------
def _logs_in_with(stack: str, proof: str) -> bool:
    api, mfa_token = first_step(stack)
    return second_step(api, mfa_token, proof).status_code == 200


def test_rotating_the_keys_keeps_everyones_factors_and_the_command_lets_the_old_key_go(stack, ada, settings):
    """The deployment guide's rotation, step by step: the secret key rotated (the old one a fallback),
    then a key of the second factor's own set; the app's codes and the recovery codes made before
    keep working throughout, and after ``rotate_mfa_secrets`` the old keys can go."""
    _, app, codes = logged_in_with_factor(stack, ada)
    first_key = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a second secret key, rotated in " + "7f3a" * 8, [first_key]
    assert _logs_in_with(stack, app.code()) and _logs_in_with(stack, codes[0])

    settings.MFA_ENCRYPTION_KEY = "the second factor's own key " + "0e5b" * 8
    assert _logs_in_with(stack, app.code()) and _logs_in_with(stack, codes[1])

    out = StringIO()
    call_command("rotate_mfa_secrets", stdout=out)
    assert out.getvalue().strip() == "rotated=1 unreadable=0"
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a third secret key, no fallback " + "9c1d" * 8, []
    assert _logs_in_with(stack, app.code())
    # Recovery codes are kept as keyed hashes: those made under a key that is gone stop working.
    assert not _logs_in_with(stack, codes[2])

    settings.MFA_ENCRYPTION_KEY = "a key that never encrypted anything " + "5b0e" * 8
    with pytest.raises(CommandError, match=rf"user id\(s\) \[{ada.pk}\]"):
        call_command("rotate_mfa_secrets", stdout=StringIO())
