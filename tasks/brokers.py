"""Broker choices beyond a plain Redis URL (see ``DRAMATIQ_BROKER`` in settings)."""

from __future__ import annotations

from typing import Any

from dramatiq.brokers.redis import RedisBroker
from redis.sentinel import Sentinel


class SentinelRedisBroker(RedisBroker):
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
