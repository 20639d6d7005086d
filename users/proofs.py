"""One proof at a time per account and client network.

The lockout (django-axes) reads "locked?", then the password or code is checked, then a failure
is counted: requests in flight together all read "not locked" before any of them is counted, so a
burst of 60 got some 30 guesses where the lockout allows 5. Every check of a proof — the password
at a log-in, a second step, a passkey log-in, a step-up's password and code, a TOTP confirmation —
runs inside ``one_at_a_time`` for its lockout pair (the account's lockout name and the client's
network), so each sees the failures of those before it.

The pair, not the account: a flood from an attacker's addresses queues only the attacker, never
the owner logging in from elsewhere. A proof that waits more than ``WAIT_S`` is refused (``Busy``:
a 429 saying to try again in a second, not a lockout). The lock lives in the shared Redis (it holds
across web processes) and expires after ``HOLD_S`` if its holder died; with Redis unreachable it
falls back to a lock in this process (logged), as the rate limits do — which serialises only the
requests one process serves.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import cache
from redis.exceptions import LockError, RedisError

logger = logging.getLogger(__name__)

HOLD_S = 30  # longer than any one proof (a password hash is a fraction of a second)
WAIT_S = 3  # a double-click waits one hash; a queue an attacker keeps full ties up a web thread no longer
POLL_S = 0.05  # how often a waiting proof asks again (redis-py's default 0.1 s slows a queue's hand-over)
_LOCAL = [threading.Lock() for _ in range(1024)]  # striped: bounded memory, whatever the names


class Busy(Exception):
    """The turn did not come within ``WAIT_S``."""


@contextmanager
def one_at_a_time(lockout_name: str, network: str) -> Iterator[None]:
    """Run the block alone among the proofs of this pair; ``Busy`` if its turn takes over ``WAIT_S``."""
    digest = hashlib.sha256(f"{lockout_name}\x00{network}".encode()).hexdigest()
    lock = cache.lock(  # type: ignore[attr-defined]
        f"proof-lock:{digest}", timeout=HOLD_S, sleep=POLL_S, blocking_timeout=WAIT_S
    )
    try:
        acquired = lock.acquire()
    except (RedisError, OSError):
        logger.warning("proof lock: cache unreachable; serialising in this process")
        acquired = None
    if acquired is None:
        with _local(digest):
            yield
        return
    if not acquired:
        logger.warning("proof lock: waited too long for its turn; answered busy")
        raise Busy
    try:
        yield
    finally:
        try:
            lock.release()
        except (LockError, RedisError, OSError):  # expired (held too long) or Redis gone: it frees itself
            logger.warning("proof lock: not released; it expires by itself")


@contextmanager
def _local(digest: str) -> Iterator[None]:
    stripe = _LOCAL[int(digest[:8], 16) % len(_LOCAL)]
    if not stripe.acquire(timeout=WAIT_S):
        logger.warning("proof lock: waited too long for its turn; answered busy")
        raise Busy
    try:
        yield
    finally:
        stripe.release()
