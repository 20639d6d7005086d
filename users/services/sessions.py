"""Log-in sessions: tokens for a log-in, refresh with rotation and reuse detection, log-out,
revocation; browser log-ins are session rows too.

Each log-in is a ``LoginSession`` row. Its tokens are djangorestframework-simplejwt's, signed
HS256 under the SECRET_KEY, carrying the session's id (``sid``); the refresh token's ``jti`` is
the only thing about it that is stored. A refresh presents the current refresh token and gets a
new pair; the old refresh token is spent. Presenting a spent one means someone else holds a copy:
the whole session is revoked, so the copy is useless to both. Access tokens are checked against
their session on every request (``users.auth.SessionJWTAuthentication``), so revoking or
blocking a session ends its access tokens at once, not when they expire.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from users import context
from users.errors import InvalidToken
from users.models import LoginSession, MfaLoginToken, SecurityEvent, User
from users.services import events
from users.services.events import SELF, SYSTEM

Kind = SecurityEvent.Kind

logger = logging.getLogger(__name__)

SESSION_CLAIM = "sid"  # the claim of both tokens that names their session


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str
    access_expires_at: datetime
    refresh_expires_at: datetime
    session: LoginSession


def _issue(session: LoginSession) -> Tokens:
    """A new token pair for ``session``, whose refresh token is the one its row now expects."""
    refresh = RefreshToken.for_user(session.user)
    refresh[SESSION_CLAIM] = str(session.pk)
    refresh["jti"] = session.refresh_jti
    refresh.set_exp(from_time=refresh.current_time, lifetime=session.expires_at - refresh.current_time)
    access = refresh.access_token
    lifetime = timedelta(seconds=settings.ACCESS_TOKEN_LIFETIME)
    access.set_exp(from_time=refresh.current_time, lifetime=min(lifetime, session.expires_at - refresh.current_time))
    return Tokens(
        access=str(access),
        refresh=str(refresh),
        access_expires_at=datetime_from_epoch(access["exp"]),
        refresh_expires_at=datetime_from_epoch(refresh["exp"]),
        session=session,
    )


def session_start(*, user: User, user_agent: str, client_ip: str | None) -> Tokens:
    """A new log-in through the API (the credentials were checked by the caller). Raises
    ``InvalidToken`` if the password changed since it was checked: the check takes a password hash's
    time, and a session started after the change's revocation would outlive it. Under the lock on
    the user the change either committed (the hash differs) or waits until this session exists (and
    revokes it)."""
    with transaction.atomic():
        if not _proof_stands(user):
            raise InvalidToken
        session = _session_create(user=user, kind=LoginSession.Kind.API, user_agent=user_agent, client_ip=client_ip)
    return _issue(session)


def browser_session_start(*, user: User, user_agent: str, client_ip: str | None) -> LoginSession:
    """A new log-in in a browser (``/login/``, the admin's): the Django session will name this row.
    Django has logged the browser in by now: when the proof no longer stands (as ``session_start``
    checks), the row starts ended, and the browser is logged out at its next request."""
    with transaction.atomic():
        stands = _proof_stands(user)
        session = _session_create(user=user, kind=LoginSession.Kind.BROWSER, user_agent=user_agent, client_ip=client_ip)
        if not stands:
            _revoke(LoginSession.objects.filter(pk=session.pk), "its proof changed while the log-in was made")
    return session


def _proof_stands(user: User) -> bool:
    """Inside a transaction: lock the user (as every password and factor change does, first) and say
    whether what the log-in proved still holds — the password it checked (a change commits in the
    hash's time, its revocation before this session exists) and the second factor it used
    (``passkeys.PROVEN_BY``: a passkey or an app removed meanwhile, its sessions already ended, must
    not leave this one — a review)."""
    from users.mfa import flows  # the factors' package builds on this module

    return User.objects.lock(user, as_checked=True) and flows.proven_factor_stands(user=user)


def _session_create(*, user: User, kind: str, user_agent: str, client_ip: str | None) -> LoginSession:
    now = timezone.now()
    return LoginSession.objects.create(
        user=user,
        kind=kind,
        user_agent=(user_agent or "")[:256],
        client_ip=client_ip or None,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=settings.REFRESH_TOKEN_LIFETIME),
        refresh_jti=uuid.uuid4().hex,
    )


def _decode(raw: str) -> tuple[str, str]:
    """The session id and jti of a refresh token we signed and that has not expired."""
    try:
        token = RefreshToken(raw)  # type: ignore[arg-type]  # simplejwt takes the encoded string
    except TokenError:
        raise InvalidToken from None
    session_id, jti = token.get(SESSION_CLAIM), token.get("jti")
    if not session_id or not jti:
        raise InvalidToken
    return str(session_id), str(jti)


def session_refresh(*, refresh: str) -> Tokens:
    """Rotate: the presented refresh token is spent and a new pair issued. A spent token presented
    again revokes the session (reuse detection). Raises ``InvalidToken``."""
    session_id, jti = _decode(refresh)
    reused = False
    with transaction.atomic():
        session = (
            LoginSession.objects.select_for_update(of=("self",)).select_related("user").filter(pk=session_id).first()
        )
        if session is None or not session.is_live or not session.user.is_active:
            raise InvalidToken
        if session.refresh_jti != jti:
            _revoke(LoginSession.objects.filter(pk=session.pk), "refresh token reused")
            events.event_record(user=session.user, kind=Kind.REFRESH_REUSE, detail="session revoked", actor=SYSTEM)
            reused = True
        else:
            session.refresh_jti, session.last_used_at = uuid.uuid4().hex, timezone.now()
            session.save(update_fields=["refresh_jti", "last_used_at"])
    if reused:  # outside the transaction, so the revocation is committed
        logger.warning("refresh token reused; session revoked", extra={"session_id": session_id})
        raise InvalidToken
    return _issue(session)


def session_logout(*, refresh: str) -> None:
    """Revoke the session of a refresh token (any of its tokens, spent or current)."""
    session_id, _ = _decode(refresh)
    session = LoginSession.objects.select_related("user").filter(pk=session_id).first()
    if session is None or not _revoke(LoginSession.objects.filter(pk=session_id).live(), "logged out"):
        raise InvalidToken
    events.event_record(user=session.user, kind=Kind.LOGOUT, detail=session.kind, actor=SELF)


def browser_session_end(*, session_id: str | None, reason: str = "logged out") -> LoginSession | None:
    """A browser logs out: its session row ends (returned if it was live)."""
    session = LoginSession.objects.select_related("user").filter(pk=session_id).first() if session_id else None
    if session is None or not _revoke(LoginSession.objects.filter(pk=session.pk).live(), reason):
        return None
    return session


def sessions_revoke(*, user: User, except_session_id: uuid.UUID | None = None, reason: str) -> int:
    """End every live session of ``user`` (but one): API tokens stop working, browsers are logged
    out at their next request."""
    sessions = LoginSession.objects.filter(user=user).live()
    if except_session_id is not None:
        sessions = sessions.exclude(pk=except_session_id)
    return _revoke(sessions, reason)


def sessions_revoke_others(*, user: User, reason: str) -> int:
    """End every live session of ``user`` but the one making this request, when it is the user's own
    (a change they made keeps them logged in there); all of them when staff, a command or a link
    made it."""
    ctx = context.current()
    own = ctx.actor is not None and ctx.actor.pk == user.pk
    return sessions_revoke(user=user, except_session_id=ctx.session_id if own else None, reason=reason)


def sessions_end_others(*, user: User) -> int:
    """The user ends every session but the one asking (after adding a factor, a device they don't
    recognise in the list…), and every log-in still owing its second step: how many sessions ended.
    One event, when any did."""
    ended = sessions_revoke_others(user=user, reason="revoked by the user")
    # A log-in half done (its second step still owed) would be the next session: it is done for too.
    MfaLoginToken.objects.filter(user=user).delete()
    if ended:
        events.event_record(user=user, kind=Kind.SESSION_REVOKED, detail=f"every other session ({ended})")
    return ended


def session_revoke(*, user: User, session_id: uuid.UUID) -> bool:
    """The user ends one of their own sessions. False if it is not theirs (or not live)."""
    revoked = bool(_revoke(LoginSession.objects.filter(pk=session_id, user=user).live(), "revoked by the user"))
    if revoked:
        events.event_record(user=user, kind=Kind.SESSION_REVOKED, detail=str(session_id))
    return revoked


def session_block(*, session: LoginSession) -> bool:
    """Staff block a session (admin): its tokens stop working from now on, its browser is logged out."""
    blocked = bool(
        LoginSession.objects.filter(pk=session.pk, blocked_at__isnull=True).update(blocked_at=timezone.now())
    )
    if blocked:
        events.event_record(user=session.user, kind=Kind.SESSION_BLOCKED, detail=str(session.pk))
    return blocked


def _revoke(sessions, reason: str) -> int:
    return sessions.filter(revoked_at__isnull=True).update(revoked_at=timezone.now(), revoked_reason=reason)
