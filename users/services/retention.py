"""What the service keeps about log-ins, and for how long (docs/operations.md, "Retention").

Every log-in writes a session row, and every failed log-in an event, whoever sends it: without a
purge they grow for ever (a hostile review counted 20 user-less events a minute per client
address, and 4 rows per successful log-in). Kept for the life of the account: its security events
(the audit trail the owner and staff read). Deleted here, hourly, in batches:

- log-in sessions whose refresh tokens expired more than ``ENDED_SESSION_MAX_AGE`` ago (a session
  revoked or idle earlier goes at the same time: its ``expires_at`` is when it would have ended at
  the latest, an indexed column);
- events that name no account (a failed log-in with an unknown name), past
  ``ANONYMOUS_EVENT_MAX_AGE``: they have no owner to read them;
- the session engine's expired browser sessions (what ``manage.py clearsessions`` does).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from importlib import import_module

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from users.models import LoginSession, SecurityEvent

logger = logging.getLogger(__name__)

BATCH = 1000


def history_purge(*, now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    sessions = _delete_in_batches(
        LoginSession.objects.filter(expires_at__lt=now - timedelta(seconds=settings.ENDED_SESSION_MAX_AGE))
    )
    events = _delete_in_batches(
        SecurityEvent.objects.filter(
            user__isnull=True, at__lt=now - timedelta(seconds=settings.ANONYMOUS_EVENT_MAX_AGE)
        )
    )
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
    counts = {"sessions": sessions, "anonymous_events": events}
    logger.info("log-in history purged", extra=counts)
    return counts


def _delete_in_batches(rows: QuerySet) -> int:
    """Short transactions, so the purge never holds many row locks at once."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(rows.order_by("pk").values_list("pk", flat=True)[:BATCH])
            if not ids:
                return deleted
            rows.model.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
