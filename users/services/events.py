"""The security-event trail: one append-only row per security-relevant event, and the notice that
tells the account's owner about the ones they must hear of.

Every writer calls ``event_record``: the actor, address and user agent come from the request's
context (``users.context``) unless given. A notice is a ``security_notice`` email through the
delivery engine (a row in the same transaction, a message after commit, the sweep behind it): it
says what changed, when and from where, and links to nothing but the site and ``/account/``.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from users import context
from users.models import OutboundEmail, SecurityEvent, User
from users.services import delivery

Kind = SecurityEvent.Kind
SELF, SYSTEM = "self", "system"
# The detail of a login_failed event for a wrong second-factor proof (counted: users.mfa.flows).
WRONG_SECOND_FACTOR = "wrong second factor"

# What each notice's subject and first line say.
NOTICE_TITLES = {
    Kind.PASSWORD_CHANGED: "Your password was changed",
    Kind.PASSWORD_RESET: "Your password was reset",
    Kind.EMAIL_CHANGED: "The email address of your account was replaced",
    Kind.PROFILE_CHANGED: "Your profile was changed",
    Kind.MFA_ENABLED: "An authenticator app was set up as your second factor",
    Kind.MFA_DISABLED: "A second factor was turned off",
    Kind.RECOVERY_CODE_USED: "A recovery code was used",
    Kind.PASSKEY_ADDED: "A passkey was added",
    Kind.PASSKEY_REMOVED: "A passkey was removed",
    Kind.RECOVERY_CODES_REGENERATED: "New recovery codes were made (the old ones no longer work)",
    Kind.MFA_RESET_BY_STAFF: "Your second factors were reset by our staff",
    Kind.SECOND_STEP_FAILED: "Someone gave your password (or used a reset link), but not your second factor",
}

# Events whose detail is text a user typed (a passkey's name): shown to its owner on their pages,
# never printed in an email.
USER_TEXT_DETAIL = frozenset({Kind.PASSKEY_ADDED, Kind.PASSKEY_REMOVED})


def actor_label(user: User | None, actor: User | None) -> str:
    """``self``, ``banker:<username>``, ``staff:<username>`` or ``system``."""
    if actor is None:
        return SYSTEM
    if user is not None and actor.pk == user.pk:
        return SELF
    if actor.is_staff or actor.is_superuser:
        return f"staff:{actor.username}"
    if actor.role == User.Role.BANKER:
        return f"banker:{actor.username}"
    return f"user:{actor.username}"


def event_record(
    *,
    user: User | None,
    kind: str,
    detail: str = "",
    actor: str | None = None,
    notify: bool = False,
    recipient: str | None = None,
) -> SecurityEvent:
    """Record one event of ``user`` (None: a failed log-in naming no account). ``actor``: a label
    to use instead of the context's. ``notify``: mail the owner a notice (to ``recipient``, by
    default the account's address), queued once the caller's transaction commits."""
    ctx = context.current()
    actor_user = ctx.actor if actor is None else (user if actor == SELF else None)
    with transaction.atomic():
        event = SecurityEvent.objects.create(
            user=user,
            kind=kind,
            at=timezone.now(),
            client_ip=ctx.client_ip or None,
            user_agent=(ctx.user_agent or "")[:256],
            actor=(actor or actor_label(user, ctx.actor))[:160],
            actor_user=actor_user if actor_user is not None and actor_user.pk else None,
            detail=detail[:255],
        )
        if notify and user is not None:
            delivery.email_queue(
                kind=OutboundEmail.Kind.SECURITY_NOTICE, user=user, recipient=recipient or user.email, event=event
            )
    return event
