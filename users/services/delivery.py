"""The delivery engine: every email the service owes someone — queue, claim, send, record, sweep.

An email is an ``OutboundEmail`` row first (inserted in the caller's transaction) and a queue
message second (sent after commit through ``users.dispatch``). A worker claims the row with one
conditional UPDATE (PostgreSQL: ``UPDATE … RETURNING`` the row, its user and its link, so an email
costs two statements: the claim and "sent"); the ``claimed_at`` it writes fences every later write
of that attempt. The SMTP answer decides what happens next (``users.smtp``). Whatever the queue
loses, ``redispatch_due`` finds by its row and queues again.

Every statement here that changes an email's state locks the email's user first, in the same
statement (``_owners_first``, the claim's CTE): the database keeps each user's latest verification
state from those writes (a trigger, migration 0007), and the account flows lock the user and then
its emails — one order for everyone, so no deadlock.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import smtplib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from anymail.exceptions import AnymailRecipientsRefused
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, transaction
from django.db import connection as db_connection
from django.db.models import BooleanField, Exists, F, OuterRef, Q, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone
from django_redis.exceptions import ConnectionInterrupted
from prometheus_client import Counter
from redis.exceptions import RedisError

from users import dispatch, mail, smtp
from users.errors import EmailBusy, EmailExpired, EmailGone, EmailNotWanted, EmailSuppressed, PermanentSendError
from users.models import EmailVerification, OutboundEmail, OutboundEmailQuerySet, SecurityEvent, Suppression, User
from users.services import address_requests, emails

logger = logging.getLogger(__name__)

Kind, State = OutboundEmail.Kind, OutboundEmail.State
LINK_KINDS = (Kind.VERIFICATION, Kind.EMAIL_CHANGE)
# What counts toward each cooldown (at most one email per address per VERIFY_EMAIL_RESEND_COOLDOWN
# and flow): sign-up and resend links; "account exists" notices; address-change links to the
# address; password resets.
LINK_COOLDOWN = [Kind.VERIFICATION]
NOTICE_COOLDOWN = [Kind.ACCOUNT_EXISTS]
CHANGE_COOLDOWN = [Kind.EMAIL_CHANGE]
RESET_COOLDOWN = [Kind.PASSWORD_RESET]
# Notices that may go to an address that is not (or no longer) the account's: the current address
# told of a change to a new one, the old address told it was replaced.
NOTICES_TO_ANY_ADDRESS = (Kind.EMAIL_CHANGE_NOTICE, Kind.SECURITY_NOTICE)

# Counted where emails are sent: the worker's exporter (its processes share the counters through
# PROMETHEUS_MULTIPROC_DIR files), not the web's /metrics, so no registry here.
SMTP_CONFIGURATION_ERRORS = Counter(
    "simplebank_smtp_configuration_errors",
    "SMTP answers that blame our side (credentials, sender, HELO): retried, and logged at ERROR.",
    registry=None,
)


# --- Queueing ------------------------------------------------------------------------------------
def email_queue(
    *,
    kind: str,
    user: User,
    recipient: str,
    verification: EmailVerification | None = None,
    expires_at: datetime | None = None,
    event: SecurityEvent | None = None,
) -> OutboundEmail:
    """Record an email owed to ``recipient``; it is queued once the caller's transaction commits."""
    now = timezone.now()
    email = OutboundEmail.objects.create(
        kind=kind,
        user=user,
        verification=verification,
        event=event,
        recipient=recipient,
        created_at=now,
        dispatched_at=now,
        expires_at=expires_at or now + timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE),
    )
    dispatch.enqueue_on_commit(*_task(email.pk, email.verification_id))
    return email


def _task(email_id: int, verification_id: int | None) -> tuple[str, int]:
    """Link emails go by the contract's ``send_verify_email(verification_id)``; the rest by id."""
    if verification_id is not None:
        return dispatch.SEND_VERIFY_EMAIL, verification_id
    return dispatch.SEND_EMAIL, email_id


def recently_mailed(canonical: str, kinds: Sequence[str]) -> bool:
    """Has this address been sent one of these kinds within the cooldown? The rows decide (the
    cache is not needed, so the cooldown holds when the cache is down); the caller holds the lock
    on the address's owner, so two requests can't both pass."""
    since = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_RESEND_COOLDOWN)
    return OutboundEmail.objects.to_address(canonical, since=since, kinds=kinds).exists()


def address_lock(canonical: str) -> None:
    """Inside a transaction: the lock ``recently_mailed`` needs for an address nobody owns (no user
    row to lock): a PostgreSQL advisory lock on it until the commit. Ten accounts asking for one free
    address at once each passed the cooldown (a race review). SQLite has one writer at a time."""
    if db_connection.vendor == "postgresql":
        with db_connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"address:{canonical}"])


def supersede(emails_qs: OutboundEmailQuerySet, reason: str) -> int:
    """No longer wanted: rows nobody is sending now (pending, stale claims) and failed ones, so a
    later "retry failed" can't mail them either."""
    stale = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT)
    unclaimed = emails_qs.unclaimed(stale=stale, failed_too=True)
    return _owners_first(unclaimed).update(state=State.SUPERSEDED, last_error=reason)


def _owners_first(
    emails: OutboundEmailQuerySet, user_id: int | None = None, *, skip_locked: bool = False
) -> OutboundEmailQuerySet:
    """The same rows, for an UPDATE that locks their users before them (PostgreSQL).

    Changing a verification email's state also updates its user's ``verification_state`` (a
    trigger, migration 0007). The account flows lock the user and then its emails; a statement that
    locked an email and then waited for its user could deadlock with one of them. So every state
    change here first locks the users (``FOR NO KEY UPDATE``, in a sub-select that runs before
    the UPDATE takes any email row) — one statement still. SQLite has one writer at a time.
    ``user_id``: the rows are that user's (one email, whose owner the caller knows): a clause
    compiled once will do, on the hot path.
    ``skip_locked``: leave out the emails of users someone holds (the sweep: an account flow may
    hold two users, which a statement locking many could otherwise meet in the other order).
    """
    if db_connection.vendor != "postgresql":
        return emails
    if user_id is not None:
        return emails.filter(RawSQL(_owner_sql(), (user_id,), BooleanField()))  # noqa: S611 - constant
    owners = User.objects.filter(pk__in=emails.values("user_id")).values("pk").order_by("pk")
    sql, params = owners.query.sql_with_params()
    column = f"{db_connection.ops.quote_name(OutboundEmail._meta.db_table)}.{db_connection.ops.quote_name('user_id')}"
    lock = "FOR NO KEY UPDATE SKIP LOCKED" if skip_locked else "FOR NO KEY UPDATE"
    locked = RawSQL(f"{column} IN ({sql} {lock})", params, BooleanField())  # noqa: S611 - compiled SQL
    return emails.filter(locked)


@functools.cache
def _owner_sql() -> str:
    qn = db_connection.ops.quote_name
    o, u = qn(OutboundEmail._meta.db_table), qn(User._meta.db_table)
    return f"{o}.user_id IN (SELECT {u}.id FROM {u} WHERE {u}.id = %s FOR NO KEY UPDATE)"  # noqa: S608


# --- Sending -------------------------------------------------------------------------------------
def deliver(*, email_id: int | None = None, verification_id: int | None = None) -> tuple[OutboundEmail, bool]:
    """Send one email at most once, by its id or by its verification's. Returns ``(email, sent_now)``.

    Raises a ``DeliveryError`` subclass for permanent outcomes and ``EmailBusy`` when another
    delivery holds a fresh claim; transient SMTP and database errors propagate (the actor retries).
    """
    key = _key(email_id, verification_id)
    email, token = _claim(key)
    if token is None:  # already sent
        return email, False
    if (noted := _noted_sent(email)) is not None:  # an earlier attempt sent it, PostgreSQL was out
        _finish(email, token, state=State.SENT, sent_at=noted[0], last_error="", provider_message_id=noted[1])
        _forget_sent(email)
        logger.warning(
            "email had been sent during a database outage: recorded now, not sent again", extra={"email_id": email.pk}
        )
        email.state, email.sent_at, email.provider_message_id = State.SENT, noted[0], noted[1]
        return email, False
    if reason := _unwanted(email):
        _finish(email, token, state=State.SUPERSEDED, last_error=reason)
        raise EmailNotWanted(f"{email.kind} email {email.pk}: {reason}")
    if email.suppressed_now:
        _finish(email, token, state=State.SUPPRESSED, last_error=SUPPRESSED)
        raise EmailSuppressed(f"{email.kind} email {email.pk}: {SUPPRESSED}")
    try:
        message = emails.build(email)
        mail.send(message)
    except BaseException as exc:
        _record_failure(email, token, exc)
        raise
    # An anymail backend says what the provider calls it (its events may name it so); SMTP: None.
    email.provider_message_id = _provider_id(message)
    email.sent_at = _mark_sent(email, token)
    email.state = State.SENT
    return email, True


SUPPRESSED = "not sent: the address is suppressed (the provider reported a bounce or a complaint)"


def _provider_id(message: Any) -> str | None:
    """The provider's id for a message to one recipient, as text: most give a string, some a number
    (Postal; anymail's test backend, whose first message is 0). None without one, or with several
    (a set: one per recipient)."""
    status = getattr(message, "anymail_status", None)
    found = getattr(status, "message_id", None)
    if isinstance(found, bool) or not isinstance(found, str | int) or found == "":
        return None
    return str(found)[:255]


def _key(email_id: int | None, verification_id: int | None) -> dict[str, int]:
    if verification_id is not None:
        return {"verification_id": verification_id}
    if email_id is None:
        raise TypeError("an email id or a verification id is needed")
    return {"pk": email_id}


def _unwanted(email: OutboundEmail) -> str:
    """Why this email must not go out now ('' if it should): checked after the claim, so it sees
    the latest state of its user and its link."""
    user, link = email.user, email.verification
    address = user.email.lower()
    if email.kind in LINK_KINDS:
        if link is None or link.state != EmailVerification.State.ACTIVE:
            return "the link was used or replaced"
        target = address if email.kind == Kind.VERIFICATION else (user.pending_email).lower()
        if link.email.lower() != target:
            return "the address changed"
        if email.kind == Kind.VERIFICATION and user.is_email_verified:
            return "the address is verified already"
    elif email.kind not in NOTICES_TO_ANY_ADDRESS and email.recipient.lower() != address:
        return "the address changed"
    if not user.is_active and email.kind not in NOTICES_TO_ANY_ADDRESS:
        # Links and the like are not for an inactive account; what it is told of changes to it is
        # (staff ending a compromised account must not silence the owner's notices).
        return "the account is inactive"
    return ""


def _record_failure(email: OutboundEmail, token: datetime, exc: BaseException) -> None:
    if isinstance(exc, AnymailRecipientsRefused):  # the provider refused the address for good
        _finish(email, token, state=State.FAILED, last_error=str(exc)[:2000])
        raise PermanentSendError(str(exc)) from exc
    if not isinstance(exc, Exception) or not _is_smtp_error(exc):
        # Anything else (a template error, the time limit): give the row back for the retry.
        _finish(email, token, state=State.PENDING, last_error=repr(exc)[:2000])
        return
    answer = smtp.classify(exc)
    if answer.verdict is smtp.Verdict.PERMANENT:
        _finish(email, token, state=State.FAILED, last_error=answer.description[:2000])
        raise PermanentSendError(answer.description) from exc
    if answer.verdict is smtp.Verdict.CONFIGURATION:
        SMTP_CONFIGURATION_ERRORS.inc()
        logger.error(
            "SMTP configuration problem: the server refuses us, not the address; retrying",
            extra={"email_id": email.pk, "answer": answer.description},
        )
    _finish(email, token, state=State.PENDING, last_error=answer.description[:2000])


def _is_smtp_error(exc: Exception) -> bool:
    return isinstance(exc, smtplib.SMTPException | OSError)  # OSError: timeouts, refusals, TLS


def _claim(key: dict[str, int]) -> tuple[OutboundEmail, datetime | None]:
    """Take the right to send this email, with one conditional UPDATE.

    Returns the row and the claim's token (the ``claimed_at`` it wrote), or no token when it was
    sent already. Every later write of this attempt is fenced by that token, so a worker whose
    claim went stale can never release or finish a claim another worker has since taken.
    """
    for _ in range(3):  # the row may change between the UPDATE and the read: look again
        now = timezone.now()
        stale = now - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT)
        claimed = _claim_update(key, now, stale)
        if claimed is not None:
            return claimed, now
        # Not claimable: find out why (the uncommon path, one more read).
        email = OutboundEmail.objects.select_related("user", "verification").filter(**key).first()
        if email is None:
            raise EmailGone(f"no email for {key}")
        if email.state in (State.SENT, State.UNDELIVERABLE):  # sent (and maybe bounced since)
            return email, None
        if email.state == State.SUPPRESSED:
            raise EmailSuppressed(f"{email.kind} email {email.pk}: {SUPPRESSED}")
        if email.state == State.SUPERSEDED:
            raise EmailNotWanted(f"{email.kind} email {email.pk} was superseded: {email.last_error}")
        if email.state == State.FAILED:
            raise PermanentSendError(f"{email.kind} email {email.pk} already failed: {email.last_error}")
        if email.state == State.SENDING and email.claimed_at and email.claimed_at >= stale:
            raise EmailBusy(f"{email.kind} email {email.pk} is being sent by another delivery")
        if email.expires_at <= now:
            _mark_failed(email, "expired before it could be sent")  # never mail a dead link
            raise EmailExpired(f"{email.kind} email {email.pk} expired before it could be sent")
        if email.attempts >= settings.VERIFY_EMAIL_MAX_ATTEMPTS:
            # Counts every delivery, redeliveries of a killed worker's message included.
            error = f"gave up after {email.attempts} attempts: {email.last_error or 'no answer'}"
            _mark_failed(email, error)
            raise PermanentSendError(error)
    raise EmailBusy(f"email {key} keeps changing under this delivery")


def _claim_update(key: dict[str, int], now: datetime, stale: datetime) -> OutboundEmail | None:
    """The conditional UPDATE that takes a claimable row; returns it (with user and link) if it did."""
    if update_returning_supported():
        return _claim_update_returning(key, now=now, stale=stale)
    claimable = OutboundEmail.objects.claimable(now=now, stale=stale).filter(**key)
    if not _owners_first(claimable).update(state=State.SENDING, claimed_at=now, attempts=F("attempts") + 1):
        return None
    # Whether the address is suppressed, in the same read (the RETURNING path asks in its UPDATE).
    suppressed = Exists(Suppression.objects.active().filter(address=OuterRef("recipient_canonical")))
    claimed = OutboundEmail.objects.select_related("user", "verification").annotate(suppressed=suppressed)
    email = claimed.filter(**key).first()
    if email is not None:
        email.suppressed_now = bool(getattr(email, "suppressed", False))
    return email


def update_returning_supported() -> bool:
    return db_connection.vendor == "postgresql"


# Stand-ins the claim's WHERE clause is compiled with once; each claim puts its own values in their
# places (compiling the QuerySet anew costs ~0.7 ms, a third of an email).
_NOW, _STALE = datetime(1901, 1, 1, tzinfo=UTC), datetime(1902, 1, 1, tzinfo=UTC)
_KEY, _MAX = 9_190_101_190_101, 1_901_019_019


@functools.cache
def _claim_returning_sql(key_name: str) -> tuple[str, tuple[Any, ...], dict[Any, list[int]]]:
    """The UPDATE … RETURNING text for a claim by ``key_name``, its parameters with stand-ins, and
    where each stand-in sits. The WHERE clause is the ``claimable`` QuerySet compiled by the ORM
    (one spelling of the rule); only identifiers from the models' metadata go around it."""
    with_link = key_name == "verification_id"
    claimable = OutboundEmail.objects.claimable(now=_NOW, stale=_STALE, max_attempts=_MAX).filter(**{key_name: _KEY})
    where, where_params = claimable.query.get_compiler(connection=db_connection).compile(claimable.query.where)
    qn = db_connection.ops.quote_name
    models_ = [OutboundEmail, User] + ([EmailVerification] if with_link else [])
    o, u, v, s = (qn(m._meta.db_table) for m in (OutboundEmail, User, EmailVerification, Suppression))
    tables = {OutboundEmail: o, User: "owner", EmailVerification: v}
    columns = [f"{tables[m]}.{qn(f.column)}" for m in models_ for f in m._meta.concrete_fields]
    # The user row is locked first (the CTE runs before the UPDATE takes the email's row): the
    # order the account flows lock in (see _owners_first). Its columns come from that locked,
    # latest version of the row.
    key_column = qn(OutboundEmail._meta.pk.column if key_name == "pk" else key_name)  # or verification_id
    sql = (
        f"WITH owner AS MATERIALIZED (SELECT {u}.* FROM {u} WHERE {u}.id IN "  # noqa: S608 - identifiers
        f"(SELECT {o}.user_id FROM {o} WHERE {o}.{key_column} = %s) FOR NO KEY UPDATE) "
        f"UPDATE {o} SET state = %s, claimed_at = %s, attempts = {o}.attempts + 1 "
        f"FROM owner{f', {v}' if with_link else ''} WHERE owner.id = {o}.user_id "
        f"{f'AND {v}.id = {o}.verification_id ' if with_link else ''}AND {where} "
        f"RETURNING {', '.join(columns)}, "
        # Whether the address is suppressed (a bounce or complaint): one probe of a unique index.
        f"EXISTS (SELECT 1 FROM {s} WHERE {s}.address = {o}.recipient_canonical AND {s}.lifted_at IS NULL)"
    )
    params = (_KEY, State.SENDING.value, _NOW, *where_params)
    places = {marker: [i for i, p in enumerate(params) if p == marker] for marker in (_NOW, _STALE, _KEY, _MAX)}
    if [len(places[marker]) for marker in (_NOW, _STALE, _KEY, _MAX)] != [2, 1, 2, 1]:
        raise RuntimeError(f"the claim's parameters moved: {params!r}")  # a Django upgrade changed them
    return sql, params, places


def _claim_update_returning(key: dict[str, int], *, now: datetime, stale: datetime) -> OutboundEmail | None:
    """PostgreSQL: the same UPDATE, returning the row, its user (and its link) in the statement.

    The ORM has no UPDATE … RETURNING. A test pins the statements per email, and the portable path
    above is tested too (and checked to load the same objects).
    """
    [(key_name, key_value)] = key.items()
    sql, template, places = _claim_returning_sql(key_name)
    params: list[Any] = list(template)
    values = {_NOW: now, _STALE: stale, _KEY: key_value, _MAX: settings.VERIFY_EMAIL_MAX_ATTEMPTS}
    for marker, positions in places.items():
        for position in positions:
            params[position] = values[marker]
    with db_connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    models_ = [OutboundEmail, User] + ([EmailVerification] if key_name == "verification_id" else [])
    loaded = []
    for model in models_:
        fields = model._meta.concrete_fields
        values_, row = row[: len(fields)], row[len(fields) :]
        # from_db applies each field's database converters, as a normal query would.
        loaded.append(model.from_db(db_connection.alias, [f.attname for f in fields], _converted(fields, values_)))
    email = cast("OutboundEmail", loaded[0])
    email.suppressed_now = bool(row[0])
    email.user = cast("User", loaded[1])
    if len(loaded) == 3:
        email.verification = cast("EmailVerification", loaded[2])
    return email


def _converted(fields, values) -> list:
    out = []
    for field, value in zip(fields, values, strict=True):
        column = field.get_col(field.model._meta.db_table)
        converters = db_connection.ops.get_db_converters(column) + column.get_db_converters(db_connection)
        for converter in converters:
            value = converter(value, column, db_connection)
        out.append(value)
    return out


def _finish(email: OutboundEmail, token: datetime, **fields: object) -> int:
    """Update the row only if this attempt's claim still holds it (fenced by ``claimed_at``)."""
    # claimed_at stays: it is when the last attempt was made, which the sweep looks at.
    attempt = OutboundEmail.objects.filter(pk=email.pk, state=State.SENDING, claimed_at=token)
    return _owners_first(attempt, email.user_id).update(**fields)


def _mark_sent(email: OutboundEmail, token: datetime) -> datetime:
    """Record an email the SMTP server accepted; keep trying through a short database outage.

    Giving up here would leave the row claimed, and once the claim went stale the email would be
    sent again. So the UPDATE is retried (reconnecting) for up to half the claim timeout, capped
    at 60 s — well inside the actor's time limit. Only a crash or a longer outage leaves the
    window in which an email can go out twice (with the same link and Message-ID).
    """
    now = timezone.now()
    deadline = time.monotonic() + min(60.0, settings.VERIFY_EMAIL_CLAIM_TIMEOUT / 2)
    delay = 0.1
    while True:
        try:
            marked = _finish(
                email,
                token,
                state=State.SENT,
                sent_at=now,
                last_error="",
                provider_message_id=email.provider_message_id,
            )
            break
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                _note_sent(email, now)
                raise
            logger.warning("email sent but not yet recorded; retrying", extra={"email_id": email.pk})
            db_connection.close()  # drop the broken connection; the next query opens a new one
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    if not marked:
        # The provider's report settled the row first (a delivery time, or undeliverable); any other
        # event (queued, opened…) settles nothing, and a claim taken over is the alarm it says.
        by_report = Q(delivered_at__isnull=False) | Q(state=State.UNDELIVERABLE)
        if OutboundEmail.objects.filter(by_report, pk=email.pk).exists():
            logger.info("email sent; the provider's report had already settled its row", extra={"email_id": email.pk})
        else:
            logger.error(
                "email sent after this attempt's claim was taken over: it may go out twice",
                extra={"email_id": email.pk},
            )
    return now


# An email the SMTP server accepted while PostgreSQL stayed out longer than _mark_sent waits: noted
# in Redis (the cache), where the next attempt on its row — the actor's retry or the sweep's, once the
# claim is stale — looks before sending, and records it instead of sending it again.
SENT_NOTE_TTL_S = 7 * 24 * 3600
_CACHE_DOWN = (RedisError, OSError, ConnectionInterrupted)


def _sent_note_key(email: OutboundEmail) -> str:
    # The row's creation time too: a note must never speak for another row that came to have the
    # same id (a database restored or failed over to a replica behind, a deployment sharing Redis).
    return f"delivery:sent:{email.pk}:{email.created_at.timestamp():.6f}"


def _note_sent(email: OutboundEmail, sent_at: datetime) -> None:
    note = {"sent_at": sent_at.isoformat(), "provider_message_id": email.provider_message_id}
    try:
        cache.set(_sent_note_key(email), note, SENT_NOTE_TTL_S)
    except _CACHE_DOWN:  # the cache is down too: nothing left to remember it by
        logger.exception(
            "email sent, and neither recorded nor noted: it may go out twice", extra={"email_id": email.pk}
        )
    else:
        logger.error(
            "email sent but not recorded (database out): noted for the next attempt", extra={"email_id": email.pk}
        )


def _noted_sent(email: OutboundEmail) -> tuple[datetime, str | None] | None:
    """When an earlier attempt sent this email without recording it, and the provider's id. A first
    attempt asks nothing (no round trip on the hot path): only a retry or a redispatch can follow one."""
    if email.attempts <= 1:
        return None
    try:
        note = cache.get(_sent_note_key(email))
    except _CACHE_DOWN:
        logger.warning("could not ask the cache whether this email went out already", extra={"email_id": email.pk})
        return None
    if not isinstance(note, dict):
        return None
    return datetime.fromisoformat(note["sent_at"]), note.get("provider_message_id")


def _forget_sent(email: OutboundEmail) -> None:
    with contextlib.suppress(*_CACHE_DOWN):  # it expires on its own; the row says sent: nobody looks again
        cache.delete(_sent_note_key(email))


def _mark_failed(email: OutboundEmail, error: str) -> int:
    """Fail a row nobody is sending: pending, or claimed by a worker whose claim went stale."""
    stale = timezone.now() - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT)
    unclaimed = OutboundEmail.objects.unclaimed(stale=stale).filter(pk=email.pk)
    return _owners_first(unclaimed, email.user_id).update(state=State.FAILED, last_error=error[:2000])


# --- After the queue gave up, and for operators ---------------------------------------------------
def mark_failed(*, email_id: int | None = None, verification_id: int | None = None, error: str) -> bool:
    """Retries exhausted: no more attempts will be made. Leaves alone a row being sent (a duplicate
    may be delivering it right now) or already done."""
    key = _key(email_id, verification_id)
    email = OutboundEmail.objects.filter(**key).only("pk", "user_id").first()
    return email is not None and bool(_mark_failed(email, error))


def email_retry(*, email_id: int) -> bool:
    """Send a failed email again (same link), if it is still wanted. True if queued.

    Still wanted means what ``deliver`` checks: the link alive and the address still the user's
    (an address changed since, by staff or by its owner, gets nothing), the email not expired.
    """
    email = OutboundEmail.objects.select_related("user", "verification").filter(pk=email_id).first()
    if email is None or email.state != State.FAILED or email.expires_at <= timezone.now() or _unwanted(email):
        return False
    if Suppression.objects.covering(email.recipient).exists():
        return False  # the provider refused the address: staff lift the suppression first
    with transaction.atomic():
        retried = _owners_first(OutboundEmail.objects.filter(pk=email_id, state=State.FAILED), email.user_id).update(
            state=State.PENDING, attempts=0, dispatched_at=timezone.now()
        )
        if retried:
            dispatch.enqueue_on_commit(*_task(email.pk, email.verification_id))
    return bool(retried)


REDISPATCH_BATCH = 500


def redispatch_due() -> dict[str, int]:
    """One pass of the sweep: queue again every email that should have gone by now, of every kind.

    Covers whatever the queue lost: a use case committed while Redis was down, messages lost in
    a Redis restart, a retry that was never re-enqueued, a worker killed mid-send whose message
    did not come back. Rows are picked with ``SKIP LOCKED`` so concurrent sweeps split the work;
    the send-once claim makes an extra message harmless. Also queues again the password-reset and
    resend requests whose message was lost, and deletes old ones (``address_requests``). Returns
    counts for the operator.
    """
    now = timezone.now()
    quiet = now - timedelta(seconds=settings.VERIFY_EMAIL_REDISPATCH_AFTER)
    unfinished = OutboundEmail.objects.unfinished()
    # Emails of users an account flow holds right now wait for the next pass.
    # (Not one a worker is sending right now: it claimed the row before the expiry.)
    claimed_now = Q(state=State.SENDING, claimed_at__gte=now - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT))
    expired = _owners_first(unfinished.filter(expires_at__lte=now).exclude(claimed_now), skip_locked=True).update(
        state=State.FAILED, last_error="expired before it could be sent"
    )
    stalled = (
        Q(state=State.PENDING, attempts=0)  # never tried: the message never made it
        | Q(state=State.PENDING, claimed_at__lt=now - timedelta(seconds=settings.VERIFY_EMAIL_RETRY_STALL_AFTER))
        | Q(state=State.SENDING, claimed_at__lt=now - timedelta(seconds=settings.VERIFY_EMAIL_CLAIM_TIMEOUT))
    )
    due = unfinished.filter(stalled, expires_at__gt=now, dispatched_at__lt=quiet)
    gave_up = _owners_first(due.filter(attempts__gte=settings.VERIFY_EMAIL_MAX_ATTEMPTS), skip_locked=True).update(
        state=State.FAILED, last_error=Concat(Value("gave up after the attempt limit: "), F("last_error"))
    )
    dispatched = 0
    while True:
        with transaction.atomic():
            rows = list(
                due.order_by("dispatched_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", "verification_id")[:REDISPATCH_BATCH]
            )
            if not rows:
                break
            OutboundEmail.objects.filter(pk__in=[pk for pk, _ in rows]).update(dispatched_at=now)
        for email_id, verification_id in rows:
            dispatch.enqueue(*_task(email_id, verification_id))
        dispatched += len(rows)
    counts = {"redispatched": dispatched, "expired": expired, "gave_up": gave_up}
    # A reset or resend request whose message was lost has no email row yet: its own row says so.
    counts |= address_requests.requests_redispatch(now)
    logger.info("redispatch sweep", extra=counts)
    return counts


def retry_dead_letter(actor_name: str, args: tuple) -> str:
    """A dead-lettered email message is retried through its row (``email_retry``), since the actor
    would otherwise refuse the failed row again. Says what was done, for the operator."""
    argument = args[0] if args else None
    if actor_name not in dispatch.EMAIL_PAYLOAD_NAMES or isinstance(argument, bool) or not isinstance(argument, int):
        return "not an email message; dropped"
    key = {"pk": argument} if actor_name == dispatch.SEND_EMAIL else {"verification_id": argument}
    email_id = OutboundEmail.objects.filter(**key).values_list("pk", flat=True).first()
    if email_id is not None and email_retry(email_id=email_id):
        return "email retried"
    return "email no longer needs sending"


# --- What the mail provider reported (users.services.feedback) -----------------------------------------
def feedback_undeliverable(email: OutboundEmail, *, reason: str) -> None:
    """A bounce, rejection or complaint: the email is ``undeliverable`` — whatever its row said, a
    worker that died after the provider's 250 included (the sweep then never sends it again)."""
    now = timezone.now()
    done = OutboundEmail.objects.filter(pk=email.pk).exclude(state=State.UNDELIVERABLE)
    _owners_first(done, email.user_id).update(
        state=State.UNDELIVERABLE, last_error=reason[:2000], sent_at=Coalesce(F("sent_at"), Value(now))
    )


def feedback_delivered(email: OutboundEmail, *, at: datetime) -> None:
    """Delivered: its time; an email still ``sending`` or ``pending`` (the provider was faster
    than the row, or a worker died after the 250) is marked sent, so it is never sent again."""
    OutboundEmail.objects.filter(pk=email.pk, delivered_at__isnull=True).update(delivered_at=at)
    unfinished = OutboundEmail.objects.filter(pk=email.pk, state__in=OutboundEmail.UNFINISHED)
    _owners_first(unfinished, email.user_id).update(state=State.SENT, sent_at=at, last_error="")
