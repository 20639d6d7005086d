"""Dramatiq middleware of the worker plumbing (listed in ``DRAMATIQ_BROKER`` in settings)."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from dramatiq import Middleware
from dramatiq.brokers.redis import RedisBroker

logger = logging.getLogger(__name__)


# A stop sent to a whole process group reaches a worker process twice: straight from the sender
# and forwarded by Dramatiq's main process, milliseconds apart (~5 ms measured, idle machine).
# A repeat within this window is the same stop; a later one still kills, as Dramatiq intends.
DUPLICATE_STOP_WINDOW_S = 2.0

# The handler that Dramatiq's CLI (dramatiq/cli.py, worker_process) installs in each worker
# process for SIGTERM and SIGHUP: the first call starts a graceful stop, the second exits at once.
_DRAMATIQ_TERMHANDLER = ("dramatiq.cli", "worker_process.<locals>.termhandler")


def is_dramatiq_termhandler(handler: object) -> bool:
    return (getattr(handler, "__module__", None), getattr(handler, "__qualname__", None)) == _DRAMATIQ_TERMHANDLER


def fold_duplicate_stops(window_s: float = DUPLICATE_STOP_WINDOW_S) -> list[signal.Signals]:
    """Make a repeat of the stop signal within ``window_s`` of the first a no-op; return the
    signals so wrapped (none outside a Dramatiq CLI worker process's main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return []
    stop_signals = [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    originals: dict[signal.Signals, Callable[[int, Any], Any]] = {}
    for stop_signal in stop_signals:
        installed = signal.getsignal(stop_signal)
        if callable(installed) and is_dramatiq_termhandler(installed):
            originals[stop_signal] = installed
    first_at: float | None = None

    def once(signum: int, frame: Any) -> Any:
        nonlocal first_at
        now = time.monotonic()
        if first_at is not None and now - first_at < window_s:
            logger.info(
                "Ignoring %s %.3f s after the first stop signal, as the same stop (one sent to the "
                "whole process group also comes forwarded by the main process). Repeat it after "
                "%.0f s to kill the worker process.",
                signal.Signals(signum).name,
                now - first_at,
                window_s,
            )
            return None
        if first_at is None:
            first_at = now
        return originals[signal.Signals(signum)](signum, frame)

    for stop_signal in originals:
        signal.signal(stop_signal, once)
    return list(originals)


class StopOnce(Middleware):
    """A SIGTERM to the worker's whole process group stops it gracefully, as one to its main does.

    Under systemd's default ``KillMode=control-group``, ``kill -TERM -<pgid>`` or honcho, every
    worker process gets the SIGTERM and then the copy its main process forwards; Dramatiq takes
    the second for "kill now": the emails in flight are cut off and the retries waiting in the
    process's delay queue stay unacked in Redis until the broker's heartbeat timeout. This folds
    a repeat within ``DUPLICATE_STOP_WINDOW_S`` into the first. It wraps Dramatiq's own handler
    (found by name, installed before the worker boots); ``tests/fault/test_stop_signals.py``
    fails if a Dramatiq upgrade changes it.
    """

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        if fold_duplicate_stops():
            return
        if Path(sys.argv[0]).name in {"dramatiq", "dramatiq-gevent"}:
            logger.warning(
                "Dramatiq's worker stop handler was not found: a SIGTERM sent to the whole process "
                "group may kill worker processes instead of stopping them (see StopOnce)."
            )


def workers_key(broker: RedisBroker) -> str:
    """The worker processes' broker ids, scored by when each last said it runs (``WorkerRegistry``),
    beside Dramatiq's heartbeats."""
    return f"{broker.namespace}:__workers__"


def host_workers_key(broker: RedisBroker, host: str | None = None) -> str:
    """The same registrations, of the worker processes on one host only (this one by default): what
    a replica's own healthcheck reads, so that one live replica does not pass every replica's. It
    expires when its host stops refreshing it (a host name is a pod's or a container's, and goes
    with it)."""
    return f"{workers_key(broker)}:{host or socket.gethostname()}"


def registry_max_age_s(broker: RedisBroker) -> float:
    """A registration not refreshed for three rounds is a worker that died without saying so."""
    return 3 * registry_refresh_s(broker)


def registry_refresh_s(broker: RedisBroker) -> float:
    """How often a worker writes its registration: often enough that three misses fit well inside
    the broker's heartbeat timeout."""
    return min(10.0, broker.heartbeat_timeout / 4000)


class WorkerRegistry(Middleware):
    """Names each worker process's broker id in Redis, so that ``manage.py worker_status`` counts
    workers only. Dramatiq's heartbeat is written by every call to the broker, an enqueue from the
    web or the scheduler included: with no worker running, the status said "1 live worker" after
    a sign-up (an operator's runbook walk), and so did the compose healthcheck. Written again every
    few seconds while the worker runs (a Redis restarted without persistence forgets it), with the
    time, so a registration that stops being refreshed (a killed worker) ages out; removed at a
    graceful stop, once the refreshing thread has ended (else its last write could land after)."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[threading.Event, threading.Thread]] = {}

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if not isinstance(broker, RedisBroker):
            return
        stop, interval = threading.Event(), registry_refresh_s(broker)

        host_key, max_age = host_workers_key(broker), registry_max_age_s(broker)

        def refresh() -> None:
            while not stop.is_set():
                with contextlib.suppress(redis.RedisError):  # Redis is down for now: the next round writes it
                    now = time.time()
                    pipe = broker.client.pipeline(transaction=False)
                    pipe.zadd(workers_key(broker), {broker.broker_id: now})
                    # Killed workers never say goodbye: drop theirs here too, not only when
                    # worker_status runs (a review: one entry per killed worker, kept otherwise).
                    pipe.zremrangebyscore(workers_key(broker), "-inf", now - max_age)
                    pipe.zremrangebyscore(host_key, "-inf", now - max_age)
                    pipe.zadd(host_key, {broker.broker_id: now})
                    pipe.expire(host_key, math.ceil(max_age))
                    pipe.execute()
                stop.wait(interval)

        thread = threading.Thread(target=refresh, name="worker-registry", daemon=True)
        self._running[id(worker)] = (stop, thread)
        thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if (running := self._running.pop(id(worker), None)) is not None:
            stop, thread = running
            stop.set()
            thread.join(timeout=10)
        if isinstance(broker, RedisBroker):
            with contextlib.suppress(redis.RedisError):
                broker.client.zrem(workers_key(broker), broker.broker_id)
                broker.client.zrem(host_workers_key(broker), broker.broker_id)
