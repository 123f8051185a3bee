"""TRL integration: stream GRPOTrainer's health to sharpwatch, obey early_stop, calibrate with IAC.

Two pieces (docs/integrations.md):

- :class:`SharpwatchCallback` — a ``transformers.TrainerCallback``. Wrap your reward functions
  with :meth:`SharpwatchCallback.reward_func` so the callback sees each response's reward (hence
  per-group successes S⁺, p̂, degenerate groups, and Z'(q) from the answer keys); at each train
  log it sends one step record with TRL's own logged ``entropy``, ``frac_reward_zero_std``,
  ``kl``, ``loss`` and ``grad_norm``. An ``early_stop`` command sets
  ``control.should_training_stop``. Metrics only: the advantages are TRL's.
  :meth:`SharpwatchCallback.bind` ``(trainer)`` also puts the step's ``sharpwatch/...`` numbers
  into TRL's own metrics, so every ``report_to`` backend (W&B, TensorBoard, MLflow) logs them.
- :class:`IACGRPOTrainer` — a ``trl.GRPOTrainer`` that recalibrates each group's advantages with
  IAC (Ã = A·(G − S⁺)^α on positive advantages, science.md §3) using the run's current α, so
  ``adjust_alpha`` commands from the service take effect from the next generation round. It adds
  its own :class:`SharpwatchCallback`, bound to it; reward functions need no wrapping.

Both take a :class:`trainer_hooks.RunSession` (``trainer_hooks.watch(...)``) that you open and
close around ``trainer.train()``. Under several processes every rank must hold a session (only
rank 0 talks to the service); the callback calls ``session.step`` on every rank at the same point.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl.trainer.grpo_trainer import GRPOTrainer

from trainer_hooks._errors import ConfigurationError
from trainer_hooks._types import StepInputs, StepResult
from trainer_hooks._watch import RunSession
from trainer_hooks.integrations._deferred import hold_records
from trainer_hooks.integrations._logged import ServiceStatus, logged_metrics

__all__ = [
    "DEFAULT_LOG_METRICS",
    "IACGRPOTrainer",
    "SharpwatchCallback",
    "completion_key",
]

log = logging.getLogger("trainer_hooks.integrations.trl")

#: TRL log key -> sharpwatch metric name. Standard names where the meaning is the same
#: (science.md; service/wire/metrics.py), ``trl/...`` extras otherwise.
DEFAULT_LOG_METRICS: Mapping[str, str] = {
    "entropy": "entropy",
    "kl": "kl",
    "loss": "loss",
    "grad_norm": "grad_norm",
    "frac_reward_zero_std": "frac_reward_zero_std",
    "reward": "trl/reward",
    "reward_std": "trl/reward_std",
    "completions/mean_length": "trl/completions_mean_length",
    "completions/clipped_ratio": "trl/completions_clipped_ratio",
    "clip_ratio/region_mean": "trl/clip_ratio_region_mean",
    "learning_rate": "trl/learning_rate",
}


def completion_key(completion: Any) -> str:
    """The default answer key: a short hash of the completion's text (the last message's content
    for conversational completions). Give an extractor of the final answer for a better Z'(q)."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        completion = completion[-1].get("content", "")
    text = completion if isinstance(completion, str) else repr(completion)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _not_a_training_log(logs: Mapping[str, Any]) -> bool:
    return any(str(k).startswith("eval_") for k in logs) or "train_runtime" in logs


class SharpwatchCallback(TrainerCallback):  # type: ignore[misc,unused-ignore]
    """Streams GRPO health metrics to sharpwatch and stops training on ``early_stop``.

    Args:
        session: the run (``trainer_hooks.watch(...)``); its monitor computes the metrics.
        num_generations: G, responses per prompt (consecutive in TRL's batches); default the
            session's ``group_size``.
        answer_key: maps a completion to its answer key for Z'(q) (default
            :func:`completion_key`); ``None`` disables Z'(q).
        log_metrics: which TRL log keys to send, and under which metric names.
        reward_weights: weights of the wrapped reward functions, in the order they were wrapped
            (default 1 each); the per-response reward is their weighted sum, as in TRL.
    """

    def __init__(
        self,
        session: RunSession,
        *,
        num_generations: int | None = None,
        answer_key: Callable[[Any], Hashable] | None = completion_key,
        log_metrics: Mapping[str, str] = DEFAULT_LOG_METRICS,
        reward_weights: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(session, RunSession):
            raise ConfigurationError("session must be a trainer_hooks.RunSession (watch(...))")
        self.session = session
        self.num_generations = int(num_generations or session.monitor.group_size)
        if self.num_generations < 1:
            raise ConfigurationError(f"num_generations must be >= 1, got {num_generations}")
        self.answer_key = answer_key
        self.log_metrics = dict(log_metrics)
        self.reward_weights = None if reward_weights is None else [float(w) for w in reward_weights]
        # Rewards seen through wrapped reward functions since the last step: one column per
        # function, each a list of calls.
        self._columns: dict[int, list[list[float]]] = {}
        self._keys: list[Hashable] = []
        self._n_funcs = 0
        # Records of steps computed at generation time (IACGRPOTrainer) wait for TRL's log.
        self.deferred = hold_records(session)
        self.last_result: StepResult | None = None
        self.status: ServiceStatus | None = None
        self._bound: Any = None

    # -- the trainer's own loggers ------------------------------------------------------------
    def bind(self, trainer: Any, *, status_interval: float = 5.0) -> SharpwatchCallback:
        """Also put the step's numbers into ``trainer``'s own logs, as ``sharpwatch/...``
        (see :mod:`trainer_hooks.integrations._logged`), so they reach every ``report_to``
        backend (W&B, TensorBoard, MLflow...) at the step they belong to.

        It wraps ``trainer.log``: before TRL averages its metrics of the logging window, the
        callback computes (or, for :class:`IACGRPOTrainer`, completes) the step's record with
        TRL's own entropy, KL and loss, and appends the ``sharpwatch/...`` values to TRL's
        metrics (``trainer._metrics["train"]``). The service's open alerts and Model Collapse
        Step are refreshed in the background every ``status_interval`` seconds. Idempotent.
        """
        if self._bound is trainer:
            return self
        if self._bound is not None:
            raise ConfigurationError("this SharpwatchCallback is already bound to another trainer")
        if not hasattr(trainer, "_metrics"):
            raise ConfigurationError("bind needs a TRL trainer (it logs through trainer._metrics)")
        self._bound = trainer
        original = trainer.log

        def log_with_sharpwatch(logs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            try:
                self._before_log(trainer, logs)
            except Exception:
                log.exception("sharpwatch: adding sharpwatch/* to the trainer's logs failed")
            return original(logs, *args, **kwargs)

        trainer.log = log_with_sharpwatch
        if self.session.client is not None:
            self.status = ServiceStatus(self.session, interval=status_interval).start()
        return self

    def _before_log(self, trainer: Any, logs: Mapping[str, Any]) -> None:
        if _not_a_training_log(logs) or not getattr(trainer.model, "training", True):
            return
        window: dict[str, Any] = dict(logs)
        for key, values in trainer._metrics["train"].items():
            finite = [float(v) for v in values if v is not None and v == v]
            if finite:
                window[key] = sum(finite) / len(finite)  # as TRL averages the window
        metrics = self._logged(window)
        record_metrics: Mapping[str, Any] | None = None
        if self.deferred.pending_step is not None:
            self.deferred.complete(metrics)  # IACGRPOTrainer: computed at generation time
            record_metrics = self.deferred.last_completed_metrics
        else:
            result = self._step_from_rewards(metrics, trainer.state.global_step)
            if result is not None:
                record_metrics = {**metrics, **result.metrics}
        if record_metrics is None:
            return
        for key, value in logged_metrics(record_metrics, self.status).items():
            trainer._metrics["train"][key].append(value)

    # -- reward functions ---------------------------------------------------------------------
    def reward_func(self, func: Callable[..., Sequence[float | None]]) -> Callable[..., Any]:
        """Wrap a TRL reward function so the callback sees its rewards (pass the wrapper to
        ``GRPOTrainer(reward_funcs=...)``). The wrapper keeps the function's ``__name__``."""
        index = self._n_funcs
        self._n_funcs += 1

        def wrapped(*args: Any, **kwargs: Any) -> Sequence[float | None]:
            out = func(*args, **kwargs)
            values = [float("nan") if r is None else float(r) for r in out]
            self._columns.setdefault(index, []).append(values)
            if index == 0 and self.answer_key is not None:
                completions = kwargs.get("completions")
                if completions is not None:
                    self._keys.extend(self.answer_key(c) for c in completions)
            return out

        wrapped.__name__ = getattr(func, "__name__", f"reward_{index}")
        wrapped.__qualname__ = wrapped.__name__
        wrapped.__doc__ = func.__doc__
        return wrapped

    def _take_rewards(self) -> tuple[torch.Tensor, list[Hashable] | None] | None:
        columns, self._columns = self._columns, {}
        keys, self._keys = self._keys, []
        if not columns:
            return None
        weights = self.reward_weights or [1.0] * self._n_funcs
        total: torch.Tensor | None = None
        for index, calls in sorted(columns.items()):
            values = torch.tensor([v for call in calls for v in call], dtype=torch.float32)
            weighted = torch.nan_to_num(values, nan=0.0) * weights[index]
            if total is not None and total.shape != weighted.shape:
                log.warning("reward functions returned different counts; step skipped")
                return None
            total = weighted if total is None else total + weighted
        assert total is not None
        g = self.num_generations
        if total.numel() == 0 or total.numel() % g:
            log.warning("%d rewards are not whole groups of %d; step skipped", total.numel(), g)
            return None
        use_keys = keys if len(keys) == total.numel() else None
        return total.view(-1, g), use_keys

    # -- callback events ----------------------------------------------------------------------
    def _logged(self, logs: Mapping[str, Any]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key, name in self.log_metrics.items():
            value = logs.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = float(value)
            elif isinstance(value, torch.Tensor) and value.numel() == 1:
                out[name] = float(value.item())
        return out

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        if _not_a_training_log(logs):
            return  # evaluation or the end-of-training summary: not a training step
        metrics = self._logged(logs)
        if self.deferred.pending_step is not None:
            self.deferred.complete(metrics)  # the step was computed at generation time
        else:
            self._step_from_rewards(metrics, state.global_step)
        self._obey(control)

    def _step_from_rewards(
        self, metrics: Mapping[str, float | None], global_step: int
    ) -> StepResult | None:
        """One step from the wrapped reward functions' rewards (None when none were seen)."""
        taken = self._take_rewards()
        if taken is None:
            return None
        rewards, keys = taken
        extra = {k: v for k, v in metrics.items() if v is not None}
        self.last_result = self.session.step(
            StepInputs(rewards=rewards, answer_keys=keys, extra=extra, step=max(0, global_step - 1))
        )
        self.deferred.flush()
        return self.last_result

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._columns, self._keys = {}, []  # evaluation rewards are not a training step

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._obey(control)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.deferred.flush()
        if self.status is not None:
            self.status.close()

    def _obey(self, control: TrainerControl) -> None:
        if self.session.should_stop and not control.should_training_stop:
            request = self.session.stop_request
            log.warning(
                "sharpwatch early_stop: stopping training (%s)",
                request.reason if request is not None else "requested",
            )
            control.should_training_stop = True


class IACGRPOTrainer(GRPOTrainer):  # type: ignore[misc,unused-ignore]
    """``trl.GRPOTrainer`` with IAC-calibrated advantages and sharpwatch streaming.

    After TRL scores a generation round and computes its group-normalised advantages, every
    group's positive advantages are multiplied by (G − |S⁺|)^α (science.md §3), S⁺ the responses
    with a positive advantage (Algorithm 1; the session's ``iac_s_plus="threshold"`` counts
    weighted rewards >= ``success_threshold`` instead), α the run's current one
    (an ``adjust_alpha`` command applies from the next round; the service records the step).
    The step record (with group statistics, Z'(q) from raw and calibrated advantages) is sent
    once TRL has logged the step's entropy, KL and loss. With the session's ``iac=False`` the
    advantages stay TRL's and the trainer only monitors.

    Args (besides GRPOTrainer's): ``sharpwatch`` the run session; ``answer_key`` as in
    :class:`SharpwatchCallback`. Use ``logging_steps=1`` so every step's record carries TRL's
    metrics.
    """

    def __init__(
        self,
        *args: Any,
        sharpwatch: RunSession,
        answer_key: Callable[[Any], Hashable] | None = completion_key,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if sharpwatch.monitor.group_size != self.num_generations:
            raise ConfigurationError(
                f"the session's group_size ({sharpwatch.monitor.group_size}) must equal "
                f"num_generations ({self.num_generations})"
            )
        self.sharpwatch = sharpwatch
        self.sharpwatch_callback = SharpwatchCallback(
            sharpwatch, num_generations=self.num_generations, answer_key=answer_key
        )
        self.add_callback(self.sharpwatch_callback)
        self.sharpwatch_callback.bind(self)
        self._sw_rewards: torch.Tensor | None = None
        self._sw_keys: list[Hashable] | None = None
        self._sw_answer_key = answer_key

    def _calculate_rewards(
        self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any
    ) -> torch.Tensor:
        rewards_per_func: torch.Tensor = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._sw_rewards = rewards_per_func  # every process's rows, in group order
        if self._sw_answer_key is not None and self.accelerator.num_processes == 1:
            self._sw_keys = [self._sw_answer_key(c) for c in completions]
        else:
            self._sw_keys = None
        return rewards_per_func

    def _sw_sequences(self, output: dict[str, Any], g: int) -> dict[str, Any]:
        """Completion tokens, mask and sequence log-probs for Z'(q) (science.md §7), on one
        process: distinct completions by token sequence; π_old from TRL's old (or vLLM
        sampling) per-token log-probs and π_ref's when KL is on, summed over the completion."""
        ids = output.get("completion_ids")
        mask = output.get("completion_mask")
        if self.accelerator.num_processes != 1 or ids is None or mask is None:
            return {}
        m = mask.bool()
        out: dict[str, Any] = {
            "token_ids": ids.view(-1, g, ids.shape[-1]),
            "mask": m.view(ids.shape[0] // g, g, -1),
        }
        old = output.get("old_per_token_logps")
        if old is None:
            old = output.get("sampling_per_token_logps")
        for name, lp in (
            ("old_logprobs", old),
            ("ref_logprobs", output.get("ref_per_token_logps")),
        ):
            if lp is not None:
                seq = torch.where(m, lp.detach().float(), torch.zeros((), device=lp.device))
                out[name] = seq.sum(dim=-1).view(-1, g)
        return out

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output: dict[str, Any] = super()._generate_and_score_completions(inputs)
        if not getattr(self.model, "training", False) or self._sw_rewards is None:
            return output
        per_func, self._sw_rewards = self._sw_rewards, None
        keys, self._sw_keys = self._sw_keys, None
        weights = self.reward_weights.to(per_func.device)
        rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1)  # [N_all]
        g = int(self.num_generations or 1)
        local = output["advantages"]
        n_local = local.shape[0]
        start = self.accelerator.process_index * n_local
        advantages = self.accelerator.gather(local)  # every process's rows (a no-op on one)
        lengths = self.accelerator.gather(output["completion_mask"].sum(dim=1).float())
        result = self.sharpwatch.step(
            StepInputs(
                rewards=rewards.view(-1, g),
                advantages=advantages.view(-1, g),
                answer_keys=keys,
                response_lengths=lengths.view(-1, g),
                step=self.state.global_step,
                **self._sw_sequences(output, g),
            )
        )
        self.sharpwatch_callback.last_result = result
        assert result.advantages is not None
        calibrated = result.advantages.reshape(-1)[start : start + n_local]
        output["advantages"] = calibrated.to(local.dtype)
        return output
