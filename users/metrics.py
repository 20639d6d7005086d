"""Emails by kind and state, and the oldest one not sent yet, for operators.

- ``simplebank_emails{kind,state}``: outbound emails by kind and state
- ``simplebank_email_oldest_unsent_age_seconds``: age of the oldest pending/sending email (0 if none)

Served on ``/metrics/operator`` (bearer ``METRICS_TOKEN``), never on the public ``/metrics``: a
sign-up with a new address adds an email row that one with a registered address may not.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from users.models import OutboundEmail


def email_stats() -> tuple[dict[tuple[str, str], int], float | None]:
    """Emails by (kind, state), and the age in seconds of the oldest unsent one (None if none)."""
    counts = {
        (kind, state): n
        for kind, state, n in OutboundEmail.objects.values_list("kind", "state").annotate(n=Count("id")).order_by()
    }
    by_kind_state = {
        (kind, state): counts.get((kind, state), 0)
        for kind in OutboundEmail.Kind.values
        for state in OutboundEmail.State.values
    }
    oldest = OutboundEmail.objects.unfinished().aggregate(at=Min("created_at"))["at"]
    return by_kind_state, (timezone.now() - oldest).total_seconds() if oldest else None


class EmailCollector(Collector):
    def describe(self) -> Iterator[Metric]:
        # Registration asks for names only; without this it would call collect() (and query the
        # database) while the app registry is still loading.
        yield GaugeMetricFamily("simplebank_emails", "", labels=["kind", "state"])
        yield GaugeMetricFamily("simplebank_email_oldest_unsent_age_seconds", "")

    def collect(self) -> Iterator[Metric]:
        by_kind_state, oldest_age = email_stats()
        states = GaugeMetricFamily("simplebank_emails", "Outbound emails by kind and state.", labels=["kind", "state"])
        for (kind, state), count in by_kind_state.items():
            states.add_metric([kind, state], count)
        yield states
        yield GaugeMetricFamily(
            "simplebank_email_oldest_unsent_age_seconds",
            "Age of the oldest email not sent yet (0 when none).",
            value=oldest_age or 0.0,
        )
