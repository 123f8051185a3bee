"""The command loop, trainer side: a background thread long-polls the service for commands,
hands them to the monitor, and acknowledges them.

- ``adjust_alpha``: the monitor applies the new α from its next step; the ack carries that step.
- ``early_stop``: the monitor's ``should_stop`` turns true at once and its ``on_stop`` callback
  runs (from this thread: keep it short, e.g. set a flag); the ack carries the last finished step.

Commands are deduplicated by id, so a re-delivery (after a lost ack, or a resumed trainer) is
acknowledged again without being applied twice. Nothing here raises into the training loop.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from typing import Any, Protocol

import httpx

from service.wire.command import Command
from service.wire.enums import CommandKind, CommandStatus
from trainer_hooks._api import ServiceApi
from trainer_hooks._errors import ConfigurationError
from trainer_hooks._types import AlphaChange

log = logging.getLogger("trainer_hooks.commands")

_KINDS = frozenset(CommandKind)


class CommandTarget(Protocol):
    """What the poller drives; :class:`trainer_hooks.Monitor` is one."""

    @property
    def last_step(self) -> int | None: ...

    def set_alpha(self, new_alpha: float, reason: str = "", *, on_applied: Any = None) -> None: ...

    def request_stop(self, reason: str, best_step: int | None = None) -> None: ...


class CommandPoller:
    """Long-polls the run's commands (``GET .../commands?wait=…``) in a daemon thread.

    Args:
        base_url: the service.
        run_id: the registered run.
        target: receives ``set_alpha`` / ``request_stop``.
        token: bearer token, when the service requires one.
        wait: long-poll duration in seconds (the service caps it).
        transport: an ``httpx`` transport (tests hand in their own).
    """

    def __init__(
        self,
        base_url: str,
        run_id: int,
        target: CommandTarget,
        *,
        token: str | None = None,
        wait: float = 25.0,
        transport: httpx.BaseTransport | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        if run_id < 1:
            raise ConfigurationError(f"run_id must be ≥ 1, got {run_id}")
        if not 0 < wait <= 300:
            raise ConfigurationError(f"wait must be in (0, 300] seconds, got {wait}")
        headers = {"user-agent": "sharpwatch-trainer-hooks"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._api = ServiceApi(
            httpx.Client(
                base_url=base_url.rstrip("/"),
                headers=headers,
                timeout=httpx.Timeout(10.0, read=wait + 10.0),
                transport=transport,
            )
        )
        # Acks travel on their own connection and thread: an α change applied by the training
        # thread is acknowledged at once, not after the current long-poll returns.
        self._ack_api = ServiceApi(
            httpx.Client(
                base_url=base_url.rstrip("/"), headers=headers, timeout=10.0, transport=transport
            )
        )
        self.run_id = run_id
        self.target = target
        self.wait = wait
        self.max_backoff = max_backoff
        self.seen: set[int] = set()
        self.applied: list[dict[str, Any]] = []
        self._acks: queue.SimpleQueue[tuple[int, dict[str, Any]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sharpwatch-commands", daemon=True)
        self._ack_thread = threading.Thread(
            target=self._ack_loop, name="sharpwatch-command-acks", daemon=True
        )
        self.last_error: str | None = None

    def start(self) -> CommandPoller:
        self._thread.start()
        self._ack_thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop polling; acks already queued are sent first (up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not self._acks.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._acks.put((0, {}))  # wake the ack thread
        self._ack_thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._api.close()
        self._ack_api.close()
        self._thread.join(timeout=0.1)

    # -- thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = self._api.poll_commands(self.run_id, wait=self.wait)
                if response.status_code != 200:
                    raise httpx.HTTPStatusError(
                        f"HTTP {response.status_code}: {response.text[:200]}",
                        request=response.request,
                        response=response,
                    )
                commands = response.json()
                backoff = 0.0
            except Exception as exc:  # never let the thread die
                if self._stop.is_set():
                    return
                self.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(self.max_backoff, max(0.2, backoff * 2))
                self._stop.wait(backoff * random.uniform(0.5, 1.0))
                continue
            for command in commands:
                self._handle(command)
            if any(c.get("kind") == CommandKind.EARLY_STOP for c in commands):
                return  # the run is stopping: nothing further to apply
            if not commands and time.monotonic() - started < 0.5:
                # The service answered at once with nothing (the run has ended): don't spin.
                self._stop.wait(1.0)

    def _handle(self, raw: dict[str, Any]) -> None:
        command_id = int(raw["id"])
        if command_id in self.seen:
            return
        self.seen.add(command_id)
        kind = raw.get("kind")
        try:
            if kind not in _KINDS:
                self._ack(command_id, CommandStatus.REJECTED, detail=f"unknown kind {kind!r}")
            elif (command := Command.model_validate(raw)).kind is CommandKind.ADJUST_ALPHA:
                if command.alpha is None:
                    raise ValueError("adjust_alpha carries no alpha")

                def applied(change: AlphaChange, command_id: int = command_id) -> None:
                    self._ack(command_id, CommandStatus.APPLIED, step=change.effective_step)

                self.target.set_alpha(command.alpha, command.reason, on_applied=applied)
            else:
                self.target.request_stop(command.reason, command.best_step)
                step = self.target.last_step
                self._ack(command_id, CommandStatus.APPLIED, step=0 if step is None else step)
        except Exception as exc:
            log.warning("sharpwatch command %s could not be applied: %s", command_id, exc)
            self._ack(command_id, CommandStatus.REJECTED, detail=str(exc)[:1000])
        self.applied.append(raw)

    def _ack(self, command_id: int, status: CommandStatus, **body: Any) -> None:
        """Queue the ack (``{"status": ..., "step" or "detail": ...}``) for the ack thread."""
        self._acks.put((command_id, {"status": status, **body}))

    def _ack_loop(self) -> None:
        backoff = 0.0
        while True:
            command_id, body = self._acks.get()
            if command_id == 0:
                if self._stop.is_set():
                    return
                continue
            if self._post_ack(command_id, body):
                backoff = 0.0
                continue
            self._acks.put((command_id, body))
            if self._stop.is_set():
                return
            backoff = min(self.max_backoff, max(0.2, backoff * 2))
            self._stop.wait(backoff * random.uniform(0.5, 1.0))

    def _post_ack(self, command_id: int, body: dict[str, Any]) -> bool:
        """True when the ack is settled (stored, or refused for good)."""
        try:
            response = self._ack_api.ack_command(self.run_id, command_id, body)
        except httpx.HTTPError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        if response.status_code >= 500:
            return False
        if response.status_code >= 400:
            log.warning(
                "sharpwatch refused the ack of command %s: %s", command_id, response.text[:300]
            )
        return True
