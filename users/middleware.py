"""Per request: who is asking and from where (``users.context``), and browser sessions as session rows.

A browser log-in (``/login/``, the admin's) is a ``LoginSession`` row of kind ``browser``, named by
the Django session. At each request of a logged-in browser the row must still be live — not
revoked (``DELETE /api/sessions/<id>/``, a password change), not blocked by staff, not idle for
``SESSION_IDLE_TIMEOUT``, not past ``REFRESH_TOKEN_LIFETIME`` — or the browser is logged out
before the view runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth import SESSION_KEY, logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone

from users import context, policies
from users.auth import LOCKED_WAIT, client_ip, last_used_due
from users.mfa import flows as mfa
from users.models import LoginSession
from users.receivers import BROWSER_SESSION_KEY
from users.throttles import login_place_settle

SESSION_ENDED = "Your session had ended (no activity for a while, or it was logged out elsewhere): log in again."


class LoginPlaceMiddleware:
    """Gives back the per-address failure limit's place a log-in took and did not fail
    (``users.throttles.LoginThrottle``)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.get_response(request)
        finally:
            login_place_settle(request)


class LockedOutMiddleware:
    """A page whose form was refused because the account and address are locked (a step-up's
    password, a TOTP confirmation, a reset's second factor) answers ``429`` with ``Retry-After``, as
    the log-in does, not ``400`` as for a wrong password: the form says how long is left
    (``users.auth.locked_out_words``), and so do the status and the header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 400 and (wait := getattr(request, LOCKED_WAIT, None)) is not None:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        return response


class SecurityContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = context.begin(
            client_ip=client_ip(request) or None,
            user_agent=request.headers.get("User-Agent", "")[:256],
            request=request,
        )
        try:
            session = getattr(request, "session", None)
            if session is not None and session.get(SESSION_KEY) is not None:
                _check_browser_session(request)
            response = self.get_response(request)
            if (
                getattr(request, "_session_ended", False)
                and request.path_info != _log_out_path()
                and _sends_to_log_in(response)
            ):
                # Said on the log-in page the request is sent to, so a form sent after the end is
                # not silently lost. Not for an API's 401, a JSON answer, a log-out, or a log-in
                # sent with the ended session's cookie (the person had just logged in again).
                messages.info(request, SESSION_ENDED)
            return response
        finally:
            context.end(token)


def _check_browser_session(request: HttpRequest) -> None:
    row_id = request.session.get(BROWSER_SESSION_KEY)
    row = LoginSession.objects.filter(pk=row_id, kind=LoginSession.Kind.BROWSER).first() if row_id else None
    user = request.user
    if row is None or not row.is_live or not user.is_authenticated or row.user_id != user.pk:
        request._session_ended = True  # type: ignore[attr-defined]  # no "logout" event: it ended before
        logout(request)  # flushes the Django session; request.user becomes anonymous
        return
    now = timezone.now()
    if last_used_due(row.last_used_at, now):
        LoginSession.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now
    request.browser_session = row  # type: ignore[attr-defined]  # for the page's idle warning (WCAG 2.2.1)
    context.signed_in(user, row.pk)


def _sends_to_log_in(response: HttpResponse) -> bool:
    if response.status_code not in (301, 302, 303, 307, 308):
        return False
    return urlsplit(response.get("Location", "")).path in _log_in_paths()


@functools.cache
def _log_in_paths() -> tuple[str, str]:
    return reverse("login"), reverse("admin:login")


@functools.cache
def _log_out_path() -> str:
    return reverse("logout")


class SecondFactorEnrollmentMiddleware:
    """``MFA_REQUIRED_ROLES`` on the pages: a browser whose user must have a second factor and has
    none is sent to ``/account/security/`` to set one up — from every admin page (but its log-in and
    log-out) and from ``/account/``. (The API answers ``403`` ``mfa_enrollment_required`` itself.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            _guarded(request.path)  # first: every other request costs nothing here
            and user is not None
            and user.is_authenticated
            and policies.must_have_second_factor(user)
            and not mfa.has_factor(user=user)
        ):
            return redirect("account-security")  # the page says why (once: no flash message besides)
        return self.get_response(request)


@functools.cache
def _paths() -> tuple[str, tuple[str, str], str]:
    return reverse("admin:index"), (reverse("admin:login"), reverse("admin:logout")), reverse("account")


def _guarded(path: str) -> bool:
    admin, open_to_all, account = _paths()
    if path.startswith(admin):
        return path not in open_to_all
    return path == account
