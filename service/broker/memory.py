"""The in-process broker of the embedded default (one worker)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from service.broker.base import Listener, LocalListeners


class InProcessBroker:
    def __init__(self) -> None:
        self._listeners = LocalListeners()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, run_id: int) -> None:
        self._listeners.wake(run_id)

    def listen(self, run_id: int) -> AbstractAsyncContextManager[Listener]:
        return self._listeners.listen(run_id)

    async def ping(self) -> bool:
        return True
