"""Django's authentication signals, the model's ``password_changed`` and anymail's ``tracking``,
turned into the services' effects: session rows for browser log-ins, security events, failure
counting, delivery feedback. Connected by ``UsersConfig.ready``; each receiver calls one service."""

from __future__ import annotations

from typing import Any

from anymail.signals import tracking
from django.contrib.auth import user_logged_in, user_logged_out, user_login_failed

from users import context
from users.auth import LOCKOUT_NAME, PASSWORD_TRIED, client_ip, find_user, lockout_reset
from users.errors import FeedbackFailed
from users.models import SecurityEvent, User
from users.services import accounts, events, feedback, sessions
from users.signals import account_deactivated, password_changed
from users.throttles import record_login_failure

BROWSER_SESSION_KEY = "_login_session_id"  # the Django session's key naming its LoginSession row


def on_logged_in(sender: Any, request: Any, user: User, **kwargs: Any) -> None:
    if request is None:
        return
    session = getattr(request, "login_session", None)  # the API started its own
    if session is None:
        session = sessions.browser_session_start(
            user=user, user_agent=request.headers.get("User-Agent", ""), client_ip=client_ip(request) or None
        )
        request.session[BROWSER_SESSION_KEY] = str(session.pk)
    context.signed_in(user, session.pk)
    lockout_reset(request, user)
    events.event_record(user=user, kind=SecurityEvent.Kind.LOGIN, detail=session.kind, actor=events.SELF)


def on_logged_out(sender: Any, request: Any, user: User | None, **kwargs: Any) -> None:
    if request is None or not hasattr(request, "session") or getattr(request, "_session_ended", False):
        return
    ended = sessions.browser_session_end(session_id=request.session.get(BROWSER_SESSION_KEY))
    if ended is not None and user is not None:
        events.event_record(user=user, kind=SecurityEvent.Kind.LOGOUT, detail=ended.kind, actor=events.SELF)


def on_login_failed(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    """Every failed log-in (and wrong current password): one more failure for the client's address,
    and an event — written whether or not the name is an account's, so it costs the same."""
    # Only a password that was actually checked counts: when django-axes refused a locked account
    # and address first, nothing was tried, so nothing is counted or written (a locked pair can't
    # flood the owner's trail). The backend and the re-authentication mark what they checked.
    if request is None or not getattr(request, PASSWORD_TRIED, False):
        return
    record_login_failure(request)
    login, named = credentials.get("username"), credentials.get(LOCKOUT_NAME)
    if isinstance(named, str):  # an account's own failure (a step-up, a second step): that account
        user = User.objects.filter(username_canonical=named).first()
    else:
        user = find_user(login) if isinstance(login, str) else None
    if kwargs.get("second_factor"):
        detail = events.WRONG_SECOND_FACTOR
    elif kwargs.get("reauthentication"):
        detail = "wrong current password"
    else:
        detail = "wrong password or unknown account"
    events.event_record(user=user, kind=SecurityEvent.Kind.LOGIN_FAILED, detail=detail, actor=events.SYSTEM)


def on_password_changed(sender: Any, user: User, **kwargs: Any) -> None:
    accounts.password_changed_effects(user=user)


def on_account_deactivated(sender: Any, user: User, **kwargs: Any) -> None:
    accounts.account_deactivated_effects(user=user)


def connect() -> None:
    user_logged_in.connect(on_logged_in, dispatch_uid="users.on_logged_in")
    user_logged_out.connect(on_logged_out, dispatch_uid="users.on_logged_out")
    user_login_failed.connect(on_login_failed, dispatch_uid="users.on_login_failed")
    password_changed.connect(on_password_changed, dispatch_uid="users.on_password_changed")
    account_deactivated.connect(on_account_deactivated, dispatch_uid="users.on_account_deactivated")
    tracking.connect(delivery_feedback, dispatch_uid="users.delivery_feedback")


def delivery_feedback(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """A mail provider's tracking event (anymail's webhook view verified it): into the timeline of
    the email it is about, and its effects (``users.services.feedback``). Whatever fails here is
    ours, not the body's: ``FeedbackFailed``, a 500, and the provider sends the event again."""
    # The provider's servers are not a client of the account: its events name no address or user agent.
    feedback.event_time_check(event)  # the body's fault (a 400), not ours
    outside_the_request = context.begin()
    try:
        feedback.tracking_event_record(esp_name=esp_name, event=event)
    except Exception as exc:
        raise FeedbackFailed(f"recording a {esp_name} event failed") from exc
    finally:
        context.end(outside_the_request)
