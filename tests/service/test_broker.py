from __future__ import annotations

import asyncio
import time

import pytest

from service.broker import CommandBroker, InProcessBroker, RedisBroker


async def _wake_latency(publisher: CommandBroker, listener_broker: CommandBroker) -> float:
    async with listener_broker.listen(7) as listener:
        await asyncio.sleep(0.05)  # let a Redis subscription settle
        start = time.perf_counter()
        await publisher.publish(7)
        assert await listener.wait(2.0)
        return time.perf_counter() - start


def test_in_process_broker_wakes_listener_of_that_run_only() -> None:
    async def scenario() -> None:
        broker = InProcessBroker()
        async with broker.listen(1) as one, broker.listen(2) as two:
            await broker.publish(1)
            assert await one.wait(0.5)
            assert not await two.wait(0.05)
        assert await broker.ping()

    asyncio.run(scenario())


@pytest.mark.redis
def test_redis_broker_wakes_listener_in_another_worker(redis_url: str) -> None:
    async def scenario() -> float:
        worker_a, worker_b = RedisBroker(redis_url), RedisBroker(redis_url)
        await worker_a.start()
        await worker_b.start()
        try:
            assert await worker_a.ping()
            return await _wake_latency(worker_a, worker_b)
        finally:
            await worker_a.close()
            await worker_b.close()

    assert asyncio.run(scenario()) < 1.0


def test_listener_times_out_without_publish() -> None:
    async def scenario() -> bool:
        async with InProcessBroker().listen(3) as listener:
            return await listener.wait(0.05)

    assert asyncio.run(scenario()) is False


def test_unreachable_redis_is_logged_once_with_its_cause_then_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis that is down is reported with its cause, and not once per retry (the old loop
    logged "redis subscription lost; retrying" ~14 times in 12 s with no cause)."""

    async def scenario() -> None:
        broker = RedisBroker("redis://127.0.0.1:1/0")  # nothing listens on port 1
        await broker.start()
        await asyncio.sleep(4.0)
        await broker.close()

    with caplog.at_level("WARNING", logger="service.broker.redis"):
        asyncio.run(scenario())
    lost = [r for r in caplog.records if "redis subscription lost" in r.getMessage()]
    assert 1 <= len(lost) <= 3, [r.__dict__.get("failures") for r in lost]
    assert "Connection" in lost[0].__dict__["cause"]
