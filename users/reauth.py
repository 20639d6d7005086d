"""Re-authentication: the one check every sensitive change makes ("this request proved the password
and, if the user has one, a second factor").

A new address, a new password, a password reset and every change of factors call
``reauthenticate`` before they do anything; the second step of a log-in uses ``is_locked`` and
``proof_failed`` from here too. A wrong current password or a wrong second-factor proof counts as a
failed log-in of that account from that address (django-axes' lockout and the per-address failure
limit apply), so guessing through ``PATCH /api/users/me/`` costs what guessing at the log-in costs.
A missing proof is not a guess: it is refused without counting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from axes.handlers.proxy import AxesProxyHandler  # type: ignore[import-untyped]
from django.contrib.auth import user_login_failed
from django.http import HttpRequest

from users.auth import PASSWORD_TRIED, account_credentials, account_turn
from users.errors import LockedOut, ProofMissing, WrongPassword, WrongProof
from users.mfa import flows as mfa
from users.mfa import passkeys
from users.models import User

T = TypeVar("T")


def is_locked(*, request: HttpRequest, user: User) -> bool:
    return bool(AxesProxyHandler.is_locked(request, account_credentials(user)))


def _failed(request: HttpRequest, user: User, **kind: bool) -> None:
    # What Django's authenticate() sends for a failed log-in: django-axes counts it, and so do the
    # failure limit and the security events (users.receivers, which count only what was tried).
    setattr(request, PASSWORD_TRIED, True)
    user_login_failed.send(sender=__name__, credentials=account_credentials(user), request=request, **kind)


def proof_failed(*, request: HttpRequest, user: User) -> None:
    """A wrong second-factor proof: one more failed log-in of ``user`` from this address."""
    _failed(request, user, second_factor=True)


def proof_attempt(*, request: HttpRequest, user: User, check: Callable[[], T]) -> T:
    """One second-factor proof of ``user`` outside a step-up (a log-in's second step, a TOTP
    confirmation), in its turn: ``LockedOut`` if the pair is locked; else ``check()``'s answer, and
    a ``WrongProof`` it raises is counted as a failed log-in before it goes on up."""
    with account_turn(request, user):
        if is_locked(request=request, user=user):
            raise LockedOut
        try:
            return check()
        except WrongProof:
            proof_failed(request=request, user=user)
            raise


def reauthenticate(
    *,
    request: HttpRequest,
    user: User,
    password: str | None,
    code: str | None = None,
    credential: dict[str, Any] | None = None,
    password_needed: bool = True,
) -> None:
    """Raise ``LockedOut`` if the account and address are locked; ``WrongPassword`` (after counting
    the failure) if ``password`` is missing or not the account's current one; once the user has a
    second factor, ``ProofMissing`` without ``code`` or ``credential`` (a passkey's assertion) and
    ``WrongProof`` (after counting) for a wrong, replayed or used one. ``password_needed=False``:
    the password was proven another way (a reset link), only the second factor is checked.
    Concurrent calls for one account and address run one after another (``account_turn``)."""
    with account_turn(request, user):
        _reauthenticate(request, user, password, code, credential, password_needed)


def _reauthenticate(
    request: HttpRequest,
    user: User,
    password: str | None,
    code: str | None,
    credential: dict[str, Any] | None,
    password_needed: bool,
) -> None:
    if not password_needed and not mfa.has_factor(user=user):
        return  # a reset link alone proves it: nothing is guessed here, so the lockout guards nothing
    if is_locked(request=request, user=user):
        raise LockedOut
    if password_needed and not password:  # nothing was tried: a forgetful client guesses nothing
        raise WrongPassword
    if password_needed and not user.check_password(password or ""):
        _failed(request, user, reauthentication=True)
        raise WrongPassword
    if not mfa.has_factor(user=user):
        return
    if not code and credential is None:
        raise ProofMissing
    # A passkey answers the options of its own ceremony: a reset's, or a step-up's.
    ceremony = passkeys.Purpose.STEP_UP if password_needed else passkeys.Purpose.RESET
    if not mfa.proof_verify(user=user, ceremony=ceremony, code=code, credential=credential):
        proof_failed(request=request, user=user)
        if not password_needed:  # a reset link's holder: the owner hears of it as of a second step
            mfa.second_step_failed(user)
        raise WrongProof
