"""The account after sign-up: profile, address change, password change and reset.

- An address change is pending until the link sent to the new address is used; the old address
  keeps working and is told. A taken address is answered like a free one: no link goes out, its
  owner is told instead. Staff changing an address in the admin go through the same flow.
- An address or password change needs the current password: the callers re-authenticate
  (``users.reauth``). Bankers change names and addresses of depositors only, never passwords
  (``users.policies``).
- Every new password, however it is set, ends the other sessions (all of them for a reset, staff
  or a command), cancels a pending address change and mails a notice: ``password_changed_effects``,
  which ``User.save()`` runs. A reset (Django's ``PasswordResetTokenGenerator``: single use, expires
  after ``PASSWORD_RESET_TIMEOUT``, dies when the password changes) is one of them.
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

from users import context, identity
from users.errors import InvalidToken, WrongPassword
from users.models import AddressRequest, EmailVerification, MfaLoginToken, OutboundEmail, SecurityEvent, User
from users.services import address_requests, delivery, emails, events, links, sessions, signup

Kind = OutboundEmail.Kind
Event = SecurityEvent.Kind


def profile_update(
    *,
    user: User,
    full_name: str | None = None,
    email: str | None = None,
    password: str | None = None,
) -> User:
    """The user changes any of their name, address (pending) and password, each as its own flow.
    The caller validated the shapes and re-authenticated the request for an address or a password
    (``users.reauth``)."""
    if password is not None:
        password_change(user=user, new_password=password)
    if full_name is not None:
        _name_change(user, full_name)
    if email is not None:
        email_change_request(user=user, new_email=email)
    user.refresh_from_db()
    return user


def banker_changes(*, user: User, full_name: str | None, email: str | None) -> list[str]:
    """What a banker's request would change of ``user``: a new name; a new address (neither the
    current one nor the one already pending), or the current one while another is pending (which
    withdraws it). Nothing else is a change, nor mailed."""
    changed = []
    if full_name is not None and identity.normalize_full_name(full_name) != user.full_name:
        changed.append("full_name")
    if email is not None:
        address = identity.normalize_email(email).lower()
        current, pending = user.email.lower(), user.pending_email.lower()
        if (address != current and address != pending) or (address == current and pending):
            changed.append("email")
    return changed


def profile_update_by_banker(*, banker: User, user: User, full_name: str | None, email: str | None) -> User:
    """A banker changes a depositor's name or address (``policies.can_change_profile`` allowed it):
    the address goes through the same pending flow, and the user is mailed a notice naming what
    changed, with the banker as the event's actor."""
    changed = banker_changes(user=user, full_name=full_name, email=email)
    with transaction.atomic():
        # The address first: it locks the customer together with the address's owner, in pk order;
        # a name written first would lock the customer alone, and then the owner (a deadlock with
        # the owner asking for the customer's address at that moment).
        if "email" in changed:
            email_change_request(user=user, new_email=email or "")
        if "full_name" in changed:
            _name_change(user, full_name or "", record=False)
        if changed:
            events.event_record(user=user, kind=Event.PROFILE_CHANGED, detail=", ".join(changed), notify=True)
    user.refresh_from_db()
    return user


def _name_change(user: User, full_name: str, *, record: bool = True) -> bool:
    name = identity.normalize_full_name(full_name)
    if name == user.full_name:
        return False
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(full_name=name)
        user.full_name = name
        if record:
            events.event_record(user=user, kind=Event.PROFILE_CHANGED, detail="full_name")
    return True


def password_change(*, user: User, new_password: str) -> None:
    """Set a new password (Django's validators); ``WrongPassword`` if it changed since ``user`` was
    read (another change won the race). What follows every password change — sessions
    revoked, a pending address change cancelled, the event and the notice — is
    ``password_changed_effects``, run by ``User.save()`` whoever saves a new password."""
    password_validation.validate_password(new_password, user=user)
    with transaction.atomic():
        # Ten parallel changes with one current password each passed their re-authentication and all
        # saved (ten notices; one password won): the first to lock wins, the rest find another hash.
        if not User.objects.lock(user, as_checked=True):
            raise WrongPassword
        user.set_password(new_password)  # sets password_changed_at
        user.save(update_fields=["password", "password_changed_at"])


def password_changed_effects(*, user: User) -> None:
    """Every new password, however it was set (the API, a reset link, the account page, the admin's
    password form, ``manage.py changepassword``), inside the transaction that saved it:

    - every session of the user ends — but the one that made the change, when the user changed
      their own password (a reset, staff, a command: all of them);
    - reset links die, and a pending address change is cancelled (its link stops working);
    - a ``password_changed`` (or ``password_reset``) event, and a notice to the account's address.
    """
    ctx = context.current()
    reset = getattr(user, "_password_reset", False)
    if reset:  # whoever held a session may be why the password was forgotten
        sessions.sessions_revoke(user=user, reason="password reset")
    else:
        sessions.sessions_revoke_others(user=user, reason="password changed")
    _supersede_resets(user, "the password changed")
    if reset and ctx.request is not None:
        # The mailbox's owner set a new password: the failures from where they did it are forgiven
        # (as a log-in's success forgives them), or the lockout page's "reset your password" would
        # leave them locked out with the new one for the rest of the cool-off.
        from users.auth import lockout_reset

        lockout_reset(ctx.request, user)
    email_change_cancel(user=user, reason="cancelled: the password changed")
    # A log-in half done with the old password (its second step still owed) is done for.
    MfaLoginToken.objects.filter(user=user).delete()
    kind = Event.PASSWORD_RESET if reset else Event.PASSWORD_CHANGED
    events.event_record(user=user, kind=kind, actor=events.SELF if reset else None, notify=True)


def account_deactivated_effects(*, user: User) -> None:
    """An account saved inactive, inside the transaction that saved it: every session ends (an
    inactive user's tokens are refused already; re-activating must not revive them) and a log-in
    half done is done for."""
    sessions.sessions_revoke(user=user, reason="account deactivated")
    MfaLoginToken.objects.filter(user=user).delete()


def email_change_request(*, user: User, new_email: str) -> None:
    """The user (or staff) asks to move the account to ``new_email``; nothing changes until the
    link sent there is used. The answer is the same whether the address is free or taken."""
    address = identity.normalize_email(new_email)
    with transaction.atomic():
        owner = User.objects.filter(email_canonical=address.lower()).exclude(pk=user.pk).values_list("pk", flat=True)
        owner_id = owner.first()
        # The requester and the address's owner (told below) locked together, in pk order: two
        # people asking for each other's address at once would otherwise each hold one and wait
        # for the other (PostgreSQL aborts one: "deadlock detected").
        both = User.objects.select_for_update(no_key=True).filter(pk__in=[user.pk, owner_id or user.pk]).order_by("pk")
        user = next(u for u in both if u.pk == user.pk)
        if address.lower() == user.email.lower():  # back to the current address: nothing pending
            User.objects.filter(pk=user.pk).update(pending_email="")
            _supersede_change_links(user, "the change was withdrawn")
            return
        if user.pending_email.lower() == address.lower() and delivery.recently_mailed(
            user.email.lower(), [Kind.EMAIL_CHANGE_NOTICE]
        ):
            # The same change again within the cooldown ("I didn't get it"): nothing changes — the
            # link already mailed (or still owed) stays, nobody is mailed again — whether the
            # address is free or taken (the requester can't tell them apart by what follows).
            return
        if owner_id is None:
            delivery.address_lock(address.lower())  # nobody's row to lock: two requests must not both pass
        new_link = owner_id is None and not delivery.recently_mailed(address.lower(), delivery.CHANGE_COOLDOWN)
        # The event names the address masked, as the notice below does: a notice sent late (a
        # retry, the sweep) tells of this request, not of whatever is pending by then.
        requested = events.event_record(user=user, kind=Event.EMAIL_CHANGE_REQUESTED, detail=emails.masked(address))
        User.objects.filter(pk=user.pk).update(pending_email=address)
        user.pending_email = address
        _supersede_change_links(user, "replaced by a newer address change")
        if owner_id:
            signup.account_exists_notify(user_id=owner_id)  # its owner is told, nobody gets a link
        elif new_link:
            links.verification_insert(user=user, email=address, purpose=EmailVerification.Purpose.CHANGE)
        # The current address hears about it either way (the requester may read that mailbox too).
        delivery.email_queue(kind=Kind.EMAIL_CHANGE_NOTICE, user=user, recipient=user.email, event=requested)


def email_change_cancel(*, user: User, reason: str) -> None:
    """A pending address change ends: its link stops working, the account keeps its address."""
    if User.objects.filter(pk=user.pk).exclude(pending_email="").update(pending_email=""):
        _supersede_change_links(user, reason)
    user.pending_email = ""


def _supersede_change_links(user: User, reason: str) -> None:
    EmailVerification.objects.alive().filter(user=user, purpose=EmailVerification.Purpose.CHANGE).update(
        state=EmailVerification.State.SUPERSEDED
    )
    delivery.supersede(OutboundEmail.objects.filter(user=user, kind=Kind.EMAIL_CHANGE), reason)


def email_change_apply(verification: EmailVerification) -> bool:
    """An address-change link was used (inside ``links.email_verify``'s transaction): the account
    switches to the new address, verified. False if the change was withdrawn or replaced; an
    address taken meanwhile by another account raises ``IntegrityError`` (the link is refused)."""
    user = User.objects.select_for_update(no_key=True).get(pk=verification.user_id)
    if user.pending_email.lower() != verification.email.lower():
        return False
    old = user.email
    User.objects.filter(pk=user.pk).update(email=verification.email, pending_email="", is_email_verified=True)
    # Nothing owed to the old address goes out any more (a reset link, say); its links die.
    delivery.supersede(
        OutboundEmail.objects.filter(user=user, recipient_canonical=old.lower()).exclude(
            kind__in=delivery.NOTICES_TO_ANY_ADDRESS
        ),
        "the address changed",
    )
    EmailVerification.objects.alive().filter(user=user, purpose=EmailVerification.Purpose.SIGNUP).update(
        state=EmailVerification.State.SUPERSEDED
    )
    # The old address is told its account moved (whoever used the link holds the new mailbox).
    user.email = verification.email
    events.event_record(
        user=user, kind=Event.EMAIL_CHANGED, actor=events.SELF, notify=True, recipient=old, detail="to a new address"
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
    user = User.objects.select_for_update(no_key=True).filter(email_canonical=canonical, is_active=True).first()
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
        user = User.objects.select_for_update(no_key=True).get(pk=user.pk)
        if not default_token_generator.check_token(user, token):  # used by a concurrent request
            raise InvalidToken
        user.set_password(new_password)
        user._password_reset = True  # type: ignore[attr-defined]  # read by password_changed_effects
        user.save(update_fields=["password", "password_changed_at"])  # every session ends (User.save)
    return user


def _supersede_resets(user: User, reason: str) -> None:
    delivery.supersede(OutboundEmail.objects.filter(user=user, kind=Kind.PASSWORD_RESET), reason)
