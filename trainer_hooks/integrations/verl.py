"""veRL integration: an IAC advantage estimator for veRL's registry, and a metrics tap.

- :func:`iac_grpo_outcome_advantage` — the pure function: veRL's GRPO outcome advantage (group
  mean and unbiased std per ``uid``; a group of one keeps its score; ``norm_adv_by_std_in_grpo``
  False gives Dr.GRPO), then IAC, Ã = A·(G − S⁺)^α on positive advantages (science.md §3),
  broadcast over the response tokens. Returns ``(advantages, returns)`` as veRL estimators do.
- :func:`register` — registers ``iac_grpo`` through ``verl.trainer.ppo.core_algos.register_adv_est``
  (select it with ``algorithm.adv_estimator=iac_grpo``). Without a tap, α comes from the
  algorithm config's ``iac_alpha`` (default 1.0).
- :class:`SharpwatchVerlTap` — binds the estimator to a :class:`trainer_hooks.RunSession`: each
  call runs ``session.step`` (group statistics, Z'(q), the run's current α, which the service's
  ``adjust_alpha`` commands change), and :meth:`SharpwatchVerlTap.log` completes the step record
  with veRL's logged metrics (``actor/entropy`` and friends) when the driver logs them.
  :meth:`SharpwatchVerlTap.install` hooks veRL's ``Tracking.log`` so that happens by itself, and
  raises :class:`EarlyStopError` out of ``trainer.fit()`` after an ``early_stop``.

This module imports veRL only inside :func:`register` and :meth:`SharpwatchVerlTap.install`;
the pure function needs torch alone. Register in the driver process (where veRL computes
advantages), before ``trainer.fit()``. See docs/integrations.md.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import torch

from trainer_hooks._errors import SharpwatchHooksError
from trainer_hooks._iac import iac_calibrate
from trainer_hooks._layout import make_layout, segment_sum
from trainer_hooks._types import StepInputs, StepResult
from trainer_hooks._watch import RunSession
from trainer_hooks.integrations._deferred import DeferredSender

__all__ = [
    "DEFAULT_VERL_METRICS",
    "ESTIMATOR_NAME",
    "EarlyStopError",
    "SharpwatchVerlTap",
    "grpo_outcome_scores",
    "iac_grpo_outcome_advantage",
    "register",
]

log = logging.getLogger("trainer_hooks.integrations.verl")

ESTIMATOR_NAME = "iac_grpo"

#: veRL metric key -> sharpwatch metric name (standard names where the meaning is the same).
DEFAULT_VERL_METRICS: Mapping[str, str] = {
    "actor/entropy": "entropy",
    "actor/kl_loss": "kl",
    "actor/pg_loss": "loss",
    "actor/grad_norm": "grad_norm",
    "actor/pg_clipfrac": "verl/pg_clipfrac",
    "actor/ppo_kl": "verl/ppo_kl",
    "critic/score/mean": "verl/score_mean",
    "response_length/mean": "verl/response_length_mean",
    "response_length/clip_ratio": "verl/response_length_clip_ratio",
}


class EarlyStopError(SharpwatchHooksError):
    """Raised out of veRL's logger call (so out of ``trainer.fit()``) after an early_stop, once
    the step's record is queued. Carries the :class:`trainer_hooks.StopRequest` reason."""


def _group_ids(index: Iterable[Hashable] | torch.Tensor) -> list[Hashable] | torch.Tensor:
    if isinstance(index, torch.Tensor):
        return index
    return [x.item() if hasattr(x, "item") else x for x in index]


def grpo_outcome_scores(
    token_level_rewards: torch.Tensor,
    index: Iterable[Hashable] | torch.Tensor,
    *,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[Hashable] | torch.Tensor]:
    """Per-response scores (summed token rewards), their GRPO advantages as veRL computes them,
    and the group ids: ``(scores [N], advantages [N], group_ids)``."""
    scores = token_level_rewards.sum(dim=-1)
    ids = _group_ids(index)
    layout = make_layout(scores, ids)
    work = scores.to(torch.float64)
    idx, b = layout.index, layout.num_groups
    sizes = layout.sizes.to(torch.float64)
    mean = segment_sum(work, idx, b) / sizes
    centred = work - mean.index_select(0, idx)
    var = segment_sum(centred**2, idx, b) / (sizes - 1.0).clamp_min(1.0)
    single = sizes == 1
    # veRL: a group of one has mean 0 and std 1, so its advantage is its score.
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(var), var.sqrt())
    adv = work - mean.index_select(0, idx)
    if norm_adv_by_std_in_grpo:
        adv = adv / (std.index_select(0, idx) + epsilon)
    return scores, adv.to(scores.dtype), ids


def iac_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Iterable[Hashable] | torch.Tensor,
    *,
    alpha: float = 1.0,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    success_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantage with IAC (see the module docstring); ``[bs, T]`` in and out.

    S⁺ counts a group's responses whose score (summed token reward) is >= ``success_threshold``.
    ``alpha = 0`` gives veRL's GRPO advantage exactly.
    """
    with torch.no_grad():
        scores, adv, ids = grpo_outcome_scores(
            token_level_rewards,
            index,
            epsilon=epsilon,
            norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
        )
        calibrated = iac_calibrate(
            adv, scores, ids, alpha=alpha, success_threshold=success_threshold
        )
        out = calibrated.unsqueeze(-1) * response_mask
    return out, out


def _config_get(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    getter = getattr(config, "get", None)
    if callable(getter):
        value = getter(key, default)
        return default if value is None else value
    return getattr(config, key, default)


_active_tap: SharpwatchVerlTap | None = None
_tap_lock = threading.Lock()


def compute_iac_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Iterable[Hashable] | torch.Tensor | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The function :func:`register` puts in veRL's registry (veRL's keyword interface)."""
    if index is None:
        raise SharpwatchHooksError("iac_grpo needs the batch's 'uid' index (veRL passes it)")
    epsilon = float(_config_get(config, "epsilon", kwargs.get("epsilon", 1e-6)))
    norm = bool(_config_get(config, "norm_adv_by_std_in_grpo", True))
    tap = _active_tap
    if tap is not None:
        return tap.advantages(
            token_level_rewards, response_mask, index, epsilon=epsilon, norm_adv_by_std_in_grpo=norm
        )
    return iac_grpo_outcome_advantage(
        token_level_rewards,
        response_mask,
        index,
        alpha=float(_config_get(config, "iac_alpha", 1.0)),
        epsilon=epsilon,
        norm_adv_by_std_in_grpo=norm,
        success_threshold=float(_config_get(config, "iac_success_threshold", 0.5)),
    )


def register(
    name: str = ESTIMATOR_NAME,
    *,
    register_adv_est: Callable[[str], Callable[[Any], Any]] | None = None,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Register the IAC estimator under ``name`` in veRL's advantage-estimator registry.

    ``register_adv_est`` defaults to ``verl.trainer.ppo.core_algos.register_adv_est`` (imported
    here); pass another registry's decorator to register elsewhere. Idempotent.
    """
    if register_adv_est is None:
        core_algos = importlib.import_module("verl.trainer.ppo.core_algos")
        register_adv_est = core_algos.register_adv_est
    assert register_adv_est is not None
    register_adv_est(name)(compute_iac_grpo_advantage)
    return compute_iac_grpo_advantage


class SharpwatchVerlTap:
    """Binds the ``iac_grpo`` estimator and veRL's metrics to a run session.

    Args:
        session: the run (``trainer_hooks.watch(...)``), opened in the driver process.
        metrics: veRL metric key -> sharpwatch metric name for :meth:`log`.

    Use it as a context manager (or :meth:`attach` / :meth:`detach`); while attached, every
    ``iac_grpo`` call in this process goes through the session.
    """

    def __init__(
        self, session: RunSession, *, metrics: Mapping[str, str] = DEFAULT_VERL_METRICS
    ) -> None:
        self.session = session
        self.metrics = dict(metrics)
        self.deferred = DeferredSender(session.monitor.sender)
        session.monitor.sender = self.deferred
        self.last_result: StepResult | None = None
        self._restore: Callable[[], None] | None = None

    # -- estimator side -----------------------------------------------------------------------
    def advantages(
        self,
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: Iterable[Hashable] | torch.Tensor,
        *,
        epsilon: float = 1e-6,
        norm_adv_by_std_in_grpo: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GRPO advantages calibrated by the session (its α, its IAC switch); one step."""
        with torch.no_grad():
            scores, adv, ids = grpo_outcome_scores(
                token_level_rewards,
                index,
                epsilon=epsilon,
                norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
            )
            result = self.session.step(
                StepInputs(
                    rewards=scores,
                    advantages=adv,
                    group_ids=ids,
                    response_lengths=response_mask.sum(dim=-1),
                )
            )
            self.last_result = result
            used = adv if result.advantages is None else result.advantages
            out = used.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
        return out, out

    # -- logging side -------------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None) -> bool:
        """Complete the pending step record with veRL's ``data`` (the driver's metrics dict)
        and send it. Returns True when the run should stop."""
        values: dict[str, float | None] = {}
        for key, name in self.metrics.items():
            value = data.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            elif value is not None and hasattr(value, "item"):
                value = value.item()  # numpy scalars
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
        self.deferred.complete(values)
        return self.session.should_stop

    @property
    def should_stop(self) -> bool:
        return self.session.should_stop

    # -- wiring -------------------------------------------------------------------------------
    def attach(self) -> SharpwatchVerlTap:
        global _active_tap
        with _tap_lock:
            _active_tap = self
        return self

    def detach(self) -> None:
        global _active_tap
        self.deferred.flush()
        with _tap_lock:
            if _active_tap is self:
                _active_tap = None
        if self._restore is not None:
            self._restore()
            self._restore = None

    def __enter__(self) -> SharpwatchVerlTap:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def install(self, tracking_cls: type[Any] | None = None) -> SharpwatchVerlTap:
        """Hook ``verl.utils.tracking.Tracking.log`` (or ``tracking_cls.log``) so every logged
        step completes and sends the record; after an early_stop the hook raises
        :class:`EarlyStopError` (catch it around ``trainer.fit()``). Undone by :meth:`detach`."""
        if tracking_cls is None:
            tracking_cls = importlib.import_module("verl.utils.tracking").Tracking
        assert tracking_cls is not None
        cls: type[Any] = tracking_cls
        original = cls.log
        tap = self

        def log_and_tap(self_: Any, data: Mapping[str, Any], step: int, *a: Any, **k: Any) -> Any:
            out = original(self_, data, step, *a, **k)
            if tap.log(data, step):
                request = tap.session.stop_request
                reason = request.reason if request is not None else "early_stop"
                raise EarlyStopError(f"sharpwatch early_stop at step {step}: {reason}")
            return out

        cls.log = log_and_tap

        def restore() -> None:
            cls.log = original

        self._restore = restore
        return self.attach()
