"""The second factor's use cases (views, the re-authentication and the admin call these; each owns
its transaction and its events). A factor is TOTP or a passkey; a proof is a ``code`` (TOTP or a
recovery code) or a ``credential`` (a passkey's assertion)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from users.errors import FactorStateError, InvalidToken, WrongProof
from users.mfa import crypto, passkeys, recovery_codes, totp
from users.models import MfaLoginToken, Passkey, SecurityEvent, TotpDevice, User
from users.services import events, sessions

Event = SecurityEvent.Kind
LOGIN_TOKEN_LIFETIME = timedelta(minutes=5)
LOGIN_TOKEN_MAX_FAILURES = 5
LOGIN_TOKENS_LIVE = 10  # log-ins half done (password right, proof owed) a user may have at once
TOTP_SETUP_LIFETIME = timedelta(minutes=10)  # a set-up not confirmed by then starts again
TOTP, RECOVERY_CODE, PASSKEY = "totp", "recovery_code", "passkey"


@dataclass(frozen=True)
class TotpSetup:
    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class PasskeyInfo:
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class Status:
    totp: bool
    recovery_codes_left: int
    passkeys: list[PasskeyInfo]


@dataclass(frozen=True)
class PasskeyAdded:
    passkey: Passkey
    recovery_codes: list[str] | None  # issued when the passkey is the user's first factor


# --- What the user has ----------------------------------------------------------------------------
def _totp_device(user: User) -> TotpDevice | None:
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).first()


def _has_totp(user: User) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).exists()


def totp_pending(*, user: User) -> bool:
    """Whether a TOTP set-up waits for its first code."""
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=True).exists()


def has_factor(*, user: User) -> bool:
    """Whether ``user`` has a second factor: a confirmed TOTP device or a passkey."""
    return _has_totp(user) or passkeys.has_passkey(user=user)


def methods(*, user: User) -> list[str]:
    """The proofs ``user`` can give at the second step, of ``totp``, ``passkey``, ``recovery_code``."""
    found = [TOTP] if _has_totp(user) else []
    if passkeys.has_passkey(user=user):
        found.append(PASSKEY)
    if found and recovery_codes.codes_left(user=user):
        found.append(RECOVERY_CODE)
    return found


def status(*, user: User) -> Status:
    keys = [
        PasskeyInfo(id=k.pk, name=k.name, created_at=k.created_at, last_used_at=k.last_used_at)
        for k in Passkey.objects.filter(user=user).order_by("created_at", "pk")
    ]
    return Status(totp=_has_totp(user), recovery_codes_left=recovery_codes.codes_left(user=user), passkeys=keys)


# --- Changing factors (the callers re-authenticated the request) ---------------------------------
def _other_sessions_end(user: User, reason: str) -> None:
    """A factor removed, staff's reset: the user's other sessions end (ASVS 7.4.3), so that one
    opened by whoever held a factor now gone does not outlive it. The session that made the change
    stays; staff's change ends them all. (A first factor turned on ends nothing: an enrolled
    banker's sessions lose the enrolment 403 at once, and the user ends any session of the list.)"""
    sessions.sessions_revoke_others(user=user, reason=reason)


def _factors_lock(user: User) -> None:
    """Inside a transaction: one change of ``user``'s factors at a time (``User.objects.lock``).
    Without it a set-up overwrote a device confirmed at the same moment, and parallel regenerations
    each kept their ten codes (a race review)."""
    User.objects.lock(user)


TOTP_ON = "TOTP is already on; turn it off first to set up another app."
TOTP_OFF = "TOTP is not on."
NO_FACTOR = "Recovery codes come with a second factor: set one up first."


def change_allowed(*, user: User, change: str) -> None:
    """``FactorStateError`` now if the factors' state refuses ``change`` (``totp_setup``,
    ``totp_disable``, ``recovery_codes``): checked before the request's step-up, so a request
    refused anyway never spends a one-time code. The change itself checks again."""
    if change == "totp_setup" and _has_totp(user):
        raise FactorStateError(TOTP_ON)
    if change == "totp_disable" and not _has_totp(user):
        raise FactorStateError(TOTP_OFF)
    if change == "recovery_codes" and not has_factor(user=user):
        raise FactorStateError(NO_FACTOR)
    if change == "passkey_begin" and Passkey.objects.filter(user=user).count() >= passkeys.PASSKEYS_MAX:
        raise FactorStateError(passkeys.PASSKEYS_FULL)


def totp_setup(*, user: User) -> TotpSetup:
    """A new secret, pending until ``totp_confirm``; replaces an earlier pending one (a passkey
    user may add an app beside it)."""
    secret = totp.secret_new()
    with transaction.atomic():
        _factors_lock(user)
        if _has_totp(user):
            raise FactorStateError(TOTP_ON)
        TotpDevice.objects.update_or_create(
            user=user,
            defaults={"secret": crypto.encrypt(secret), "created_at": timezone.now(), "last_step": None},
        )
    uri = totp.provisioning_uri(user=user, secret=secret)
    return TotpSetup(secret=secret, otpauth_uri=uri, qr_svg=totp.qr_svg(uri))


def totp_confirm(*, user: User, code: str) -> list[str]:
    """The first code from the app turns TOTP on; returns ten new recovery codes (shown once). Codes
    the user had (beside a passkey) stop working: a ``recovery_codes_regenerated`` event and notice."""
    with transaction.atomic():
        _factors_lock(user)
        device = TotpDevice.objects.select_for_update().filter(user=user).first()
        if device is None or device.confirmed_at is not None:
            raise FactorStateError("There is no TOTP set-up waiting for a code; start the set-up again.")
        if device.created_at < timezone.now() - TOTP_SETUP_LIFETIME:
            expired = device.pk
        elif not totp.verify(device=device, code=code):
            raise WrongProof
        else:
            TotpDevice.objects.filter(pk=device.pk).update(confirmed_at=timezone.now())
            replaced = recovery_codes.codes_left(user=user) > 0  # beside a passkey: the owner's codes go
            codes = recovery_codes.codes_replace(user=user)
            events.event_record(user=user, kind=Event.MFA_ENABLED, detail=TOTP, notify=True)
            if replaced:  # told apart, or printed codes would be trusted that no longer work
                events.event_record(user=user, kind=Event.RECOVERY_CODES_REGENERATED, notify=True)
            return codes
    # An abandoned set-up is not a secret anyone may keep guessing the codes of: it goes.
    TotpDevice.objects.filter(pk=expired, confirmed_at__isnull=True).delete()
    raise FactorStateError("The set-up expired: start it again (the key you scanned no longer works).")


def totp_disable(*, user: User) -> None:
    """TOTP off (a notice is mailed); the recovery codes go with the last factor."""
    with transaction.atomic():
        _factors_lock(user)
        if not TotpDevice.objects.filter(user=user).delete()[0]:
            raise FactorStateError(TOTP_OFF)
        if not has_factor(user=user):
            recovery_codes.codes_delete(user=user)
        events.event_record(user=user, kind=Event.MFA_DISABLED, detail=TOTP, notify=True)
        _other_sessions_end(user, "a second factor was removed")


def passkey_add(*, user: User, name: str, credential: dict[str, Any]) -> PasskeyAdded:
    """Keep a passkey from a verified registration (``WrongProof`` otherwise): an event and a
    notice; with it as the first factor, the ten recovery codes (shown once)."""
    first = not has_factor(user=user)
    passkey = passkeys.register(user=user, name=name, credential=credential)
    with transaction.atomic():
        _factors_lock(user)
        # Two first passkeys at once: the one that locks first issues the codes, the other keeps them.
        first = first and not recovery_codes.codes_left(user=user)
        codes = recovery_codes.codes_replace(user=user) if first else None
        events.event_record(user=user, kind=Event.PASSKEY_ADDED, detail=name, notify=True)
    return PasskeyAdded(passkey=passkey, recovery_codes=codes)


def passkey_remove(*, user: User, passkey_id: int) -> None:
    """Remove one of ``user``'s passkeys (``Passkey.DoesNotExist`` if it is not theirs): an event;
    the recovery codes go with the last factor."""
    with transaction.atomic():
        _factors_lock(user)
        passkey = Passkey.objects.filter(user=user, pk=passkey_id).first()
        if passkey is None:
            raise Passkey.DoesNotExist
        passkey.delete()
        if not has_factor(user=user):
            recovery_codes.codes_delete(user=user)
        events.event_record(user=user, kind=Event.PASSKEY_REMOVED, detail=passkey.name, notify=True)
        _other_sessions_end(user, "a second factor was removed")


def recovery_codes_regenerate(*, user: User) -> list[str]:
    with transaction.atomic():
        _factors_lock(user)
        if not has_factor(user=user):
            raise FactorStateError(NO_FACTOR)
        codes = recovery_codes.codes_replace(user=user)
        events.event_record(user=user, kind=Event.RECOVERY_CODES_REGENERATED, notify=True)
    return codes


def factors_reset_by_staff(*, user: User) -> bool:
    """Staff remove every factor of ``user`` (who lost them): an event naming the staff member (the
    request's actor) and a notice. False if the user had none."""
    with transaction.atomic():
        _factors_lock(user)
        removed = TotpDevice.objects.filter(user=user).delete()[0]
        removed += Passkey.objects.filter(user=user).delete()[0]
        removed += recovery_codes.codes_delete(user=user)
        if removed:
            events.event_record(user=user, kind=Event.MFA_RESET_BY_STAFF, notify=True)
            _other_sessions_end(user, "second factors reset by staff")  # whoever has the lost phone too
    return bool(removed)


# --- Proofs ------------------------------------------------------------------------------------------
def proof_verify(
    *, user: User, ceremony: str, code: str | None = None, credential: dict[str, Any] | None = None
) -> bool:
    """A TOTP code (not replayed), an unused recovery code (now used: an event and a notice), or
    ``credential``: an assertion of one of the user's passkeys answering a live challenge of theirs
    issued for this ``ceremony`` (``passkeys.CEREMONIES``)."""
    if credential is not None:
        try:
            found = passkeys.verify(credential=credential, user=user, ceremony=ceremony)
        except WrongProof:
            return False
        setattr(user, passkeys.PROVEN_BY, getattr(found, passkeys.PROVEN_BY))
        return True
    if not code:
        return False
    if totp.is_code(code):
        device = _totp_device(user)
        if device is None or not totp.verify(device=device, code=code):
            return False
        setattr(user, passkeys.PROVEN_BY, (passkeys.TOTP_PROOF, device.pk))
        return True
    if not has_factor(user=user):
        return False
    with transaction.atomic():
        if not recovery_codes.use(user=user, code=code):
            return False
        # Whoever typed it proves to be the owner (the log-in's second step included: nobody is logged in yet).
        events.event_record(user=user, kind=Event.RECOVERY_CODE_USED, actor=events.SELF, notify=True)
    setattr(user, passkeys.PROVEN_BY, (passkeys.RECOVERY_PROOF, None))
    return True


def proven_factor_stands(*, user: User) -> bool:
    """Whether the second factor a log-in proved (``passkeys.PROVEN_BY``, set on ``user`` by the
    proof) is still the user's: a passkey or an app removed while the log-in was made must not leave
    it a session. True when no factor was proved (the password alone)."""
    kind, factor_id = getattr(user, passkeys.PROVEN_BY, None) or (None, 0)
    if kind == passkeys.PASSKEY_PROOF:
        return Passkey.objects.filter(pk=factor_id, user=user).exists()
    if kind == passkeys.TOTP_PROOF:
        return TotpDevice.objects.filter(pk=factor_id, user=user, confirmed_at__isnull=False).exists()
    if kind == passkeys.RECOVERY_PROOF:  # recovery codes live only beside a factor
        return has_factor(user=user)
    return True


# --- The second step of a log-in ------------------------------------------------------------------------
def login_token_hash(token: str) -> str:
    """What is stored of a log-in token (its SHA-256): a page keeps only this in its session, so
    the session table holds no token either."""
    return hashlib.sha256(token.encode()).hexdigest()


def login_token_issue(*, user: User) -> str:
    """The password was right: an opaque token for ``POST /api/tokens/mfa/`` (only its hash kept).
    A user has at most ``LOGIN_TOKENS_LIVE`` at once (the oldest go first): the password alone must
    not let anyone write rows without end.

    ``InvalidToken`` if the password changed since it was checked (a hash's time): under the lock on
    the user, a change (a reset) either committed — the hash differs — or waits and then deletes this
    token with the other half-done log-ins; a token issued after the reset had deleted them would
    have outlived it (a race review)."""
    now = timezone.now()
    with transaction.atomic():
        if not User.objects.lock(user, as_checked=True):
            raise InvalidToken
        newest = MfaLoginToken.objects.filter(user=user, expires_at__gte=now).order_by("-pk").values("pk")
        # The user's dead ones, and the live ones beyond the newest LOGIN_TOKENS_LIVE - 1 (one statement).
        MfaLoginToken.objects.filter(user=user).exclude(pk__in=newest[: LOGIN_TOKENS_LIVE - 1]).delete()
        token = secrets.token_urlsafe(32)
        MfaLoginToken.objects.create(
            token_hash=login_token_hash(token), user=user, expires_at=now + LOGIN_TOKEN_LIFETIME
        )
    return token


def _alive(token: str | None, token_hash: str | None) -> QuerySet[MfaLoginToken]:
    return MfaLoginToken.objects.filter(
        token_hash=token_hash if token_hash is not None else login_token_hash(token or ""),
        used_at__isnull=True,
        expires_at__gt=timezone.now(),
        failures__lt=LOGIN_TOKEN_MAX_FAILURES,
    )


def login_token_user(*, token: str | None = None, token_hash: str | None = None) -> User:
    """The user a live token (or the hash of one) is for; ``InvalidToken`` otherwise."""
    row = _alive(token, token_hash).select_related("user").first()
    if row is None or not row.user.is_active:
        raise InvalidToken
    return row.user


def login_token_redeem(
    *,
    token: str | None = None,
    token_hash: str | None = None,
    code: str | None = None,
    credential: dict[str, Any] | None = None,
) -> User:
    """Spend ``token`` (or the token of ``token_hash``) with a right proof. ``InvalidToken`` if it is
    used, expired or dead; ``WrongProof`` (one more failure on the token) if the proof is wrong or
    replayed."""
    with transaction.atomic():
        # The token's row alone ("of self"), as passkeys.verify: never the user's before a factor change's.
        row = _alive(token, token_hash).select_for_update(of=("self",)).select_related("user").first()
        if row is None:
            raise InvalidToken
        right = proof_verify(user=row.user, ceremony=passkeys.Purpose.LOGIN, code=code, credential=credential)
        if right:
            MfaLoginToken.objects.filter(pk=row.pk).update(used_at=timezone.now())
        else:
            MfaLoginToken.objects.filter(pk=row.pk).update(failures=row.failures + 1)
    if not right:
        second_step_failed(row.user)
        raise WrongProof
    return row.user


# The owner hears of a failed second step at most this often: whoever has the password must not be
# able to fill their inbox (every failure is still a login_failed event and counts for the lockout).
SECOND_STEP_NOTICE_EVERY = timedelta(hours=1)


def second_step_failed(user: User) -> None:
    """The password was right and the second step was not: if it was not the owner, their password
    is known — they are told (ASVS 6.3.5: a partly successful log-in), from where and when."""
    since = timezone.now() - SECOND_STEP_NOTICE_EVERY
    if not SecurityEvent.objects.filter(user=user, kind=Event.SECOND_STEP_FAILED, at__gte=since).exists():
        events.event_record(user=user, kind=Event.SECOND_STEP_FAILED, actor=events.SELF, notify=True)
