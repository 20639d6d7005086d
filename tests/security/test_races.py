"""Races, tried as an attacker firing requests at once would (a concurrency review over HTTP).

Each test makes the interleaving the review found happen every time rather than now and then: a
step of the server is wrapped (in the live server's own process) so that a second request, or the
owner's own change, lands exactly between a check and the write it guards. A barrier with a
timeout lets two requests meet where the code has no lock; where it has one, the second request
waits at the lock instead, the first goes on after the timeout, and the race is over.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth import forms as auth_forms

from tests.security.test_account_takeover import NEW_PASSWORD, PASSWORD, Api, Browser
from tests.security.test_second_factor import Authenticator, first_step, logged_in_with_factor, second_step
from users import proofs
from users.models import LoginSession, OutboundEmail, RecoveryCode, SecurityEvent, User
from users.services import accounts
from users.tests.factories import UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MEET_TIMEOUT_S = 3  # how long a request waits for the other at the barrier before going on alone


def _meeting(parties: int = 2) -> Callable[[], None]:
    barrier = threading.Barrier(parties)

    def meet() -> None:
        # Broken: the other request is held at a lock, and the race is closed.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=MEET_TIMEOUT_S)

    return meet


ARRIVAL_TIMEOUT_S = 60  # how long the first API request waits for the others to reach the server


def _at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Runs the API calls in threads, and holds each request at the very start of its view until
    all of them have reached the server: the race is then always run with every request in flight
    (a slow machine could otherwise let one finish before the next arrived, and a test of a lock
    would pass whether or not the lock were there). The test fails if they never all arrive."""
    from rest_framework.views import APIView

    results: list[Any] = [None] * len(calls)
    arrival = threading.Barrier(len(calls))
    overlapped: list[bool] = []
    real_initial = APIView.initial

    def initial_once_all_are_here(view: APIView, request: Any, *args: Any, **kwargs: Any) -> None:
        try:
            arrival.wait(timeout=ARRIVAL_TIMEOUT_S)
            overlapped.append(True)
        except threading.BrokenBarrierError:
            overlapped.append(False)
        real_initial(view, request, *args, **kwargs)

    failures: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            results[index] = call()
        except BaseException as exc:  # a client timeout, say: raised below, not lost with the thread
            failures.append(exc)
            raise

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    # Proofs of one account from one address take turns (users/proofs.py); on a loaded machine the
    # second must not give up waiting (429) before the first's hash is done.
    with mock.patch.object(APIView, "initial", initial_once_all_are_here), mock.patch.object(proofs, "WAIT_S", 60):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    if failures:
        raise failures[0]
    assert overlapped == [True] * len(calls), "the requests were never all in flight at once"
    return results


def _reset_meanwhile(user: User) -> None:
    """The owner resets the password (as a reset link's confirmation does) while a log-in is between
    its password check and what it hands out."""
    owner = User.objects.get(pk=user.pk)
    owner._password_reset = True  # type: ignore[attr-defined]  # as accounts.password_reset_confirm marks it
    accounts.password_change(user=owner, new_password=NEW_PASSWORD)


def test_a_reset_ends_a_log_in_still_in_its_password_check_api(stack, ada, monkeypatch):
    """The mfa_token was issued after the reset had deleted the half-done log-ins: with any proof
    (a stolen recovery code) it became a session created after the reset."""
    from users.account_apis import tokens as token_views

    _, _, codes = logged_in_with_factor(stack, ada)
    real = token_views.authenticate

    def authenticate_while_the_owner_resets(request, **credentials):
        user = real(request, **credentials)
        _reset_meanwhile(ada)
        return user

    monkeypatch.setattr(token_views, "authenticate", authenticate_while_the_owner_resets)
    answer = Api(stack).call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD})
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_credentials"
    assert "mfa_token" not in answer.json()
    monkeypatch.undo()
    assert not LoginSession.objects.filter(user=ada).live().exists()
    refused = Api(stack).call("POST", "/api/tokens/", {"username": "ada", "password": PASSWORD})
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_credentials"  # the old one is dead
    assert codes


def test_a_reset_ends_a_log_in_still_in_its_password_check_page(stack, ada, monkeypatch):
    _, app, _ = logged_in_with_factor(stack, ada)
    real = auth_forms.authenticate

    def authenticate_while_the_owner_resets(request=None, **credentials):
        user = real(request, **credentials)
        _reset_meanwhile(ada)
        return user

    monkeypatch.setattr(auth_forms, "authenticate", authenticate_while_the_owner_resets)
    browser = Browser(stack)
    answer = browser.log_in("ada")
    assert answer.status_code == 400 and "No account matches that username" in answer.text  # the form again
    monkeypatch.undo()
    step = browser.post_form("/login/verify/", {"code": app.code()}, form_page="/login/")
    assert step.status_code in (200, 302) and browser.get("/account/").status_code == 302
    assert not LoginSession.objects.filter(user=ada).live().exists()


def test_a_totp_set_up_cannot_overwrite_an_app_confirmed_meanwhile(stack, ada, monkeypatch):
    """The set-up checked "no TOTP yet", then the user's confirmation of another set-up committed,
    then the set-up wrote its secret over the confirmed one: the app the user confirmed stopped
    working, and a secret nobody confirmed logged in."""
    from users.mfa import flows, totp

    api = Api(stack)
    assert api.log_in("ada").status_code == 200
    setup = api.call("POST", "/api/mfa/totp/setup/", {"current_password": PASSWORD})
    confirmed_app = Authenticator(ada, setup.json()["secret"])
    real = totp.secret_new

    def secret_new_after_the_user_confirmed_the_first():
        flows.totp_confirm(user=User.objects.get(pk=ada.pk), code=confirmed_app.totp.now())
        return real()

    monkeypatch.setattr(totp, "secret_new", secret_new_after_the_user_confirmed_the_first)
    second = api.call("POST", "/api/mfa/totp/setup/", {"current_password": PASSWORD})
    monkeypatch.undo()
    assert second.status_code == 400, second.text
    later, token = first_step(stack, "ada")
    assert second_step(later, token, confirmed_app.code()).status_code == 200


def test_parallel_recovery_code_regenerations_leave_ten_codes(stack, ada, monkeypatch):
    """Each regeneration deleted the codes, then inserted ten: two at once each missed the other's
    new rows, and twenty codes lived — a replaced sheet still working."""
    from users.mfa import recovery_codes

    first, _, codes = logged_in_with_factor(stack, ada)
    second_api, token = first_step(stack, "ada")
    assert second_step(second_api, token, codes[0]).status_code == 200
    meet, real = _meeting(), recovery_codes.codes_replace

    def replace_when_both_are_here(*, user):
        meet()
        return real(user=user)

    monkeypatch.setattr(recovery_codes, "codes_replace", replace_when_both_are_here)

    def regenerate(api: Api, code: str):
        return api.call("POST", "/api/mfa/recovery-codes/", {"current_password": PASSWORD, "code": code})

    answers = _at_once(lambda: regenerate(first, codes[1]), lambda: regenerate(second_api, codes[2]))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert RecoveryCode.objects.filter(user=ada, used_at__isnull=True).count() == 10
    assert first.call("GET", "/api/mfa/").json()["recovery_codes_left"] == 10


def test_two_accounts_asking_for_one_free_address_at_once_mail_it_one_link(stack, monkeypatch):
    """The cooldown on links to an address is read from the email rows under the lock of the
    address's owner; a free address has none, so two requests each passed it."""
    from users.services import delivery

    people = [UserFactory(username=n, email=f"{n}@example.com", is_email_verified=True) for n in ("ann", "bea")]
    apis = []
    for person in people:
        api = Api(stack)
        assert api.log_in(person.username).status_code == 200
        apis.append(api)
    meet, real = _meeting(), delivery.recently_mailed

    def check_when_both_are_here(canonical, kinds):
        if canonical == "free@example.org":
            meet()
        return real(canonical, kinds)

    monkeypatch.setattr(delivery, "recently_mailed", check_when_both_are_here)
    body = {"email": "free@example.org", "current_password": PASSWORD}
    answers = _at_once(*(lambda api=api: api.call("PATCH", "/api/users/me/", body) for api in apis))
    assert [a.status_code for a in answers] == [200, 200]
    links = OutboundEmail.objects.filter(kind="email_change", recipient="free@example.org")
    assert links.count() == 1


def test_parallel_password_changes_with_one_current_password_change_it_once(stack, ada, monkeypatch):
    """Each change passed its re-authentication with the same current password, then each saved:
    every answer said 200 and every notice went, but one password won."""
    from django.contrib.auth import password_validation

    apis = [Api(stack) for _ in range(2)]
    for api in apis:
        assert api.log_in("ada").status_code == 200
    meet, real = _meeting(), password_validation.validate_password

    def validate_when_both_are_here(password, user=None, password_validators=None):
        meet()
        return real(password, user=user, password_validators=password_validators)

    monkeypatch.setattr(password_validation, "validate_password", validate_when_both_are_here)
    new = ["a first new pass phrase 2026", "a second new pass phrase 2026"]
    answers = _at_once(
        *(
            lambda api=api, pw=pw: api.call("PATCH", "/api/users/me/", {"password": pw, "current_password": PASSWORD})
            for api, pw in zip(apis, new, strict=True)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 400], [a.text for a in answers]
    [refused] = [a for a in answers if a.status_code == 400]
    assert set(refused.json()) == {"current_password"}
    assert User.objects.get(pk=ada.pk).check_password(new[[a.status_code for a in answers].index(200)])
    assert SecurityEvent.objects.filter(user=ada, kind="password_changed").count() == 1


def test_a_page_log_in_whose_app_is_turned_off_meanwhile_is_logged_out_at_once(stack, ada, monkeypatch):
    """The code was checked while the app was on; turning it off (which ends the other sessions)
    committed before the browser's session row was made: it outlived the factor (a review). Django
    has logged the browser in by then; its row starts ended, so its next request logs it out."""
    from users import account_views
    from users.mfa import flows

    _, app, _ = logged_in_with_factor(stack, ada)
    browser = Browser(stack)
    assert browser.log_in("ada").status_code == 302  # to the second step
    real = account_views.mfa.login_token_redeem

    def redeem_while_the_owner_turns_it_off(**kwargs):
        user = real(**kwargs)
        flows.totp_disable(user=User.objects.get(pk=ada.pk))
        return user

    monkeypatch.setattr(account_views.mfa, "login_token_redeem", redeem_while_the_owner_turns_it_off)
    browser.post_form("/login/verify/", {"code": app.code()}, form_page="/login/verify/")
    monkeypatch.undo()
    assert browser.get("/account/").status_code == 302
    assert not LoginSession.objects.filter(user=ada).live().exists()
