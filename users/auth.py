"""Who is asking: log-in by username or address, access tokens tied to their session, the client's
IP (one rule for throttles and lockout), and django-axes' hooks."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.tokens import Token

from users import context, identity
from users.errors import LockedOut
from users.models import LoginSession, User, UsernameReservation
from users.services.sessions import SESSION_CLAIM

logger = logging.getLogger(__name__)

# Set on a request whose password was really checked (the failure then counts; see users.receivers).
PASSWORD_TRIED = "_users_password_tried"  # noqa: S105 - an attribute name

# How often a session's "last used" is written while it is in use: a minute at most, a quarter of
# SESSION_IDLE_TIMEOUT under a short one (written once a minute, a 20 s timeout ended sessions in use).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def last_used_due(last_used_at: datetime, now: datetime) -> bool:
    """Whether a session used at ``now`` should have its ``last_used_at`` written."""
    return now - last_used_at > min(LAST_USED_RESOLUTION, timedelta(seconds=settings.SESSION_IDLE_TIMEOUT / 4))


def find_user(login: str) -> User | None:
    """The account a log-in names: an address (it has an @) or a username; both canonical."""
    if not isinstance(login, str) or not login:
        return None
    login = identity.typed_login(login)
    if "@" in login:
        canonical = identity.canonical_email(login)
        return User.objects.filter(email_canonical=canonical).first() if canonical else None
    return User.objects.filter(username_canonical=identity.canonical_username(login)).first()


class UsernameOrEmailBackend(ModelBackend):
    """Django's ModelBackend, looking the account up by canonical username or address. An unknown
    account still costs one password hash (as Django does), so timing tells the two apart no more
    than the answer does.

    A sign-up with a registered address creates no account but answers as if it had; a log-in with
    what it was given then answers as the new, never-verified account would ("verify your address
    first"): the sign-up's username or address and password match its ``UsernameReservation``, and
    a stand-in (never saved, never logged in) is returned. Timing tells nothing either: by username
    every log-in costs one hash; by address every log-in but a success costs two (the account's or
    a dummy, and the sign-up's or a dummy), whether the address is unknown, registered, never
    verified or signed up with again."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        if username is None or password is None:
            return None
        if request is not None:
            setattr(request, PASSWORD_TRIED, True)  # django-axes let it through: this is a real try
        username = identity.typed_login(username)  # one reading of the login for every step below
        by_address = "@" in username
        user = find_user(username)
        if user is None:
            stand_in = _signed_up_with(username, password)  # one hash, a reservation's or a dummy
            if by_address:
                User().set_password(password)  # the second hash every failed log-in by address costs
            return stand_in
        right = user.check_password(password) and self.user_can_authenticate(user)
        if not by_address or (right and user.is_email_verified):
            return user if right else None
        stand_in = _signed_up_with(username, password)  # the second hash
        return user if right else stand_in


def _signed_up_with(login: str, password: str) -> User | None:
    """A stand-in for the account a sign-up answered for without creating it (the login and the
    password match its newest reservation), else None; one password hash, a dummy one if there is
    no such sign-up."""
    from django.contrib.auth.hashers import check_password

    if "@" in login:
        found = UsernameReservation.objects.filter(email_canonical=identity.canonical_email(login) or "")
    else:
        found = UsernameReservation.objects.filter(username_canonical=identity.canonical_username(login))
    reservation = found.exclude(password="").order_by("-created_at").first()
    if reservation is None:
        User().set_password(password)  # the work a real check does
        return None
    if not check_password(password, reservation.password):
        return None
    return User(username=reservation.username, email=reservation.email_canonical, is_email_verified=False)


def client_ip(request: HttpRequest | Request) -> str:
    """``REMOTE_ADDR``, or the address ``DJANGO_NUM_PROXIES`` trusted proxies saw (as the throttles)."""
    meta = request.META
    remote = meta.get("REMOTE_ADDR", "")
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    proxies = api_settings.NUM_PROXIES
    if forwarded and proxies:
        addresses = [a.strip() for a in forwarded.split(",") if a.strip()]
        if addresses:
            chosen = addresses[-min(proxies, len(addresses))]
            if (address := _ip_of(chosen)) is not None:
                return address
            logger.warning("X-Forwarded-For entry is no IP address; using the peer's", extra={"entry": chosen[:64]})
    return remote


def _ip_of(entry: str) -> str | None:
    """An X-Forwarded-For entry as an IP address: ``1.2.3.4``, ``1.2.3.4:5678`` and ``[2001:db8::1]:443``
    (the forms proxies append), else None."""
    candidates = [entry]
    if entry.startswith("[") and "]" in entry:
        candidates.append(entry[1 : entry.index("]")])
    elif entry.count(":") == 1:
        candidates.append(entry.partition(":")[0])
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            # "fe80::1%eth0": a scope names a link of the sender's machine, meaningless here, and
            # PostgreSQL's inet refuses it (a 500 after the password hash: a review).
            address = ipaddress.IPv6Address(int(address))
        return str(address)
    return None


def client_network(request: HttpRequest | Request) -> str:
    """What per-address limits and the lockout count against: the client's IPv4 address, or the
    /64 of its IPv6 address (one host is given a whole /64: counting single IPv6 addresses would
    give it 2^64 fresh ones)."""
    ip = client_ip(request)
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


# In credentials built from an account (not typed at a log-in): its lockout name, as it is — an
# account's username may hold an "@" (older accounts), which a typed login would read as an address.
LOCKOUT_NAME = "lockout_name"


def account_lockout_name(user: User) -> str:
    return identity.canonical_username(user.username)


def account_credentials(user: User) -> dict[str, str]:
    """The credentials of a failure or a lockout check for ``user`` itself."""
    return {"username": user.username, LOCKOUT_NAME: account_lockout_name(user)}


def lockout_username(request: HttpRequest, credentials: dict | None) -> str:
    """What django-axes counts failures against: the account named, however it was spelled —
    "Ada", "ada" and the account's address are one (an address with no account counts as itself,
    so a lockout behaves the same whether or not the account exists). Never longer than django-axes
    stores (255): a longer name — which no account has — counts as its digest."""
    name = _lockout_name(request, credentials)
    if len(name) > LOCKOUT_NAME_MAX_LENGTH:
        name = "sha256:" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    with contextlib.suppress(AttributeError):  # the pair a lockout answer works out its end for
        setattr(getattr(request, "_request", request), LOCKOUT_CHECKED, name)
    return name


LOCKOUT_CHECKED = "_users_lockout_checked"  # on the request: the name django-axes last counted for it


LOCKOUT_NAME_MAX_LENGTH = 255  # django-axes' AccessAttempt.username


def _lockout_name(request: HttpRequest, credentials: dict | None) -> str:
    if isinstance(named := (credentials or {}).get(LOCKOUT_NAME), str):
        return named
    login = (credentials or {}).get("username")
    if not isinstance(login, str):
        login = request.POST.get("username", "") if hasattr(request, "POST") else ""
    # Every log-in refuses a name longer than this as typed, so nothing past it names an account;
    # read whole, a 2.4 MB name cost a second of NFKC before the form refused it (a review).
    login = login[: identity.LOGIN_MAX_LENGTH + 1]
    login = identity.typed_login(login)  # as the log-in forms read it before django-axes counts it
    if "@" not in login:
        return identity.canonical_username(login)
    canonical = identity.canonical_email(login)
    if canonical is None:
        return login.strip().lower()
    # django-axes asks several times a request (is it locked? a failure? a reset?), and so does the
    # proof lock: the address's owner is looked up once per request.
    known: dict[str, str] = getattr(request, LOCKOUT_NAMES, None) or {}
    if canonical not in known:
        owner = User.objects.filter(email_canonical=canonical).values_list("username_canonical", flat=True).first()
        known[canonical] = owner or canonical
        with contextlib.suppress(AttributeError):  # a request that takes no attributes keeps no memory
            setattr(request, LOCKOUT_NAMES, known)
    return known[canonical]


LOCKOUT_NAMES = "_users_lockout_names"  # on the request: an address's lockout name, once looked up


BUSY = "Another attempt for this account is being checked right now; try again in a second."
PROOF_BUSY = "_users_proof_busy"  # set on a request refused for waiting too long for its turn


def proof_turn(request: HttpRequest, login: str) -> AbstractContextManager[None]:
    """The proofs of the lockout pair a typed log-in names (the account however spelled, and the
    client's network) one at a time (``users.proofs``): the lockout's check, the proof and the
    counting of a failure are one step for concurrent requests. After waiting too long:
    ``LockedOut``, which ``lockout_response`` answers as "busy" (429, ``Retry-After: 1``)."""
    return _turn(request, lockout_username(request, {"username": login}))


def lockout_reset(request: HttpRequest, user: User) -> None:
    """A success: the failures of ``user`` from this client's network are forgotten."""
    from axes.handlers.proxy import AxesProxyHandler  # type: ignore[import-untyped]

    name, network = account_lockout_name(user), client_network(request)
    if name and network:  # never a reset by one of the two alone (it would forgive too much)
        AxesProxyHandler.reset_attempts(ip_address=network, username=name)


def account_turn(request: HttpRequest, user: User) -> AbstractContextManager[None]:
    """``proof_turn`` for ``user`` itself (a step-up, a second step)."""
    return _turn(request, account_lockout_name(user))


@contextmanager
def _turn(request: HttpRequest, lockout_name: str) -> Iterator[None]:
    from users import proofs

    try:
        with proofs.one_at_a_time(lockout_name, client_network(request)):
            yield
    except proofs.Busy:  # raised only while waiting for the turn, never by the block
        setattr(getattr(request, "_request", request), PROOF_BUSY, True)  # DRF's Request wraps it
        raise LockedOut from None


def proof_busy(request: HttpRequest) -> bool:
    """Whether a ``LockedOut`` of this request was only a wait for its turn that took too long."""
    return bool(getattr(request, PROOF_BUSY, False))


RESET_HINT_PATHS = frozenset({"/login/", "/api/tokens/"})  # staff (/admin/login/) always have a factor


def locked_out_words(request: HttpRequest, *, reset_hint: bool = True) -> str:
    """What a person is told for a ``LockedOut``: "busy" after a wait for the turn, else the lockout,
    how long it has left, and the way out where resetting the password is one. The request keeps the
    wait: a page that shows these words in its form answers ``429`` with it as ``Retry-After``
    (``users.middleware.LockedOutMiddleware``), as the log-in's own answer does."""
    wait = locked_wait(request)
    if proof_busy(request):
        return BUSY
    return f"Too many failed log-ins. Try again in {wait_words(wait)}" + (
        ", or reset your password." if reset_hint else "."
    )


def locked_wait(request: HttpRequest, credentials: dict | None = None) -> int:
    """Seconds until this locked-out request may be tried again (1 after a wait for the turn), worked
    out once per request."""
    real = getattr(request, "_request", request)  # DRF's Request wraps it
    if (wait := getattr(real, LOCKED_WAIT, None)) is None:
        wait = 1 if proof_busy(request) else seconds_locked(request, credentials)
        setattr(real, LOCKED_WAIT, wait)
    return int(wait)


LOCKED_WAIT = "_users_locked_wait"  # on a request refused for a lockout: the seconds it has left


def wait_words(seconds: int) -> str:
    """A wait as a person reads it, never shorter than it is: whole minutes from two on, rounded up."""
    if seconds >= 120:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict | None = None,
    *args: Any,
    **kwargs: Any,
) -> HttpResponse:
    """django-axes' answer to a locked-out log-in: 429 with Retry-After, JSON on the API. A request
    that only waited too long for its turn (``proof_turn``) is told to try again in a second."""
    busy = proof_busy(request)
    wait = locked_wait(request, credentials)
    # A reset is the way out only where a password was typed to log in: not at a second step (the
    # password was right), a reset itself, or a step-up.
    hint = request.path_info in RESET_HINT_PATHS
    response: HttpResponse
    if request.path.startswith("/api/"):
        detail = locked_out_words(request, reset_hint=hint)
        response = JsonResponse({"detail": detail, "code": "throttled" if busy else "locked_out"}, status=429)
    else:  # the page links the way out instead of naming it
        context = {
            "wait": wait_words(wait),
            "detail": locked_out_words(request, reset_hint=False),
            "reset_hint": hint and not busy,
        }
        response = render(request, "users/too_many_requests.html", context, status=429)
    response["Retry-After"] = str(wait)
    return response


def seconds_locked(request: HttpRequest, credentials: dict | None = None) -> int:
    """How long the pair this request was refused for stays locked: until enough of its failures
    are older than the cool-off for the rest to be under the limit. Refused attempts do not extend
    it (``AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT``), so it is not the whole cool-off again;
    the whole cool-off where the pair is unknown, which is never less than the truth."""
    from axes.models import AccessAttempt  # type: ignore[import-untyped]

    cool_off = settings.AXES_COOLOFF_TIME
    name = lockout_username(request, credentials) if credentials else getattr(request, LOCKOUT_CHECKED, None)
    if name is None:
        return int(cool_off.total_seconds())
    now = timezone.now()
    network = getattr(request, "axes_ip_address", None) or client_network(request)
    failures = (
        AccessAttempt.objects.filter(username=name, ip_address=network, attempt_time__gte=now - cool_off)
        .order_by("-attempt_time")  # one row per user agent: counted newest first, as they will age out
        .values_list("attempt_time", "failures_since_start")
    )
    counted = 0
    for attempt_time, failures_since_start in failures:
        counted += failures_since_start
        if counted >= settings.AXES_FAILURE_LIMIT:  # the lock lasts until this row is older than the cool-off
            return max(1, math.ceil((attempt_time + cool_off - now).total_seconds()))
    return 1  # the lock ended between the check and this answer


class SessionJWTAuthentication(JWTAuthentication):
    """simplejwt's checks (signature, expiry, type), then the session the token names: a revoked,
    blocked or expired session, or an inactive user, is refused on the very next request — the
    session and its user are read in the one query that would load the user anyway."""

    def get_user(self, validated_token: Token) -> User:  # type: ignore[override]  # our User, not AuthUser
        session_id = validated_token.get(SESSION_CLAIM)
        session = LoginSession.objects.select_related("user").filter(pk=session_id).first() if session_id else None
        if session is None or not session.is_live or not session.user.is_active:
            raise AuthenticationFailed("This session has ended; log in again.", code="session_ended")
        if str(session.user_id) != str(validated_token.get("user_id")):
            raise AuthenticationFailed("This session has ended; log in again.", code="session_ended")
        if session.kind != LoginSession.Kind.API:  # a browser session's id is no bearer credential
            raise AuthenticationFailed("This session has ended; log in again.", code="session_ended")
        now = timezone.now()
        if last_used_due(session.last_used_at, now):
            LoginSession.objects.filter(pk=session.pk).update(last_used_at=now)
        session.user.login_session = session  # type: ignore[attr-defined]  # for "current" and sign-out
        context.signed_in(session.user, session.pk)
        return session.user


class SessionJWTScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI document describes the tokens: ``Authorization: Bearer <access>``."""

    target_class = "users.auth.SessionJWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
