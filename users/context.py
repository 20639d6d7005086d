"""Who is asking, and from where: the request's context for security events.

Set for each request by ``users.middleware.SecurityContextMiddleware`` (the client's address and
user agent; the user and session of a browser log-in) and by ``users.auth.SessionJWTAuthentication``
(the user and session of an access token). Outside a request (the worker, ``manage.py``) it is
empty: events then name ``system`` as their actor.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from users.models import User


@dataclass
class SecurityContext:
    client_ip: str | None = None
    user_agent: str = ""
    actor: User | None = None  # the signed-in user making the request
    session_id: uuid.UUID | None = None  # the session it came through
    request: Any = None  # the HttpRequest (django-axes reads it)


_EMPTY = SecurityContext()
_current: ContextVar[SecurityContext] = ContextVar("security_context", default=_EMPTY)


def current() -> SecurityContext:
    return _current.get()


def begin(**fields: Any) -> Token[SecurityContext]:
    return _current.set(SecurityContext(**fields))


def end(token: Token[SecurityContext]) -> None:
    _current.reset(token)


def signed_in(user: User, session_id: uuid.UUID | None) -> None:
    """The request was authenticated as ``user`` through ``session_id``."""
    context = _current.get()
    if context is not _EMPTY:  # outside a request (a test logging a client in) there is nobody asking
        context.actor, context.session_id = user, session_id
