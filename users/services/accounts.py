"""The account after sign-up: profile, address change, password change and reset.

- An address change is pending until the link sent to the new address is used; the old address
  keeps working and is told. A taken address is answered like a free one: no link goes out, its
  owner is told instead. Staff changing an address in the admin go through the same flow.
- A password change needs the current password (bankers and staff excepted) and ends every other
  session; a reset (Django's ``PasswordResetTokenGenerator``: single use, expires after
  ``PASSWORD_RESET_TIMEOUT``, dies when the password changes) ends every session.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.tokens import default_token_generator
from django.db import transaction
from django.utils import timezone
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode

from users import identity
from users.errors import InvalidToken, WrongPassword
from users.models import AddressRequest, EmailVerification, LoginSession, OutboundEmail, User
from users.services import address_requests, delivery, links, sessions, signup

Kind = OutboundEmail.Kind


def profile_update(
    *,
    user: User,
    full_name: str | None = None,
    email: str | None = None,
    password: str | None = None,
    current_password: str | None = None,
    by_staff: bool = False,
    current_session: LoginSession | None = None,
) -> User:
    """Change any of a user's name, address (pending) and password, each as its own flow. The
    caller validated the shapes; ``by_staff`` (a banker, an admin) skips the current password."""
    if password is not None:
        password_change(
            user=user,
            new_password=password,
            current_password=current_password,
            by_staff=by_staff,
            keep_session=current_session,
        )
    if full_name is not None:
        name = identity.normalize_full_name(full_name)
        User.objects.filter(pk=user.pk).update(full_name=name)
        user.full_name = name
    if email is not None:
        email_change_request(user=user, new_email=email)
    user.refresh_from_db()
    return user


def password_change(
    *,
    user: User,
    new_password: str,
    current_password: str | None,
    by_staff: bool = False,
    keep_session: LoginSession | None = None,
) -> None:
    """Set a new password (Django's validators) and end every other session; raises
    ``WrongPassword`` when the current one is missing or wrong (unless ``by_staff``)."""
    if not by_staff and (not current_password or not user.check_password(current_password)):
        raise WrongPassword
    password_validation.validate_password(new_password, user=user)
    with transaction.atomic():
        user.set_password(new_password)  # sets password_changed_at
        user.save(update_fields=["password", "password_changed_at"])
        sessions.sessions_revoke(
            user=user, except_session=None if by_staff else keep_session, reason="password changed"
        )
        _supersede_resets(user, "the password changed")


def email_change_request(*, user: User, new_email: str) -> None:
    """The user (or staff) asks to move the account to ``new_email``; nothing changes until the
    link sent there is used. The answer is the same whether the address is free or taken."""
    address = identity.normalize_email(new_email)
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        if address.lower() == user.email.lower():  # back to the current address: nothing pending
            User.objects.filter(pk=user.pk).update(pending_email="")
            _supersede_change_links(user, "the change was withdrawn")
            return
        User.objects.filter(pk=user.pk).update(pending_email=address)
        user.pending_email = address
        _supersede_change_links(user, "replaced by a newer address change")
        owner = User.objects.filter(email_canonical=address.lower()).exclude(pk=user.pk).values_list("pk", flat=True)
        if owner_id := owner.first():
            signup.account_exists_notify(user_id=owner_id)  # its owner is told, nobody gets a link
        elif not delivery.recently_mailed(address.lower(), delivery.CHANGE_COOLDOWN):
            links.verification_insert(user=user, email=address, purpose=EmailVerification.Purpose.CHANGE)
        # The current address hears about it either way (the requester may read that mailbox too).
        delivery.email_queue(kind=Kind.EMAIL_CHANGE_NOTICE, user=user, recipient=user.email)


def _supersede_change_links(user: User, reason: str) -> None:
    EmailVerification.objects.alive().filter(user=user, purpose=EmailVerification.Purpose.CHANGE).update(
        state=EmailVerification.State.SUPERSEDED
    )
    delivery.supersede(OutboundEmail.objects.filter(user=user, kind=Kind.EMAIL_CHANGE), reason)


def email_change_apply(verification: EmailVerification) -> bool:
    """An address-change link was used (inside ``links.email_verify``'s transaction): the account
    switches to the new address, verified. False if the change was withdrawn or replaced; an
    address taken meanwhile by another account raises ``IntegrityError`` (the link is refused)."""
    user = User.objects.select_for_update().get(pk=verification.user_id)
    if user.pending_email.lower() != verification.email.lower():
        return False
    old = user.email
    User.objects.filter(pk=user.pk).update(email=verification.email, pending_email="", is_email_verified=True)
    # Nothing owed to the old address goes out any more (a reset link, say); its links die.
    delivery.supersede(
        OutboundEmail.objects.filter(user=user, recipient_canonical=old.lower()).exclude(kind=Kind.EMAIL_CHANGE_NOTICE),
        "the address changed",
    )
    EmailVerification.objects.alive().filter(user=user, purpose=EmailVerification.Purpose.SIGNUP).update(
        state=EmailVerification.State.SUPERSEDED
    )
    return True


# --- Password reset ---------------------------------------------------------------------------------
def password_reset_request(*, email: str) -> None:
    """Someone asks to reset the password of ``email`` (the web request). Says nothing about whether
    it is known, not even by its timing: the request is recorded and queued whatever the address,
    and a worker looks it up (``password_reset_for``)."""
    address_requests.request_record(kind=AddressRequest.Kind.PASSWORD_RESET, email=email)


def password_reset_for(*, canonical: str) -> None:
    """A recorded reset request, processed by the worker inside ``address_requests.request_process``'s
    transaction: a known, active account gets one email with a link (at most one per address per
    cooldown); an unknown address gets nothing."""
    user = User.objects.select_for_update().filter(email_canonical=canonical, is_active=True).first()
    if user is None or delivery.recently_mailed(canonical, delivery.RESET_COOLDOWN):
        return
    delivery.email_queue(
        kind=Kind.PASSWORD_RESET,
        user=user,
        recipient=user.email,
        expires_at=timezone.now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT),
    )


def password_reset_user(*, uid: str, token: str) -> User:
    """The user a reset link is for, if the link still works (not used, not expired, password not
    changed since). One ``InvalidToken`` for every bad link."""
    try:
        pk = int(force_str(urlsafe_base64_decode(uid)))
    except (TypeError, ValueError, OverflowError, UnicodeDecodeError):
        raise InvalidToken from None
    user = User.objects.filter(pk=pk, is_active=True).first()
    if user is None or not isinstance(token, str) or not default_token_generator.check_token(user, token):
        raise InvalidToken
    return user


def password_reset_confirm(*, uid: str, token: str, new_password: str) -> User:
    """Set the new password through a reset link; every session ends and the link stops working
    (the token hashes the password). Raises ``InvalidToken`` or Django's ``ValidationError``."""
    user = password_reset_user(uid=uid, token=token)
    password_validation.validate_password(new_password, user=user)
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        if not default_token_generator.check_token(user, token):  # used by a concurrent request
            raise InvalidToken
        user.set_password(new_password)
        user.save(update_fields=["password", "password_changed_at"])
        sessions.sessions_revoke(user=user, reason="password reset")
        _supersede_resets(user, "the password changed")
    return user


def _supersede_resets(user: User, reason: str) -> None:
    delivery.supersede(OutboundEmail.objects.filter(user=user, kind=Kind.PASSWORD_RESET), reason)
