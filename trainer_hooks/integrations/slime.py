"""slime integration: two functions slime loads by path (docs/integrations.md).

- ``--custom-advantage-function-path trainer_hooks.integrations.slime.iac_advantages``:
  :func:`iac_advantages` ``(args, rollout_data)`` runs on every training rank. slime has already
  group-normalised the rewards of the whole rollout (``rollout_data["rewards"]``, this rank's
  samples); it applies IAC, Ã = A·(G − S⁺)^α on positive advantages (science.md §3), with S⁺
  the group's responses with A > 0 (science.md §7), counted on the whole rollout's raw rewards
  (``raw_reward``, shipped whole to every rank, and ``partition``, each local sample's position
  in it), and sets ``advantages`` and ``returns`` as slime's GRPO does (the advantage on every
  token of the response).
- ``--custom-rollout-log-function-path trainer_hooks.integrations.slime.log_rollout_data``:
  :func:`log_rollout_data` ``(rollout_id, args, samples, rollout_extra_metrics, rollout_time)``
  runs in slime's rollout manager after each rollout: it streams the step to sharpwatch
  (per-query success counts from the samples' rewards, GRPO advantages as slime computes them,
  modes = distinct response token sequences for Z'(q) with the rollout's sequence log-probs as
  π when the samples carry them, token entropies when they carry them), adds the
  ``sharpwatch/...`` numbers to ``rollout_extra_metrics`` so slime's own logging (W&B,
  TensorBoard) records them, and returns False so that logging goes on. After an
  ``early_stop`` it raises :class:`EarlyStopError`.

The session is opened in the rollout manager from the environment on the first call
(``SHARPWATCH_URL``...; see :func:`session_from_env`), or set with :func:`use_session`.
α is fixed for a launch (``SHARPWATCH_IAC_ALPHA``, default 1.0): the training ranks are other
processes than the one that talks to the service, so ``adjust_alpha`` commands do not reach them
(the env-opened run has ``auto_alpha`` off).

Written against slime commit 624b824a898ab0ec1fcb4d373004c7f3852bf515 (the call shapes are
recorded in tests/trainer_hooks/integrations/fixtures/slime_624b824.json). Imports torch only.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import os
import threading
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch

from service.wire.enums import RunStatus
from trainer_hooks._errors import ConfigurationError, SharpwatchHooksError
from trainer_hooks._iac import _check_alpha, iac_factor
from trainer_hooks._types import StepInputs, StepResult
from trainer_hooks._watch import RunSession, watch
from trainer_hooks.integrations._logged import ServiceStatus, logged_metrics

__all__ = [
    "EarlyStopError",
    "iac_advantages",
    "log_rollout_data",
    "rollout_step_inputs",
    "session_from_env",
    "use_session",
]

log = logging.getLogger("trainer_hooks.integrations.slime")


class EarlyStopError(SharpwatchHooksError):
    """Raised out of slime's rollout logging after an ``early_stop`` (stops the job)."""


def _alpha(args: Any) -> float:
    raw = getattr(args, "sharpwatch_iac_alpha", None)
    if raw is None:
        raw = os.environ.get("SHARPWATCH_IAC_ALPHA", "1.0")
    try:
        return _check_alpha(float(raw))
    except (TypeError, ValueError, ConfigurationError):
        raise ConfigurationError(
            f"SHARPWATCH_IAC_ALPHA (or args.sharpwatch_iac_alpha) must be a number >= 0, "
            f"got {raw!r}"
        ) from None


def _as_float_list(value: Any, name: str) -> list[float]:
    if value is None:
        raise SharpwatchHooksError(
            f"rollout_data has no {name!r}: iac_advantages needs slime's default "
            "conversion of samples to train data"
        )
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.reshape(-1).tolist()]
    return [float(v) for v in value]


def _group_layout(n_total: int, group_size: int) -> tuple[int, int]:
    """(groups, size) as slime's reward normalisation groups the rollout: consecutive groups of
    ``n_samples_per_prompt`` when they tile it, else the whole rollout as one group."""
    if group_size >= 1 and n_total % group_size == 0:
        return n_total // group_size, group_size
    return 1, n_total


def iac_advantages(args: Any, rollout_data: dict[str, Any]) -> None:
    """slime's ``--custom-advantage-function-path`` hook: IAC on slime's GRPO advantages.

    Reads ``rewards`` (this rank's group-normalised rewards: A), ``raw_reward`` (the whole
    rollout's raw rewards), ``partition`` (each local sample's position in the rollout) and
    ``kl`` (per-token tensors: their shape and device); writes ``advantages`` and ``returns``.
    """
    advantages = _as_float_list(rollout_data.get("rewards"), "rewards")
    raw = _as_float_list(rollout_data.get("raw_reward"), "raw_reward")
    partition = [int(p) for p in _as_float_list(rollout_data.get("partition"), "partition")]
    kl = rollout_data.get("kl")
    if kl is None or len(kl) != len(advantages) or len(partition) != len(advantages):
        raise SharpwatchHooksError(
            "rollout_data's 'rewards', 'partition' and 'kl' must have one entry per local sample"
        )
    alpha = _alpha(args)
    n_groups, size = _group_layout(len(raw), int(getattr(args, "n_samples_per_prompt", 0) or 0))
    grouped = torch.tensor(raw, dtype=torch.float64).view(n_groups, size)
    # S⁺ = responses with A > 0 (science.md §7): above the group mean, whatever the scaling.
    above = grouped > grouped.mean(dim=1, keepdim=True)
    successes = above.sum(dim=1)
    sizes = torch.full((n_groups,), size, dtype=torch.float64)
    factor = iac_factor(successes, sizes, alpha, torch.float64)
    out_adv: list[torch.Tensor] = []
    for a, position, tokens in zip(advantages, partition, kl, strict=True):
        group = position // size if n_groups > 1 else 0
        value = a * float(factor[group]) if a > 0 else a
        out_adv.append(torch.ones_like(tokens, dtype=torch.float32) * value)
    rollout_data["advantages"] = out_adv
    rollout_data["returns"] = out_adv


# -- the rollout log function -----------------------------------------------------------------
class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.session: RunSession | None = None
        self.status: ServiceStatus | None = None
        self.owned = False
        self.last_result: StepResult | None = None


_state = _State()


def use_session(session: RunSession | None, *, status_interval: float = 5.0) -> None:
    """Use ``session`` for :func:`log_rollout_data` in this process (None forgets it)."""
    with _state.lock:
        if _state.status is not None:
            _state.status.close()
        _state.session = session
        _state.owned = False
        _state.status = None
        if session is not None:
            _state.status = ServiceStatus(session, interval=status_interval).start()


def session_from_env(args: Any) -> RunSession | None:
    """Open the run from the environment (None without ``SHARPWATCH_URL``).

    ``SHARPWATCH_URL``; ``SHARPWATCH_RUN_NAME`` (default ``slime``), ``SHARPWATCH_PROJECT``,
    ``SHARPWATCH_TOKEN``; G is ``args.n_samples_per_prompt``; β is ``args.kl_loss_coef`` when
    ``args.use_kl_loss``, else ``SHARPWATCH_REFERENCE_BETA`` (default 0.04) serves for Z'(q);
    α is ``SHARPWATCH_IAC_ALPHA`` (default 1.0, fixed: the run's ``auto_alpha`` is off);
    ``SHARPWATCH_STATUS_INTERVAL`` seconds between reads of the run's open alerts (default 5).
    The run is closed when the process exits.
    """
    url = os.environ.get("SHARPWATCH_URL")
    if not url:
        return None
    kl_beta = float(getattr(args, "kl_loss_coef", 0.0) or 0.0)
    if not getattr(args, "use_kl_loss", False):
        kl_beta = 0.0
    reference_beta = float(os.environ.get("SHARPWATCH_REFERENCE_BETA") or 0.04)
    session = watch(
        url,
        name=os.environ.get("SHARPWATCH_RUN_NAME") or "slime",
        project=os.environ.get("SHARPWATCH_PROJECT") or "default",
        token=os.environ.get("SHARPWATCH_TOKEN") or None,
        group_size=int(args.n_samples_per_prompt),
        kl_beta=kl_beta,
        reference_beta=None if kl_beta > 0 else reference_beta,
        alpha=_alpha(args),
        policy={"auto_alpha": False},
    )
    interval = float(os.environ.get("SHARPWATCH_STATUS_INTERVAL") or 5.0)
    use_session(session, status_interval=interval)
    with _state.lock:
        _state.owned = True
    atexit.register(_close_owned)
    return session


def _close_owned() -> None:
    with _state.lock:
        session, owned = _state.session, _state.owned
        _state.session = None
        if _state.status is not None:
            _state.status.close()
    if session is not None and owned:
        session.close(RunStatus.STOPPED if session.should_stop else RunStatus.FINISHED)


def _reward(sample: Any, args: Any) -> float:
    value = sample.reward
    key = getattr(args, "reward_key", None)
    if key and isinstance(value, Mapping):
        value = value[key]
    if value is None:
        return math.nan
    return float(value)


def _response_key(sample: Any) -> Hashable:
    """The mode of a response: its token sequence (science.md §7), hashed."""
    n = int(getattr(sample, "response_length", 0) or 0)
    tokens = list(sample.tokens[-n:]) if n > 0 else []
    if not tokens:
        return hashlib.blake2b(str(sample.response).encode(), digest_size=8).hexdigest()
    return hashlib.blake2b(repr(tokens).encode(), digest_size=8).hexdigest()


def _padded(rows: Sequence[Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0) or 1
    values = torch.zeros(len(rows), width, dtype=torch.float32)
    mask = torch.zeros(len(rows), width, dtype=torch.float32)
    for i, row in enumerate(rows):
        if row:
            values[i, : len(row)] = torch.tensor([float(v) for v in row])
            mask[i, : len(row)] = 1.0
    return values, mask


def _entropy_rows(samples: Sequence[Any]) -> list[list[float]] | None:
    """Per-token entropies from ``sample.metadata["entropy"]`` (a list, or a float for the
    response's mean), when every sample has them."""
    rows: list[list[float]] = []
    for sample in samples:
        value = (getattr(sample, "metadata", None) or {}).get("entropy")
        if value is None:
            return None
        if isinstance(value, int | float):
            rows.append([float(value)])
        else:
            rows.append([float(v) for v in value])
    return rows


def rollout_step_inputs(
    args: Any, samples: Sequence[Any], step: int, rollout_time: float | None = None
) -> StepInputs:
    """The :class:`StepInputs` of one slime rollout (the samples of every prompt)."""
    n = int(args.n_samples_per_prompt)
    rewards = torch.tensor([_reward(s, args) for s in samples], dtype=torch.float64)
    group_ids = [
        s.group_index if s.group_index is not None else (s.index or 0) // n for s in samples
    ]
    # GRPO advantages as slime normalises rewards (per group: minus the mean, over std + 1e-6).
    by_group: dict[Hashable, list[int]] = {}
    for i, g in enumerate(group_ids):
        by_group.setdefault(g, []).append(i)
    adv = torch.zeros_like(rewards)
    std_norm = bool(getattr(args, "grpo_std_normalization", True))
    for rows in by_group.values():
        r = rewards[rows]
        centred = r - r.mean()
        if std_norm and len(rows) > 1:
            centred = centred / (r.std() + 1e-6)
        adv[rows] = centred
    lengths = torch.tensor(
        [float(getattr(s, "response_length", 0) or 0) for s in samples], dtype=torch.float64
    )
    entropy_rows = _entropy_rows(samples)
    token_entropy = mask = None
    if entropy_rows is not None:
        token_entropy, mask = _padded(entropy_rows)
    extra: dict[str, float] = {}
    seq_logprobs = None
    if all(getattr(s, "rollout_log_probs", None) for s in samples):
        seq_logprobs = torch.tensor(
            [sum(float(v) for v in s.rollout_log_probs) for s in samples], dtype=torch.float64
        )
        extra["slime/seq_logprob_mean"] = float(seq_logprobs.mean())
    truncated = sum(1 for s in samples if str(getattr(s, "status", "")).endswith("TRUNCATED"))
    extra["slime/truncated_ratio"] = truncated / max(1, len(samples))
    if rollout_time:
        extra["slime/rollout_time"] = float(rollout_time)
    return StepInputs(
        rewards=rewards,
        advantages=adv,
        group_ids=group_ids,
        answer_keys=[_response_key(s) for s in samples],
        token_entropy=token_entropy,
        mask=mask,
        response_lengths=lengths if mask is None else None,
        extra=extra,
        step=step,
        old_logprobs=seq_logprobs,  # the rollout policy's: π_old, Z'(q)'s stand-in (science.md §7)
    )


def log_rollout_data(
    rollout_id: int,
    args: Any,
    samples: Sequence[Any],
    rollout_extra_metrics: dict[str, Any] | None,
    rollout_time: float,
) -> bool:
    """slime's ``--custom-rollout-log-function-path`` hook (see the module docstring).
    Returns False: slime's default rollout logging goes on (with our numbers added)."""
    with _state.lock:
        session = _state.session
    if session is None:
        session = session_from_env(args)
    if session is None:
        log.warning("sharpwatch: no session (set SHARPWATCH_URL or call use_session)")
        return False
    if samples and isinstance(samples[0], list):
        samples = [s for group in samples for s in group]
    if not samples:
        return False
    inputs = rollout_step_inputs(args, samples, int(rollout_id), rollout_time)
    result = session.step(inputs)
    _state.last_result = result
    if rollout_extra_metrics is not None:
        rollout_extra_metrics.update(logged_metrics(result.metrics, _state.status))
    if session.should_stop:
        request = session.stop_request
        reason = request.reason if request is not None else "early_stop"
        raise EarlyStopError(f"sharpwatch early_stop at rollout {rollout_id}: {reason}")
    return False
