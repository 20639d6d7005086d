"""Broker choices beyond a plain Redis URL (see ``DRAMATIQ_BROKER`` in settings)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from redis.sentinel import Sentinel

logger = logging.getLogger(__name__)

# While every prefetched message is still being worked on, the consumer looks again after a
# backoff that starts at 2 ms and doubles (with Dramatiq's jitter) up to this cap. The worker
# threads' acks, which free slots, are handled between two looks; a prefetch of 2 x threads
# holds far more than 32 ms of work, so the threads never run dry, while a consumer that stays
# full loops ~40 times a second instead of ~440 (Dramatiq's own loop: ~3; measured by Dramatiq's suite).
BUSY_MAX_BACKOFF_MS = 32


class WakingRedisBroker(RedisBroker):
    """A RedisBroker whose idle workers are woken by each enqueue instead of by their next poll.

    Dramatiq's Redis consumer polls an empty queue with a backoff that grows to ``worker_timeout``
    (1 s): after a quiet moment a sign-up's email waited up to a second before a worker even
    looked. Here each enqueue also PUBLISHes to the queue's wake channel, and an idle consumer
    waits on that channel (for at most the same backoff) instead of sleeping: it fetches as soon
    as a message arrives, while idle workers still ask Redis as rarely as before. A lost wake-up
    costs only that poll interval; the queue itself is unchanged, so workers without this class
    interoperate. Built on Dramatiq's ``_RedisConsumer`` (Dramatiq is pinned; tests cover it).
    """

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def wake_channel(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.wake"

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        message = super().enqueue(message, delay=delay)
        try:
            self.client.publish(self.wake_channel(message.queue_name), b"")
        except redis.RedisError:
            # The message is safely queued; without the wake-up it waits for the next poll.
            logger.warning("wake-up not published", extra={"queue": message.queue_name})
        return message


class _WakingConsumer(_RedisConsumer):
    broker: WakingRedisBroker

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.pubsub: Any = None
        self.busy_misses = 0

    def __next__(self) -> MessageProxy | None:
        # Dramatiq's own loop, with the idle sleep replaced by a wait on the wake channel.
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # Dramatiq guards against this too (its issue #266)
                        continue
                    self.misses = self.busy_misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                if self.pubsub is None:  # subscribe before fetching, so no publish goes unseen
                    self.pubsub = self.broker.client.pubsub()
                    self.pubsub.subscribe(self.broker.wake_channel(self.queue_name))
                self._drop_pending_wakeups()
                if self.outstanding_message_count >= self.prefetch:
                    self.busy_misses, backoff_ms = compute_backoff(
                        self.busy_misses, factor=2, max_backoff=BUSY_MAX_BACKOFF_MS
                    )
                    time.sleep(backoff_ms / 1000)
                    return None
                self.busy_misses = 0
                wanted = self.prefetch - self.outstanding_message_count
                self.message_cache = self.broker.do_fetch(self.queue_name, wanted)
                if not self.message_cache:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    self._wait(backoff_ms / 1000)
                    return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _drop_pending_wakeups(self) -> None:
        # A consumer always fetches before it waits, so wake-ups that came while it was busy are
        # answered already; reading them keeps them from piling up in Redis's output buffer
        # for this client (which Redis would cut off) during a long busy stretch.
        while self.pubsub.get_message(timeout=0) is not None:
            pass

    def _wait(self, seconds: float) -> None:
        """Until a wake-up arrives on the channel, or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            event = self.pubsub.get_message(timeout=remaining)
            if event is not None and event["type"] == "message":
                return

    def close(self) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self.pubsub.close()
            self.pubsub = None
        super().close()


class SentinelRedisBroker(WakingRedisBroker):
    """A RedisBroker whose client always talks to the master that Redis Sentinel names.

    After a fail-over the client asks the sentinels again and follows the new master.
    """

    def __init__(
        self,
        *,
        sentinels: list[str],
        master: str,
        socket_timeout: float = 5,
        socket_connect_timeout: float = 2,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        hosts = [(host, int(port)) for host, port in (item.rsplit(":", 1) for item in sentinels)]
        timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout}
        sentinel = Sentinel(hosts, sentinel_kwargs=timeouts, **timeouts)
        client = sentinel.master_for(master, password=password, **timeouts)
        super().__init__(client=client, **kwargs)
