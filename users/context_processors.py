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
        **browser_session_state(request),
    }


def browser_session_state(request: HttpRequest) -> dict[str, object]:
    """The logged-in browser's session (users/middleware.py), for the layout's warning before it
    ends (WCAG 2.2.1): its id, seconds until it ends without another request, and whether activity
    could put that off (not at REFRESH_TOKEN_LIFETIME). ``session_ends_in`` None: nobody logged in."""
    row = getattr(request, "browser_session", None)
    if row is None:
        return {"session_ends_in": None, "session_extensible": False, "session_id": ""}
    return {
        "session_ends_in": max(0, int((row.ends_at - timezone.now()).total_seconds())),
        "session_extensible": row.ends_at < row.expires_at,
        "session_id": str(row.pk),
    }
