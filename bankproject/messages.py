"""One-time page messages ("Your name is changed.") in a host-only cookie behind TLS.

Django's cookie storage always names its cookie ``messages``, while the session and CSRF cookies
are ``__Host-`` behind TLS: a sibling subdomain or a plain-HTTP page of the parent domain could
set a ``messages`` cookie (server-signed text it had seen, e.g. "Your password is changed. Every
other session was logged out.") and our pages would show it. ``__Host-`` cookies are taken only
over HTTPS, for this host and path ``/``, with no ``Domain`` (Django's cookie storage sets none
unless ``SESSION_COOKIE_DOMAIN`` is set, which this project never does).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.messages.storage.session import SessionStorage


class HostCookieStorage(CookieStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if settings.SESSION_COOKIE_SECURE:
            self.cookie_name = "__Host-messages"


class HostFallbackStorage(FallbackStorage):
    """Django's default storage (the cookie, then the session for what does not fit), its cookie
    host-only."""

    storage_classes = (HostCookieStorage, SessionStorage)
