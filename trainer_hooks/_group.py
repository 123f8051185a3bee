"""Group statistics of a step (science.md §1): S⁺, p̂, degenerate groups, reward variance, p*(G).

All functions are pure torch and stay on the rewards' device.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import overload

import torch

from trainer_hooks._errors import ConfigurationError
from trainer_hooks._layout import GroupLayout, make_layout, segment_sum

__all__ = [
    "GroupStats",
    "group_stats",
    "grpo_advantages",
    "p_star",
    "p_star_mirror",
    "reward_success",
]


@overload
def p_star(group_size: int) -> float: ...
@overload
def p_star(group_size: torch.Tensor) -> torch.Tensor: ...
def p_star(group_size: int | torch.Tensor) -> float | torch.Tensor:
    """p*(G) = 1 − 2^(−1/G) (science.md §1).

    Below this per-response success probability more than half of the groups of size G are
    expected to be all-fail, because (1 − p)^G > ½. ``p_star(8) ≈ 0.0830``, ``p_star(16) ≈ 0.0424``.
    """
    if isinstance(group_size, torch.Tensor):
        g = group_size.to(torch.float64) if not group_size.is_floating_point() else group_size
        return 1.0 - torch.exp2(-1.0 / g)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ConfigurationError(f"group_size must be an int >= 1, got {group_size!r}")
    return 1.0 - math.pow(2.0, -1.0 / group_size)


@overload
def p_star_mirror(group_size: int) -> float: ...
@overload
def p_star_mirror(group_size: torch.Tensor) -> torch.Tensor: ...
def p_star_mirror(group_size: int | torch.Tensor) -> float | torch.Tensor:
    """1 − p*(G): above this success probability more than half the groups are expected all-pass."""
    return 1.0 - p_star(group_size)


def reward_success(rewards: torch.Tensor, success_threshold: float) -> torch.Tensor:
    """``rewards >= success_threshold`` compared in the rewards' own floating dtype (the
    threshold is rounded to it, so a reward stored as the threshold's literal value, e.g. 0.7 in
    bf16, counts as a success); integer rewards compare in float64."""
    r = rewards if rewards.is_floating_point() else rewards.to(torch.float64)
    return r >= success_threshold


@dataclass(frozen=True)
class GroupStats:
    """Per-group and per-step group statistics (science.md §1), all tensors on the device.

    Counts and ratios are float64 (exact counts, one correctly rounded division).
    Per group ``[B]``: ``successes`` (S⁺), ``sizes`` (G_b), ``p_hat`` (S⁺/G_b), ``all_fail``,
    ``all_pass``, ``reward_var`` (within-group population variance of the rewards).
    Per response ``[N]``: ``success`` (reward >= threshold).
    Per step (0-d): ``success_rate`` (mean over groups of S⁺/G_b, the service's definition),
    ``degenerate_all_fail`` and
    ``degenerate_all_pass`` (fractions of groups), ``reward_var_observed`` (mean over groups of
    ``reward_var``) and ``reward_var_expected`` (mean over groups of p(1−p)(G_b−1)/G_b with p the
    step's success rate: the i.i.d. Bernoulli prediction, science.md §1).
    """

    layout: GroupLayout
    success: torch.Tensor
    successes: torch.Tensor
    sizes: torch.Tensor
    p_hat: torch.Tensor
    all_fail: torch.Tensor
    all_pass: torch.Tensor
    reward_var: torch.Tensor
    success_rate: torch.Tensor
    degenerate_all_fail: torch.Tensor
    degenerate_all_pass: torch.Tensor
    reward_var_observed: torch.Tensor
    reward_var_expected: torch.Tensor


def group_stats(
    rewards: torch.Tensor,
    group_ids: Sequence[Hashable] | torch.Tensor | None = None,
    *,
    success_threshold: float = 0.5,
    layout: GroupLayout | None = None,
) -> GroupStats:
    """Group statistics of ``rewards`` (``[B, G]``, or flat ``[N]`` with ``group_ids``).

    A response succeeds when ``reward >= success_threshold`` (default 0.5, so binary 0/1 rewards
    work; non-binary rewards use the per-run threshold). ``reward_var_observed`` is computed on the
    rewards themselves; for binary rewards it is directly comparable with ``reward_var_expected``.
    """
    if layout is None:
        layout = make_layout(rewards, group_ids)
    r = layout.flatten(rewards, "rewards").detach()
    idx, b = layout.index, layout.num_groups
    success = reward_success(r, success_threshold)
    # counts and ratios in float64 (science.md §7: lines drawn on counts are compared on counts;
    # an fp32 ratio such as 3/10 = 0.30000001 crosses a 0.3 line it does not reach)
    r = r.to(torch.float64)
    sizes = layout.sizes.to(torch.float64)
    successes = layout.group_sum(success.to(torch.float64))
    p_hat = successes / sizes
    all_fail = successes == 0
    all_pass = successes == sizes
    mean = layout.group_sum(r) / sizes
    reward_var = layout.group_sum((r - mean.index_select(0, idx)) ** 2) / sizes
    success_rate = p_hat.mean()
    expected = success_rate * (1.0 - success_rate) * (sizes - 1.0) / sizes
    return GroupStats(
        layout=layout,
        success=success,
        successes=successes,
        sizes=sizes,
        p_hat=p_hat,
        all_fail=all_fail,
        all_pass=all_pass,
        reward_var=reward_var,
        success_rate=success_rate,
        degenerate_all_fail=all_fail.to(torch.float64).sum() / b,
        degenerate_all_pass=all_pass.to(torch.float64).sum() / b,
        reward_var_observed=reward_var.mean(),
        reward_var_expected=expected.mean(),
    )


def grpo_advantages(
    rewards: torch.Tensor,
    group_ids: Sequence[Hashable] | torch.Tensor | None = None,
    *,
    normalize: bool = True,
    unbiased_std: bool = True,
    eps: float = 1e-6,
    layout: GroupLayout | None = None,
) -> torch.Tensor:
    """GRPO advantages A_s = (r_s − mean(r)) / (std(r) + ε) per group (science.md §1).

    Convenience only: the monitor never recomputes the trainer's advantages. ``normalize=False``
    gives Dr.GRPO (mean-shifted, no std division). ``unbiased_std`` follows ``torch.std`` (as TRL
    and veRL do); a group of size 1 then has std 0. Returns the shape of ``rewards``.
    """
    if eps < 0 or not math.isfinite(eps):
        raise ConfigurationError(f"eps must be finite and >= 0, got {eps!r}")
    if layout is None:
        layout = make_layout(rewards, group_ids)
    r = layout.flatten(rewards, "rewards")
    work = r.to(torch.float64) if r.dtype == torch.float64 else r.to(torch.float32)
    idx, b = layout.index, layout.num_groups
    sizes = layout.sizes.to(work.dtype)
    mean = segment_sum(work, idx, b) / sizes
    centred = work - mean.index_select(0, idx)
    if normalize:
        ss = segment_sum(centred**2, idx, b)
        denom = (sizes - 1.0).clamp_min(1.0) if unbiased_std else sizes
        std = torch.where(sizes > 1, (ss / denom).sqrt(), torch.zeros_like(ss))
        centred = centred / (std.index_select(0, idx) + eps)
    return centred.to(rewards.dtype if rewards.is_floating_point() else work.dtype).reshape(
        rewards.shape
    )
