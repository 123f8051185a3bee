"""The batch partition function Z'(q) (science.md §2, Thm 2.2/2.3, and its **Decision**).

For one query with G responses grouped into modes j (distinct answer keys):

    Z'(q) = Σ_j π_ref(o_j|q) · exp(N_j·A_j / (βG)) + (unseen mass)

N_j = number of responses of mode j, A_j = mean advantage of those responses (so N_j·A_j is the
sum of their advantages). π_ref(o_j) is the caller's reference probability when given (log-probs,
one per response; a mode takes the value of its first response in the group), and the unseen
modes then contribute 1 − Σ_j π_ref(o_j) (Thm 2.2: unsampled modes keep π_ref, exp(0) = 1).
Without reference probabilities π_ref(o_j) = (N_j/G)·(1 − M̂) with the Good–Turing unseen mass
M̂ = n₁/G (n₁ = modes seen exactly once), and the unseen modes contribute M̂. log Z' is a
segment-logsumexp, so it never overflows. Everything runs on the device in float64; the mapping
of host-side answer keys to integer mode ids is done on the host without a device copy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from trainer_hooks._errors import ConfigurationError, ShapeError
from trainer_hooks._layout import GroupLayout, segment_sum
from trainer_hooks._sync import host_to_device

__all__ = [
    "ModeAssignment",
    "ZPrimeResult",
    "assign_modes",
    "log_zprime",
    "zprime_lower_bound_normalized",
]

#: log Z' above this counts as Z' > 1 (absorbs round-off for groups where Z' = 1 exactly, e.g.
#: degenerate groups whose advantages are all 0): float64 computations / float32 computations.
LOG_ZPRIME_GT1_TOL = 1e-9
LOG_ZPRIME_GT1_TOL_FP32 = 1e-5


@dataclass(frozen=True)
class ModeAssignment:
    """Modes of every group, numbered on the host.

    Mode slots are numbered ``0..N-1`` (at most one mode per response); slots no response maps
    to are empty (count 0) and contribute nothing, so the number of modes never has to be read
    back from a tensor. ``mode_index`` ``[N]``: mode slot of each response; ``mode_group``
    ``[N]``: group of each slot; ``first_response`` ``[N]``: first response of each slot;
    ``n_modes`` ``[B]`` (device): number of distinct modes per group.
    """

    mode_index: torch.Tensor
    mode_group: torch.Tensor
    first_response: torch.Tensor
    num_modes: int
    n_modes: torch.Tensor


def assign_modes(answer_keys: Sequence[Hashable], layout: GroupLayout) -> ModeAssignment:
    """Map host-side answer keys (strings, or response hashes) to integer mode ids per group.

    Keys are hashed on the host (Python ``hash``, 64 bit; two distinct keys of one group
    colliding has odds ~G²/2⁶⁴) and grouped by a stable sort of (group, hash) on CPU tensors;
    nothing loops over responses in Python except the hashing itself, and nothing reads a tensor
    back into Python.
    """
    groups = layout.group_of_response_host()
    if groups is None:
        raise ConfigurationError(
            "answer_keys need the group of every response on the host: pass rewards as [B, G] or "
            "group_ids as a host sequence (not a tensor)"
        )
    n = layout.num_responses
    if len(answer_keys) != n:
        raise ShapeError(f"answer_keys has {len(answer_keys)} entries; expected {n}")
    h = torch.tensor(list(map(hash, answer_keys)), dtype=torch.int64)
    o1 = torch.sort(h, stable=True).indices
    o2 = torch.sort(groups[o1], stable=True).indices
    order = o1[o2]  # responses sorted by (group, hash), original order kept within ties
    hs, gs = h[order], groups[order]
    new = torch.ones(n, dtype=torch.bool)
    new[1:] = (hs[1:] != hs[:-1]) | (gs[1:] != gs[:-1])
    slot_sorted = torch.cumsum(new.to(torch.int64), 0) - 1
    mode_index = torch.empty(n, dtype=torch.int64).scatter_(0, order, slot_sorted)
    mode_group = torch.zeros(n, dtype=torch.int64).scatter_(0, slot_sorted, gs)
    first = torch.full((n,), n - 1, dtype=torch.int64)
    first = first.scatter_reduce(0, slot_sorted, order, reduce="amin", include_self=True)
    dev = layout.device
    mode_group_d = host_to_device(mode_group, torch.int64, dev)
    used = host_to_device(new, torch.float32, dev)
    slot_used = segment_sum(used, host_to_device(slot_sorted, torch.int64, dev), n)
    return ModeAssignment(
        mode_index=host_to_device(mode_index, torch.int64, dev),
        mode_group=mode_group_d,
        first_response=host_to_device(first, torch.int64, dev),
        num_modes=n,
        n_modes=segment_sum(slot_used, mode_group_d, layout.num_groups),
    )


def _segment_logsumexp(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """logsumexp of ``values`` per segment (``-inf`` entries allowed; empty segment -> -inf)."""
    mx = torch.full((num,), float("-inf"), dtype=values.dtype, device=values.device)
    mx = mx.scatter_reduce(0, index, values, reduce="amax", include_self=True)
    safe = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = segment_sum(torch.exp(values - safe.index_select(0, index)), index, num)
    return torch.log(s) + safe


def quantile_linear(x: torch.Tensor, q: float) -> torch.Tensor:
    """q-quantile of 1-D ``x`` with linear interpolation between order statistics.

    Same definition as ``numpy.quantile``/``torch.quantile`` default ("linear", Hyndman–Fan
    type 7): position q·(n−1) in the sorted values. Index arithmetic is done on the host from
    the (host-known) length, so there is no device-to-host copy.
    """
    n = int(x.shape[0])
    srt = torch.sort(x).values
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return srt[lo] + (srt[hi] - srt[lo]) * frac


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − e^x) for x <= 0, stable; x >= 0 gives -inf (no mass left)."""
    x = x.clamp(max=0.0)
    small = x > -0.6931471805599453
    return torch.where(small, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass(frozen=True)
class ZPrimeResult:
    """Z'(q) per query and per step, on the device.

    ``log_zprime`` ``[B]``; ``suppression`` ``[B]`` = 1/Z'(q) (the factor applied to every unsampled
    mode); ``lower_bound`` ``[B]``: Thm 2.3's bound 1 + Σ_j N_j·A_j·π_ref(o_j)/(βG), valid whenever
    the π_ref used sum with the unseen mass to 1 (always here); per step (0-d): ``mean`` of
    log Z', ``p90`` of log Z' across queries (linear interpolation between order statistics, the
    default of ``torch.quantile``/``numpy.quantile``), ``gt1_frac`` = fraction of queries with
    log Z' > ``LOG_ZPRIME_GT1_TOL`` (``_FP32`` for float32 work).
    """

    log_zprime: torch.Tensor
    suppression: torch.Tensor
    lower_bound: torch.Tensor
    mean: torch.Tensor
    p90: torch.Tensor
    gt1_frac: torch.Tensor
    beta: float


def log_zprime(
    advantages: torch.Tensor,
    modes: ModeAssignment,
    layout: GroupLayout,
    *,
    beta: float,
    ref_logprobs: torch.Tensor | None = None,
) -> ZPrimeResult:
    """log Z'(q) of every query (science.md §2 Decision); exponent N_j·A_j/(βG)."""
    if not beta > 0:
        raise ConfigurationError(f"beta must be > 0 for Z'(q), got {beta!r}")
    # float64 when the advantages are float64, else float32 (float64 transcendental functions
    # are two orders of magnitude slower on CPU builds of torch)
    dt = torch.float64 if advantages.dtype == torch.float64 else torch.float32
    adv = layout.flatten(advantages, "advantages").detach().to(dt)
    b, m = layout.num_groups, modes.num_modes
    mg = modes.mode_group
    counts = segment_sum(torch.ones_like(adv), modes.mode_index, m)  # N_j
    adv_sum = segment_sum(adv, modes.mode_index, m)  # N_j·A_j
    g_of_mode = layout.sizes.to(dt).index_select(0, mg)
    exponent = adv_sum / (beta * g_of_mode)
    if ref_logprobs is not None:
        lp = layout.flatten(ref_logprobs, "ref_logprobs").detach().to(dt)
        log_pi = lp.index_select(0, modes.first_response)
        log_pi = torch.where(counts > 0, log_pi, torch.full_like(log_pi, float("-inf")))
        log_seen = _segment_logsumexp(log_pi, mg, b)
        log_unseen = _log1mexp(log_seen)
    else:
        g = layout.sizes.to(dt)
        n1 = segment_sum((counts == 1).to(dt), mg, b)
        m_hat = n1 / g  # Good–Turing unseen mass
        log_pi = torch.log(counts / g_of_mode) + torch.log1p(-m_hat).index_select(0, mg)
        log_unseen = torch.log(m_hat)
    terms = torch.cat([log_pi + exponent, log_unseen])
    seg = torch.cat([mg, torch.arange(b, device=mg.device)])
    lz = _segment_logsumexp(terms, seg, b)
    bound = 1.0 + segment_sum(adv_sum * torch.exp(log_pi) / (beta * g_of_mode), mg, b)
    return ZPrimeResult(
        log_zprime=lz,
        suppression=torch.exp(-lz),
        lower_bound=bound,
        mean=lz.mean(),
        p90=quantile_linear(lz, 0.9),
        gt1_frac=(lz > (LOG_ZPRIME_GT1_TOL if dt == torch.float64 else LOG_ZPRIME_GT1_TOL_FP32))
        .to(dt)
        .mean(),
        beta=beta,
    )


def zprime_lower_bound_normalized(
    p_plus: float, sigma: float, delta_pi: float, beta: float
) -> float:
    """Thm 2.3, simplified form for normalised binary advantages: 1 + p⁺(1−p⁺)/(βσ)·Δπ."""
    return 1.0 + p_plus * (1.0 - p_plus) / (beta * sigma) * delta_pi
