"""Use cases of the users app. Views and actors call these; they own transactions and side effects."""

from __future__ import annotations

import functools
import hashlib
import logging
import smtplib
import time
from datetime import datetime, timedelta
from functools import partial
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db import connection as db_connection
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.template.loader import render_to_string
from django.utils import timezone
from redis.exceptions import RedisError

from bankproject import request_id
from users import mail, tokens
from users.models import EmailVerification, User, UsernameReservation

logger = logging.getLogger(__name__)

State = EmailVerification.State


# --- Errors -------------------------------------------------------------------------------------
class VerificationError(Exception):
    """Base class for errors raised while sending a verification email."""


class VerificationGone(VerificationError):
    """Permanent: the verification (or its user) no longer exists, or it was replaced."""


class AlreadyVerified(VerificationError):
    """Permanent: the address was verified already; nothing to send."""


class VerificationExpired(VerificationError):
    """Permanent: the link would already be expired; sending it would only confuse."""


class PermanentSendError(VerificationError):
    """Permanent: the SMTP server refused the message for good (5xx)."""


class VerificationBusy(VerificationError):
    """Another delivery holds a fresh claim on this verification (the sweep covers it if it dies)."""


class InvalidVerificationCode(Exception):
    """The code is wrong, used, expired or not this verification's. One error for all of them."""


# --- Sign-up ------------------------------------------------------------------------------------
def user_create(*, username: str, full_name: str, email: str, password: str) -> User:
    """Sign a person up; the verification email is queued once the rows are committed.

    Enumeration-safe: if the address already has an account, nothing is created, the same
    password-hashing work is done, that address is sent an "account already exists" notice
    (after commit, at most once per cooldown) and an unsaved stand-in carrying what was submitted
    is returned, so callers answer exactly as for a new account. A taken username raises
    ``ValidationError`` (usernames are public handles).
    """
    email = User.objects.normalize_email(email)
    if _username_taken(username):
        raise ValidationError({"username": [USERNAME_TAKEN]})
    existing = User.objects.filter(email__iexact=email).values_list("pk", flat=True).first()
    if existing is None:
        try:
            with transaction.atomic():
                user = User.objects.create_user(username=username, email=email, password=password, full_name=full_name)
                _verification_insert(user)  # a new user has no older link to supersede
            cooldown_acquire(_resend_key(email), settings.VERIFY_EMAIL_RESEND_COOLDOWN)
            return user
        except IntegrityError:
            # Lost a race with a concurrent sign-up for the same username or address.
            if _username_taken(username):
                raise ValidationError({"username": [USERNAME_TAKEN]}) from None
            existing = User.objects.filter(email__iexact=email).values_list("pk", flat=True).first()
            if existing is None:
                raise
    else:
        make_password(password)  # the work a real sign-up does, so timing tells nothing
    # The answer gave this username out: keep it, or trying it again would tell the two cases apart.
    UsernameReservation.objects.get_or_create(username=username)
    if cooldown_acquire(f"account-exists:{existing}", settings.VERIFY_EMAIL_RESEND_COOLDOWN):
        transaction.on_commit(partial(account_exists_dispatch, existing), robust=True)
    return User(username=username, full_name=full_name, email=email, created_at=timezone.now())


USERNAME_TAKEN = "A user with that username already exists."


def _username_taken(username: str) -> bool:
    """Held by an account or by an earlier answer (see ``UsernameReservation``); one query."""
    held = User.objects.filter(username=username).values("username")
    return held.union(UsernameReservation.objects.filter(username=username).values("username")).exists()


def cooldown_acquire(key: str, seconds: int) -> bool:
    """True once per ``seconds`` per key, across processes (shared cache). Fails open."""
    try:
        return bool(cache.add(f"cooldown:{key}", 1, timeout=seconds))
    except (RedisError, OSError):
        logger.warning("cooldown cache unreachable; allowing", extra={"cooldown": key.split(":")[0]})
        return True


def address_digest(email: str) -> str:
    """A key for an address in the shared cache: case-insensitive, and not the address itself."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def _resend_key(email: str) -> str:
    return "resend:" + address_digest(email)


def account_exists_dispatch(user_id: int) -> None:
    """Queue the "account already exists" notice. Never raises (it is a courtesy, not a promise)."""
    from tasks.tasks import send_account_exists_email  # worker plumbing stays behind this function

    _enqueue(send_account_exists_email, user_id, payload={"user_id": user_id})


def account_exists_send(*, user_id: int) -> User:
    """Mail the owner of an address that someone tried to sign up with again. No link to verify."""
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        raise VerificationGone(f"user {user_id} does not exist")
    _send(account_exists_email_build(user))
    return user


def account_exists_email_build(user: User) -> EmailMultiAlternatives:
    context = {
        "full_name": user.full_name,
        "username": user.username,
        "is_email_verified": user.is_email_verified,
        "resend_url": f"{settings.SITE_URL}/verify-email/resend/",
        "site_url": settings.SITE_URL,
    }
    return _render_email("account_exists", context, to=user.email)


def emails_warm_up() -> None:
    """Build each kind of email once for a made-up user, so a worker's first real email is quick.

    The first render loads and compiles the templates (~50 ms here); a worker process does it
    at boot instead of on the first sign-up it serves. Nothing is saved or sent.
    """
    user = User(pk=1, username="warm-up", full_name="Warm Up", email="warm-up@example.invalid")
    verification = EmailVerification(
        pk=1, user=user, email=user.email, nonce="warm-up", expires_at=timezone.now() + timedelta(days=1)
    )
    for message in (verification_email_build(verification), account_exists_email_build(user)):
        message.message().as_bytes()


def _render_email(prefix: str, context: dict, *, to: str, headers: dict | None = None) -> EmailMultiAlternatives:
    subject = " ".join(render_to_string(f"emails/{prefix}_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"emails/{prefix}_message.txt", context),
        to=[to],
        headers=headers,
    )
    message.attach_alternative(render_to_string(f"emails/{prefix}_message.html", context), "text/html")
    return message


def _send(message: EmailMultiAlternatives) -> None:
    """Send one email; a permanent SMTP refusal becomes ``PermanentSendError``."""
    try:
        mail.send(message)
    except (smtplib.SMTPException, OSError) as exc:  # OSError covers timeouts and refusals
        if _is_permanent_smtp_error(exc):
            raise PermanentSendError(_describe_smtp_error(exc)) from exc
        raise


# --- Verification emails ------------------------------------------------------------------------
def verification_create(*, user: User) -> EmailVerification:
    """Replace any unused verification of ``user`` with a new one and queue it after commit."""
    with transaction.atomic():
        EmailVerification.objects.filter(user=user, verified_at__isnull=True).exclude(
            state__in=[State.SUPERSEDED, State.VERIFIED]
        ).update(state=State.SUPERSEDED)
        return _verification_insert(user)


def _verification_insert(user: User) -> EmailVerification:
    """Insert a pending verification and queue its email once the caller's transaction commits."""
    now = timezone.now()
    verification = EmailVerification.objects.create(
        user=user,
        email=user.email,
        nonce=tokens.new_nonce(),
        created_at=now,
        dispatched_at=now,
        expires_at=now + timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE),
    )
    transaction.on_commit(partial(verification_dispatch, verification.pk), robust=True)
    return verification


def verification_resend(*, user: User) -> EmailVerification | None:
    """Send ``user`` a fresh link (older ones stop working). ``None`` if already verified."""
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        if user.is_email_verified:
            return None
        return verification_create(user=user)


def verification_resend_request(*, email: str) -> None:
    """Someone asks for a new link for ``email``. Says nothing about whether the address is known.

    At most one email per address per ``VERIFY_EMAIL_RESEND_COOLDOWN`` (shared with sign-up); a
    new link replaces older unused ones. Unknown and already verified addresses get nothing.
    """
    email = User.objects.normalize_email(email)
    if not cooldown_acquire(_resend_key(email), settings.VERIFY_EMAIL_RESEND_COOLDOWN):
        return
    user = User.objects.filter(email__iexact=email).first()
    if user is not None and not user.is_email_verified:
        verification_resend(user=user)


def verification_dispatch(verification_id: int) -> None:
    """Queue the email for a committed verification. Never raises: the row is the source of truth.

    This and ``account_exists_dispatch`` are the only places the users app reaches into the worker
    plumbing. Call it only after the verification row is committed (``verification_create`` does
    so with ``on_commit``); if the enqueue fails, the redispatch sweep sends the row later.
    """
    from tasks.tasks import send_verify_email  # worker plumbing stays behind this function

    _enqueue(send_verify_email, verification_id, payload={"verification_id": verification_id})


def _enqueue(actor, argument: int, *, payload: dict) -> None:
    # The request id rides along so the worker's log lines for this email carry it too.
    options = {"request_id": rid} if (rid := request_id.current()) else {}
    try:
        message = actor.send_with_options(args=(argument,), **options)
    except Exception:
        logger.warning("enqueue failed", exc_info=True, extra={"type": actor.actor_name, "payload": payload})
        return
    logger.info(
        "enqueued task",
        extra={
            "type": message.actor_name,
            "payload": payload,
            "queue": message.queue_name,
            "max_retry": actor.options.get("max_retries"),
            "message_id": message.message_id,
        },
    )


def verification_link(verification: EmailVerification) -> str:
    code = tokens.make_code(verification.pk, verification.nonce)
    query = urlencode({"email_id": verification.pk, "secret_code": code})
    return f"{settings.SITE_URL}/verify-email/?{query}"


def _message_id(verification: EmailVerification) -> str:
    # Deterministic, so a re-send of the same verification is recognisably the same email.
    digest = hashlib.sha256(f"{verification.pk}:{verification.nonce}".encode()).hexdigest()[:24]
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "localhost"
    return f"<verify-email.{verification.pk}.{digest}@{domain}>"


def verification_email_build(verification: EmailVerification) -> EmailMultiAlternatives:
    user = verification.user
    context = {
        "user": user,
        "full_name": user.full_name,
        "username": user.username,
        "verify_url": verification_link(verification),
        "expires_at": verification.expires_at,
        "max_age_hours": max(1, settings.EMAIL_VERIFICATION_MAX_AGE // 3600),
        "site_url": settings.SITE_URL,
    }
    return _render_email(
        "verify_email", context, to=verification.email, headers={"Message-ID": _message_id(verification)}
    )


def _claim(verification_id: int) -> tuple[EmailVerification, datetime | None]:
    """Take the right to send this verification, with one conditional UPDATE.

    Returns the row and the claim's token (the ``claimed_at`` it wrote), or no token when the row
    was already sent. Every later write of this attempt is fenced by that token, so a worker whose
    claim went stale can never release or finish a claim another worker has since taken.
    """
    for _ in range(3):  # the row may change between the UPDATE and the read: look again
        now = timezone.now()
        stale = now - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT)
        claimed = _claim_update(verification_id, now, stale)
        if claimed is not None:
            return claimed, now
        # Not claimable: find out why (the uncommon path, one more read).
        verification = EmailVerification.objects.select_related("user").filter(pk=verification_id).first()
        if verification is None:
            raise VerificationGone(f"verification {verification_id} does not exist")
        if verification.state == State.SENT:
            return verification, None
        if verification.state == State.VERIFIED or verification.user.is_email_verified:
            raise AlreadyVerified(f"verification {verification_id} is already verified")
        if verification.state == State.SUPERSEDED:
            raise VerificationGone(f"verification {verification_id} was replaced by a newer one")
        if verification.state == State.FAILED:
            raise PermanentSendError(f"verification {verification_id} already failed: {verification.last_error}")
        if verification.state == State.SENDING and verification.claimed_at and verification.claimed_at >= stale:
            raise VerificationBusy(f"verification {verification_id} is being sent by another delivery")
        if verification.is_expired:
            _mark_failed(verification_id, "expired before it could be sent")  # never mail a dead link
            raise VerificationExpired(f"verification {verification_id} expired before it could be sent")
        if verification.attempts >= settings.VERIFY_EMAIL_MAX_ATTEMPTS:
            # Counts every delivery, redeliveries of a killed worker's message included.
            error = f"gave up after {verification.attempts} attempts: {verification.last_error or 'no answer'}"
            _mark_failed(verification_id, error)
            raise PermanentSendError(error)
    raise VerificationBusy(f"verification {verification_id} keeps changing under this delivery")


def _claim_update(verification_id: int, now: datetime, stale: datetime) -> EmailVerification | None:
    """The conditional UPDATE that takes a claimable row; returns it (with its user) if it did."""
    if _update_returning_supported():
        return _claim_update_returning(verification_id, now, stale)
    claimable = Q(state=State.PENDING) | Q(state=State.SENDING, claimed_at__lt=stale)
    claimed = EmailVerification.objects.filter(
        claimable, pk=verification_id, expires_at__gt=now, attempts__lt=settings.VERIFY_EMAIL_MAX_ATTEMPTS
    ).update(state=State.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    return EmailVerification.objects.select_related("user").filter(pk=verification_id).first() if claimed else None


def _update_returning_supported() -> bool:
    return db_connection.vendor == "postgresql"


def _claim_update_returning(verification_id: int, now: datetime, stale: datetime) -> EmailVerification | None:
    """PostgreSQL: the same UPDATE, returning the row and its user in the same statement.

    The ORM has no UPDATE ... RETURNING; this saves the worker a round trip and a query build on
    every email (a test pins the statements per email; the portable path above is tested too).
    """
    v_fields, u_fields = EmailVerification._meta.concrete_fields, User._meta.concrete_fields
    sql = _claim_returning_sql()
    sending, pending, max_attempts = State.SENDING.value, State.PENDING.value, settings.VERIFY_EMAIL_MAX_ATTEMPTS
    params = (sending, now, verification_id, now, max_attempts, pending, sending, stale)
    with db_connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    # from_db applies each field's database converters, as a normal query would.
    verification = EmailVerification.from_db(
        db_connection.alias, [f.attname for f in v_fields], _converted(v_fields, row[: len(v_fields)])
    )
    verification.user = User.from_db(
        db_connection.alias, [f.attname for f in u_fields], _converted(u_fields, row[len(v_fields) :])
    )
    return verification


@functools.cache
def _claim_returning_sql() -> str:
    # Only identifiers from the models' metadata (quoted) go into the text; values are parameters.
    qn = db_connection.ops.quote_name
    v_columns = [f"v.{qn(f.column)}" for f in EmailVerification._meta.concrete_fields]
    u_columns = [f"u.{qn(f.column)}" for f in User._meta.concrete_fields]
    return (
        f"UPDATE {qn(EmailVerification._meta.db_table)} AS v "  # noqa: S608 - identifiers, not input
        "SET state = %s, claimed_at = %s, attempts = v.attempts + 1 "
        f"FROM {qn(User._meta.db_table)} AS u "
        "WHERE v.id = %s AND u.id = v.user_id AND v.expires_at > %s AND v.attempts < %s "
        "AND (v.state = %s OR (v.state = %s AND v.claimed_at < %s)) "
        f"RETURNING {', '.join(v_columns + u_columns)}"
    )


def _converted(fields, values) -> list:
    out = []
    for field, value in zip(fields, values, strict=True):
        column = field.get_col(field.model._meta.db_table)
        converters = db_connection.ops.get_db_converters(column) + column.get_db_converters(db_connection)
        for converter in converters:
            value = converter(value, column, db_connection)
        out.append(value)
    return out


def _mark_failed(verification_id: int, error: str) -> int:
    """Fail a row nobody is sending: pending, or claimed by a worker whose claim went stale."""
    stale = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT)
    unclaimed = Q(state=State.PENDING) | Q(state=State.SENDING, claimed_at__lt=stale)
    return EmailVerification.objects.filter(unclaimed, pk=verification_id).update(
        state=State.FAILED, last_error=error[:2000]
    )


def _is_permanent_smtp_error(exc: BaseException) -> bool:
    """Only the server refusing the recipient for good (5xx on RCPT) is permanent.

    4xx, timeouts and connection errors are retried, and so are 5xx answers about us rather than
    the address (bad credentials, sender refused): a configuration mistake must not fail every
    sign-up for good; it shows as retries and errors, and sends once it is fixed.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(code >= 500 for code in codes)
    return False


def verification_send(*, verification_id: int) -> tuple[EmailVerification, bool]:
    """Send one verification email at most once. Returns ``(verification, sent_now)``.

    Raises a ``VerificationError`` subclass for permanent outcomes (and ``VerificationBusy`` when
    another delivery holds a fresh claim); SMTP transient errors and database errors propagate so
    the caller can retry.
    """
    verification, token = _claim(verification_id)
    if token is None:  # already sent
        return verification, False
    if verification.user.is_email_verified:  # verified some other way (e.g. by staff) meanwhile
        _finish(verification_id, token, state=State.VERIFIED)
        raise AlreadyVerified(f"user of verification {verification_id} is already verified")
    try:
        _send(verification_email_build(verification))
    except PermanentSendError as exc:
        _finish(verification_id, token, state=State.FAILED, last_error=str(exc)[:2000])
        raise
    except BaseException as exc:
        # Transient SMTP trouble, or anything else (a template error, the time limit): give the
        # row back so the retry can claim it at once.
        error = _describe_smtp_error(exc) if isinstance(exc, smtplib.SMTPException | OSError) else repr(exc)
        _finish(verification_id, token, state=State.PENDING, last_error=error[:2000])
        raise
    verification.sent_at = _mark_sent(verification_id, token)
    verification.state = State.SENT
    return verification, True


def _finish(verification_id: int, token: datetime, **fields: object) -> int:
    """Update the row only if this attempt's claim still holds it (fenced by ``claimed_at``)."""
    # claimed_at stays: it is when the last attempt was made, which the sweep looks at.
    return EmailVerification.objects.filter(pk=verification_id, state=State.SENDING, claimed_at=token).update(**fields)


def _mark_sent(verification_id: int, token: datetime) -> datetime:
    """Record an email the SMTP server accepted; keep trying through a short database outage.

    Giving up here would leave the row claimed, and once the claim went stale the email would be
    sent again. So the UPDATE is retried (reconnecting) for up to half the claim timeout, capped
    at 60 s — well inside the actor's time limit. Only a crash or a longer outage leaves the
    window in which an email can go out twice (with the same link).
    """
    now = timezone.now()
    deadline = time.monotonic() + min(60.0, settings.VERIFY_EMAIL_CLAIM_TIMEOUT / 2)
    delay = 0.1
    while True:
        try:
            marked = _finish(verification_id, token, state=State.SENT, sent_at=now, last_error="")
            break
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("email sent but not yet recorded; retrying", extra={"verification_id": verification_id})
            db_connection.close()  # drop the broken connection; the next query opens a new one
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    if not marked:
        logger.error(
            "email sent after this attempt's claim was taken over: it may go out twice",
            extra={"verification_id": verification_id},
        )
    return now


def _describe_smtp_error(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(
            f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
            for code, msg in exc.recipients.values()
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        msg = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return f"{exc.smtp_code} {msg}"
    return f"{type(exc).__name__}: {exc}"


def verification_mark_failed(*, verification_id: int, error: str) -> bool:
    """Record that no more attempts will be made (retries exhausted). Leaves a row alone that is
    being sent (a duplicate may be delivering it right now) or is already done."""
    return bool(_mark_failed(verification_id, error))


def verification_retry(*, verification_id: int) -> bool:
    """Send a failed verification again (same link), if it is still useful. True if queued."""
    with transaction.atomic():
        retried = EmailVerification.objects.filter(
            pk=verification_id,
            state=State.FAILED,
            expires_at__gt=timezone.now(),
            user__is_email_verified=False,
        ).update(state=State.PENDING, attempts=0, dispatched_at=timezone.now())
        if retried:
            transaction.on_commit(partial(verification_dispatch, verification_id), robust=True)
    return bool(retried)


REDISPATCH_BATCH = 500


def verification_redispatch_due() -> dict[str, int]:
    """One pass of the sweep: queue again every verification whose email should have gone by now.

    Covers whatever the queue lost: a sign-up committed while Redis was down, messages lost in
    a Redis restart, a retry that was never re-enqueued, a worker killed mid-send whose message
    did not come back. Rows are picked with ``SKIP LOCKED`` so concurrent sweeps split the work;
    the send-once claim makes an extra message harmless. Returns counts for the operator.
    """
    now = timezone.now()
    quiet = now - timedelta(seconds=settings.VERIFY_EMAIL_REDISPATCH_AFTER)
    unfinished = EmailVerification.objects.filter(state__in=[State.PENDING, State.SENDING])
    expired = unfinished.filter(expires_at__lte=now).update(
        state=State.FAILED, last_error="expired before it could be sent"
    )
    stalled = (
        Q(state=State.PENDING, attempts=0)  # never tried: the message never made it
        | Q(state=State.PENDING, claimed_at__lt=now - timedelta(seconds=settings.VERIFY_EMAIL_RETRY_STALL_AFTER))
        | Q(state=State.SENDING, claimed_at__lt=now - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT))
    )
    due = unfinished.filter(stalled, expires_at__gt=now, dispatched_at__lt=quiet)
    gave_up = due.filter(attempts__gte=settings.VERIFY_EMAIL_MAX_ATTEMPTS).update(
        state=State.FAILED, last_error=Concat(Value("gave up after the attempt limit: "), F("last_error"))
    )
    dispatched = 0
    while True:
        with transaction.atomic():
            ids = list(
                due.order_by("dispatched_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:REDISPATCH_BATCH]
            )
            if not ids:
                break
            EmailVerification.objects.filter(pk__in=ids).update(dispatched_at=now)
        for verification_id in ids:
            verification_dispatch(verification_id)
        dispatched += len(ids)
    counts = {"redispatched": dispatched, "expired": expired, "gave_up": gave_up}
    logger.info("redispatch sweep", extra=counts)
    return counts


# --- Verifying ----------------------------------------------------------------------------------
def verification_check(*, verification_id: int, code: str) -> EmailVerification:
    """Check a link without consuming it (for the confirm page). Raises ``InvalidVerificationCode``."""
    verification = EmailVerification.objects.select_related("user").filter(pk=verification_id).first()
    if (
        verification is None
        or not tokens.check_code(verification.pk, verification.nonce, code)
        or verification.verified_at is not None
        or verification.state == State.SUPERSEDED
        or verification.is_expired
        or verification.email.lower() != verification.user.email.lower()  # the address changed since
    ):
        raise InvalidVerificationCode
    return verification


def email_verify(*, verification_id: int, code: str) -> User:
    """Consume a verification link and mark the address verified, in one transaction.

    Single use is enforced by one conditional UPDATE; wrong, used, expired, replaced and
    unknown links all raise the same ``InvalidVerificationCode``.
    """
    verification = verification_check(verification_id=verification_id, code=code)
    now = timezone.now()
    with transaction.atomic():
        consumed = (
            EmailVerification.objects.filter(pk=verification.pk, verified_at__isnull=True, expires_at__gt=now)
            .exclude(state=State.SUPERSEDED)
            .update(state=State.VERIFIED, verified_at=now)
        )
        if not consumed:
            raise InvalidVerificationCode
        # Only if the account still has the address this link was sent to.
        if not User.objects.filter(pk=verification.user_id, email__iexact=verification.email).update(
            is_email_verified=True
        ):
            raise InvalidVerificationCode
    return User.objects.get(pk=verification.user_id)


def user_email_changed(*, user: User) -> None:
    """Staff changed an address: it is unverified until the person proves the new one."""
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(is_email_verified=False)
        user.is_email_verified = False
        EmailVerification.objects.filter(user=user, state__in=[State.PENDING, State.SENDING, State.SENT]).update(
            state=State.SUPERSEDED
        )
