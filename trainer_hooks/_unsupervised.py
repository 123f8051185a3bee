"""Unsupervised-RLVR health metrics and the Model Collapse Step (science.md §4, seed 004).

Reward accuracy, label accuracy, proxy vs ground-truth reward, response length, repetition.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from trainer_hooks._errors import ConfigurationError, ShapeError
from trainer_hooks._group import reward_success
from trainer_hooks._layout import GroupLayout

__all__ = [
    "ModelCollapseTracker",
    "RewardAgreement",
    "count_below",
    "label_accuracy_from_labels",
    "repetition_rate",
    "response_lengths",
    "response_tokens_first",
    "reward_agreement",
]


@dataclass(frozen=True)
class RewardAgreement:
    """Pseudo (proxy) vs oracle rewards, on the device.

    ``per_query_reward_accuracy`` ``[B]`` and ``reward_accuracy`` (0-d): share of responses whose
    pseudo-reward success equals their oracle success (both thresholded at the run's success
    threshold). ``label_correct`` ``[B]`` and ``label_accuracy`` (0-d): whether the group's
    pseudo-label is the ground truth, read as the oracle success of the response the proxy reward
    prefers (highest pseudo reward, first on ties). For majority-vote rewards (TTRL) those
    responses carry the pseudo-label, so this is exactly "pseudo-label == ground truth".
    ``proxy_reward`` / ``gt_reward``: mean pseudo and oracle reward. ``agree`` / ``total`` (0-d):
    the counts behind ``reward_accuracy`` (science.md §7: the Model Collapse Step line is drawn
    on them, ``agree·100 < total``). Counts and ratios are float64.
    """

    per_query_reward_accuracy: torch.Tensor
    reward_accuracy: torch.Tensor
    agree: torch.Tensor
    total: torch.Tensor
    label_correct: torch.Tensor
    label_accuracy: torch.Tensor
    proxy_reward: torch.Tensor
    gt_reward: torch.Tensor


def reward_agreement(
    pseudo_rewards: torch.Tensor,
    oracle_rewards: torch.Tensor,
    layout: GroupLayout,
    *,
    success_threshold: float = 0.5,
) -> RewardAgreement:
    """Reward and label accuracy of pseudo rewards against oracle rewards (science.md §4)."""
    p = layout.flatten(pseudo_rewards, "rewards").detach()
    o = layout.flatten(oracle_rewards, "oracle_rewards").detach().to(p.device)
    idx, b = layout.index, layout.num_groups
    o_success = reward_success(o, success_threshold)
    agreed = reward_success(p, success_threshold) == o_success
    agree = agreed.to(torch.float64)
    p = p.to(torch.float64)
    o = o.to(torch.float64)
    per_query = layout.group_sum(agree) / layout.sizes.to(torch.float64)
    best = torch.full((b,), float("-inf"), dtype=torch.float64, device=p.device)
    best = best.scatter_reduce(0, idx, p, reduce="amax", include_self=True)
    is_best = p == best.index_select(0, idx)
    n = layout.num_responses
    pos = torch.arange(n, device=p.device)
    cand = torch.where(is_best, pos, torch.full_like(pos, n))
    first = torch.full((b,), n, dtype=torch.int64, device=p.device)
    first = first.scatter_reduce(0, idx, cand, reduce="amin", include_self=True)
    label_correct = o_success.index_select(0, first.clamp(max=n - 1)).to(torch.float64)
    agree_count = agree.sum()
    return RewardAgreement(
        per_query_reward_accuracy=per_query,
        reward_accuracy=agree_count / n,
        agree=agree_count,
        total=torch.tensor(float(n), dtype=torch.float64, device=p.device),
        label_correct=label_correct,
        label_accuracy=label_correct.mean(),
        proxy_reward=p.mean(),
        gt_reward=o.mean(),
    )


def label_accuracy_from_labels(
    pseudo_labels: Sequence[Hashable], true_labels: Sequence[Hashable]
) -> float:
    """Share of queries whose pseudo-label equals the ground truth (host-side labels)."""
    if len(pseudo_labels) != len(true_labels):
        raise ShapeError(
            f"pseudo_labels has {len(pseudo_labels)} entries, true_labels {len(true_labels)}"
        )
    if not pseudo_labels:
        return math.nan
    hits = sum(1 for a, t in zip(pseudo_labels, true_labels, strict=True) if a == t)
    return hits / len(pseudo_labels)


def response_lengths(
    layout: GroupLayout,
    *,
    mask: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Response length per response ``[N]`` (float): ``lengths`` when given, else mask sums."""
    if lengths is not None:
        return layout.flatten(lengths, "response_lengths").to(torch.float32)
    if mask is None:
        raise ConfigurationError("response_lengths needs mask or lengths")
    n = layout.num_responses
    if mask.numel() == 0 or mask.numel() % n:
        raise ShapeError(f"mask has shape {list(mask.shape)}; expected [{n}, T] or [B, G, T]")
    m = mask.reshape(n, -1)
    return (m if m.dtype == torch.bool else m != 0).sum(dim=-1).to(torch.float32)


def response_tokens_first(token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``token_ids`` ``[N, T]`` with each row's response tokens (``mask`` set) moved to the
    front in their order, whatever the padding side; the masked entries follow."""
    m = mask.reshape(token_ids.shape)
    m = m if m.dtype == torch.bool else m != 0
    order = torch.sort((~m).to(torch.uint8), dim=-1, stable=True).indices
    return token_ids.gather(-1, order)


_P1 = 2_147_483_647  # 2^31 − 1
_P2 = 2_147_483_629  # a prime just below 2^31
_B1 = 1_000_003
_B2 = 998_244_353


def repetition_rate(
    token_ids: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    n: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of repeated n-grams: returns ``(per_sequence [N], pooled 0-d)``.

    For each sequence (rows of ``token_ids`` ``[N, T]``, first ``lengths[i]`` tokens valid — the
    response tokens, left-aligned), an n-gram occurrence is *repeated* when the same n-gram
    occurred earlier in the sequence. Rate = repeated occurrences / n-gram occurrences; the
    pooled rate sums both over the step. n-grams are compared through two independent polynomial
    hashes mod primes near 2^31 combined into one 62-bit key (collision odds ~2^-62 per pair).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"n must be an int >= 1, got {n!r}")
    if token_ids.dim() != 2:
        raise ShapeError(f"token_ids has shape {list(token_ids.shape)}; expected [N, T]")
    rows, t = int(token_ids.shape[0]), int(token_ids.shape[1])
    dev = token_ids.device
    if lengths is None:
        lens = torch.full((rows,), float(t), device=dev)
    else:
        if lengths.numel() != rows:
            raise ShapeError(f"lengths has {lengths.numel()} entries; token_ids has {rows} rows")
        lens = lengths.reshape(rows).to(device=dev, dtype=torch.float32).clamp(0, t)
    p = t - n + 1
    if p <= 0:
        zeros = torch.zeros(rows, device=dev)
        return zeros, torch.zeros((), device=dev)
    ids = token_ids.to(torch.int64)
    h1 = torch.zeros((rows, p), dtype=torch.int64, device=dev)
    h2 = torch.zeros((rows, p), dtype=torch.int64, device=dev)
    for k in range(n):
        tok = ids[:, k : k + p]
        h1 = (h1 * _B1 + tok % _P1) % _P1
        h2 = (h2 * _B2 + tok % _P2) % _P2
    key = h1 * _P2 + h2  # in [0, 2^62)
    valid_count = (lens - (n - 1)).clamp_min(0.0)
    pos = torch.arange(p, device=dev)
    valid = pos.unsqueeze(0) < valid_count.unsqueeze(1)
    # invalid positions get distinct negative sentinels so they never match anything
    key = torch.where(valid, key, -1 - pos.unsqueeze(0).expand(rows, p))
    srt, _ = torch.sort(key, dim=-1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    repeats = dup.to(torch.float32).sum(dim=-1)
    per_seq = repeats / valid_count.clamp_min(1.0)
    pooled = repeats.sum() / valid_count.sum().clamp_min(1.0)
    return per_seq, pooled


def count_below(count: float, total: float, threshold: float) -> bool:
    """``count / total < threshold``, exactly, with ``threshold`` read as the decimal it was
    written as (its shortest repr: 0.01 is 1/100, not the binary float just above it), so
    ``count_below(8, 800, 0.01)`` is False (science.md §7). Counts must be whole numbers."""
    line = Fraction(repr(float(threshold)))
    return Fraction(int(count)) * line.denominator < line.numerator * Fraction(int(total))


class ModelCollapseTracker:
    """Model Collapse Step as the trainer sees it (science.md §4, §5).

    The first training step at which reward accuracy falls strictly below ``threshold`` (default
    0.01). Feed it one value per step with :meth:`update`; NaN/None values are ignored.
    """

    def __init__(self, threshold: float = 0.01) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ConfigurationError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigurationError(f"threshold must be in [0, 1], got {threshold!r}")
        self._threshold = float(threshold)
        self._step: int | None = None
        self._value: float | None = None

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def collapse_step(self) -> int | None:
        """The Model Collapse Step, or ``None`` while reward accuracy stayed >= threshold."""
        return self._step

    @property
    def collapse_value(self) -> float | None:
        """The reward accuracy observed at the Model Collapse Step."""
        return self._value

    def update(
        self,
        step: int,
        reward_accuracy: float | None,
        *,
        agree: float | None = None,
        total: float | None = None,
    ) -> bool:
        """Record a step's reward accuracy; True exactly when this step is the collapse step.

        With the counts behind it (``agree`` of ``total`` responses) the line is drawn on the
        counts, exactly (science.md §7: ``agree·100 < total`` for the default 1 %)."""
        if self._step is not None or reward_accuracy is None or not math.isfinite(reward_accuracy):
            return False
        below = (
            count_below(agree, total, self._threshold)
            if agree is not None and total is not None and total > 0
            else reward_accuracy < self._threshold
        )
        if below:
            self._step, self._value = int(step), float(reward_accuracy)
            return True
        return False
