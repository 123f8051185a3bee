"""Held-out probe evaluation and pre-RL checkpoint triage (science.md §1 two-stage diagnostic, §2).

- Probe: every ``probe_every`` steps the loop samples responses for a fixed set of queries never
  trained on; success rate and entropy there falling while training success rises is the
  observable sign of collapse spreading through semantic coupling (§2, Thm 2.4).
- Triage (§1 stage (a)): per candidate checkpoint, rollout entropy and pass@1 on a probe set;
  flag pass@1 < p*(G) and entropy low relative to the other candidates; rank by entropy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from trainer_hooks._entropy import DEFAULT_CHUNK_SIZE, entropy_summary, token_entropy_rows
from trainer_hooks._errors import ConfigurationError
from trainer_hooks._group import group_stats, p_star
from trainer_hooks._layout import make_layout
from trainer_hooks._sync import to_host

__all__ = [
    "CheckpointProbe",
    "ProbeInputs",
    "TriageEntry",
    "measure_checkpoint",
    "probe_metrics",
    "triage_checkpoints",
]

FLAG_PASS_BELOW_P_STAR = "pass_at_1_below_p_star"
FLAG_LOW_ENTROPY = "low_entropy"


@dataclass(frozen=True)
class ProbeInputs:
    """Rollouts on the held-out probe queries: rewards (``[B, G]`` or flat with ``group_ids``)
    and token entropy (or logits) with the response mask."""

    rewards: torch.Tensor
    group_ids: Sequence[Hashable] | None = None
    token_entropy: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def probe_metrics(
    probe: ProbeInputs,
    *,
    success_threshold: float = 0.5,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(success_rate, mean token entropy or None)`` of the probe rollouts, 0-d on the device.

    Entropy from ``logits`` is that of softmax(logits / ``temperature``) (science.md §7)."""
    layout = make_layout(probe.rewards, probe.group_ids)
    stats = group_stats(probe.rewards, success_threshold=success_threshold, layout=layout)
    ent = probe.token_entropy
    empty = None
    if ent is None and probe.logits is not None:
        ent, empty = token_entropy_rows(
            probe.logits, temperature=temperature, chunk_size=chunk_size
        )
    if ent is None:
        return stats.success_rate, None
    return stats.success_rate, entropy_summary(ent, probe.mask, layout, empty=empty).mean


@dataclass(frozen=True)
class CheckpointProbe:
    """A candidate checkpoint's probe-set measurements (pass@1 = mean success per response)."""

    name: str
    pass_at_1: float
    entropy: float


def measure_checkpoint(
    name: str,
    rewards: torch.Tensor,
    *,
    group_ids: Sequence[Hashable] | None = None,
    token_entropy_values: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    success_threshold: float = 0.5,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> CheckpointProbe:
    """Measure pass@1 and rollout entropy of one checkpoint's probe rollouts (one host copy)."""
    if token_entropy_values is None and logits is None:
        raise ConfigurationError("measure_checkpoint needs token_entropy_values or logits")
    success, ent = probe_metrics(
        ProbeInputs(rewards, group_ids, token_entropy_values, logits, mask),
        success_threshold=success_threshold,
        chunk_size=chunk_size,
    )
    assert ent is not None
    values = to_host(torch.stack([success.to(torch.float64), ent.to(torch.float64)]))
    return CheckpointProbe(name=name, pass_at_1=values[0], entropy=values[1])


@dataclass(frozen=True)
class TriageEntry:
    """One candidate in the triage ranking (rank 1 = highest entropy)."""

    rank: int
    name: str
    pass_at_1: float
    entropy: float
    flags: tuple[str, ...]
    p_star: float
    entropy_floor: float


def triage_checkpoints(
    candidates: Sequence[CheckpointProbe],
    *,
    group_size: int,
    low_entropy_ratio: float = 0.8,
) -> list[TriageEntry]:
    """Rank candidates by rollout entropy (not pass@1) and flag risky ones (science.md §1 (a)).

    Flags: ``pass_at_1_below_p_star`` when pass@1 < p*(group_size); ``low_entropy`` when the
    entropy is below ``low_entropy_ratio`` × the median entropy of all candidates (our reading of
    "low relative to the other candidates"; a per-run setting).
    """
    if not 0.0 < low_entropy_ratio <= 1.0:
        raise ConfigurationError(f"low_entropy_ratio must be in (0, 1], got {low_entropy_ratio!r}")
    if not candidates:
        return []
    ps = p_star(group_size)
    finite = [c.entropy for c in candidates if math.isfinite(c.entropy)]
    floor = low_entropy_ratio * statistics.median(finite) if finite else math.nan
    ordered = sorted(candidates, key=lambda c: -c.entropy if math.isfinite(c.entropy) else math.inf)
    out = []
    for rank, c in enumerate(ordered, start=1):
        flags: list[str] = []
        if c.pass_at_1 < ps:
            flags.append(FLAG_PASS_BELOW_P_STAR)
        if not math.isfinite(c.entropy) or c.entropy < floor:
            flags.append(FLAG_LOW_ENTROPY)
        out.append(TriageEntry(rank, c.name, c.pass_at_1, c.entropy, tuple(flags), ps, floor))
    return out
