"""Emails by kind and state, and the oldest one not sent yet, for operators.

- ``simplebank_emails{kind,state}``: outbound emails by kind and state
- ``simplebank_email_oldest_unsent_age_seconds``: age of the oldest pending/sending email (0 if none)
- ``simplebank_email_stats_age_seconds``: how old the counts of finished emails are
- ``simplebank_email_feedback{kind,event}``: the mail provider's bounces, rejections and complaints
  by kind of email (as of the snapshot)

Served on ``/metrics/operator`` (bearer ``METRICS_TOKEN``), never on the public ``/metrics``: a
sign-up with a new address adds an email row that one with a registered address may not.

A scrape reads only small indexes: the unsent emails (pending, sending) and the oldest of them come
live from a partial index of unsent rows; the finished ones (sent, failed, superseded: millions, over
the years) come from a snapshot the scheduler takes every minute (``refresh_email_stats``) and
keeps in the shared cache, with its age exported. A scrape never counts the whole table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from django.core.cache import cache
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from users.models import DeliveryEvent, OutboundEmail

logger = logging.getLogger(__name__)

SNAPSHOT_KEY = "ops:email-stats"
FINISHED = [s for s in OutboundEmail.State.values if s not in OutboundEmail.UNFINISHED]
FEEDBACK = ("bounced", "rejected", "complained")


def email_stats_refresh() -> dict:
    """Count every email by kind and state (the scheduler, once a minute) and keep the counts."""
    counts = OutboundEmail.objects.values_list("kind", "state").annotate(n=Count("id")).order_by()
    reported = (
        DeliveryEvent.objects.filter(event_type__in=FEEDBACK)
        .values_list("email__kind", "event_type")
        .annotate(n=Count("id"))
        .order_by()
    )
    snapshot = {
        "at": time.time(),
        "counts": {f"{kind}:{state}": n for kind, state, n in counts},
        "feedback": {f"{kind}:{event}": n for kind, event, n in reported},
    }
    try:
        cache.set(SNAPSHOT_KEY, snapshot, timeout=None)
    except (RedisError, OSError):
        logger.warning("email stats: cache unreachable; snapshot not kept")
    return snapshot


def _snapshot(*, compute_missing: bool) -> dict | None:
    try:
        snapshot = cache.get(SNAPSHOT_KEY)
    except (RedisError, OSError):
        snapshot = None
    if snapshot is None and compute_missing:
        snapshot = email_stats_refresh()
    return snapshot


def email_stats(
    *, compute_missing: bool = False
) -> tuple[dict[tuple[str, str], int | None], float | None, float | None]:
    """Emails by (kind, state) — None where no snapshot has been taken yet —, the age in seconds of
    the oldest unsent one (None if none), and the age of the snapshot (None if none)."""
    unsent = OutboundEmail.objects.unfinished()
    live = {
        (kind, state): n for kind, state, n in unsent.values_list("kind", "state").annotate(n=Count("id")).order_by()
    }
    snapshot = _snapshot(compute_missing=compute_missing)
    kept = snapshot["counts"] if snapshot else None
    by_kind_state: dict[tuple[str, str], int | None] = {}
    for kind in OutboundEmail.Kind.values:
        for state in OutboundEmail.State.values:
            if state in OutboundEmail.UNFINISHED:
                by_kind_state[kind, state] = live.get((kind, state), 0)
            else:
                by_kind_state[kind, state] = kept.get(f"{kind}:{state}", 0) if kept is not None else None
    oldest = unsent.aggregate(at=Min("created_at"))["at"]
    oldest_age = (timezone.now() - oldest).total_seconds() if oldest else None
    snapshot_age = time.time() - snapshot["at"] if snapshot else None
    return by_kind_state, oldest_age, snapshot_age


class EmailCollector(Collector):
    def describe(self) -> Iterator[Metric]:
        # Registration asks for names only; without this it would call collect() (and query the
        # database) while the app registry is still loading.
        yield GaugeMetricFamily("simplebank_emails", "", labels=["kind", "state"])
        yield GaugeMetricFamily("simplebank_email_oldest_unsent_age_seconds", "")
        yield GaugeMetricFamily("simplebank_email_stats_age_seconds", "")
        yield GaugeMetricFamily("simplebank_email_feedback", "", labels=["kind", "event"])

    def collect(self) -> Iterator[Metric]:
        by_kind_state, oldest_age, snapshot_age = email_stats()
        states = GaugeMetricFamily(
            "simplebank_emails",
            "Outbound emails by kind and state (unsent ones live; finished ones as of the snapshot).",
            labels=["kind", "state"],
        )
        for (kind, state), count in by_kind_state.items():
            if count is not None:
                states.add_metric([kind, state], count)
        yield states
        yield GaugeMetricFamily(
            "simplebank_email_oldest_unsent_age_seconds",
            "Age of the oldest email not sent yet (0 when none).",
            value=oldest_age or 0.0,
        )
        snapshot = _snapshot(compute_missing=False)
        if snapshot is not None:
            reported = GaugeMetricFamily(
                "simplebank_email_feedback",
                "The mail provider's bounces, rejections and complaints, by kind of email (as of the snapshot).",
                labels=["kind", "event"],
            )
            kept = snapshot.get("feedback", {})
            for kind in OutboundEmail.Kind.values:
                for event in FEEDBACK:
                    reported.add_metric([kind, event], kept.get(f"{kind}:{event}", 0))
            yield reported
        if snapshot_age is not None:
            yield GaugeMetricFamily(
                "simplebank_email_stats_age_seconds",
                "Age of the counts of finished emails (the scheduler refreshes them every minute).",
                value=snapshot_age,
            )
