"""Inverse-success advantage calibration, IAC (science.md §3, §7; seed 002 §3.1, Algorithm 1).

Ã_s = A_s · (G − |S⁺|)^α for every response with A_s > 0; responses with A_s <= 0 unchanged.
G is the response's group size (groups may differ in size). S⁺ is, by default, the set of the
group's responses with a positive advantage (Algorithm 1, lines 11–14; science.md §7), for
binary and graded rewards alike; ``s_plus="threshold"`` counts rewards >= the run's success
threshold instead (the two agree for binary rewards, not for graded ones). α = 0 returns the
input tensor itself, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch

from trainer_hooks._errors import ConfigurationError
from trainer_hooks._group import group_stats
from trainer_hooks._layout import GroupLayout, make_layout

__all__ = ["S_PLUS_MODES", "iac_calibrate", "iac_factor"]

#: How S⁺ is counted: ``"advantage"`` (A > 0, Algorithm 1; the default) or ``"threshold"``.
S_PLUS_MODES = ("advantage", "threshold")


def check_s_plus(s_plus: object, name: str = "s_plus") -> str:
    if not isinstance(s_plus, str) or s_plus not in S_PLUS_MODES:
        raise ConfigurationError(f"{name} must be one of {S_PLUS_MODES}, got {s_plus!r}")
    return s_plus


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
    s_plus: str = "advantage",
) -> torch.Tensor:
    """Calibrated advantages Ã (same shape, dtype and device as ``advantages``).

    ``rewards`` (``[B, G]``, or flat with ``group_ids``) give the groups. ``s_plus``: how |S⁺| is
    counted (module docstring); with ``"threshold"``, per-group ``successes`` already computed
    may be passed to reuse them. ``alpha`` may change between calls.
    """
    a = _check_alpha(alpha)
    mode = check_s_plus(s_plus)
    if a == 0.0:
        return advantages
    if layout is None:
        layout = make_layout(rewards, group_ids)
    flat = layout.flatten(advantages, "advantages")
    work = flat if flat.is_floating_point() else flat.to(torch.float32)
    positive = work > 0
    if mode == "advantage":  # Algorithm 1: S⁺ = {s : A_s > 0}
        count = layout.group_sum(positive.to(torch.float64))
    elif successes is not None:
        count = successes
    else:
        count = group_stats(rewards, success_threshold=success_threshold, layout=layout).successes
    factor = iac_factor(count, layout.sizes, a, work.dtype).index_select(0, layout.index)
    out = torch.where(positive, work * factor, work)
    return out.reshape(advantages.shape)
