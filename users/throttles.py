"""Rate limits, counted in the shared cache (Redis) so they hold across web processes.

They fail open: if the cache cannot be reached, requests go through (and a warning is logged),
because a Redis outage must not turn sign-ups into errors.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from django.http import HttpRequest
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from users.services import address_digest

logger = logging.getLogger(__name__)


class _FailOpenIPThrottle(SimpleRateThrottle):
    def get_rate(self) -> str | None:
        # Read at use, not at import, so settings overrides (and tests) take effect.
        return cast("str | None", api_settings.DEFAULT_THROTTLE_RATES[str(self.scope)])

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError):
            logger.warning("throttle cache unreachable; allowing the request", extra={"scope": self.scope})
            return True


class SignupThrottle(_FailOpenIPThrottle):
    scope = "signup"


class VerifyThrottle(_FailOpenIPThrottle):
    scope = "verify"


class ResendThrottle(_FailOpenIPThrottle):
    scope = "resend"


class ResendAddressThrottle(_FailOpenIPThrottle):
    """Per address asked for (case-insensitive), whoever asks."""

    scope = "resend_address"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        data = getattr(request, "data", None) or getattr(request, "POST", {})
        email = data.get("email") if hasattr(data, "get") else None
        if not isinstance(email, str) or not email.strip():
            return None  # malformed: the view answers 400
        return self.cache_format % {"scope": self.scope, "ident": address_digest(email)}


def throttle_wait(request: HttpRequest, throttle_classes: list[type[SimpleRateThrottle]]) -> int | None:
    """For plain Django views: seconds to wait if any of the throttles refuses, else None."""
    waits = []
    for throttle_class in throttle_classes:
        throttle = throttle_class()
        # DRF's throttles read only META (and POST/data) of the request; no view is needed.
        if not throttle.allow_request(request, None):  # type: ignore[arg-type]
            waits.append(throttle.wait() or 1)
    return max(1, round(max(waits))) if waits else None
