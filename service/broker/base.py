"""The broker interface."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol


class Listener:
    """A subscription to one run's wake-ups; created before the store is read, so a command
    committed between the read and the wait still wakes it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """True if woken within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class CommandBroker(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, run_id: int) -> None:
        """Tell every worker that run ``run_id`` has new commands."""
        ...

    def listen(self, run_id: int) -> AbstractAsyncContextManager[Listener]:
        """``async with broker.listen(run_id) as listener``: wake-ups for one run."""
        ...

    async def ping(self) -> bool: ...


class LocalListeners:
    """The listeners held by this process, by run."""

    def __init__(self) -> None:
        self._by_run: defaultdict[int, set[Listener]] = defaultdict(set)

    @asynccontextmanager
    async def listen(self, run_id: int) -> AsyncIterator[Listener]:
        listener = Listener()
        self._by_run[run_id].add(listener)
        try:
            yield listener
        finally:
            listeners = self._by_run.get(run_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._by_run[run_id]

    def wake(self, run_id: int) -> None:
        for listener in self._by_run.get(run_id, ()):
            listener.wake()

    def __len__(self) -> int:
        return sum(len(listeners) for listeners in self._by_run.values())
