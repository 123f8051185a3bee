"""Typed loop state and results of :class:`trainer_hooks.Monitor`, and the sender protocol."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from trainer_hooks._probe import ProbeInputs

__all__ = ["AlphaChange", "StepInputs", "StepResult", "StepSender", "StopRequest"]


@runtime_checkable
class StepSender(Protocol):
    """Receives one wire record per step. Must not block; the monitor swallows its errors."""

    def submit(self, record: dict[str, object]) -> None: ...


@dataclass(frozen=True)
class StepInputs:
    """Everything the loop knows after sampling and scoring a step.

    Per-response tensors are ``[B, G]`` (or ``[B, G, T]``), or flat ``[N]`` (``[N, T]``) with
    ``group_ids``. ``advantages`` are the trainer's own (GRPO, Dr.GRPO, RLOO, ...), before IAC;
    they are never recomputed. Give ``logits`` (``[..., T, V]``) or ``token_entropy``
    (``[..., T]``) with the response ``mask``. ``answer_keys`` (extracted final answers, or a hash
    of each response) enable Z'(q). ``oracle_rewards`` (ground truth when ``rewards`` are
    pseudo-rewards) enable reward/label accuracy. ``loss``, ``grad_norm``, ``kl`` and ``extra``
    are passed through (floats or 0-d tensors; tensors travel in the step's one host copy).
    """

    rewards: torch.Tensor
    advantages: torch.Tensor | None = None
    group_ids: Sequence[Hashable] | torch.Tensor | None = None
    num_groups: int | None = None
    query_ids: Sequence[str] | None = None
    answer_keys: Sequence[Hashable] | None = None
    logits: torch.Tensor | None = None
    token_entropy: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    oracle_rewards: torch.Tensor | None = None
    pseudo_labels: Sequence[Hashable] | None = None
    true_labels: Sequence[Hashable] | None = None
    ref_logprobs: torch.Tensor | None = None
    response_lengths: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None
    loss: float | torch.Tensor | None = None
    grad_norm: float | torch.Tensor | None = None
    kl: float | torch.Tensor | None = None
    extra: Mapping[str, float | torch.Tensor] = field(default_factory=dict)
    probe: ProbeInputs | None = None
    step: int | None = None


@dataclass(frozen=True)
class StepResult:
    """What :meth:`Monitor.step` returns.

    ``advantages``: the advantages to use for the update (after IAC when it is on; the input
    tensor itself when IAC is off or α = 0), on the device, shaped like the input.
    ``record``: the wire record handed to the sender. ``metrics``: the record's metrics.
    """

    advantages: torch.Tensor | None
    record: dict[str, object]
    metrics: dict[str, float | None]
    step: int
    alpha: float


@dataclass(frozen=True)
class AlphaChange:
    """An IAC α change: requested with ``reason``, in effect from step ``effective_step``."""

    alpha: float
    reason: str
    requested_after_step: int | None
    effective_step: int


@dataclass(frozen=True)
class StopRequest:
    """A request to stop training, with the best step to roll back to when known."""

    reason: str
    best_step: int | None
    requested_at_step: int | None
