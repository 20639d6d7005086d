"""The account after sign-up: its address and what changing it implies."""

from __future__ import annotations

from django.db import transaction

from users.models import EmailVerification, OutboundEmail, User
from users.services import delivery, links


def user_email_changed(*, user: User, old_email: str) -> None:
    """Staff changed an address: it is unverified until the person proves the new one, and nothing
    owed to the old address goes out any more (pending, unclaimed or failed: "retry failed" too)."""
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(is_email_verified=False)
        user.is_email_verified = False
        links.verifications_supersede(user=user, reason="the address changed")
        delivery.supersede(
            OutboundEmail.objects.filter(user=user, recipient_canonical=old_email.lower()), "the address changed"
        )


def email_change_apply(verification: EmailVerification) -> bool:
    """An address-change link was used: the account switches to it (see the accounts flow)."""
    return False
