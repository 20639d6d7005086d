"""django-dramatiq's task list only makes sense while something fills it."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django_dramatiq.models import Task

if not settings.DRAMATIQ_TASK_ADMIN and admin.site.is_registered(Task):
    # Nothing fills the task table then; an always-empty list would only mislead.
    admin.site.unregister(Task)
