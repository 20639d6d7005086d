"""Verification links: making them, and consuming them (the GET shows, only the POST consumes)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from users import tokens
from users.errors import InvalidLink
from users.models import EmailVerification, OutboundEmail, User
from users.services import delivery

Purpose = EmailVerification.Purpose
_KIND = {Purpose.SIGNUP: OutboundEmail.Kind.VERIFICATION, Purpose.CHANGE: OutboundEmail.Kind.EMAIL_CHANGE}


def verification_insert(*, user: User, email: str, purpose: str = Purpose.SIGNUP) -> EmailVerification:
    """A new link for ``email`` and its email, queued once the caller's transaction commits."""
    now = timezone.now()
    verification = EmailVerification.objects.create(
        user=user,
        email=email,
        purpose=purpose,
        nonce=tokens.new_nonce(),
        created_at=now,
        expires_at=now + timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE),
    )
    delivery.email_queue(
        kind=_KIND[Purpose(purpose)],
        user=user,
        recipient=email,
        verification=verification,
        expires_at=verification.expires_at,
    )
    return verification


def verifications_supersede(*, user: User, reason: str) -> None:
    """Older sign-up links of ``user`` stop working, and their emails that have not gone out never
    will. A pending address change keeps its own link: anyone may ask for a new sign-up link for an
    address, and that must not undo a change (staff correcting a mistyped sign-up address)."""
    EmailVerification.objects.alive().filter(user=user, purpose=Purpose.SIGNUP).update(
        state=EmailVerification.State.SUPERSEDED
    )
    delivery.supersede(OutboundEmail.objects.filter(user=user, kind=OutboundEmail.Kind.VERIFICATION), reason)


def verification_check(*, verification_id: int, code: str) -> EmailVerification:
    """Check a link without consuming it (for the confirm page). Raises ``InvalidLink``."""
    verification = EmailVerification.objects.select_related("user").filter(pk=verification_id).first()
    if (
        verification is None
        or not tokens.check_code(verification.pk, verification.nonce, code)
        or verification.state != EmailVerification.State.ACTIVE
        or verification.is_expired
        or verification.email.lower() != _target(verification).lower()  # the address changed since
    ):
        raise InvalidLink
    return verification


def _target(verification: EmailVerification) -> str:
    """The address a link may still prove: the account's, or the one it is changing to."""
    user = verification.user
    if verification.purpose == Purpose.CHANGE:
        return user.pending_email
    return user.email


def email_verify(*, verification_id: int, code: str) -> User:
    """Consume a link and mark the address verified (or switch to it), in one transaction.

    Single use is one conditional UPDATE on the live link; wrong, used, expired, replaced and
    unknown links all raise the same ``InvalidLink``.
    """
    verification = verification_check(verification_id=verification_id, code=code)
    now = timezone.now()
    try:
        with transaction.atomic():
            # The user first, as every flow that writes a user's links does (a resend, an address
            # change, a password change): the other order deadlocks with them.
            User.objects.select_for_update(no_key=True).filter(pk=verification.user_id).values_list(
                "pk", flat=True
            ).first()
            consumed = (
                EmailVerification.objects.alive(now)
                .filter(pk=verification.pk)
                .update(state=EmailVerification.State.VERIFIED, verified_at=now)
            )
            if not consumed or not _apply(verification):
                raise InvalidLink
    except IntegrityError:  # the new address was taken by another account meanwhile
        raise InvalidLink from None
    return User.objects.get(pk=verification.user_id)


def _apply(verification: EmailVerification) -> bool:
    users = User.objects.filter(pk=verification.user_id)
    if verification.purpose != Purpose.CHANGE:
        # Only if the account still has the address this link was sent to.
        return bool(users.filter(email_canonical=verification.email.lower()).update(is_email_verified=True))
    from users.services import accounts  # the address-change flow owns what a switch implies

    return accounts.email_change_apply(verification)
