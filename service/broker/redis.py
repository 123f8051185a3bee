"""Redis pub/sub broker for several workers: each worker holds one subscription and fans
messages out to its local listeners."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractAsyncContextManager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.broker.base import Listener, LocalListeners
from service.log_throttle import OutageLog

log = logging.getLogger(__name__)
CHANNEL_PREFIX = "sharpwatch:commands:"


class RedisBroker:
    def __init__(self, url: str, *, client: aioredis.Redis | None = None) -> None:
        self._client = client if client is not None else aioredis.from_url(url)
        self._listeners = LocalListeners()
        self._task: asyncio.Task[None] | None = None
        self._outage = OutageLog(
            log, "redis subscription lost; long-polls fall back to the database until it is back"
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._receive(), name="sharpwatch-redis-broker")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def publish(self, run_id: int) -> None:
        self._listeners.wake(run_id)
        try:
            await self._client.publish(f"{CHANNEL_PREFIX}{run_id}", b"1")
        except RedisError as exc:
            # Other workers' pollers find the command on their next look at the database.
            log.warning("redis publish failed", extra={"run_id": run_id, "error": str(exc)})

    def listen(self, run_id: int) -> AbstractAsyncContextManager[Listener]:
        return self._listeners.listen(run_id)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def _receive(self) -> None:
        """Hold the subscription (reconnect backoff up to 30 s). A lost Redis is logged once with
        its cause, then at doubling intervals while it stays down (:class:`OutageLog`), and once
        when it is back."""
        backoff = 0.1
        failures = 0
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
                    if failures:
                        log.warning("redis subscription restored", extra={"failures": failures})
                    backoff, failures = 0.1, 0
                    async for message in pubsub.listen():
                        if message.get("type") != "pmessage":
                            continue
                        channel = message["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        with contextlib.suppress(ValueError):
                            self._listeners.wake(int(channel.removeprefix(CHANNEL_PREFIX)))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                failures += 1
                self._outage.failure(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
