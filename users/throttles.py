"""Rate limits: atomic counters in the shared Redis, so they hold across web processes.

Each limit is a fixed window (``THROTTLE_*`` = ``N/period``): one ``INCR`` of the window's key
(with its expiry set in the same round trip) per request, so concurrent requests can never all
read "under the limit" and then write, as DRF's read-then-write history list lets them. If the
cache can't be reached the limit falls back to a counter in this process (logged), so a Redis
outage neither turns requests into errors nor switches the limits off.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any, cast

from django.core.cache import cache
from django.http import HttpRequest
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from users import identity

logger = logging.getLogger(__name__)


class _LocalCounters:
    """The fallback: per-process fixed windows, for while the shared cache is unreachable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, tuple[float, int]] = {}

    def incr(self, key: str, expires_at: float) -> int:
        now = time.time()
        with self.lock:
            if len(self.counts) > 10_000:  # forget finished windows
                self.counts = {k: v for k, v in self.counts.items() if v[0] > now}
            _, count = self.counts.get(key, (expires_at, 0))
            self.counts[key] = (expires_at, count + 1)
            return count + 1


_local = _LocalCounters()


def _shared_incr(key: str, ttl: int) -> int:
    client = get_redis_connection("default")
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, ttl, nx=True)
        count, _ = pipe.execute()
    return int(count)


class _WindowThrottle(SimpleRateThrottle):
    duration: int  # set by SimpleRateThrottle from the rate
    num_requests: int

    def get_rate(self) -> str | None:
        # Read at use, not at import, so settings overrides (and tests) take effect.
        return cast("str | None", api_settings.DEFAULT_THROTTLE_RATES[str(self.scope)])

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        window = int(time.time() // self.duration)
        self.window_ends = (window + 1) * self.duration
        key = cache.make_key(f"{ident}:{window}")
        try:
            count = _shared_incr(key, int(self.duration) + 1)
        except (RedisError, OSError):
            logger.warning("throttle cache unreachable; counting in this process", extra={"scope": self.scope})
            count = _local.incr(key, self.window_ends)
        return count <= self.num_requests

    def wait(self) -> float | None:
        return max(1.0, self.window_ends - time.time())


class SignupThrottle(_WindowThrottle):
    scope = "signup"


class VerifyThrottle(_WindowThrottle):
    scope = "verify"


class ResendThrottle(_WindowThrottle):
    scope = "resend"


def _field(request: Any, name: str) -> str | None:
    data = getattr(request, "data", None) or getattr(request, "POST", {})
    value = data.get(name) if hasattr(data, "get") else None
    return value if isinstance(value, str) else None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()  # a key, not the address or name itself


class _AddressThrottle(_WindowThrottle):
    """Per address asked for (canonical form), whoever asks."""

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        email = _field(request, "email")
        canonical = identity.canonical_email(email) if email else None
        if canonical is None:
            return None  # malformed: the view answers 400
        return self.cache_format % {"scope": self.scope, "ident": _digest(canonical)}


class ResendAddressThrottle(_AddressThrottle):
    scope = "resend_address"


class LoginThrottle(_WindowThrottle):
    scope = "login"


class LoginUsernameThrottle(_WindowThrottle):
    """Per account named (its canonical username or address), from any number of addresses."""

    scope = "login_username"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        from users.auth import lockout_username  # the lockout's notion of "one account"

        login = _field(request, "username")
        if not login:
            return None
        return self.cache_format % {
            "scope": self.scope,
            "ident": _digest(lockout_username(request, {"username": login})),
        }


class RefreshThrottle(_WindowThrottle):
    scope = "refresh"


class PasswordResetThrottle(_WindowThrottle):
    scope = "password_reset"


class PasswordResetAddressThrottle(_AddressThrottle):
    scope = "password_reset_address"


class AccountThrottle(_WindowThrottle):
    """Per signed-in user (per IP before authentication has run)."""

    scope = "account"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        user = getattr(request, "user", None)
        pk = getattr(user, "pk", None) if getattr(user, "is_authenticated", False) else None
        ident = f"user-{pk}" if pk is not None else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


def throttle_wait(request: HttpRequest, throttle_classes: list[type[SimpleRateThrottle]]) -> int | None:
    """For plain Django views: seconds to wait if any of the throttles refuses, else None."""
    waits = []
    for throttle_class in throttle_classes:
        throttle = throttle_class()
        # DRF's throttles read only META (and POST/data) of the request; no view is needed.
        if not throttle.allow_request(request, None):  # type: ignore[arg-type]
            waits.append(throttle.wait() or 1)
    return max(1, round(max(waits))) if waits else None
