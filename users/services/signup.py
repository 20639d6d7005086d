"""Signing up, and asking for a new verification link. Neither answer tells whether an address has
an account."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import BigIntegerField, Exists, OuterRef, Q, Value
from django.utils import timezone

from users import identity
from users.models import AddressRequest, EmailVerification, OutboundEmail, Suppression, User, UsernameReservation
from users.services import address_requests, delivery, links

logger = logging.getLogger(__name__)

USERNAME_TAKEN = "A user with that username already exists."


def user_create(*, username: str, full_name: str, email: str, password: str) -> User:
    """Sign a person up; the verification email is queued once the rows are committed.

    Enumeration-safe: if the address already has an account, nothing is created, the same
    password-hashing work is done, that address is sent an "account already exists" notice
    (after commit, at most once per cooldown) and an unsaved stand-in carrying what was submitted
    is returned, so callers answer exactly as for a new account. A taken username raises
    ``ValidationError`` (usernames are public handles).
    """
    username, email = identity.normalize_username(username), identity.normalize_email(email)
    full_name = identity.normalize_full_name(full_name)
    taken, existing = _lookup(username, email)
    if taken:
        raise ValidationError({"username": [USERNAME_TAKEN]})
    hashed = ""
    if existing is None:
        try:
            with transaction.atomic():
                user = User.objects.create_user(username=username, email=email, password=password, full_name=full_name)
                links.verification_insert(user=user, email=user.email)  # a new user has no older link
            return user
        except IntegrityError:
            # Lost a race with a concurrent sign-up for the same username or address.
            taken, existing = _lookup(username, email)
            if taken:
                raise ValidationError({"username": [USERNAME_TAKEN]}) from None
            if existing is None:
                raise
    else:
        hashed = make_password(password)  # the work a real sign-up does, so timing tells nothing
    # The answer gave this username out: keep it, or trying it again would tell the two cases apart;
    # and a log-in with it and this password says "verify your address first", as a new account's
    # would (users.auth.UsernameOrEmailBackend).
    # One transaction with the owner's notice: a reservation alone would make the retry of a request
    # that failed between them (a 503, "try again") answer "username taken", the owner never told.
    # One INSERT … ON CONFLICT DO NOTHING (a name kept already stays as it is), no savepoints.
    with transaction.atomic():
        UsernameReservation.objects.bulk_create(
            [UsernameReservation(username=username, email_canonical=email.lower(), password=hashed)],
            ignore_conflicts=True,
        )
        account_exists_notify(user_id=existing)
    return User(username=username, full_name=full_name, email=email, created_at=timezone.now())


def _lookup(username: str, email: str) -> tuple[bool, int | None]:
    """Is the username held (by an account or an earlier answer), and whose is the address? One
    statement, both on unique indexes."""
    canonical_username, canonical_email = identity.canonical_username(username), email.lower()
    rows = (
        User.objects.filter(Q(username_canonical=canonical_username) | Q(email_canonical=canonical_email))
        .values_list("pk", "username_canonical", "email_canonical")
        .union(
            UsernameReservation.objects.filter(username_canonical=canonical_username).values_list(
                Value(None, output_field=BigIntegerField()), "username_canonical", Value("")
            ),
            all=True,
        )
    )
    taken, existing = False, None
    for pk, row_username, row_email in rows:
        taken |= row_username == canonical_username
        if row_email == canonical_email:
            existing = pk
    return taken, existing


def account_exists_notify(*, user_id: int) -> None:
    """Tell the owner of an address that someone tried to use it again (at most once per cooldown).

    The cooldown is read from the email rows themselves under a lock on the owner, so it holds
    across processes and without the cache. Inside a sign-up's transaction, part of it (no savepoint).
    """
    with transaction.atomic(savepoint=False):
        owner = User.objects.select_for_update(no_key=True).filter(pk=user_id).first()
        if owner is None or delivery.recently_mailed(owner.email.lower(), delivery.NOTICE_COOLDOWN):
            return
        delivery.email_queue(kind=OutboundEmail.Kind.ACCOUNT_EXISTS, user=owner, recipient=owner.email)


def verification_resend(*, user: User) -> bool:
    """Send ``user`` a fresh link (older ones stop working). False if already verified, or if the
    address is suppressed: nothing would go out, and the link the person may have keeps working."""
    with transaction.atomic():
        user = User.objects.select_for_update(no_key=True).get(pk=user.pk)
        return not user.is_email_verified and _link_anew(user)


def verification_resend_request(*, email: str) -> None:
    """Someone asks for a new link for ``email`` (the web request). Says nothing about whether the
    address is known, not even by its timing: the request is recorded and queued whatever the
    address, and a worker looks it up (``verification_resend_for``)."""
    address_requests.request_record(kind=AddressRequest.Kind.VERIFICATION_RESEND, email=email)


def verification_resend_for(*, canonical: str) -> None:
    """A recorded resend request, processed by the worker inside ``address_requests.request_process``'s
    transaction. At most one email per address per ``VERIFY_EMAIL_RESEND_COOLDOWN`` (sign-ups and
    notices count); a new link replaces older unused ones. Unknown and already verified addresses
    get nothing, and so does a suppressed address (a new link would not go out, and superseding
    would kill the one the person has — anyone may ask for a resend)."""
    user = User.objects.select_for_update(no_key=True).filter(email_canonical=canonical).first()
    if user is None or user.is_email_verified or delivery.recently_mailed(canonical, delivery.LINK_COOLDOWN):
        return
    _link_anew(user)


def _link_anew(user: User) -> bool:
    """A new link for ``user`` (locked) in place of older unused ones — unless their address is
    suppressed: the new one could not go out, and the old one would stop working."""
    if Suppression.objects.covering(user.email).exists():
        return False
    links.verifications_supersede(user=user, reason="replaced by a newer link")
    links.verification_insert(user=user, email=user.email)
    return True


PURGE_BATCH = 500


def stale_signups_purge(*, now: datetime | None = None) -> dict[str, int]:
    """Free what sign-ups nobody completed hold, once older than ``UNVERIFIED_ACCOUNT_MAX_AGE``:
    accounts never verified and never logged in (with their emails, links and events), and the
    usernames reserved by answers to sign-ups with a registered address.

    Both at the same age, measured from their own sign-up: after the first sign-up with an address
    nobody uses (which creates an unverified account) every later one reserves a name exactly as
    with a registered address, so the names an address's sign-ups hold, and when they free up, are
    the same either way. Staff, bankers and anyone who ever logged in are never purged.
    """
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.UNVERIFIED_ACCOUNT_MAX_AGE)
    reservations, _ = UsernameReservation.objects.filter(created_at__lt=cutoff).delete()
    stale = User.objects.filter(
        is_email_verified=False,
        last_login__isnull=True,
        created_at__lt=cutoff,
        is_staff=False,
        is_superuser=False,
        role=User.Role.DEPOSITOR,
    ).filter(
        # made by a sign-up (which always makes a link), not by staff in the admin
        Exists(EmailVerification.objects.filter(user=OuterRef("pk"), purpose=EmailVerification.Purpose.SIGNUP))
    )
    accounts = 0
    while True:
        with transaction.atomic():
            # The users first (as every writer of their emails does), skipping any a flow holds now.
            ids = list(
                stale.select_for_update(skip_locked=True).order_by("pk").values_list("pk", flat=True)[:PURGE_BATCH]
            )
            if not ids:
                break
            User.objects.filter(pk__in=ids).delete()
        accounts += len(ids)
    counts = {"accounts": accounts, "reservations": reservations}
    logger.info("stale sign-ups purged", extra=counts)
    return counts
