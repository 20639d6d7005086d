"""An overview for operators in the admin: queue depths, dead letters, verification emails."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django_dramatiq.models import Task

from tasks.metrics import queue_stats, verification_stats


def queue_overview(request: HttpRequest) -> HttpResponse:
    by_state, oldest_age = verification_stats()
    context = {
        **admin.site.each_context(request),
        "title": "Queues and verification emails",
        "queues": queue_stats(),
        "by_state": by_state,
        "oldest_age": oldest_age,
    }
    return TemplateResponse(request, "admin/queue_overview.html", context)


if not settings.DRAMATIQ_TASK_ADMIN and admin.site.is_registered(Task):
    # Nothing fills the task table then; an always-empty list would only mislead.
    admin.site.unregister(Task)
