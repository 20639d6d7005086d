"""The two scrape targets of a web process.

- ``GET /metrics``: django-prometheus's request, response and latency series (and the process's).
  Nothing on it depends on who signs up: no series moves differently for a sign-up or resend with a
  registered address than with a new one. With ``METRICS_TOKEN`` set it needs
  ``Authorization: Bearer <token>`` (else ``403``).
- ``GET /metrics/operator``: queue depths, dead letters, emails by kind and state, the oldest unsent
  email. These *would* tell a registered address from a new one, so they are for operators only:
  served only when ``METRICS_TOKEN`` is set, and only with that bearer token (else ``404``/``403``).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def _authorised(request: HttpRequest) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and constant_time_compare(token.strip(), settings.METRICS_TOKEN)


def _operator_registry() -> CollectorRegistry:
    from tasks.metrics import QueueCollector
    from users.metrics import EmailCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    registry.register(EmailCollector())
    return registry


@never_cache
@require_GET
def public(request: HttpRequest) -> HttpResponse:
    if settings.METRICS_TOKEN and not _authorised(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return ExportToDjangoView(request)


@never_cache
@require_GET
def operator(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        return HttpResponse("not found\n", status=404, content_type="text/plain")
    if not _authorised(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(_operator_registry()), content_type=CONTENT_TYPE_LATEST)
