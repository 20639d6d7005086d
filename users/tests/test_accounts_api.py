"""The accounts API, row by row of the contract's Accounts table (PostgreSQL, locmem email)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone
from rest_framework.test import APIClient

from users.models import EmailVerification, LoginSession, OutboundEmail, SecurityEvent, User
from users.services import delivery
from users.tests.factories import UserFactory, process_address_requests, superuser_with_factor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_throttling")]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def ada() -> User:
    return UserFactory(username="ada", email="ada@example.com", full_name="Ada Lovelace", is_email_verified=True)


def _login(api: APIClient, username: str = "ada", password: str = PASSWORD, **headers: str):
    return api.post("/api/tokens/", {"username": username, "password": password}, format="json", **headers)


def _bearer(access: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return api


def _deliver_all() -> None:
    """What the worker does with every queued reset request and email (into Django's locmem outbox)."""
    process_address_requests()
    for email in OutboundEmail.objects.filter(state="pending"):
        if email.verification_id:
            delivery.deliver(verification_id=email.verification_id)
        else:
            delivery.deliver(email_id=email.pk)


# --- Log in --------------------------------------------------------------------------------------
@pytest.mark.parametrize("login", ["ada", "ADA", "ada@example.com", "Ada@EXAMPLE.com"])
def test_log_in_by_username_or_address_gives_tokens_a_session_and_the_user(ada, login):
    response = _login(APIClient(), login, HTTP_USER_AGENT="pytest-browser/1.0", REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"access", "refresh", "access_expires_at", "refresh_expires_at", "session_id", "user"}
    assert body["user"]["username"] == "ada" and body["user"]["role"] == "depositor"
    assert "password" not in body["user"]
    session = LoginSession.objects.get(pk=body["session_id"])
    assert (session.user_agent, session.client_ip, session.user_id) == ("pytest-browser/1.0", "203.0.113.7", ada.pk)
    assert abs((session.expires_at - session.created_at) - timedelta(days=1)) < timedelta(seconds=1)
    me = _bearer(body["access"]).get("/api/users/me/")
    assert me.status_code == 200 and me.json()["email"] == "ada@example.com"


def test_unknown_user_and_wrong_password_get_one_identical_answer(ada):
    unknown = _login(APIClient(), "nobody")
    wrong = _login(APIClient(), "ada", "not the password at all")
    unknown_address = _login(APIClient(), "nobody@example.com")
    assert unknown.status_code == wrong.status_code == unknown_address.status_code == 401
    assert unknown.content == wrong.content == unknown_address.content
    assert unknown.json()["code"] == "invalid_credentials"


def test_an_unverified_address_gets_403_only_with_the_right_password(settings):
    UserFactory(username="newbie", email="newbie@example.com")
    right = _login(APIClient(), "newbie")
    assert right.status_code == 403 and right.json()["code"] == "email_not_verified"
    assert _login(APIClient(), "newbie", "wrong password here").status_code == 401
    settings.ACCOUNT_LOGIN_REQUIRES_VERIFIED_EMAIL = False
    assert _login(APIClient(), "newbie").status_code == 200


# --- Refresh, rotation, reuse ----------------------------------------------------------------------
def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(ada):
    first = _login(APIClient()).json()
    api = APIClient()
    second = api.post("/api/tokens/refresh/", {"refresh": first["refresh"]}, format="json")
    assert second.status_code == 200
    rotated = second.json()
    assert set(rotated) == {"access", "refresh", "access_expires_at", "refresh_expires_at"}
    assert rotated["refresh"] != first["refresh"]
    assert _bearer(rotated["access"]).get("/api/users/me/").status_code == 200

    # Someone replays the spent token: the whole session ends, for the thief and the owner alike.
    replay = api.post("/api/tokens/refresh/", {"refresh": first["refresh"]}, format="json")
    assert replay.status_code == 401
    assert LoginSession.objects.get(pk=first["session_id"]).revoked_reason == "refresh token reused"
    assert api.post("/api/tokens/refresh/", {"refresh": rotated["refresh"]}, format="json").status_code == 401
    assert _bearer(rotated["access"]).get("/api/users/me/").status_code == 401  # at once, not at expiry
    assert _bearer(first["access"]).get("/api/users/me/").status_code == 401


@pytest.mark.parametrize("junk", ["", "not-a-token", "a.b.c", "x" * 3000])
def test_junk_refresh_tokens_are_refused(ada, junk):
    response = APIClient().post("/api/tokens/refresh/", {"refresh": junk}, format="json")
    assert response.status_code in (400, 401)


def test_an_access_token_is_not_a_refresh_token(ada):
    tokens = _login(APIClient()).json()
    assert APIClient().post("/api/tokens/refresh/", {"refresh": tokens["access"]}, format="json").status_code == 401


def test_refresh_tokens_stop_at_the_session_expiry(ada):
    tokens = _login(APIClient()).json()
    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=1)):
        assert APIClient().post("/api/tokens/refresh/", tokens | {}, format="json").status_code in (400, 401)
        assert _bearer(tokens["access"]).get("/api/users/me/").status_code == 401


def test_access_tokens_expire_after_their_lifetime(ada, settings):
    tokens = _login(APIClient()).json()
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.ACCESS_TOKEN_LIFETIME + 1)):
        assert _bearer(tokens["access"]).get("/api/users/me/").status_code == 401


# --- Log out, sessions, blocking ------------------------------------------------------------------
def test_logout_ends_the_session_at_once(ada):
    tokens = _login(APIClient()).json()
    api = APIClient()
    assert api.post("/api/tokens/logout/", {"refresh": tokens["refresh"]}, format="json").status_code == 204
    assert api.post("/api/tokens/refresh/", {"refresh": tokens["refresh"]}, format="json").status_code == 401
    assert _bearer(tokens["access"]).get("/api/users/me/").status_code == 401
    assert api.post("/api/tokens/logout/", {"refresh": tokens["refresh"]}, format="json").status_code == 401
    assert api.post("/api/tokens/logout/", {"refresh": "unknown"}, format="json").status_code == 401


def test_sessions_are_listed_and_revoked_by_their_owner_only(ada):
    phone = _login(APIClient(), HTTP_USER_AGENT="phone").json()
    laptop = _login(APIClient(), HTTP_USER_AGENT="laptop").json()
    listed = _bearer(laptop["access"]).get("/api/sessions/").json()
    assert {s["user_agent"]: s["current"] for s in listed} == {"phone": False, "laptop": True}
    assert set(listed[0]) == {
        "id",
        "kind",
        "user_agent",
        "client_ip",
        "created_at",
        "expires_at",
        "last_used_at",
        "current",
    }

    mallory = UserFactory(username="mallory", is_email_verified=True)
    theirs = _login(APIClient(), "mallory").json()
    assert _bearer(theirs["access"]).delete(f"/api/sessions/{phone['session_id']}/").status_code == 404
    assert _bearer(laptop["access"]).delete(f"/api/sessions/{phone['session_id']}/").status_code == 204
    assert _bearer(phone["access"]).get("/api/users/me/").status_code == 401
    assert APIClient().post("/api/tokens/refresh/", {"refresh": phone["refresh"]}, format="json").status_code == 401
    assert [s["user_agent"] for s in _bearer(laptop["access"]).get("/api/sessions/").json()] == ["laptop"]
    assert mallory.login_sessions.live().count() == 1


def test_a_blocked_session_stops_working(ada, client):
    tokens = _login(APIClient()).json()
    staff = superuser_with_factor(username="ops")
    client.force_login(staff)
    page = client.get(f"/admin/users/user/{ada.pk}/change/").content.decode()
    assert tokens["session_id"] in page  # the user's sessions are listed on their page
    response = client.post(
        "/admin/users/loginsession/", {"action": "block", "_selected_action": [tokens["session_id"]]}
    )
    assert response.status_code == 302
    assert _bearer(tokens["access"]).get("/api/users/me/").status_code == 401
    assert APIClient().post("/api/tokens/refresh/", {"refresh": tokens["refresh"]}, format="json").status_code == 401
    assert "blocked" in client.get("/admin/users/loginsession/").content.decode()


def test_a_deactivated_user_is_refused_at_once(ada):
    tokens = _login(APIClient()).json()
    User.objects.filter(pk=ada.pk).update(is_active=False)
    assert _bearer(tokens["access"]).get("/api/users/me/").status_code == 401
    assert _login(APIClient()).status_code == 401


# --- Profile ---------------------------------------------------------------------------------------
def test_profile_shows_role_pending_email_and_password_changed_at(ada):
    me = _bearer(_login(APIClient()).json()["access"]).get("/api/users/me/").json()
    assert set(me) == {
        "username", "full_name", "email", "is_email_verified", "created_at", "role", "pending_email",
        "password_changed_at",
    }  # fmt: skip
    assert me["pending_email"] is None and me["role"] == "depositor"


def test_profile_name_changes_and_bad_input_is_a_field_error(ada):
    api = _bearer(_login(APIClient()).json()["access"])
    assert api.patch("/api/users/me/", {"full_name": "Augusta Ada King"}, format="json").json()["full_name"] == (
        "Augusta Ada King"
    )
    bad = api.patch("/api/users/me/", {"full_name": "Ada\nhttps://evil.example"}, format="json")
    assert bad.status_code == 400 and set(bad.json()) == {"full_name"}
    assert api.patch("/api/users/me/", {"email": "not an address"}, format="json").status_code == 400
    assert APIClient().get("/api/users/me/").status_code == 401


def test_address_change_is_pending_until_its_link_is_used(ada):
    api = _bearer(_login(APIClient()).json()["access"])
    body = {"email": "ada@lovelace.example.org", "current_password": PASSWORD}
    response = api.patch("/api/users/me/", body, format="json")
    assert response.status_code == 200
    assert (
        response.json()["email"] == "ada@example.com" and response.json()["pending_email"] == "ada@lovelace.example.org"
    )
    _deliver_all()
    to_new = [m for m in mail.outbox if m.to == ["ada@lovelace.example.org"]]
    to_old = [m for m in mail.outbox if m.to == ["ada@example.com"]]
    assert len(to_new) == 1 and "/verify-email/?" in to_new[0].body
    assert len(to_old) == 1 and "/verify-email/?" not in to_old[0].body and "a••" in to_old[0].body
    # The old address keeps working meanwhile.
    assert _login(APIClient(), "ada@example.com").status_code == 200
    link = EmailVerification.objects.get(purpose="change")
    from users import tokens

    verified = APIClient().post(
        "/api/verify-email/", {"email_id": link.pk, "secret_code": tokens.make_code(link.pk, link.nonce)}, format="json"
    )
    assert verified.status_code == 200
    ada.refresh_from_db()
    assert (ada.email, ada.pending_email, ada.is_email_verified) == ("ada@lovelace.example.org", "", True)
    assert _login(APIClient(), "ada@lovelace.example.org").status_code == 200
    assert _login(APIClient(), "ada@example.com").status_code == 401


def test_a_taken_address_is_answered_like_a_free_one_and_its_owner_is_told(ada):
    UserFactory(username="grace", email="grace@example.com", full_name="Grace Hopper", is_email_verified=True)
    api = _bearer(_login(APIClient()).json()["access"])
    taken = api.patch("/api/users/me/", {"email": "GRACE@example.com", "current_password": PASSWORD}, format="json")
    free = api.patch("/api/users/me/", {"email": "free@example.com", "current_password": PASSWORD}, format="json")
    assert taken.status_code == free.status_code == 200
    assert set(taken.json()) == set(free.json()) and taken.json()["pending_email"] == "GRACE@example.com"
    _deliver_all()
    to_grace = [m for m in mail.outbox if m.to == ["grace@example.com"]]
    assert (
        len(to_grace) == 1
        and "/verify-email/?" not in to_grace[0].body
        and "already has an account" in to_grace[0].body
    )
    assert [m for m in mail.outbox if m.to == ["free@example.com"] and "/verify-email/?" in m.body]
    assert User.objects.get(pk=ada.pk).email == "ada@example.com"


def _verify(link: EmailVerification):
    from users import tokens

    code = tokens.make_code(link.pk, link.nonce)
    return APIClient().post("/api/verify-email/", {"email_id": link.pk, "secret_code": code}, format="json")


@pytest.mark.parametrize("mailed_first", [True, False], ids=["after-the-email", "before-it-went-out"])
def test_asking_for_the_same_address_again_keeps_the_link_that_was_mailed(ada, mailed_first):
    """ "I didn't get it" within the cooldown: no second link may be made there, so the first must
    stay alive (and its email owed), or the person is left with a change pending and no link."""
    api = _bearer(_login(APIClient()).json()["access"])
    body = {"email": "ada@lovelace.example.org", "current_password": PASSWORD}
    assert api.patch("/api/users/me/", body, format="json").status_code == 200
    if mailed_first:
        _deliver_all()
    again = api.patch("/api/users/me/", body, format="json")
    assert again.status_code == 200 and again.json()["pending_email"] == "ada@lovelace.example.org"
    _deliver_all()
    to_new = [m for m in mail.outbox if m.to == ["ada@lovelace.example.org"]]
    assert len(to_new) == 1 and "/verify-email/?" in to_new[0].body
    [link] = EmailVerification.objects.filter(purpose="change")
    assert _verify(link).status_code == 200
    assert User.objects.get(pk=ada.pk).email == "ada@lovelace.example.org"


def test_each_address_change_notice_names_the_address_its_request_asked_for(ada):
    """A notice sent late (a retry, the sweep after an outage) named whatever was pending by then: a
    later request's address, or none once the change was done (a review)."""
    api = _bearer(_login(APIClient()).json()["access"])
    for address in ("ada@first.example.org", "ada@second.example.org"):
        body = {"email": address, "current_password": PASSWORD}
        assert api.patch("/api/users/me/", body, format="json").status_code == 200
    _deliver_all()
    notices = [m.body for m in mail.outbox if m.to == ["ada@example.com"]]
    assert len(notices) == 2
    named = sorted(
        "first" if "a••@f••••.e••••••.org" in n else "second" if "a••@s•••••.e••••••.org" in n else "?" for n in notices
    )
    assert named == ["first", "second"]
    events = SecurityEvent.objects.filter(user=ada, kind="email_change_requested").order_by("at", "pk")
    assert [e.detail for e in events] == ["a••@first.example.org", "a••@second.example.org"]


def test_the_address_change_notice_masks_every_label_the_requester_chose(ada):
    """The top-level domain was printed whole, and addresses may end in any 2-63 letters or an
    A-label: "x••@y••.ignorethisnoticeitisaroutinetest" (a review). A short top-level domain, which
    is every country's and the common ones, still shows: the owner recognises their own address."""
    api = _bearer(_login(APIClient()).json()["access"])
    for address in ("x@y.ignorethisnoticeitisaroutinetest", "x@y.pleaseignorethisnoticeé", "ada@mail.example.com"):
        body = {"email": address, "current_password": PASSWORD}
        assert api.patch("/api/users/me/", body, format="json").status_code == 200
    _deliver_all()
    notices = " ".join(m.body for m in mail.outbox if m.to == ["ada@example.com"])
    assert "ignorethis" not in notices and "pleaseignore" not in notices and "xn--" not in notices
    assert "a••@m•••.e••••••.com" in notices


def test_a_banker_submitting_the_pending_address_again_changes_and_mails_nothing(ada, settings):
    settings.MFA_REQUIRED_ROLES = ("none",)
    UserFactory(username="banker", role=User.Role.BANKER, is_email_verified=True)
    banker = _bearer(_login(APIClient(), "banker").json()["access"])
    for _ in range(2):
        answer = banker.patch("/api/users/ada/", {"email": "ada@Lovelace.example.org"}, format="json")
        assert answer.status_code == 200
    _deliver_all()
    assert len([m for m in mail.outbox if m.to == ["ada@lovelace.example.org"]]) == 1
    assert len([m for m in mail.outbox if m.to == ["ada@example.com"] and "by a banker" in m.body]) == 1
    assert SecurityEvent.objects.filter(user=ada, kind="profile_changed").count() == 1
    assert _verify(EmailVerification.objects.get(purpose="change")).status_code == 200


@pytest.mark.parametrize("taken", [False, True], ids=["free", "taken"])
def test_asking_twice_for_an_address_looks_the_same_whether_it_is_taken(ada, taken):
    """A review: a repeat for a taken address was recorded and mailed again, a free one's was not —
    the requester's events and inbox told the two apart."""
    if taken:
        UserFactory(username="grace", email="grace@example.com", is_email_verified=True)
    api = _bearer(_login(APIClient()).json()["access"])
    body = {"email": "grace@example.com", "current_password": PASSWORD}
    for _ in range(2):
        assert api.patch("/api/users/me/", body, format="json").status_code == 200
    _deliver_all()
    assert SecurityEvent.objects.filter(user=ada, kind="email_change_requested").count() == 1
    assert len([m for m in mail.outbox if m.to == ["ada@example.com"]]) == 1
    assert len([m for m in mail.outbox if m.to == ["grace@example.com"]]) == 1  # a link, or "account exists"


def test_back_to_an_address_whose_link_never_went_out_gets_a_new_link(ada):
    """X, then Y before X's email went out, then X again within the cooldown: X's first email was
    superseded unsent, so it counts toward no cooldown and X gets a working link."""
    api = _bearer(_login(APIClient()).json()["access"])
    for address in ("ada@x.example.org", "ada@y.example.org", "ada@x.example.org"):
        assert (
            api.patch("/api/users/me/", {"email": address, "current_password": PASSWORD}, format="json").status_code
            == 200
        )
    _deliver_all()
    [to_x] = [m for m in mail.outbox if m.to == ["ada@x.example.org"]]
    assert "/verify-email/?" in to_x.body
    [link] = EmailVerification.objects.alive().filter(purpose="change")
    assert link.email == "ada@x.example.org" and _verify(link).status_code == 200


def test_a_resend_request_leaves_a_pending_address_change_alone(ada):
    """Anyone may ask for a new sign-up link for an address: that must not kill the address change
    staff started for the unverified account (a mistyped sign-up address being corrected)."""
    from users.services import accounts

    User.objects.filter(pk=ada.pk).update(is_email_verified=False)
    ada.refresh_from_db()
    accounts.email_change_request(user=ada, new_email="ada@lovelace.example.org")
    stranger = APIClient().post("/api/users/resend-verification/", {"email": "ada@example.com"}, format="json")
    assert stranger.status_code == 202
    _deliver_all()
    assert [m for m in mail.outbox if m.to == ["ada@lovelace.example.org"] and "/verify-email/?" in m.body]
    assert _verify(EmailVerification.objects.get(purpose="change")).status_code == 200
    assert User.objects.get(pk=ada.pk).email == "ada@lovelace.example.org"


def test_password_change_needs_the_current_password_and_ends_every_other_session(ada):
    other = _login(APIClient(), HTTP_USER_AGENT="other").json()
    this = _login(APIClient(), HTTP_USER_AGENT="this").json()
    api = _bearer(this["access"])
    before = User.objects.get(pk=ada.pk).password_changed_at
    missing = api.patch("/api/users/me/", {"password": "a brand new pass phrase"}, format="json")
    assert missing.status_code == 400 and set(missing.json()) == {"current_password"}
    wrong = api.patch(
        "/api/users/me/", {"password": "a brand new pass phrase", "current_password": "nope nope"}, format="json"
    )
    assert wrong.status_code == 400 and set(wrong.json()) == {"current_password"}
    weak = api.patch("/api/users/me/", {"password": "12345678", "current_password": PASSWORD}, format="json")
    assert weak.status_code == 400 and set(weak.json()) == {"password"}
    changed = api.patch(
        "/api/users/me/", {"password": "a brand new pass phrase", "current_password": PASSWORD}, format="json"
    )
    assert changed.status_code == 200
    assert User.objects.get(pk=ada.pk).password_changed_at > before
    assert api.get("/api/users/me/").status_code == 200  # this session stays
    assert _bearer(other["access"]).get("/api/users/me/").status_code == 401
    assert APIClient().post("/api/tokens/refresh/", {"refresh": other["refresh"]}, format="json").status_code == 401
    assert _login(APIClient(), password="a brand new pass phrase").status_code == 200
    assert _login(APIClient()).status_code == 401


# --- Bankers and depositors ------------------------------------------------------------------------
def test_bankers_change_names_and_addresses_of_depositors_only(ada, settings):
    settings.MFA_REQUIRED_ROLES = ("none",)  # the banker rule alone (enrolment: tests/security/test_second_factor.py)
    UserFactory(username="banker", role=User.Role.BANKER, is_email_verified=True)
    UserFactory(username="banker2", role=User.Role.BANKER, is_email_verified=True)
    UserFactory(username="ops", is_staff=True, is_email_verified=True)
    UserFactory(username="root", is_staff=True, is_superuser=True, is_email_verified=True)
    customer_session = _login(APIClient()).json()
    banker = _bearer(_login(APIClient(), "banker").json()["access"])
    depositor = _bearer(customer_session["access"])
    # A depositor changes nobody through this route, not even themself.
    for target in ("ada", "banker", "ops", "nobody"):
        assert depositor.patch(f"/api/users/{target}/", {"full_name": "Me Myself"}, format="json").status_code == 403
    assert banker.patch("/api/users/nobody/", {"full_name": "X Y"}, format="json").status_code == 404
    # Never staff, a superuser, another banker or themself; never a password.
    for target in ("ops", "root", "banker2", "banker", "BANKER"):
        assert banker.patch(f"/api/users/{target}/", {"full_name": "Took Over"}, format="json").status_code == 403
        answer = banker.patch(f"/api/users/{target}/", {"password": "set by the bank 2026"}, format="json")
        assert answer.status_code == 403
    refused = banker.patch("/api/users/ada/", {"password": "set by the bank 2026"}, format="json")
    assert refused.status_code == 400 and set(refused.json()) == {"password"}
    refused = banker.patch("/api/users/ada/", {"role": "banker", "full_name": "Ada King"}, format="json")
    assert refused.status_code == 400 and set(refused.json()) == {"role"}
    done = banker.patch("/api/users/ADA/", {"full_name": "Ada King"}, format="json")
    assert done.status_code == 200 and done.json()["full_name"] == "Ada King"
    assert depositor.get("/api/users/me/").status_code == 200  # a name change ends no session
    assert _login(APIClient(), password="set by the bank 2026").status_code == 401
    assert User.objects.get(username="ops").full_name != "Took Over"
    event = SecurityEvent.objects.get(user=ada, kind="profile_changed")
    assert (event.actor, event.detail) == ("banker:banker", "full_name")
    _deliver_all()
    [notice] = [m for m in mail.outbox if m.to == ["ada@example.com"]]
    assert "Your profile was changed" in notice.subject and "by a banker" in notice.body and "full_name" in notice.body


def test_only_staff_set_the_role(ada):
    api = _bearer(_login(APIClient()).json()["access"])
    api.patch("/api/users/me/", {"role": "banker"}, format="json")
    assert User.objects.get(pk=ada.pk).role == "depositor"


# --- Password reset --------------------------------------------------------------------------------
def _reset_link() -> tuple[str, str]:
    import re

    _deliver_all()
    [message] = [m for m in mail.outbox if "/reset-password/?" in m.body]
    uid, token = re.search(r"/reset-password/\?uid=([\w-]+)&token=([\w-]+)", message.body).groups()
    return uid, token


def test_password_reset_answers_alike_and_mails_a_known_address_once(ada):
    UserFactory(username="unverified", email="unverified@example.com")
    answers = [
        APIClient().post("/api/password-reset/", {"email": address}, format="json")
        for address in ("nobody@example.com", "unverified@example.com", "ADA@example.com", "ada@example.com")
    ]
    assert {a.status_code for a in answers} == {202} and len({a.content for a in answers}) == 1
    _deliver_all()
    assert sorted(m.to[0] for m in mail.outbox) == ["ada@example.com", "unverified@example.com"]  # one per cooldown
    assert APIClient().post("/api/password-reset/", {"email": "x@[127.0.0.1]"}, format="json").status_code == 400


def test_a_reset_link_works_once_and_ends_every_session(ada):
    tokens = _login(APIClient()).json()
    APIClient().post("/api/password-reset/", {"email": "ada@example.com"}, format="json")
    uid, token = _reset_link()
    weak = APIClient().post(
        "/api/password-reset/confirm/", {"uid": uid, "token": token, "new_password": "password"}, format="json"
    )
    assert weak.status_code == 400 and set(weak.json()) == {"new_password"}
    body = {"uid": uid, "token": token, "new_password": "my new pass phrase 7"}
    assert APIClient().post("/api/password-reset/confirm/", body, format="json").status_code == 204
    assert _bearer(tokens["access"]).get("/api/users/me/").status_code == 401
    assert APIClient().post("/api/tokens/refresh/", {"refresh": tokens["refresh"]}, format="json").status_code == 401
    again = APIClient().post(
        "/api/password-reset/confirm/", body | {"new_password": "another pass phrase 8"}, format="json"
    )
    assert again.status_code == 400 and again.json()["code"] == "invalid_link"
    assert _login(APIClient(), password="my new pass phrase 7").status_code == 200


def test_reset_links_expire_and_die_when_the_password_changes(ada, settings):
    APIClient().post("/api/password-reset/", {"email": "ada@example.com"}, format="json")
    uid, token = _reset_link()
    body = {"uid": uid, "token": token, "new_password": "my new pass phrase 7"}
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 1)):
        expired = APIClient().post("/api/password-reset/confirm/", body, format="json")
    ada.set_password("changed another way 9")
    ada.save()
    changed = APIClient().post("/api/password-reset/confirm/", body, format="json")
    tampered = APIClient().post("/api/password-reset/confirm/", body | {"token": token[:-1] + "x"}, format="json")
    wrong_uid = APIClient().post("/api/password-reset/confirm/", body | {"uid": "MTIzNDU2"}, format="json")
    assert expired.status_code == changed.status_code == tampered.status_code == wrong_uid.status_code == 400
    assert expired.content == changed.content == tampered.content == wrong_uid.content


# --- Brute force -----------------------------------------------------------------------------------
def test_log_in_is_locked_out_after_repeated_failures_then_resets(ada, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(APIClient(), password="wrong guess here").status_code == 401
    locked = _login(APIClient(), password="wrong guess here")
    assert locked.status_code == 429 and locked.json()["code"] == "locked_out" and int(locked["Retry-After"]) > 0
    assert _login(APIClient()).status_code == 429  # even with the right password, for the cool-off
    # Another account, or the same from another address, is not locked.
    assert _login(APIClient(), REMOTE_ADDR="198.51.100.9").status_code == 200
    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(seconds=1)):
        assert _login(APIClient()).status_code == 200


def test_a_password_reset_lets_its_owner_log_in_again_from_where_they_were_locked_out(ada, settings):
    """The lockout page says "reset your password": a review did, and the new password was refused
    with the same 429 for the rest of the cool-off. A reset forgives the failures from where it was
    made (as a log-in's success does); other addresses' stay counted."""
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(APIClient(), password="wrong guess here")
        _login(APIClient(), password="wrong guess here", REMOTE_ADDR="198.51.100.9")
    assert _login(APIClient()).status_code == 429
    assert APIClient().post("/api/password-reset/", {"email": "ada@example.com"}, format="json").status_code == 202
    uid, token = _reset_link()
    confirm = {"uid": uid, "token": token, "new_password": "a brand new pass phrase"}
    assert APIClient().post("/api/password-reset/confirm/", confirm, format="json").status_code == 204
    assert _login(APIClient(), password="a brand new pass phrase").status_code == 200
    assert _login(APIClient(), password="a brand new pass phrase", REMOTE_ADDR="198.51.100.9").status_code == 429


def test_a_reset_of_a_locked_account_with_a_second_factor_waits_out_the_lockout(ada, settings):
    """Its reset asks for a code: a guess the lockout counts like any other, so a locked pair is
    refused even with the right code (a reset link must not become unlimited code guesses)."""
    import pyotp

    from users.tests.factories import with_totp

    app = pyotp.TOTP(with_totp(ada))
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(APIClient(), password="wrong guess here")
    APIClient().post("/api/password-reset/", {"email": "ada@example.com"}, format="json")
    uid, token = _reset_link()
    confirm = {"uid": uid, "token": token, "new_password": "a brand new pass phrase", "code": app.now()}
    refused = APIClient().post("/api/password-reset/confirm/", confirm, format="json")
    assert refused.status_code == 429 and refused.json()["code"] == "locked_out"
    assert "reset your password" not in refused.json()["detail"]  # this is the reset
    assert User.objects.get(pk=ada.pk).check_password(PASSWORD)
    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(seconds=1)):
        later = confirm | {"code": app.now()}  # the app's code of that later moment
        assert APIClient().post("/api/password-reset/confirm/", later, format="json").status_code == 204


def test_the_lockout_counts_spellings_of_one_account_together(ada, settings):
    spellings = ["ada", "ADA", "ada@example.com", "Ada@Example.com", "ada"]
    statuses = [
        _login(APIClient(), s, "wrong guess here").status_code for s in spellings[: settings.AXES_FAILURE_LIMIT]
    ]
    assert statuses[-1] == 429


def test_an_unknown_username_locks_out_alike(settings):
    statuses = [
        _login(APIClient(), "ghost", "wrong guess here").status_code for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert statuses[-1] == 429  # so a lockout tells nothing about the account's existence


def test_a_successful_log_in_resets_the_failure_count(ada, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(APIClient(), password="wrong guess here").status_code == 401
    assert _login(APIClient()).status_code == 200  # the count starts again
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(APIClient(), password="wrong guess here").status_code == 401
    assert _login(APIClient()).status_code == 200


def test_a_profile_change_names_the_fields_it_cannot_make(ada):
    """``PATCH /api/users/me/`` with ``username`` or ``role`` answered 200 and changed nothing, so a
    client believed the change was made (a client developer's review); the banker route refused."""
    api = _bearer(_login(APIClient()).json()["access"])
    answer = api.patch("/api/users/me/", {"username": "newname", "role": "banker", "full_name": "Ada"}, format="json")
    assert answer.status_code == 400
    assert set(answer.json()) == {"username", "role"}
    assert "full_name, email or password" in answer.json()["username"][0]
    ada.refresh_from_db()
    assert (ada.username, ada.role, ada.full_name) == ("ada", User.Role.DEPOSITOR, "Ada Lovelace")  # nothing half-done
    assert api.patch("/api/users/me/", {}, format="json").status_code == 200  # nothing to change is no error


def test_a_method_a_route_lacks_spends_none_of_its_limit(settings):
    """Thirty ``GET``s of the resend route (405 each) used up its limit: the next ``POST`` was 429,
    and so was a ``PATCH``, not 405 (a client developer's review)."""
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = settings.REST_FRAMEWORK | {"DEFAULT_THROTTLE_RATES": rates | {"resend": "2/min"}}
    api = APIClient()
    url = "/api/users/resend-verification/"
    assert [api.get(url).status_code for _ in range(3)] == [405] * 3
    assert api.patch(url, {}, format="json").status_code == 405
    assert [api.post(url, {"email": f"n{n}@example.com"}, format="json").status_code for n in range(3)] == [
        202,
        202,
        429,
    ]
    assert api.patch(url, {}, format="json").status_code == 405  # still the route's answer to a wrong method
