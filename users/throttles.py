"""Rate limits: atomic sliding windows in the shared Redis, so they hold across web processes.

Each limit (``THROTTLE_*`` = ``N/period``) keeps, per client (or address), the times of the
requests it let through in the last period, in a Redis sorted set. One Lua script per request
drops the old ones, counts, and records this one only if it is under the limit — atomically, so
concurrent requests can never all read "under the limit" and then write, as DRF's
read-then-write history list lets them. If the cache can't be reached the limit falls back to a
window in this process (logged), so a Redis outage neither turns requests into errors nor
switches the limits off.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

from django.core.cache import cache
from django.http import HttpRequest
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from users import identity

logger = logging.getLogger(__name__)

# KEYS[1] the window; ARGV now, period, limit, a unique member, mode. Returns {allowed, oldest time}.
# Modes (default "take"): "take" counts this request if it is under the limit (a rate limit); "peek" only says whether
# the window is under the limit; "add" counts one event whatever the count (a failure counter).
_SLIDING_WINDOW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
local mode = ARGV[5] or 'take'
if mode == 'add' then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
  return {1, '0'}
end
local count = redis.call('ZCARD', KEYS[1])
if count < tonumber(ARGV[3]) then
  if mode == 'take' then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
    redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
  end
  return {1, '0'}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, oldest[2]}
"""


class _LocalWindows:
    """The fallback: per-process sliding windows, for while the shared cache is unreachable."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, deque[float]] = {}

    def give_back(self, key: str, at: float) -> None:
        """The place a request took at ``at``, given back (see LoginThrottle)."""
        with self.lock, contextlib.suppress(KeyError, ValueError):
            self.counts[key].remove(at)

    def allow(self, key: str, now: float, period: float, limit: int, mode: str = "take") -> tuple[bool, float]:
        with self.lock:
            if len(self.counts) > 10_000:  # forget idle windows
                self.counts = {k: v for k, v in self.counts.items() if v and v[-1] > now - period}
            history = self.counts.setdefault(key, deque())
            while history and history[0] <= now - period:
                history.popleft()
            if mode == "add":
                history.append(now)
                return True, 0.0
            if len(history) < limit:
                if mode == "take":
                    history.append(now)
                return True, 0.0
            return False, history[0]


_local = _LocalWindows()
_script: Any = None


def _shared_allow(key: str, now: float, period: float, limit: int, mode: str, member: str) -> tuple[bool, float]:
    global _script
    client = get_redis_connection("default")
    if _script is None:
        _script = client.register_script(_SLIDING_WINDOW)
    allowed, oldest = _script(keys=[key], args=[now, period, limit, member, mode], client=client)
    return bool(allowed), float(oldest)


@dataclass
class _Place:
    """Where a request was counted in a window: enough to give the place back."""

    key: str
    member: str
    at: float
    shared: bool
    kept: bool = False

    def give_back(self) -> None:
        try:
            if self.shared:
                get_redis_connection("default").zrem(self.key, self.member)
            else:
                _local.give_back(self.key, self.at)
        except (RedisError, OSError):
            logger.warning("throttle cache unreachable; a log-in's place is kept until the window moves on")


class _WindowThrottle(SimpleRateThrottle):
    duration: int  # set by SimpleRateThrottle from the rate
    num_requests: int

    def get_rate(self) -> str | None:
        # Read at use, not at import, so settings overrides (and tests) take effect.
        return cast("str | None", api_settings.DEFAULT_THROTTLE_RATES[str(self.scope)])

    def get_ident(self, request: Any) -> str:
        from users.auth import client_network  # one rule for every per-address limit and the lockout

        return client_network(request)

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    mode = "take"  # every request it lets through counts

    def allow_request(self, request: Any, view: Any) -> bool:
        return self._window(request, view, self.mode)

    def _window(self, request: Any, view: Any, mode: str) -> bool:
        if self.rate is None or not _handles(view, request.method):
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        now, key = time.time(), cache.make_key(ident)
        member = f"{now}:{uuid.uuid4().hex[:8]}"
        try:
            allowed, oldest = _shared_allow(key, now, self.duration, self.num_requests, mode, member)
            self.place = _Place(key, member, now, shared=True)
        except (RedisError, OSError):
            logger.warning("throttle cache unreachable; counting in this process", extra={"scope": self.scope})
            allowed, oldest = _local.allow(key, now, self.duration, self.num_requests, mode)
            self.place = _Place(key, member, now, shared=False)
        self.free_at = oldest + self.duration
        return allowed

    def wait(self) -> float | None:
        return max(1.0, self.free_at - time.time())


def _handles(view: Any, method: str) -> bool:
    """Whether a DRF view has this method: one it lacks answers 405 right after the throttles
    (DRF checks them first), and must neither spend the route's limit nor be refused for it."""
    if view is None:  # a plain Django view's own check (throttle_wait), after its method check
        return True
    name = method.lower()
    return name in view.http_method_names and hasattr(view, name)


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


LOGIN_PLACE = "_users_login_place"  # the window place a log-in request holds while it is checked


class LoginThrottle(_WindowThrottle):
    """Failed log-ins per client address (``THROTTLE_LOGIN``): a log-in is refused while its address
    has that many failures in the window — counting the log-ins being checked right now, so a burst
    naming many accounts at once can't all pass before any has failed. Each request takes a place
    as it comes in; the place is kept if it fails (``record_login_failure``: every failed log-in —
    API, pages, admin, a wrong current password) and given back when it ends otherwise
    (``login_place_settle``, from ``users.middleware.LoginPlaceMiddleware``): successes count
    nothing.

    Nothing counts per account: one account's failures from many addresses never stop its owner
    from logging in from an address that has not failed (django-axes locks an account and address
    pair, not the account)."""

    scope = "login"
    mode = "take"

    def allow_request(self, request: Any, view: Any) -> bool:
        allowed = super().allow_request(request, view)
        place = getattr(self, "place", None)
        if allowed and place is not None:
            http_request = getattr(request, "_request", request)
            if getattr(http_request, LOGIN_PLACE, None) is None:
                setattr(http_request, LOGIN_PLACE, place)
            else:  # one request holds one place (a view checked twice)
                place.give_back()
        return allowed


def record_login_failure(request: Any) -> None:
    """Count one failed log-in against the request's client address: the place it holds is kept,
    or — a request that took none (a wrong current password) — one is added."""
    place = getattr(getattr(request, "_request", request), LOGIN_PLACE, None)
    if place is not None and not place.kept:
        place.kept = True
        return
    LoginThrottle()._window(request, None, "add")


def login_place_settle(request: HttpRequest) -> None:
    """At the end of a request: a place it took and did not fail is given back."""
    place = getattr(request, LOGIN_PLACE, None)
    if place is not None and not place.kept:
        place.give_back()


class RefreshThrottle(_WindowThrottle):
    scope = "refresh"


class PasskeyOptionsThrottle(_WindowThrottle):
    """Passkey options asked for before a log-in is complete (``THROTTLE_PASSKEY_OPTIONS``), per
    client address: each answer stores a challenge row for 5 minutes, and ``LoginThrottle`` counts
    only failures, so without this an anonymous client could have rows written as fast as it asks."""

    scope = "passkey_options"


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


class SessionEndThrottle(AccountThrottle):
    """``THROTTLE_ACCOUNT`` per session, for listing and ending sessions: per user, a stolen token
    spending the user's requests kept the owner from ending it (a review); each session has its own."""

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        from users import context

        session_id = context.current().session_id
        if session_id is None:
            return super().get_cache_key(request, view)
        return self.cache_format % {"scope": self.scope, "ident": f"session-{session_id}"}


class CustomerChangeThrottle(_WindowThrottle):
    """A banker's changes of one customer (``THROTTLE_CUSTOMER_CHANGE``), whichever banker: each
    mails the customer notices, so a banker (or a stolen banker's token) can't fill their inbox
    or bury the notice of a change under others. Checked by the view once the change is allowed,
    so nobody else's refused requests count against the customer."""

    scope = "customer_change"
    target: str = ""  # the customer's primary key

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": _digest(self.target)}


def throttle_wait(request: HttpRequest, throttle_classes: list[type[SimpleRateThrottle]]) -> int | None:
    """For plain Django views: seconds to wait if any of the throttles refuses, else None."""
    waits = []
    for throttle_class in throttle_classes:
        throttle = throttle_class()
        # DRF's throttles read only META (and POST/data) of the request; no view is needed.
        if not throttle.allow_request(request, None):  # type: ignore[arg-type]
            waits.append(throttle.wait() or 1)
    return max(1, math.ceil(max(waits))) if waits else None  # never sooner than the window allows
