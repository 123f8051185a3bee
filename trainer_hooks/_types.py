"""Typed loop state and results of :class:`trainer_hooks.Monitor`, and the sender protocol."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from trainer_hooks._errors import ShapeError
from trainer_hooks._probe import ProbeInputs
from trainer_hooks._record import DeferredRecord

__all__ = ["AlphaChange", "StepInputs", "StepResult", "StepSender", "StopRequest"]


@runtime_checkable
class StepSender(Protocol):
    """Receives one wire record per step. Must not block; the monitor swallows its errors."""

    def submit(self, record: dict[str, object]) -> None: ...


@dataclass(frozen=True)
class StepInputs:
    """Everything the loop knows after sampling and scoring a step.

    **Layout** (the one place it is documented; B queries, G responses each, N = B·G responses,
    T tokens, V vocabulary):

    ==================  =========================================  =============================
    input               dense (rewards ``[B, G]``)                 flat (rewards ``[N]``)
    ==================  =========================================  =============================
    per response        ``[B, G]`` or ``[N]``                      ``[N]`` + ``group_ids`` (N)
    per token           ``[B, G, T]`` or ``[N, T]``                ``[N, T]``
    ``logits``          ``[B, G, T, V]`` or ``[N, T, V]``          ``[N, T, V]``
    ``answer_keys``     ``[B][G]`` nested lists, or flat N         flat N, aligned with rewards
    ``query_ids``       B, one per group                           B, in first-appearance order
    ==================  =========================================  =============================

    Flat per-response order is row-major: response ``g`` of query ``b`` is ``n = b·G + g``.
    Per-response tensors are ``[B, G]`` (or ``[B, G, T]``), or flat ``[N]`` (``[N, T]``) with
    ``group_ids``. ``advantages`` are the trainer's own (GRPO, Dr.GRPO, RLOO, ...), before IAC;
    they are never recomputed. Give ``logits`` (``[..., T, V]``) or ``token_entropy``
    (``[..., T]``) with the response ``mask`` (masked positions may hold anything: they are
    selected out, science.md §7). ``answer_keys`` (extracted final answers; ``None`` for a
    response with none) or ``token_ids`` enable Z'(q). ``oracle_rewards`` (ground truth when
    ``rewards`` are pseudo-rewards) enable reward/label accuracy. ``loss``, ``grad_norm``, ``kl``
    and ``extra`` are passed through (floats or 0-d tensors; tensors travel in the step's one host
    copy).

    Z'(q) with an exact sampled support (science.md §7): ``old_logprobs`` / ``ref_logprobs``
    (per response, the sequence log-probability Σ_t log π(o_t|q, o_<t) under the old policy /
    π_ref; π_ref is used when both are given) with ``token_ids`` (``[..., T]``, response tokens
    where ``mask`` is set) to tell distinct responses apart. ``token_ids`` alone (no answer
    keys) give the response-hash mode; without log-probs a group whose keys never repeat has no
    Z' (absent, never a constant). ``temperature``: the sampling temperature of this step's
    rollouts when it differs from the Monitor's; entropy computed from ``logits`` is that of
    softmax(logits / temperature) (a ``token_entropy`` the trainer passes is used as given).
    """

    rewards: torch.Tensor
    advantages: torch.Tensor | None = None
    group_ids: Sequence[Hashable] | torch.Tensor | None = None
    num_groups: int | None = None
    query_ids: Sequence[str] | None = None
    answer_keys: Sequence[Any] | None = None  # hashable keys, flat N or nested [B][G]
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
    old_logprobs: torch.Tensor | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:
        keys = self.answer_keys
        if keys is None or isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
            return
        nested = len(keys) > 0 and all(
            isinstance(row, list | tuple) and not isinstance(row, str) for row in keys
        )
        n = self.rewards.numel() if isinstance(self.rewards, torch.Tensor) else -1
        if not nested or len(keys) == n:
            return  # already one key per response (tuples can be keys themselves)
        if self.rewards.dim() != 2:
            raise ShapeError(
                f"answer_keys is nested ({len(keys)} rows) but rewards is flat "
                f"{list(self.rewards.shape)}: pass one key per response, aligned with rewards"
            )
        b, g = int(self.rewards.shape[0]), int(self.rewards.shape[1])
        bad = [i for i, row in enumerate(keys) if len(row) != g]
        if len(keys) != b or bad:
            raise ShapeError(
                f"answer_keys is nested as {len(keys)} rows of lengths "
                f"{sorted({len(row) for row in keys})}; rewards is [{b}, {g}]: pass [B][G] "
                f"(here [{b}][{g}]) or a flat list of B·G = {b * g} keys"
            )
        object.__setattr__(self, "answer_keys", [key for row in keys for key in row])


@dataclass(frozen=True, init=False)
class StepResult:
    """What :meth:`Monitor.step` returns.

    ``advantages``: the advantages to use for the update (after IAC when it is on; the input
    tensor itself when IAC is off or α = 0), on the device, shaped like the input.
    ``record``: the wire record handed to the sender (the same dict the sender gets; when the
    sender builds records on its own thread, reading it here builds it once, shared).
    ``metrics``: the record's metrics.
    """

    advantages: torch.Tensor | None
    metrics: dict[str, float | None]
    step: int
    alpha: float
    _record: DeferredRecord | dict[str, object] = field(repr=False, compare=False)

    def __init__(
        self,
        advantages: torch.Tensor | None,
        record: DeferredRecord | dict[str, object],
        metrics: dict[str, float | None],
        step: int,
        alpha: float,
    ) -> None:
        object.__setattr__(self, "advantages", advantages)
        object.__setattr__(self, "_record", record)
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "alpha", alpha)

    @property
    def record(self) -> dict[str, object]:
        rec = self._record
        return rec.build() if isinstance(rec, DeferredRecord) else rec


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
