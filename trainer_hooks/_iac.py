"""Inverse-success advantage calibration, IAC (science.md §3; seed 002 §3.1, Algorithm 1).

Ã_s = A_s · (G − S⁺)^α for every response with A_s > 0; responses with A_s <= 0 unchanged.
G is the response's group size (groups may differ in size), S⁺ the group's number of correct
responses (reward >= the run's success threshold, science.md notation). α = 0 returns the input
tensor itself, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch

from trainer_hooks._errors import ConfigurationError
from trainer_hooks._group import group_stats
from trainer_hooks._layout import GroupLayout, make_layout

__all__ = ["iac_calibrate", "iac_factor"]


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise ConfigurationError(f"alpha must be a real number >= 0, got {alpha!r}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ConfigurationError(f"alpha must be finite and >= 0, got {alpha!r}")
    return float(alpha)


def iac_factor(
    successes: torch.Tensor, sizes: torch.Tensor, alpha: float, dtype: torch.dtype
) -> torch.Tensor:
    """Per-group factor (G − S⁺)^α (science.md §3)."""
    return torch.pow((sizes - successes).to(dtype), _check_alpha(alpha))


def iac_calibrate(
    advantages: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: Sequence[Hashable] | torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    success_threshold: float = 0.5,
    layout: GroupLayout | None = None,
    successes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Calibrated advantages Ã (same shape, dtype and device as ``advantages``).

    ``rewards`` (``[B, G]``, or flat with ``group_ids``) give S⁺ per group; pass ``layout`` and
    per-group ``successes`` to reuse ones already computed. ``alpha`` may change between calls.
    """
    a = _check_alpha(alpha)
    if a == 0.0:
        return advantages
    if layout is None:
        layout = make_layout(rewards, group_ids)
    if successes is None:
        successes = group_stats(
            rewards, success_threshold=success_threshold, layout=layout
        ).successes
    flat = layout.flatten(advantages, "advantages")
    work = flat if flat.is_floating_point() else flat.to(torch.float32)
    factor = iac_factor(successes, layout.sizes, a, work.dtype).index_select(0, layout.index)
    out = torch.where(work > 0, work * factor, work)
    return out.reshape(advantages.shape)
