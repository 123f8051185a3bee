"""veRL integration (tested with veRL 0.9.1 and its v1 trainer): an IAC advantage estimator for
veRL's registry, registered in every process by our ``verl.plugins`` entry point, and a metrics
tap on veRL's ``Tracking``.

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
  :func:`hook_tracking` wraps veRL's ``Tracking.log`` so that happens by itself, adds the
  step's ``sharpwatch/...`` numbers to what veRL's backends log, and raises
  :class:`EarlyStopError` out of ``trainer.fit()`` after an ``early_stop``.
- :func:`install_plugin` — what the ``verl.plugins`` entry point
  (:mod:`trainer_hooks.integrations._verl_plugin`) runs when a process imports veRL:
  :func:`register` and :func:`hook_tracking`. Under the v1 trainer the driver is a Ray actor, so
  the run is opened there, from ``SHARPWATCH_*`` environment variables, on the first
  ``iac_grpo`` call (:func:`tap_from_env`), and ``Tracking.finish`` closes it.

This module imports veRL only inside :func:`register` and :func:`hook_tracking`; the pure
function needs torch alone. See docs/integrations.md.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import torch

from service.wire.enums import RunStatus
from trainer_hooks._errors import ConfigurationError, SharpwatchHooksError
from trainer_hooks._iac import iac_calibrate
from trainer_hooks._layout import make_layout, segment_sum
from trainer_hooks._types import StepInputs, StepResult
from trainer_hooks._watch import RunSession, watch
from trainer_hooks.integrations._deferred import hold_records
from trainer_hooks.integrations._logged import ServiceStatus, logged_metrics

__all__ = [
    "DEFAULT_VERL_METRICS",
    "ESTIMATOR_NAME",
    "EarlyStopError",
    "SharpwatchVerlTap",
    "grpo_outcome_scores",
    "hook_tracking",
    "iac_grpo_outcome_advantage",
    "install_plugin",
    "register",
    "tap_from_env",
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
    s_plus: str = "advantage",
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantage with IAC (see the module docstring); ``[bs, T]`` in and out.

    S⁺ counts a group's responses with a positive advantage (seed 002 Algorithm 1, science.md
    §7); ``s_plus="threshold"`` counts scores (summed token reward) >= ``success_threshold``.
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
            adv, scores, ids, alpha=alpha, success_threshold=success_threshold, s_plus=s_plus
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

#: Environment variables that make the plugin open a run by itself in the process that computes
#: the advantages (veRL's driver, a Ray actor under the v1 trainer): see :func:`tap_from_env`.
ENV_URL = "SHARPWATCH_URL"


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
    if tap is None and os.environ.get(ENV_URL):
        tap = tap_from_env(config, index)
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
        s_plus=str(_config_get(config, "iac_s_plus", "advantage")),
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


def hook_tracking(tracking_cls: type[Any] | None = None) -> Callable[[], None] | None:
    """Wrap ``Tracking.log`` (default ``verl.utils.tracking.Tracking``) once per process so that,
    while a tap is attached, every logged step completes and sends the step's record, adds the
    ``sharpwatch/...`` numbers to what veRL's backends (W&B, TensorBoard, MLflow, console...)
    receive, and raises :class:`EarlyStopError` after an early_stop. Without an attached tap the
    wrapper only calls veRL's method. ``Tracking.finish`` closes a run the plugin opened
    (:func:`tap_from_env`). Returns an undo, or None when the class was already wrapped."""
    if tracking_cls is None:
        tracking_cls = importlib.import_module("verl.utils.tracking").Tracking
    assert tracking_cls is not None
    cls: type[Any] = tracking_cls
    original_log = cls.log
    if getattr(original_log, "_sharpwatch_hook", False):
        return None
    original_finish = getattr(cls, "finish", None)

    def log(self_: Any, data: Mapping[str, Any], step: int, *a: Any, **k: Any) -> Any:
        tap = _active_tap
        if tap is None:
            return original_log(self_, data, step, *a, **k)
        stop = tap.log(data, step)
        merged = {**data, **tap.last_logged} if tap.last_logged else data
        out = original_log(self_, merged, step, *a, **k)
        if stop:
            request = tap.session.stop_request
            reason = request.reason if request is not None else "early_stop"
            raise EarlyStopError(f"sharpwatch early_stop at step {step}: {reason}")
        return out

    log._sharpwatch_hook = True  # type: ignore[attr-defined]
    log.__name__ = "log"
    log.__doc__ = original_log.__doc__
    cls.log = log

    def finish(self_: Any, *a: Any, **k: Any) -> Any:
        try:
            return original_finish(self_, *a, **k) if original_finish is not None else None
        finally:
            tap = _active_tap
            if tap is not None and tap.owns_session:
                exit_code = k.get("exit_code", a[0] if a else 0)
                tap.close(status=None if exit_code == 0 else RunStatus.FAILED)

    if original_finish is not None:
        finish.__name__ = "finish"
        cls.finish = finish

    def undo() -> None:
        cls.log = original_log
        if original_finish is not None:
            cls.finish = original_finish

    return undo


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


def tap_from_env(
    config: Any = None, index: Iterable[Hashable] | torch.Tensor | None = None
) -> SharpwatchVerlTap | None:
    """Open a run from the environment in this process and attach a tap to it (what the veRL
    plugin does in veRL's driver, on the first ``iac_grpo`` call). None without ``SHARPWATCH_URL``.

    ``SHARPWATCH_URL`` the service; ``SHARPWATCH_RUN_NAME`` (default ``verl``),
    ``SHARPWATCH_PROJECT``, ``SHARPWATCH_TOKEN``; ``SHARPWATCH_GROUP_SIZE`` (default: the largest
    ``uid`` group of the first batch, i.e. ``rollout.n``); ``SHARPWATCH_KL_BETA`` (default 0) and
    ``SHARPWATCH_REFERENCE_BETA`` (β for Z'(q) when the KL coefficient is 0; default 0.04);
    ``SHARPWATCH_STATUS_INTERVAL`` (seconds between reads of the run's open alerts; default 5).
    The initial α is the algorithm config's ``iac_alpha`` (default 1.0).
    """
    global _active_tap
    url = os.environ.get(ENV_URL)
    if not url:
        return None
    with _tap_lock:
        if _active_tap is not None:
            return _active_tap
        raw_g = os.environ.get("SHARPWATCH_GROUP_SIZE")
        if raw_g:
            try:
                group_size = int(raw_g)
            except ValueError:
                raise ConfigurationError(
                    f"SHARPWATCH_GROUP_SIZE must be an integer, got {raw_g!r}"
                ) from None
        else:
            ids = [] if index is None else _group_ids(index)
            counts: dict[Hashable, int] = {}
            for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
                counts[i] = counts.get(i, 0) + 1
            group_size = max(counts.values(), default=1)
        kl_beta = _env_float("SHARPWATCH_KL_BETA", 0.0)
        session = watch(
            url,
            name=os.environ.get("SHARPWATCH_RUN_NAME") or "verl",
            project=os.environ.get("SHARPWATCH_PROJECT") or "default",
            token=os.environ.get("SHARPWATCH_TOKEN") or None,
            group_size=group_size,
            kl_beta=kl_beta,
            reference_beta=_env_float("SHARPWATCH_REFERENCE_BETA", 0.04) if kl_beta == 0 else None,
            alpha=float(_config_get(config, "iac_alpha", 1.0)),
            success_threshold=float(_config_get(config, "iac_success_threshold", 0.5)),
        )
        tap = SharpwatchVerlTap(
            session, status_interval=_env_float("SHARPWATCH_STATUS_INTERVAL", 5.0)
        )
        tap.owns_session = True
    try:
        hook_tracking()  # already done by the plugin; a no-op then
    except ImportError:
        log.warning("sharpwatch: veRL's Tracking is not importable; call tap.log(...) yourself")
    tap.attach()
    atexit.register(tap.close)
    return tap


class SharpwatchVerlTap:
    """Binds the ``iac_grpo`` estimator and veRL's metrics to a run session.

    Args:
        session: the run (``trainer_hooks.watch(...)``), opened in the driver process.
        metrics: veRL metric key -> sharpwatch metric name for :meth:`log`.
        status_interval: seconds between reads of the run's open alerts and Model Collapse
            Step on the service (for the ``sharpwatch/...`` numbers in veRL's loggers).

    Use it as a context manager (or :meth:`attach` / :meth:`detach`); while attached, every
    ``iac_grpo`` call in this process goes through the session.
    """

    def __init__(
        self,
        session: RunSession,
        *,
        metrics: Mapping[str, str] = DEFAULT_VERL_METRICS,
        status_interval: float = 5.0,
    ) -> None:
        self.session = session
        self.metrics = dict(metrics)
        self.deferred = hold_records(session)
        self.last_result: StepResult | None = None
        #: The ``sharpwatch/...`` numbers of the step :meth:`log` last completed ({} if none).
        self.last_logged: dict[str, float] = {}
        self.status = ServiceStatus(session, interval=status_interval)
        #: True when the tap opened its session itself (:func:`tap_from_env`) and closes it.
        self.owns_session = False
        self._restore: Callable[[], None] | None = None
        self._closed = False

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
        and send it; :attr:`last_logged` then holds the step's ``sharpwatch/...`` numbers.
        Returns True when the run should stop."""
        values: dict[str, float | None] = {}
        for key, name in self.metrics.items():
            value = data.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            elif value is not None and hasattr(value, "item"):
                value = value.item()  # numpy scalars
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
        completed = self.deferred.complete(values)
        record_metrics = self.deferred.last_completed_metrics
        if completed is not None and record_metrics is not None:
            self.last_logged = logged_metrics(record_metrics, self.status)
        else:
            self.last_logged = {}
        return self.session.should_stop

    @property
    def should_stop(self) -> bool:
        return self.session.should_stop

    # -- wiring -------------------------------------------------------------------------------
    def attach(self) -> SharpwatchVerlTap:
        global _active_tap
        with _tap_lock:
            _active_tap = self
        self.status.start()
        return self

    def detach(self) -> None:
        global _active_tap
        self.deferred.flush()
        self.status.close()
        with _tap_lock:
            if _active_tap is self:
                _active_tap = None
        if self._restore is not None:
            self._restore()
            self._restore = None

    def close(self, status: str | None = None) -> None:
        """Detach, and close the session when the tap opened it (``status`` default: stopped
        after an early_stop, else finished). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.detach()
        if self.owns_session:
            if status is None:
                status = RunStatus.STOPPED if self.session.should_stop else RunStatus.FINISHED
            self.session.close(status)

    def __enter__(self) -> SharpwatchVerlTap:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def install(self, tracking_cls: type[Any] | None = None) -> SharpwatchVerlTap:
        """Hook ``verl.utils.tracking.Tracking`` (or ``tracking_cls``) with :func:`hook_tracking`
        so every logged step completes and sends the record (and veRL's loggers get the
        ``sharpwatch/...`` numbers); after an early_stop the hook raises :class:`EarlyStopError`
        (catch it around ``trainer.fit()``). :meth:`detach` undoes a hook this call added."""
        self._restore = hook_tracking(tracking_cls)
        return self.attach()


def install_plugin() -> None:
    """What the ``verl.plugins`` entry point runs in every process that imports veRL: register
    ``iac_grpo`` and hook ``Tracking`` (inert until a tap is attached). Never raises: veRL
    swallows plugin errors at debug level, so a failure is logged as a warning here."""
    try:
        register()
        hook_tracking()
    except Exception:
        log.warning("sharpwatch veRL plugin failed to install", exc_info=True)
