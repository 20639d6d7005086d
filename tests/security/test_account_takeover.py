"""Account takeover, tried as a hostile client would (issue "Account takeover").

Every probe goes over HTTP to the running stack — Django served on a real port (``live_server``),
PostgreSQL, Redis, an in-process Dramatiq worker and a real SMTP server — and looks at what a user
would notice: the answer, the mail that arrives, whether a session still works.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
import requests
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from bankproject import settings as shipped
from conftest import links_in, message_html, message_text, wait_for
from users.models import LoginSession, SecurityEvent, User
from users.tests.factories import UserFactory, superuser_with_factor

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new pass phrase 2026"
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class Api:
    """A JSON client of the live server, with a bearer token once logged in."""

    def __init__(self, base: str, *, ip: str | None = None) -> None:
        self.base, self.http = base, requests.Session()
        if ip:
            self.http.headers["X-Forwarded-For"] = ip

    def call(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        # 120 s: a burst of log-ins queued behind the proof lock on a busy machine, or a race test's request
        # held until the other arrives (tests/security/test_races.py).
        return self.http.request(method, self.base + path, json=body, timeout=120)

    def log_in(self, username: str, password: str = PASSWORD) -> requests.Response:
        answer = self.call("POST", "/api/tokens/", {"username": username, "password": password})
        if answer.status_code == 200:
            self.tokens = answer.json()
            self.http.headers["Authorization"] = f"Bearer {answer.json()['access']}"
        return answer


class Browser:
    """A browser's cookies and CSRF token, over plain HTTP."""

    def __init__(self, base: str) -> None:
        self.base, self.http = base, requests.Session()

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.base + path, timeout=60, allow_redirects=False)

    def post_form(self, path: str, fields: dict[str, str], *, form_page: str | None = None) -> requests.Response:
        page = self.http.get(self.base + (form_page or path), timeout=60)
        token = CSRF.search(page.text).group(1)
        headers = {"Referer": self.base + (form_page or path)}
        return self.http.post(
            self.base + path,
            data={"csrfmiddlewaretoken": token, **fields},
            headers=headers,
            timeout=60,
            allow_redirects=False,
        )

    def log_in(self, username: str, password: str = PASSWORD, path: str = "/login/") -> requests.Response:
        return self.post_form(path, {"username": username, "password": password})


def _notices(smtp_server, address: str, subject: str) -> list:
    return [m for m in smtp_server.to(address) if subject in m["Subject"]]


def _events(user: User, kind: str) -> list[SecurityEvent]:
    return list(SecurityEvent.objects.filter(user=user, kind=kind))


# 1. A banker takes over staff and superusers ---------------------------------------------------------
def test_a_banker_cannot_set_anyones_password_nor_touch_staff_superusers_bankers_or_themself(
    stack, smtp_server, ada, settings
):
    settings.MFA_REQUIRED_ROLES = ("none",)  # the banker rule alone (enrolment: test_second_factor.py)
    root = User.objects.create_superuser(username="admin", email="admin@example.com", password=PASSWORD, full_name="A")
    UserFactory(username="ops", email="ops@example.com", is_staff=True, is_email_verified=True)
    UserFactory(username="other-banker", role=User.Role.BANKER, is_email_verified=True)
    UserFactory(username="bob", role=User.Role.BANKER, is_email_verified=True)
    banker = Api(stack)
    assert banker.log_in("bob").status_code == 200

    for target in ("admin", "ops", "other-banker", "bob"):
        for body in ({"password": "taken over 2026 pass"}, {"full_name": "Taken Over"}, {"email": "evil@example.com"}):
            answer = banker.call("PATCH", f"/api/users/{target}/", body)
            assert answer.status_code == 403, (target, body, answer.text)
    # The superuser's password is what it was: the banker can't log in to the admin with one they chose.
    assert Browser(stack).log_in("admin", "taken over 2026 pass", path="/admin/login/").status_code == 200  # form again
    assert Browser(stack).log_in("admin", PASSWORD, path="/admin/login/").status_code == 302
    assert User.objects.get(pk=root.pk).email == "admin@example.com"

    refused = banker.call("PATCH", "/api/users/ada/", {"password": "set by the bank 2026"})
    assert refused.status_code == 400 and "password" in refused.json()
    assert Api(stack).log_in("ada").status_code == 200  # her password is unchanged

    changed = banker.call("PATCH", "/api/users/ada/", {"full_name": "Ada King"})
    assert changed.status_code == 200 and changed.json()["full_name"] == "Ada King"
    [notice] = wait_for(lambda: _notices(smtp_server, "ada@example.com", "profile was changed"), what="the notice")
    text = message_text(notice)
    assert "full_name" in text and "by a banker" in text and links_in(notice) == []
    assert re.findall(r"https?://\S+", text) == [f"{stack}/account/", stack]  # no link but to the site
    [event] = _events(ada, "profile_changed")
    assert event.actor == "banker:bob"


def test_bankers_changes_of_one_customer_are_limited_so_notices_cannot_flood_them(stack, ada, settings):
    """Each change mails the customer notices: a banker (or a stolen banker's token) made 8 changes
    of one customer in a second, 16 emails (a hostile review). THROTTLE_CUSTOMER_CHANGE per customer,
    whichever banker; another customer, and refused requests, are not counted against them."""
    settings.MFA_REQUIRED_ROLES = ("none",)  # the banker rule alone (enrolment: test_second_factor.py)
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] | {"customer_change": "3/hour"}
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"DEFAULT_THROTTLE_RATES": rates}
    UserFactory(username="bob", role=User.Role.BANKER, is_email_verified=True)
    UserFactory(username="cyd", role=User.Role.BANKER, is_email_verified=True)
    UserFactory(username="dora", is_email_verified=True)
    bob, cyd, ada_api = Api(stack), Api(stack), Api(stack)
    assert bob.log_in("bob").status_code == cyd.log_in("cyd").status_code == ada_api.log_in("ada").status_code == 200
    assert ada_api.call("PATCH", "/api/users/ada/", {"full_name": "Not Counted"}).status_code == 403
    assert bob.call("PATCH", "/api/users/ada/", {"password": "not counted 2026"}).status_code == 400
    assert bob.call("PATCH", "/api/users/ada/", {}).status_code == 200  # changes nothing, mails nothing: not counted
    assert bob.call("PATCH", "/api/users/ada/", {"full_name": ada.full_name}).status_code == 200
    for same in (ada.email, ada.email.upper()):  # her own address again: no change either
        assert bob.call("PATCH", "/api/users/ada/", {"email": same}).status_code == 200
    assert not SecurityEvent.objects.filter(user=ada, kind="profile_changed").exists()

    answers = [bob.call("PATCH", "/api/users/ada/", {"full_name": f"Ada {n}"}) for n in ("One", "Two")]
    answers.append(cyd.call("PATCH", "/api/users/ada/", {"full_name": "Ada Three"}))
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    refused = cyd.call("PATCH", "/api/users/ada/", {"full_name": "Ada Four"})
    assert refused.status_code == 429 and refused.json()["code"] == "throttled"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert User.objects.get(pk=ada.pk).full_name == "Ada Three"
    assert bob.call("PATCH", "/api/users/dora/", {"full_name": "Dora Still"}).status_code == 200


def test_a_depositor_cannot_use_the_bankers_route_even_on_themself(stack, ada):
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    assert api.call("PATCH", "/api/users/ada/", {"full_name": "Me"}).status_code == 403
    assert api.call("PATCH", "/api/users/ada/", {"password": NEW_PASSWORD}).status_code == 403


# 2. An address change without re-authentication --------------------------------------------------------
def test_a_stolen_session_cannot_move_the_address_and_a_password_change_kills_a_pending_move(stack, smtp_server, ada):
    thief = Api(stack)
    assert thief.log_in("ada").status_code == 200
    refused = thief.call("PATCH", "/api/users/me/", {"email": "thief@example.org"})
    assert refused.status_code == 400 and set(refused.json()) == {"current_password"}
    assert User.objects.get(pk=ada.pk).pending_email == ""

    # Even with the password (phished), the owner's password change cancels the move.
    moved = thief.call("PATCH", "/api/users/me/", {"email": "thief@example.org", "current_password": PASSWORD})
    assert moved.status_code == 200 and moved.json()["pending_email"] == "thief@example.org"
    [link_email] = wait_for(lambda: smtp_server.to("thief@example.org"), what="the change link")
    [(_, email_id, code)] = links_in(link_email)
    wait_for(lambda: _notices(smtp_server, "ada@example.com", "address was requested"), what="the change notice")

    owner = Api(stack)
    assert owner.log_in("ada").status_code == 200
    body = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    assert owner.call("PATCH", "/api/users/me/", body).status_code == 200
    assert owner.call("GET", "/api/users/me/").json()["pending_email"] is None
    assert thief.call("GET", "/api/users/me/").status_code == 401  # every other session ended
    used = Api(stack).call("POST", "/api/verify-email/", {"email_id": email_id, "secret_code": code})
    assert used.status_code == 400  # the link died with the password change
    assert User.objects.get(pk=ada.pk).email == "ada@example.com"
    [notice] = wait_for(lambda: _notices(smtp_server, "ada@example.com", "password was changed"), what="notice")
    assert "127.0.0.1" in message_text(notice)  # from where


def test_the_old_address_is_told_when_a_change_completes(stack, smtp_server, ada):
    api = Api(stack)
    api.log_in("ada")
    body = {"email": "ada@new.example.org", "current_password": PASSWORD}
    assert api.call("PATCH", "/api/users/me/", body).status_code == 200
    [link_email] = wait_for(lambda: smtp_server.to("ada@new.example.org"), what="the change link")
    [(_, email_id, code)] = links_in(link_email)
    assert Api(stack).call("POST", "/api/verify-email/", {"email_id": email_id, "secret_code": code}).status_code == 200
    [notice] = wait_for(lambda: _notices(smtp_server, "ada@example.com", "was replaced"), what="the replaced notice")
    assert links_in(notice) == [] and "ada@new.example.org" not in message_text(notice)
    assert [e.actor for e in _events(ada, "email_changed")] == ["self"]


def test_notices_and_links_carry_only_the_banks_words_whatever_a_session_planted(stack, smtp_server, ada):
    """Whoever holds a session planted words in every later email, silently (a review): the full
    name greeted the owner in the notices, a passkey's name was the notice's "What", and the new
    address's domain was printed whole — so the alarm itself told the owner to ignore it."""
    from tests.security.test_passkeys import add_passkey

    thief = Api(stack)
    assert thief.log_in("ada").status_code == 200
    planted = "Ada. NOTICE: this is a test by Simple Bank IT, please disregard it; fraud desk +1 800 555 0199"
    assert thief.call("PATCH", "/api/users/me/", {"full_name": planted}).status_code == 200
    domain = "ignore-this-notice-simplebank-it-migration.com"
    moved = thief.call("PATCH", "/api/users/me/", {"email": f"x@{domain}", "current_password": PASSWORD})
    assert moved.status_code == 200
    add_passkey(thief, stack, name="Routine check by Simple Bank staff")
    reset = Api(stack).call("POST", "/api/password-reset/", {"email": "ada@example.com"})
    assert reset.status_code in (200, 202, 204)
    subjects = ("address was requested", "A passkey was added", "Choose a new password")
    wait_for(
        lambda: all(_notices(smtp_server, "ada@example.com", s) for s in subjects), what="the notices and the reset"
    )
    for message in smtp_server.to("ada@example.com"):
        for text in (message_text(message), message_html(message), str(message["Subject"])):
            for words in ("Simple Bank IT", "Routine check", "ignore-this-notice", "Ada."):
                assert words not in text, (message["Subject"], words)
    [notice] = _notices(smtp_server, "ada@example.com", "address was requested")
    assert "x••@i" in message_text(notice) and ".com" in message_text(notice)  # still a hint for the owner


# 3. Anyone can lock a chosen user out --------------------------------------------------------------------
def _behind_a_proxy(settings, login_rate: str | None = None) -> None:
    """Client addresses from X-Forwarded-For (one trusted proxy), and the shipped rate limits (with
    another per-address failure limit if given)."""
    rates = dict(shipped.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    if login_rate:
        rates["login"] = login_rate
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"NUM_PROXIES": 1, "DEFAULT_THROTTLE_RATES": rates}


def test_failures_from_many_addresses_never_stop_the_owner_logging_in_from_a_clean_one(stack, settings, ada):
    _behind_a_proxy(settings)
    limit = settings.AXES_FAILURE_LIMIT
    for attacker in range(8):  # 40 failures: more than the old per-account limit of 30 an hour
        api = Api(stack, ip=f"203.0.113.{attacker}")
        answers = [api.log_in("ada", f"guess {n}").status_code for n in range(limit)]
        # django-axes locks the pair with the failure that reaches the limit.
        assert answers == [401] * (limit - 1) + [429], (attacker, answers)
        assert api.log_in("ada").status_code == 429  # that pair is locked, right password or not
    assert Api(stack, ip="198.51.100.7").log_in("ada").status_code == 200


def test_the_per_address_limit_counts_failures_only(stack, settings, ada):
    _behind_a_proxy(settings, "3/min")
    office = Api(stack, ip="192.0.2.10")
    assert [office.log_in("ada").status_code for _ in range(6)] == [200] * 6  # successes count nothing
    for n in range(3):  # three different accounts: the address's limit, not any account's
        assert office.log_in(f"nobody{n}", "guess").status_code == 401
    assert office.log_in("ada").status_code == 429
    assert Api(stack, ip="192.0.2.11").log_in("ada").status_code == 200


def test_nobody_resets_or_fills_another_accounts_lockout_with_their_own_log_ins(stack, settings, ada):
    """An older account whose username is someone else's address (usernames may no longer hold an
    "@"): its owner's successes reset ada's failures from that address, and its wrong current
    passwords counted against ada and landed in her trail — 20 guesses a minute at ada from one
    address where 5 per 15 minutes are allowed (a hostile review)."""
    _behind_a_proxy(settings)
    limit = settings.AXES_FAILURE_LIMIT
    mallory = UserFactory(
        username="ada@example.com", email="mallory@example.net", full_name="M", is_email_verified=True
    )
    attacker = Api(stack, ip="203.0.113.66")
    answers = [attacker.log_in("ada", f"guess {n}").status_code for n in range(limit - 1)]
    assert answers == [401] * (limit - 1)
    assert attacker.log_in("mallory@example.net").status_code == 200  # her own account, from there
    assert (
        attacker.call("PATCH", "/api/users/me/", {"email": "m2@example.net", "current_password": "no"}).status_code
        == 400
    )
    assert attacker.log_in("ada", "one guess more").status_code == 429  # ada's count was kept: locked
    assert [e.detail for e in _events(ada, "login_failed")] == ["wrong password or unknown account"] * limit
    assert [e.detail for e in _events(mallory, "login_failed")] == ["wrong current password"]
    assert Api(stack, ip="198.51.100.8").log_in("ada").status_code == 200


def test_a_username_with_an_at_sign_is_refused(stack):
    body = {"username": "bob@example.com", "full_name": "B", "email": "b@example.net", "password": PASSWORD}
    answer = Api(stack).call("POST", "/api/users/", body)
    assert answer.status_code == 400 and "username" in answer.json()


@pytest.mark.parametrize(
    "forwarded",
    ["203.0.113.9:5678", "[2001:db8::9]:443", "not-an-address", "1.2.3.4, junk", "2001:db8::9%" + "a" * 40],
)
def test_a_forwarded_address_with_a_port_or_none_at_all_is_never_a_500(stack, settings, ada, forwarded):
    """(A scoped IPv6 address, ``%`` and a zone, was a 500 after the hash, and the failure left no
    event: PostgreSQL's inet refuses a scope (a review).)"""
    _behind_a_proxy(settings)
    api = Api(stack)
    api.http.headers["X-Forwarded-For"] = forwarded
    assert api.log_in("ada", "wrong").status_code == 401
    assert api.log_in("ada").status_code == 200
    if ":" in forwarded and not forwarded.startswith("not"):  # the address without its port or scope
        [failure] = _events(ada, "login_failed")
        assert failure.client_ip == ("203.0.113.9" if "." in forwarded else "2001:db8::9")
        [session] = LoginSession.objects.filter(user=ada)
        assert session.client_ip == failure.client_ip


# 4. A staff password reset in the admin leaves sessions working ------------------------------------------
def test_every_way_a_password_changes_revokes_the_sessions_and_mails_a_notice(stack, smtp_server, ada, settings):
    settings.MFA_REQUIRED_ROLES = ("none",)  # staff log in with the password alone here (enrolment: elsewhere)
    User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    customer = Api(stack)
    assert customer.log_in("ada").status_code == 200
    staff = Browser(stack)
    assert staff.log_in("root", path="/admin/login/").status_code == 302
    form = f"/admin/users/user/{ada.pk}/password/"
    answer = staff.post_form(form, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"})
    assert answer.status_code == 302, answer.text[-2000:]
    assert customer.call("GET", "/api/users/me/").status_code == 401
    [notice] = wait_for(lambda: _notices(smtp_server, "ada@example.com", "password was changed"), what="notice")
    assert "by a member of our staff" in message_text(notice)
    assert [e.actor for e in _events(ada, "password_changed")] == ["staff:root"]

    # manage.py changepassword (what an operator types on the server) does the same.
    assert customer.log_in("ada", NEW_PASSWORD).status_code == 200
    import getpass

    original, getpass.getpass = getpass.getpass, lambda prompt="": "an operator's choice 2026"
    try:
        call_command("changepassword", "ada")
    finally:
        getpass.getpass = original
    assert customer.call("GET", "/api/users/me/").status_code == 401
    wait_for(lambda: len(_notices(smtp_server, "ada@example.com", "password was changed")) == 2, what="2nd notice")
    assert sorted(e.actor for e in _events(ada, "password_changed")) == ["staff:root", "system"]


def test_a_reset_revokes_every_session_and_mails_a_notice(stack, smtp_server, ada):
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    assert Api(stack).call("POST", "/api/password-reset/", {"email": "ada@example.com"}).status_code == 202
    [reset] = wait_for(lambda: _notices(smtp_server, "ada@example.com", "Choose a new password"), what="reset email")
    uid, token = re.search(r"uid=([\w-]+)&token=([\w-]+)", message_text(reset)).groups()
    body = {"uid": uid, "token": token, "new_password": NEW_PASSWORD}
    assert Api(stack).call("POST", "/api/password-reset/confirm/", body).status_code == 204
    assert api.call("GET", "/api/users/me/").status_code == 401
    wait_for(lambda: _notices(smtp_server, "ada@example.com", "password was reset"), what="the reset notice")


# 5. current_password guesses bypass the lockout ---------------------------------------------------------
def test_current_password_guesses_count_as_failed_log_ins(stack, settings, ada):
    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        answer = api.call("PATCH", "/api/users/me/", {"password": NEW_PASSWORD, "current_password": f"guess {n}"})
        assert answer.status_code == 400 and set(answer.json()) == {"current_password"}, n
    # As at the log-in, the failure that reaches the limit locks the account and address.
    last = api.call("PATCH", "/api/users/me/", {"password": NEW_PASSWORD, "current_password": "last guess"})
    assert last.status_code == 429
    locked = api.call("PATCH", "/api/users/me/", {"password": NEW_PASSWORD, "current_password": PASSWORD})
    assert locked.status_code == 429 and locked.headers["Retry-After"]
    assert Api(stack).log_in("ada").status_code == 429  # the log-in from this address is locked too
    assert User.objects.get(pk=ada.pk).check_password(PASSWORD)
    guesses = [e for e in _events(ada, "login_failed") if e.detail == "wrong current password"]
    assert len(guesses) == settings.AXES_FAILURE_LIMIT


# 6. Browser sessions are invisible and long-lived --------------------------------------------------------
def test_a_browser_log_in_is_a_session_the_owner_can_see_and_end(stack, ada):
    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302
    assert browser.get("/account/").status_code == 200
    api = Api(stack)
    api.log_in("ada")
    listed = api.call("GET", "/api/sessions/").json()
    assert sorted(s["kind"] for s in listed) == ["api", "browser"]
    [row] = [s for s in listed if s["kind"] == "browser"]
    assert api.call("DELETE", f"/api/sessions/{row['id']}/").status_code == 204
    gone = browser.get("/account/")
    assert gone.status_code == 302 and "/login/" in gone.headers["Location"]
    assert [s["kind"] for s in api.call("GET", "/api/sessions/").json()] == ["api"]


def test_a_session_in_use_outlives_a_short_idle_timeout_browser_and_api_alike(stack, settings, ada):
    """A session's "last used" was written once a minute: under a 20 s timeout a session used every 5 s ended at
    20 s (a review). The clock is moved by moving the rows back, not by sleeping."""
    settings.SESSION_IDLE_TIMEOUT = 60  # "last used" written when over 15 s old (it was: over 60 s)
    browser, api = Browser(stack), Api(stack)
    assert browser.log_in("ada").status_code == 302
    assert api.log_in("ada").status_code == 200
    LoginSession.objects.filter(user=ada).update(last_used_at=timezone.now() - timedelta(seconds=40))
    assert browser.get("/account/").status_code == 200  # used: "last used" is now
    assert api.call("GET", "/api/users/me/").status_code == 200
    # 30 s later: idle for 30 s if those requests were written down, for 70 s if not.
    LoginSession.objects.filter(user=ada).update(last_used_at=F("last_used_at") - timedelta(seconds=30))
    assert browser.get("/account/").status_code == 200
    assert api.call("GET", "/api/users/me/").status_code == 200


def test_sessions_end_after_the_idle_timeout_browser_and_api_alike(stack, settings, ada):
    browser, api = Browser(stack), Api(stack)
    assert browser.log_in("ada").status_code == 302
    assert api.log_in("ada").status_code == 200
    idle = timezone.now() - timedelta(seconds=settings.SESSION_IDLE_TIMEOUT + 1)
    LoginSession.objects.filter(user=ada).update(last_used_at=idle)  # as if nobody had asked for that long
    assert browser.get("/account/").status_code == 302
    assert api.call("GET", "/api/users/me/").status_code == 401
    assert api.call("POST", "/api/tokens/refresh/", {"refresh": api.tokens["refresh"]}).status_code == 401


def test_staff_block_a_browser_session_in_the_admin(stack, ada, settings):
    settings.MFA_REQUIRED_ROLES = ("none",)  # staff log in with the password alone here (enrolment: elsewhere)
    User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302
    row = LoginSession.objects.get(user=ada, kind="browser")
    staff = Browser(stack)
    assert staff.log_in("root", path="/admin/login/").status_code == 302
    fields = {"action": "block", "_selected_action": str(row.pk), "index": "0"}
    answer = staff.post_form("/admin/users/loginsession/", fields)
    assert answer.status_code == 302
    assert browser.get("/account/").status_code == 302
    assert [e.actor for e in _events(ada, "session_blocked")] == ["staff:root"]


# The trail ------------------------------------------------------------------------------------------------
def test_the_user_reads_their_security_events_newest_first_without_secrets(stack, ada):
    api = Api(stack)
    assert api.log_in("ada", "a wrong guess").status_code == 401
    assert api.log_in("ada").status_code == 200
    body = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    assert api.call("PATCH", "/api/users/me/", body).status_code == 200
    answer = api.call("GET", "/api/users/me/security-events/")
    assert answer.status_code == 200
    events = answer.json()
    assert [e["kind"] for e in events] == ["password_changed", "login", "login_failed"]
    assert set(events[0]) == {"kind", "at", "client_ip", "user_agent", "actor", "detail"}
    assert events[0]["actor"] == "self" and events[0]["client_ip"] == "127.0.0.1"
    assert PASSWORD not in answer.text and NEW_PASSWORD not in answer.text and "wrong guess" not in answer.text
    other = UserFactory(username="mallory", is_email_verified=True)
    assert SecurityEvent.objects.filter(user=other).count() == 0
    assert Api(stack).call("GET", "/api/users/me/security-events/").status_code == 401


# A second hostile review of the fixes (same day) ----------------------------------------------------------
def test_a_log_in_racing_a_password_change_gets_no_session(stack, monkeypatch, ada):
    """The password is checked (a hash's time), then the session starts: a change committed in
    between must not leave the attacker a session that its revocation never saw."""
    from users.account_apis import tokens as token_views
    from users.services import accounts

    real = token_views.authenticate

    def authenticate_while_the_owner_changes_it(request, **credentials):
        user = real(request, **credentials)
        accounts.password_change(user=User.objects.get(pk=ada.pk), new_password=NEW_PASSWORD)  # the owner, meanwhile
        return user

    monkeypatch.setattr(token_views, "authenticate", authenticate_while_the_owner_changes_it)
    assert Api(stack).log_in("ada").status_code == 401
    assert not LoginSession.objects.filter(user=ada).live().exists()


def test_the_admin_log_in_counts_against_the_same_failure_limit(stack, settings, ada):
    _behind_a_proxy(settings, "3/min")
    browser = Browser(stack)
    browser.http.headers["X-Forwarded-For"] = "192.0.2.50"
    for n in range(3):  # three accounts, one guess each: the address's limit
        assert browser.log_in(f"someone{n}", "a guess", path="/admin/login/").status_code == 200
    assert browser.log_in("ada", "a guess", path="/admin/login/").status_code == 429


def test_refused_attempts_of_a_locked_pair_write_nothing(stack, settings, ada):
    api = Api(stack)
    for n in range(settings.AXES_FAILURE_LIMIT):
        api.log_in("ada", f"guess {n}")
    written = SecurityEvent.objects.filter(kind="login_failed").count()
    assert [api.log_in("ada", "more").status_code for _ in range(10)] == [429] * 10
    assert SecurityEvent.objects.filter(kind="login_failed").count() == written


def test_attempts_refused_during_a_lockout_do_not_make_it_last_longer(stack, settings, ada):
    """django-axes restarted the cool-off at each refused attempt: an app retrying a saved
    password kept its owner out for ever, where the docs promise the owner can wait (a review)."""
    from axes.models import AccessAttempt

    api = Api(stack)
    for n in range(settings.AXES_FAILURE_LIMIT):
        api.log_in("ada", f"guess {n}")
    almost_over = timezone.now() - settings.AXES_COOLOFF_TIME + timedelta(seconds=10)
    AccessAttempt.objects.update(attempt_time=almost_over)  # the lockout has 10 s left
    assert [api.log_in("ada", "still wrong").status_code for _ in range(3)] == [429] * 3
    [attempt] = AccessAttempt.objects.all()
    assert attempt.attempt_time == almost_over and attempt.failures_since_start == settings.AXES_FAILURE_LIMIT
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(seconds=11))  # 11 s later
    assert api.log_in("ada").status_code == 200


def test_a_locked_out_answer_says_how_long_the_lock_really_has_left(stack, settings, ada):
    """Refused attempts no longer extend a lockout, so "come back in 15 minutes" was wrong as soon as
    the lock had run a while: Retry-After and the page say what is left (a review)."""
    from axes.models import AccessAttempt

    api, browser = Api(stack), Browser(stack)
    for n in range(settings.AXES_FAILURE_LIMIT):
        api.log_in("ada", f"guess {n}")
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=10))
    left = (settings.AXES_COOLOFF_TIME - timedelta(minutes=10)).total_seconds()
    locked = api.log_in("ada")
    assert locked.status_code == 429 and left - 60 < int(locked.headers["Retry-After"]) <= left
    page = browser.log_in("ada")
    assert page.status_code == 429 and left - 60 < int(page.headers["Retry-After"]) <= left
    assert f"Please wait {round(left / 60)} minutes" in page.text


def test_a_step_up_on_a_page_refused_for_a_lockout_answers_429_with_what_is_left(stack, settings, ada):
    """After the failure that locked the pair, the account page's step-up answered 400 with "try
    again later, or reset your password" and no Retry-After: the lockout's own answer, 429, says how
    long, and a step-up is no log-in a reset would let through (a review)."""
    from axes.models import AccessAttempt

    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302
    fields = {"form": "email", "email": "ada@new.example.org"}
    for n in range(settings.AXES_FAILURE_LIMIT):
        browser.post_form("/account/", fields | {"current_password": f"guess {n}"})
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=10))
    left = (settings.AXES_COOLOFF_TIME - timedelta(minutes=10)).total_seconds()
    locked = browser.post_form("/account/", fields | {"current_password": PASSWORD})
    assert locked.status_code == 429 and left - 60 < int(locked.headers["Retry-After"]) <= left
    assert f"Too many failed log-ins. Try again in {round(left / 60)} minutes." in locked.text
    assert "reset your password" not in locked.text
    assert User.objects.get(pk=ada.pk).email == "ada@example.com"


def test_a_lockout_from_failures_in_two_browsers_ends_when_enough_of_them_are_old(stack, settings, ada):
    """django-axes keeps a row per user agent and sums them: the lock ends when the oldest rows that
    make up the limit age out, not at the newest failure's cool-off."""
    from axes.models import AccessAttempt

    first, second = Api(stack), Api(stack)
    first.http.headers["User-Agent"], second.http.headers["User-Agent"] = "first browser", "second browser"
    older = settings.AXES_FAILURE_LIMIT - 2
    for n in range(older):
        first.log_in("ada", f"guess {n}")
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=10))
    for n in range(2):
        second.log_in("ada", f"guess {n}")
    newer = AccessAttempt.objects.filter(user_agent="second browser")
    newer.update(attempt_time=F("attempt_time") - timedelta(minutes=2))
    left = (settings.AXES_COOLOFF_TIME - timedelta(minutes=10)).total_seconds()  # when the first browser's age out
    locked = second.log_in("ada")
    assert locked.status_code == 429 and left - 60 < int(locked.headers["Retry-After"]) <= left


def test_forgetting_current_password_is_no_failed_log_in(stack, settings, ada):
    api = Api(stack)
    api.log_in("ada")
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        answer = api.call("PATCH", "/api/users/me/", {"password": NEW_PASSWORD})
        assert answer.status_code == 400 and set(answer.json()) == {"current_password"}
    assert Api(stack).log_in("ada").status_code == 200


def test_an_ipv6_host_counts_as_its_slash_64(stack, settings, ada):
    _behind_a_proxy(settings)
    limit = settings.AXES_FAILURE_LIMIT
    answers = [Api(stack, ip=f"2001:db8:1:2::{n + 1:x}").log_in("ada", "guess").status_code for n in range(limit)]
    assert answers == [401] * (limit - 1) + [429]
    assert Api(stack, ip="2001:db8:1:2:ffff::9").log_in("ada").status_code == 429  # same /64: locked
    assert Api(stack, ip="2001:db8:1:3::1").log_in("ada").status_code == 200  # another /64


def test_odd_input_to_the_new_routes_is_a_4xx(stack, ada, settings):
    import base64

    settings.MFA_REQUIRED_ROLES = ("none",)  # the banker route's own answers (enrolment: test_second_factor.py)

    UserFactory(username="bob", role=User.Role.BANKER, is_email_verified=True)
    banker = Api(stack)
    banker.log_in("bob")
    assert banker.call("PATCH", "/api/users/a%00b/", {"full_name": "X Y"}).status_code == 404
    # An offset Python reads and PostgreSQL refuses (past ±15:59) was a 500 (a review).
    odd = ("notadate", "2020-13-45", "\x00", "x" * 40, "2024-01-01T00:00:00-16:00", "2024-01-01T00:00:00+23:59")
    # Fractions of a second in the offset were a 500; whole seconds are refused too (no cursor has them).
    odd += ("2024-01-01T00:00:00+05:30:30.123456", "2024-01-01T00:00:00-05:30:30")
    for position in odd:
        cursor = quote(base64.b64encode(f"o=0&r=0&p={position}".encode()).decode())
        answer = banker.call("GET", f"/api/users/me/security-events/?cursor={cursor}")
        assert answer.status_code == 400 and set(answer.json()) == {"cursor"}, position
    cursor = quote(base64.b64encode(b"o=0&r=0&p=2024-01-01T00:00:00-15:59").decode())
    assert banker.call("GET", f"/api/users/me/security-events/?cursor={cursor}").status_code == 200


@pytest.mark.parametrize(
    "name",
    [
        "\ufdfa" * 20,  # 20 characters typed, 360 once read (NFKC): one expands to 18
        "a" * 256,  # past the admin form's limit, which is only an attribute of its input
        "\ufdfa" * 14 + "@example.com",
    ],
)
def test_a_log_in_name_longer_than_any_accounts_is_a_field_error_before_any_hash(stack, ada, name):
    """It was a 500 after the password hash (django-axes could not store the name), counted by no
    limit: an anonymous client's free Argon2 hashes (a review). Now a field error, and the owner's
    log-in is untouched."""
    from axes.models import AccessAttempt

    answer = Api(stack).call("POST", "/api/tokens/", {"username": name, "password": "x"})
    assert answer.status_code == 400 and set(answer.json()) == {"username"}, answer.text
    for path in ("/login/", "/admin/login/"):
        page = Browser(stack).log_in(name, "x", path=path)
        assert page.status_code in (200, 400) and "at most 254 characters" in page.text, (path, page.status_code)
    assert not AccessAttempt.objects.exists()  # no password was checked: nothing to count
    assert Api(stack).log_in("ada").status_code == 200


def test_a_name_of_megabytes_is_refused_having_read_only_what_a_name_can_be(stack, ada):
    """Before the form refused it, the lockout's turn read all of it (NFKC, twice): 270,000 U+FDFA
    was a second of CPU per request, counted by no limit (a review). The figure is the bench's to
    measure; here, the answer, and that the lockout reads no further than any name can be."""
    from django.test import RequestFactory

    from users.auth import lockout_username

    huge = "\ufdfa" * 100_000
    for path in ("/login/", "/admin/login/"):
        page = Browser(stack).log_in(huge, "x", path=path)
        assert page.status_code in (200, 400) and "at most 254 characters" in page.text, (path, page.status_code)
    request = RequestFactory().post("/login/")
    assert lockout_username(request, {"username": huge}) == lockout_username(request, {"username": huge[:255]})
    assert Api(stack).log_in("ada").status_code == 200


def test_the_lockout_stores_any_name_it_is_given():
    """Every route now refuses such names first; whatever reaches django-axes still fits its column."""
    from django.test import RequestFactory

    from users.auth import lockout_username

    request = RequestFactory().post("/login/")
    for name in ("\ufdfa" * 20, "x@" + "\ufdfa" * 20, "a" * 300):
        stored = lockout_username(request, {"username": name})
        assert len(stored) <= 255 and stored == lockout_username(request, {"username": name})
    assert lockout_username(request, {"username": "Ada"}) == "ada"


def test_staff_cannot_take_over_superusers_other_staff_or_raise_themselves(stack, settings):
    settings.MFA_REQUIRED_ROLES = ("none",)  # staff log in with the password alone here (enrolment: elsewhere)
    from django.contrib.auth.models import Permission

    root = User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    other = UserFactory(username="ops2", is_staff=True, is_email_verified=True)
    ops = UserFactory(username="ops", is_staff=True, is_email_verified=True)
    ops.user_permissions.add(*Permission.objects.filter(codename__in=["view_user", "change_user"]))
    customer = UserFactory(username="carol", is_email_verified=True)
    staff = Browser(stack)
    assert staff.log_in("ops", path="/admin/login/").status_code == 302
    for target in (root, other):
        page = f"/admin/users/user/{target.pk}/password/"
        assert staff.get(page).status_code == 403
        view_only = staff.get(f"/admin/users/user/{target.pk}/change/")
        assert view_only.status_code == 200 and 'name="_save"' not in view_only.text  # can look, not change
    # Their own password and address: on /account/, which asks for the current password.
    own = staff.get(f"/admin/users/user/{ops.pk}/password/")
    assert own.status_code == 302 and own.headers["Location"] == "/account/#password-form"
    own_page = staff.get(f"/admin/users/user/{ops.pk}/change/").text
    assert 'name="is_superuser"' not in own_page and 'name="email"' not in own_page
    # A customer's password: allowed, and the customer is told.
    body = {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
    assert staff.post_form(f"/admin/users/user/{customer.pk}/password/", body).status_code == 302
    assert User.objects.get(pk=customer.pk).check_password(NEW_PASSWORD)
    assert User.objects.get(pk=root.pk).check_password(PASSWORD) and not User.objects.get(pk=ops.pk).is_superuser


def test_staff_cannot_guess_a_links_nonce_or_a_sessions_token_id_through_the_admins_filters(stack, settings, ada):
    """A changelist answers any lookup on its model's columns: ``?nonce__startswith=`` told, one
    character at a time, the nonce of a link the page never shows (a review: 424 requests)."""
    settings.MFA_REQUIRED_ROLES = ("none",)
    from django.contrib.auth.models import Permission

    from users.models import EmailVerification

    clerk = UserFactory(username="clerk", is_staff=True, is_email_verified=True)
    clerk.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_user", "view_emailverification", "view_loginsession", "view_addressrequest"]
        )
    )
    expires = timezone.now() + timedelta(days=1)
    link = EmailVerification.objects.create(user=ada, email=ada.email, nonce="NXmM6Wu05lca", expires_at=expires)
    Api(stack).log_in("ada")
    jti = LoginSession.objects.get(user=ada).refresh_jti
    staff = Browser(stack)
    assert staff.log_in("clerk", path="/admin/login/").status_code == 302
    probes = [
        f"/admin/users/emailverification/?id={link.pk}&nonce__startswith={link.nonce[:3]}",
        f"/admin/users/emailverification/?nonce={link.nonce}",
        f"/admin/users/loginsession/?refresh_jti__startswith={jti[:2]}",
        f"/admin/users/addressrequest/?address={ada.email}",  # who asked for whose reset: not a search either
        # Refused by Django already (kept so that it stays so): a relation not in list_filter, and
        # Django's UserAdmin's own rule for the password.
        f"/admin/users/user/?login_sessions__refresh_jti__startswith={jti[:2]}",
        "/admin/users/user/?password__startswith=argon2",
    ]
    for probe in probes:
        answer = staff.get(probe)
        assert answer.status_code == 400 and "ada" not in answer.text, (probe, answer.status_code)
    assert staff.get(f"/admin/users/emailverification/?id={link.pk}").status_code == 200  # plain filters still work


def test_a_username_or_address_taken_in_another_case_is_a_form_error_in_the_admin(stack, settings):
    """The constraints on the canonical username and address were checked by nobody before the
    save: ``ROOT`` beside ``root``, or a taken address, was a 500 (a review)."""
    settings.MFA_REQUIRED_ROLES = ("none",)
    User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD, full_name="R")
    carol = UserFactory(username="carol", email="carol@example.com", is_email_verified=True)
    staff = Browser(stack)
    assert staff.log_in("root", path="/admin/login/").status_code == 302

    def post(path: str, fields: dict[str, str]) -> requests.Response:
        """The form posted with the inlines' management forms as the page gives them."""
        management = re.findall(
            r'name="([\w-]+-(?:TOTAL|INITIAL|MIN_NUM|MAX_NUM)_FORMS)"[^>]*value="(\d*)"', staff.get(path).text
        )
        return staff.post_form(path, {**dict(management), **fields})

    def errors(path: str, fields: dict[str, str]) -> list[str]:
        page = post(path, fields)
        assert page.status_code == 200, (path, page.status_code)  # the form again, not a 500 nor a save
        return re.findall(r'<ul class="errorlist[^"]*"[^>]*><li>(.*?)</li>', page.text)

    new = {"full_name": "New Person", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"}
    taken_name = errors("/admin/users/user/add/", {"username": "ROOT", "email": "new@example.com", **new})
    assert taken_name == ["A user with that username already exists."]
    taken_address = errors("/admin/users/user/add/", {"username": "newbie", "email": "Carol@Example.com", **new})
    assert taken_address == ["A user with that email address already exists."]
    assert User.objects.count() == 2
    # An international domain is stored as sign-up stores it: one mailbox, one account, however spelled.
    assert post("/admin/users/user/add/", {"username": "uni", "email": "uni@bücher.de", **new}).status_code == 302
    assert User.objects.get(username="uni").email == "uni@xn--bcher-kva.de"
    for spelling in ("UNI@bücher.de", "uni@xn--bcher-kva.de"):
        again = errors("/admin/users/user/add/", {"username": "uni2", "email": spelling, **new})
        assert again == ["A user with that email address already exists."], spelling
    change = f"/admin/users/user/{carol.pk}/change/"
    form = {
        "username": "Root",
        "email": carol.email,
        "full_name": carol.full_name,
        "role": carol.role,
        "is_active": "on",
    }
    assert errors(change, form) == ["A user with that username already exists."]
    assert User.objects.get(pk=carol.pk).username == "carol"


# Error shapes ---------------------------------------------------------------------------------------------
def test_every_error_not_about_a_field_names_itself_with_a_code(stack, settings):
    """A client branches on ``code``, never on the words: DRF's own errors carry one too."""
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] | {"passkey_options": "1/min"}
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"DEFAULT_THROTTLE_RATES": rates}
    api = Api(stack)
    assert api.call("POST", "/api/tokens/passkey/begin/", {}).status_code == 200
    answers = {
        "throttled": api.call("POST", "/api/tokens/passkey/begin/", {}),
        "not_authenticated": api.call("GET", "/api/users/me/"),
        "method_not_allowed": api.call("GET", "/api/tokens/"),
        "invalid_link": api.call("POST", "/api/verify-email/", {"email_id": 1, "secret_code": "not a code"}),
        "parse_error": api.http.post(
            stack + "/api/users/", data=b"{", headers={"Content-Type": "application/json"}, timeout=10
        ),
    }
    for code, answer in answers.items():
        assert answer.status_code in (400, 401, 405, 429), (code, answer.status_code)
        body = answer.json()
        assert set(body) == {"detail", "code"} and body["code"] == code, (code, body)
    assert "Retry-After" in answers["throttled"].headers


def test_deactivating_an_account_ends_its_sessions_and_reactivating_revives_none(stack, ada, client):
    """An inactive user's tokens were refused, but their sessions stayed live: staff re-activating
    the account within the idle timeout brought back every token and browser (a review)."""
    from users.tests.test_account_admin import _FormFields

    api, browser = Api(stack), Browser(stack)
    assert api.log_in("ada").status_code == 200
    assert browser.log_in("ada").status_code == 302
    client.force_login(superuser_with_factor(username="ops"))
    url = f"/admin/users/user/{ada.pk}/change/"

    def save(active: bool) -> None:
        fields = _FormFields()
        fields.feed(client.get(url).content.decode())
        values = {k: v for k, v in fields.values.items() if k != "is_active"} | ({"is_active": "on"} if active else {})
        assert client.post(url, values).status_code == 302

    save(active=False)
    assert api.call("GET", "/api/users/me/").status_code == 401
    save(active=True)
    assert api.call("GET", "/api/users/me/").status_code == 401
    refreshed = requests.post(f"{stack}/api/tokens/refresh/", json={"refresh": api.tokens["refresh"]}, timeout=10)
    assert refreshed.status_code == 401
    assert browser.get("/account/").status_code == 302  # sent to log in again
    assert not LoginSession.objects.filter(user=ada).live().exists()
    assert Api(stack).log_in("ada").status_code == 200  # the account itself works again

    # Saving an inactive account again (any other change) ends nothing more; a save that leaves
    # the account active ends nothing.
    session = LoginSession.objects.get(user=ada, revoked_at__isnull=True)
    ada.refresh_from_db()
    ada.full_name = "Ada L."
    ada.save()
    session.refresh_from_db()
    assert session.revoked_at is None


def test_re_authenticating_on_a_page_gives_the_browser_a_new_session_id(stack, ada, settings):
    """An address change re-authenticates (the current password) but kept the session id, which a
    password change replaces (a review; ASVS 7.2.4): a copy of the id taken before it is now dead."""
    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302
    copied = browser.http.cookies[settings.SESSION_COOKIE_NAME]
    fields = {"form": "email", "email": "ada@new.example.org", "current_password": PASSWORD}
    assert browser.post_form("/account/", fields).status_code == 302
    assert browser.http.cookies[settings.SESSION_COOKIE_NAME] != copied
    assert browser.get("/account/").status_code == 200  # the browser itself goes on
    thief = requests.get(
        f"{stack}/account/", cookies={settings.SESSION_COOKIE_NAME: copied}, timeout=10, allow_redirects=False
    )
    assert thief.status_code == 302 and "/login/" in thief.headers["Location"]
