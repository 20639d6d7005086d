"""Re-authentication: the one check every sensitive change makes ("this request proved the password").

A new address, a new password — and, with the second factor, changes of factors — call
``reauthenticate`` before they do anything. A wrong current password counts as a failed log-in of
that account from that address (django-axes' lockout and the per-address failure limit apply), so
guessing through ``PATCH /api/users/me/`` costs what guessing at the log-in costs.
"""

from __future__ import annotations

from axes.handlers.proxy import AxesProxyHandler  # type: ignore[import-untyped]
from django.contrib.auth import user_login_failed
from django.http import HttpRequest

from users.auth import PASSWORD_TRIED
from users.errors import LockedOut, WrongPassword
from users.models import User


def reauthenticate(*, request: HttpRequest, user: User, password: str | None) -> None:
    """Raise ``LockedOut`` if the account and address are locked, ``WrongPassword`` (after counting
    the failure) if ``password`` is missing or not the account's current one."""
    credentials = {"username": user.username}
    if AxesProxyHandler.is_locked(request, credentials):
        raise LockedOut
    if not password:  # nothing was tried: a client that forgot the field guesses nothing
        raise WrongPassword
    setattr(request, PASSWORD_TRIED, True)
    if not user.check_password(password):
        # What Django's authenticate() sends for a failed log-in: django-axes counts it, and so do
        # the failure limit and the security events (users.receivers).
        user_login_failed.send(sender=__name__, credentials=credentials, request=request, reauthentication=True)
        raise WrongPassword
