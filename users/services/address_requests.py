"""Requests that name an address in a public form (a password reset, a new verification link).

Whether an address has an account must not show, not in the answer and not in its timing. So the
web request does the same work for every address: it records an ``AddressRequest`` row and queues
its id after commit — no lookup. A worker then processes the row (``request_process``): in one
transaction it locks the row if it is still unprocessed, runs the flow's own logic (lock the
user, the cooldown, queue the email: ``accounts.password_reset_for``,
``signup.verification_resend_for``) and marks the row processed, so a redelivered message does
nothing. The promise of the delivery engine holds one step earlier: a row first, then a message;
the sweep (``requests_redispatch``, run by ``delivery.redispatch_due``) queues again a request whose
message was lost, and deletes requests after ``ADDRESS_REQUEST_KEEP``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from users import dispatch, identity
from users.errors import AddressRequestGone
from users.models import AddressRequest

Kind = AddressRequest.Kind

# Requests are kept this long (for the operator's questions), then the sweep deletes them.
ADDRESS_REQUEST_KEEP = timedelta(days=7)
REDISPATCH_BATCH = 500


def request_record(*, kind: str, email: str) -> None:
    """Record that someone asked for ``kind`` for ``email`` and queue it after commit. The same
    statements whatever the address (an insert in a transaction); malformed addresses are dropped
    (the serializers refuse them anyway, and that depends on the spelling, not on any account)."""
    canonical = identity.canonical_email(email)
    if canonical is None:
        return
    with transaction.atomic():
        now = timezone.now()
        request = AddressRequest.objects.create(kind=kind, address=canonical, created_at=now, dispatched_at=now)
        dispatch.enqueue_on_commit(dispatch.PROCESS_ADDRESS_REQUEST, request.pk)


def request_process(*, request_id: int) -> bool:
    """Look a recorded request's address up and queue its email, if one is owed, at most once.

    False if it was processed already (a redelivered message, the sweep's second message). Raises
    ``AddressRequestGone`` when no such row exists.
    """
    with transaction.atomic():
        # A concurrent duplicate waits on the lock, then finds the row processed and does nothing.
        request = AddressRequest.objects.unprocessed().select_for_update().filter(pk=request_id).first()
        if request is None:
            if not AddressRequest.objects.filter(pk=request_id).exists():
                raise AddressRequestGone(f"no address request {request_id}")
            return False
        _flow(request.kind)(canonical=request.address)
        AddressRequest.objects.filter(pk=request.pk).update(processed_at=timezone.now())
    return True


def _flow(kind: str) -> Callable[..., None]:
    # The flows import this module (to record their requests): theirs are imported when needed.
    from users.services import accounts, signup

    return {Kind.PASSWORD_RESET: accounts.password_reset_for, Kind.VERIFICATION_RESEND: signup.verification_resend_for}[
        Kind(kind)
    ]


def requests_redispatch(now: datetime) -> dict[str, int]:
    """The sweep's share: queue again every request still unprocessed ``VERIFY_EMAIL_REDISPATCH_AFTER``
    after its message was queued (the message was lost), while it is younger than
    ``EMAIL_VERIFICATION_MAX_AGE`` (an older one is no longer worth an email); delete requests
    older than ``ADDRESS_REQUEST_KEEP``. Rows are picked with ``SKIP LOCKED`` (one a worker is
    processing right now is left alone); processing only once makes an extra message harmless."""
    quiet = now - timedelta(seconds=settings.VERIFY_EMAIL_REDISPATCH_AFTER)
    due = AddressRequest.objects.unprocessed().filter(
        dispatched_at__lt=quiet, created_at__gt=now - timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE)
    )
    requeued = 0
    while True:
        with transaction.atomic():
            ids = list(
                due.order_by("dispatched_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:REDISPATCH_BATCH]
            )
            if not ids:
                break
            AddressRequest.objects.filter(pk__in=ids).update(dispatched_at=now)
        for request_id in ids:
            dispatch.enqueue(dispatch.PROCESS_ADDRESS_REQUEST, request_id)
        requeued += len(ids)
    deleted, _ = AddressRequest.objects.filter(created_at__lt=now - ADDRESS_REQUEST_KEEP).delete()
    return {"requests_requeued": requeued, "requests_deleted": deleted}
