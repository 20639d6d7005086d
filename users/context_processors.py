"""What the pages' layout needs: the bank's name (``SITE_NAME``), and — only where a page asks —
whether the logged-in user's own address stopped receiving our emails (a bounce or a complaint)."""

from __future__ import annotations

import functools

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from users.services import feedback


def _unreachable_address(request: HttpRequest) -> str:
    """The logged-in user's own address if it is suppressed, or ''. Never the address they are
    moving to: typing any address there must not tell whether the bank ever mailed it."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.email:
        return ""
    return str(user.email) if feedback.is_suppressed(user.email) else ""


def site(request: HttpRequest) -> dict[str, object]:
    # A callable: evaluated (one query) only by the templates that show it.
    return {
        "bank_name": settings.SITE_NAME,
        "unreachable_address": functools.partial(_unreachable_address, request),
        "session_ends_in": session_ends_in(request),
        "session_extensible": getattr(request, "browser_session_extensible", False),
        "session_id": getattr(request, "browser_session_id", ""),
    }


def session_ends_in(request: HttpRequest) -> int | None:
    """Seconds until a browser session ends without another request (users/middleware.py), for the
    layout's warning before it does (WCAG 2.2.1); None for anyone not logged in."""
    ends_at = getattr(request, "browser_session_ends_at", None)
    return None if ends_at is None else max(0, int((ends_at - timezone.now()).total_seconds()))
