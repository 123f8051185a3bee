"""``trainer_hooks.watch``: one object per run, one call per step, a context manager.

It wires a :class:`Monitor` (the metrics and IAC) to a :class:`SharpwatchClient` (the background
sender) and a :class:`CommandPoller` (early_stop and adjust_alpha from the service).

Under ``torch.distributed`` only rank 0 talks to the service; at every step rank 0 broadcasts its
α and stop flag so every rank calibrates with the same α and stops at the same step (one small
collective per step, only when the world size is above 1). Commands that reach rank 0 between two
steps are held until the next step's broadcast, so rank 0 never acts on a command before the
other ranks do: under DDP, :attr:`RunSession.should_stop` and the α change at the same step on
every rank.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
import torch

from service.wire.enums import RunStatus
from trainer_hooks._client import RunInfo, SharpwatchClient
from trainer_hooks._commands import CommandPoller
from trainer_hooks._errors import ConfigurationError
from trainer_hooks._iac import _check_alpha
from trainer_hooks._monitor import Monitor
from trainer_hooks._types import AlphaChange, StepInputs, StepResult, StopRequest

log = logging.getLogger("trainer_hooks.watch")


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class RunSession:
    """The run as the training loop sees it. Build it with :func:`watch`."""

    def __init__(
        self,
        url: str | None,
        *,
        name: str,
        group_size: int,
        kl_beta: float = 0.0,
        project: str = "default",
        token: str | None = None,
        config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        detectors: Mapping[str, Any] | None = None,
        policy: Mapping[str, Any] | None = None,
        commands: bool = True,
        poll_wait: float = 25.0,
        on_stop: Callable[[StopRequest], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        spool_dir: str | Path | Literal[False] | None = None,
        fsync_interval: float = 1.0,
        **monitor_options: Any,
    ) -> None:
        if not name:
            raise ConfigurationError("name must be a non-empty run name")
        self.rank, self.world_size = _distributed()
        self.monitor = Monitor(
            group_size=group_size, kl_beta=kl_beta, on_stop=on_stop, **monitor_options
        )
        self.client: SharpwatchClient | None = None
        self.poller: CommandPoller | None = None
        self.run: RunInfo | None = None
        self._next_step: int | None = None
        # Under DDP, commands rank 0 receives wait here for the next step's broadcast.
        self._held_alpha: tuple[float, str, Callable[[AlphaChange], None] | None] | None = None
        self._held_stop: tuple[str, int | None] | None = None
        self._synced_stop = False
        self._token = token
        self.failure_reason: str | None = None
        self._poll_wait = poll_wait
        self._commands = commands
        self._transport = transport
        if url is None or self.rank != 0:
            return
        self.client = SharpwatchClient(
            url,
            token=token,
            transport=transport,
            spool_dir=spool_dir,
            fsync_interval=fsync_interval,
        )
        self.monitor.add_sender(self.client)
        run_config = dict(config or {})
        if kl_beta == 0.0 and self.monitor.reference_beta is not None:
            run_config.setdefault("reference_beta", self.monitor.reference_beta)
        info = self.client.open_run(
            name,
            group_size=group_size,
            project=project,
            kl_beta=kl_beta,
            config=run_config,
            tags=tags,
            detectors=detectors,
            policy=policy,
            on_registered=self._attach,
        )
        # A resumed trainer numbers its new steps after everything the run already has: the
        # service's last stored step and the steps still in its own spool (sent first, in order;
        # numbering after the service alone would collide with them).
        stored = info.last_step if info is not None else None
        known = [x for x in (stored, self.client.last_spooled_step) if x is not None]
        if known:
            self._next_step = max(known) + 1
        if info is not None and info.last_step is not None and info.alpha is not None:
            self.monitor.set_alpha(info.alpha, reason="resumed run")

    def _attach(self, info: RunInfo) -> None:
        self.run = info
        if self._commands and self.poller is None and self.client is not None:
            self.poller = CommandPoller(
                self.client.base_url,
                info.id,
                self,
                token=info.ingest_token or self._token,
                wait=self._poll_wait,
                transport=self._transport,
            ).start()

    # -- the loop's calls ---------------------------------------------------------------------
    def step(self, inputs: StepInputs) -> StepResult:
        """Compute, stream and calibrate one step (see :meth:`Monitor.step`)."""
        if inputs.step is None and self._next_step is not None:
            inputs = replace(inputs, step=self._next_step)
        if self.world_size > 1:
            step = self._sync_ranks(inputs.rewards.device, inputs.step)
            inputs = replace(inputs, step=step)
        try:
            result = self.monitor.step(inputs)
        except Exception as exc:
            # The error still reaches the loop (it is the caller's to fix); the run records why,
            # so the service shows the failure instead of a "healthy" run that just ended.
            last = self.monitor.last_step
            at = inputs.step if inputs.step is not None else (0 if last is None else last + 1)
            self.failure_reason = _reason(f"step {at} failed in trainer_hooks", exc)
            raise
        self._next_step = result.step + 1
        return result

    @property
    def should_stop(self) -> bool:
        """True once an early_stop arrived (or :meth:`request_stop` was called). Under DDP: once
        rank 0's stop flag was broadcast, at the same step on every rank."""
        if self.world_size > 1:
            return self._synced_stop
        return self.monitor.should_stop

    @property
    def stop_request(self) -> StopRequest | None:
        return self.monitor.stop_request

    @property
    def alpha(self) -> float:
        return self.monitor.alpha

    @property
    def last_step(self) -> int | None:
        """The last step processed (the command poller acknowledges early_stop with it)."""
        return self.monitor.last_step

    def set_alpha(
        self,
        new_alpha: float,
        reason: str = "",
        *,
        on_applied: Callable[[AlphaChange], None] | None = None,
    ) -> None:
        """Change IAC α from the next step on (see :meth:`Monitor.set_alpha`). Under DDP a change
        made on rank 0 is held until the next step, which broadcasts it to every rank."""
        if self.world_size > 1:
            try:
                value = _check_alpha(new_alpha)
            except ConfigurationError as exc:
                raise ConfigurationError(f"new_alpha: {exc}") from None
            self._held_alpha = (value, str(reason), on_applied)
            return
        self.monitor.set_alpha(new_alpha, reason, on_applied=on_applied)

    def request_stop(self, reason: str, best_step: int | None = None) -> None:
        """Ask the loop to stop. Under DDP a request made on rank 0 takes effect on every rank
        at the next step (requests made on other ranks only are ignored: rank 0 decides)."""
        if self.world_size > 1:
            self._held_stop = (str(reason), best_step)
            return
        self.monitor.request_stop(reason, best_step)

    def _sync_ranks(self, device: torch.device, step: int | None) -> int:
        """One broadcast from rank 0: α, the stop flag and the step number (a resumed rank 0
        continues the stored run; the other ranks follow its numbering). Returns the step."""
        if step is None:
            last = self.monitor.last_step
            step = 0 if last is None else last + 1
        if self.rank == 0:
            held_alpha, self._held_alpha = self._held_alpha, None
            if held_alpha is not None:
                value, reason, on_applied = held_alpha
                self.monitor.set_alpha(value, reason, on_applied=on_applied)
            held_stop, self._held_stop = self._held_stop, None
            if held_stop is not None and not self.monitor.should_stop:
                self.monitor.request_stop(*held_stop)
        stop = 1.0 if self.monitor.should_stop else 0.0
        state = torch.tensor(
            [self.monitor.pending_alpha, stop, float(step)], device=device, dtype=torch.float64
        )
        torch.distributed.broadcast(state, src=0)
        alpha, stop_flag, synced_step = state.tolist()
        if self.rank != 0:
            if alpha != self.monitor.pending_alpha:
                self.monitor.set_alpha(alpha, reason="broadcast from rank 0")
            if stop_flag and not self.monitor.should_stop:
                self.monitor.request_stop("early_stop broadcast from rank 0")
        self._synced_stop = bool(stop_flag)
        return int(synced_step)

    # -- lifetime -----------------------------------------------------------------------------
    def close(self, status: str = RunStatus.FINISHED, reason: str | None = None) -> None:
        """Flush, mark the run ``status`` on the service (which releases the command long-poll),
        and stop the command poller. A ``failed`` run carries ``reason`` (default: the error
        recorded by :meth:`step`), shown by ``GET /runs/{id}`` and on the run's page."""
        poller, self.poller = self.poller, None
        if self.client is not None:
            # Unsent records are safe in the spool either way: wait long only for a service
            # that is answering, so a trainer leaving during an outage leaves at once.
            reachable = self.client.last_error is None
            flushed = self.client.flush(timeout=30.0 if reachable else 1.0)
            if self.client.run is not None:
                change: dict[str, str] = {"status": status}
                why = reason or self.failure_reason
                if status == RunStatus.FAILED and why:
                    change["failure_reason"] = why
                with contextlib.suppress(httpx.HTTPError):
                    self.client.update_run(change)
            self.client.close(timeout=10.0 if flushed else 1.0)
            self.client = None
        if poller is not None:
            poller.close()

    def __enter__(self) -> RunSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = RunStatus.STOPPED if self.should_stop else RunStatus.FINISHED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.STOPPED
        else:
            status = RunStatus.FAILED
            if self.failure_reason is None and exc is not None:
                self.failure_reason = _reason("the training loop raised", exc)
        self.close(status)


def _reason(where: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{where}: {type(exc).__name__}: {text}"[:1024]


def watch(url: str | None, *, name: str, group_size: int, **options: Any) -> RunSession:
    """Start watching a run: ``with trainer_hooks.watch(url, name=..., group_size=8) as run:``.

    ``url=None`` computes and calibrates without a service (offline). Every other keyword is a
    :class:`RunSession` option (project, kl_beta, token, config, tags, detectors, policy,
    commands, poll_wait, on_stop, spool_dir, fsync_interval: see :class:`SharpwatchClient`) or a
    :class:`Monitor` setting (alpha, iac, reference_beta, …).
    """
    return RunSession(url, name=name, group_size=group_size, **options)
