"""How ``send_verify_email`` retries transient failures (SMTP 4xx, timeouts, database errors).

Read from settings (``VERIFY_EMAIL_MAX_RETRIES``, ``VERIFY_EMAIL_RETRY_MIN_BACKOFF_MS``,
``VERIFY_EMAIL_RETRY_MAX_BACKOFF_MS``) when the actor is declared. By default: exponential backoff
from 10 s (Dramatiq adds up to 2x jitter), capped at 15 min, 8 retries — the last retry starts at
most ~51 minutes after the first attempt, far inside the 24 h a link stays valid. A system check
(``tasks.checks``) refuses settings where retries could outlive the link.
"""

from django.conf import settings

QUEUE = "critical"
MAX_RETRIES: int = settings.VERIFY_EMAIL_MAX_RETRIES
MIN_BACKOFF_MS: int = settings.VERIFY_EMAIL_RETRY_MIN_BACKOFF_MS
MAX_BACKOFF_MS: int = settings.VERIFY_EMAIL_RETRY_MAX_BACKOFF_MS
# The SMTP timeout is 30 s by default; a stuck send is killed well after that.
TIME_LIMIT_MS = 120_000

# Periodic housekeeping runs on its own queue, so a backlog of emails never delays the sweep.
MAINTENANCE_QUEUE = "maintenance"
SWEEP_TIME_LIMIT_MS = 10 * 60_000


def worst_case_retry_span_ms(
    max_retries: int = MAX_RETRIES, min_backoff: int = MIN_BACKOFF_MS, max_backoff: int = MAX_BACKOFF_MS
) -> int:
    """Longest time from the first attempt to the start of the last retry (jitter included)."""
    return sum(min(2 * min_backoff * 2**attempt, max_backoff) for attempt in range(max_retries))
