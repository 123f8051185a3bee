"""The batch partition function Z'(q) (science.md §2, Thm 2.2/2.3, its **Decision**, and §7).

For one query with G responses grouped into modes j:

    Z'(q) = Σ_j π(o_j|q) · exp(N_j·A_j / (βG)) + (unseen mass)

N_j = number of responses of mode j, A_j = mean advantage of those responses (so N_j·A_j is the
sum of their advantages). Modes are the distinct answer keys when the caller gives them (a
response without one, key ``None``, is its own mode: its token sequence when token ids are
given), else the distinct responses by token sequence (the response-hash mode).

- **Exact support** (science.md §7), when sequence log-probabilities are given (π_ref's when the
  caller has them, else the old policy's as its stand-in; the result says which): π(o_j) = Σ π
  over the distinct sampled sequences of mode j (each sequence counted once; without token ids a
  mode counts its first response's sequence), and the unseen modes contribute 1 − Σ_j π(o_j)
  (Thm 2.2: unsampled modes keep π, exp(0) = 1). No guess is involved.
- **Good–Turing** (no log-probs): π(o_j) = (N_j/G)·(1 − M̂) with the unseen mass M̂ = n₁/G (n₁ =
  modes seen exactly once), and the unseen modes contribute M̂. A group whose modes are all
  singletons (M̂ = 1) carries no information (Z' would be 1 whatever the advantages): its Z' is
  absent (NaN), never a constant.

log Z' is a segment-logsumexp, so it never overflows. Everything runs on the device (float64 for
float64 advantages, else float32); answer keys are hashed on the host, token sequences on the
device, and nothing reads a tensor back into Python.
"""

from __future__ import annotations

import functools
import math
import struct
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
    "log_zprime_each",
    "modes_from_keys",
    "sequence_keys",
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
    ``n_modes`` ``[B]`` (device): number of distinct modes per group. ``dense_shape``
    ``(B, G)`` when the slots are laid out like a dense layout's responses (slot ``s`` belongs
    to group ``s // G``), so per-group reductions over slots can be row reductions.
    """

    mode_index: torch.Tensor
    mode_group: torch.Tensor
    first_response: torch.Tensor
    num_modes: int
    n_modes: torch.Tensor
    dense_shape: tuple[int, int] | None = None


_P1 = 2_147_483_647  # 2^31 − 1
_P2 = 2_147_483_629  # a prime just below 2^31
_B1 = 1_000_003
_B2 = 998_244_353
_NO_KEY_SALT = 0x5DEECE66D  # keeps per-response fallback keys apart from answer-key hashes


def sequence_keys(token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A 62-bit key per response ``[N]`` (int64, on the device) from its token sequence: the
    tokens where ``mask`` is set, in order, whatever the padding side (all tokens when ``mask``
    is None). Two independent polynomial hashes mod primes near 2^31 over (token + 1), with the
    length mixed in; equal sequences get equal keys, distinct ones collide with odds ~2^-62."""
    if token_ids.dim() != 2:
        raise ShapeError(f"token_ids has shape {list(token_ids.shape)}; expected [N, T]")
    n, t = int(token_ids.shape[0]), int(token_ids.shape[1])
    dev = token_ids.device
    ids = token_ids.to(torch.int64)
    if mask is None:
        m = torch.ones((n, t), dtype=torch.bool, device=dev)
    else:
        if mask.numel() != n * t:
            raise ShapeError(f"mask has shape {list(mask.shape)}; token_ids has {[n, t]}")
        m = mask.reshape(n, t).to(dev)
        m = m if m.dtype == torch.bool else m != 0
        order = torch.sort((~m).to(torch.uint8), dim=-1, stable=True).indices
        ids = ids.gather(-1, order)  # response tokens first, in order
        m = m.gather(-1, order)
    length = m.sum(dim=-1)
    keys = []
    for p, base in ((_P1, _B1), (_P2, _B2)):
        pw = torch.tensor(_powers(base, p, t), dtype=torch.int64).to(dev)
        term = (((ids % p) + 1) * pw) % p  # < 2^62: no overflow
        h = torch.where(m, term, torch.zeros_like(term)).sum(dim=-1) % p
        keys.append((h + length * 7919) % p)
    return keys[0] * _P2 + keys[1]


@functools.lru_cache(maxsize=16)
def _powers(base: int, p: int, t: int) -> tuple[int, ...]:
    """``base^k mod p`` for k = 0..t-1 (host integers)."""
    out = [1] * t
    for k in range(1, t):
        out[k] = out[k - 1] * base % p
    return tuple(out)


def modes_from_keys(keys: torch.Tensor, layout: GroupLayout) -> ModeAssignment:
    """Modes = distinct ``keys`` (int64 ``[N]``, on the layout's device) within each group."""
    n = layout.num_responses
    if tuple(keys.shape) != (n,):
        raise ShapeError(f"mode keys have shape {list(keys.shape)}; expected [{n}]")
    dev = layout.device
    h = keys.to(device=dev, dtype=torch.int64)
    groups = layout.index
    if layout.dense_shape is not None:
        # groups are rows of [B, G]: one row-wise sort orders each group by key, and group b's
        # modes take slots b·G + (rank of the mode's key in the group) (issue 21: a sort of B
        # short rows instead of two of N, and row reductions over the slots). Nothing below
        # depends on the order of equal keys (a mode's first response is the least index of
        # its run), so the sort need not be stable (1.5-2x faster).
        b, g = layout.dense_shape
        srt = torch.sort(h.reshape(b, g), dim=-1)
        new_rows = torch.ones((b, g), dtype=torch.bool, device=dev)
        new_rows[:, 1:] = srt.values[:, 1:] != srt.values[:, :-1]
        rank = torch.cumsum(new_rows, dim=-1) - 1  # [B, G] in sorted order
        base = (groups * g).reshape(b, g)
        mode_index = torch.empty((b, g), dtype=torch.int64, device=dev)
        mode_index.scatter_(-1, srt.indices, rank + base)
        first = torch.full((b, g), g - 1, dtype=torch.int64, device=dev)
        first = first.scatter_reduce(-1, rank, srt.indices, reduce="amin", include_self=True)
        return ModeAssignment(
            mode_index=mode_index.reshape(-1),
            mode_group=groups,
            first_response=(first + base).reshape(-1),
            num_modes=n,
            n_modes=new_rows.sum(dim=-1, dtype=torch.float32),
            dense_shape=(b, g),
        )
    o1 = torch.sort(h, stable=True).indices
    o2 = torch.sort(groups.index_select(0, o1), stable=True).indices
    order = o1.index_select(0, o2)  # sorted by (group, key), original order kept within ties
    hs, gs = h.index_select(0, order), groups.index_select(0, order)
    new = torch.ones(n, dtype=torch.bool, device=dev)
    new[1:] = (hs[1:] != hs[:-1]) | (gs[1:] != gs[:-1])
    slot_sorted = torch.cumsum(new, 0) - 1
    mode_index = torch.empty(n, dtype=torch.int64, device=dev).scatter_(0, order, slot_sorted)
    mode_group = torch.zeros(n, dtype=torch.int64, device=dev).scatter_(0, slot_sorted, gs)
    first = torch.full((n,), n - 1, dtype=torch.int64, device=dev)
    first = first.scatter_reduce(0, slot_sorted, order, reduce="amin", include_self=True)
    slot_used = segment_sum(new.to(torch.float32), slot_sorted, n)
    return ModeAssignment(
        mode_index=mode_index,
        mode_group=mode_group,
        first_response=first,
        num_modes=n,
        n_modes=segment_sum(slot_used, mode_group, layout.num_groups),
    )


@functools.lru_cache(maxsize=8)
def _int64_packer(n: int) -> struct.Struct:
    return struct.Struct(f"={n}q")


def assign_modes(
    answer_keys: Sequence[Hashable | None],
    layout: GroupLayout,
    *,
    sequence_keys: torch.Tensor | None = None,
) -> ModeAssignment:
    """Map host-side answer keys (strings, or response hashes) to integer mode ids per group.

    Keys are hashed on the host in one ``map(hash, ...)`` pass (Python ``hash``, 64 bit; two
    distinct keys of one group colliding has odds ~G²/2⁶⁴). A ``None`` key (no extractable
    answer) is its own mode: the response's token sequence (``sequence_keys``, from
    :func:`sequence_keys`) when given, else the response alone. Grouping runs on the device;
    nothing is read back into Python.
    """
    n = layout.num_responses
    if len(answer_keys) != n:
        raise ShapeError(f"answer_keys has {len(answer_keys)} entries; expected {n}")
    # One C-level pass (``map``) for the common case; responses without a key (rare) are
    # re-keyed in a second pass over those alone.
    host = list(map(hash, answer_keys))
    none: list[bool] | None = None
    # comparing the hashes (ints) with None's first is half the cost of ``None in answer_keys``
    # (a string compared with None goes through both types' comparisons); a key that merely
    # hashes like None fails the exact test after it
    if hash(None) in host and None in answer_keys:
        none = [k is None for k in answer_keys]
        for i, missing in enumerate(none):
            if missing:
                host[i] = hash((_NO_KEY_SALT, i))
    # packed into bytes in one C call: torch.tensor over a list of Python ints costs 6x as
    # much, array.array 1.5x (issue 21)
    packer = _int64_packer(n)
    buf = bytearray(packer.size)
    packer.pack_into(buf, 0, *host)
    packed = torch.frombuffer(buf, dtype=torch.int64)
    keys = host_to_device(packed, torch.int64, layout.device)
    if sequence_keys is not None and none is not None:
        is_none = host_to_device(torch.tensor(none), torch.bool, layout.device)
        keys = torch.where(is_none, sequence_keys.to(layout.device) ^ _NO_KEY_SALT, keys)
    return modes_from_keys(keys, layout)


def _segment_logsumexp(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """logsumexp of ``values`` per segment (``-inf`` entries allowed; empty segment -> -inf)."""
    mx = torch.full((num,), float("-inf"), dtype=values.dtype, device=values.device)
    mx = mx.scatter_reduce(0, index, values, reduce="amax", include_self=True)
    safe = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = segment_sum(torch.exp(values - safe.index_select(0, index)), index, num)
    return torch.log(s) + safe


def quantile_linear(x: torch.Tensor, q: float) -> torch.Tensor:
    """q-quantile of ``x`` along its last dim with linear interpolation between order
    statistics (1-D ``x``: a 0-d result; ``[K, n]``: ``[K]``).

    Same definition as ``numpy.quantile``/``torch.quantile`` default ("linear", Hyndman–Fan
    type 7): position q·(n−1) in the sorted values. Index arithmetic is done on the host from
    the (host-known) length, so there is no device-to-host copy.
    """
    n = int(x.shape[-1])
    srt = torch.sort(x, dim=-1).values
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return srt[..., lo] + (srt[..., hi] - srt[..., lo]) * frac


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − e^x) for x <= 0, stable; x >= 0 gives -inf (no mass left)."""
    x = x.clamp(max=0.0)
    small = x > -0.6931471805599453
    return torch.where(small, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _segment_logsumexp_rows(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """:func:`_segment_logsumexp` of every row of ``values`` ``[K, M]`` (same ``index``)."""
    kk = int(values.shape[0])
    mx = torch.full((kk, num), float("-inf"), dtype=values.dtype, device=values.device)
    mx = mx.scatter_reduce(1, index.expand(kk, -1), values, reduce="amax", include_self=True)
    safe = torch.where(torch.isfinite(mx), mx, torch.zeros((), dtype=mx.dtype, device=mx.device))
    e = torch.exp(values - safe.index_select(1, index))
    s = torch.zeros((kk, num), dtype=values.dtype, device=values.device).index_add_(1, index, e)
    return torch.log(s) + safe


def _masked_quantile_rows(
    x: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, q: float
) -> torch.Tensor:
    """:func:`quantile_linear` of the ``valid`` entries of every row of ``x`` ``[K, B]`` (``k``
    of them, a device count), without reading ``k`` back: NaN when there are none. One sort of
    all rows; the order statistics' positions are computed once."""
    n = int(x.shape[1])
    inf = torch.full((), float("inf"), dtype=x.dtype, device=x.device)
    srt = torch.sort(torch.where(valid, x, inf)).values
    last = (k - 1).clamp_min(0)
    pos = q * last
    lo = pos.floor()
    hi = torch.minimum(lo + 1, last)
    idx = torch.stack([lo, hi]).to(torch.int64).clamp(0, n - 1)
    ab = srt.index_select(1, idx)  # [K, 2]: the order statistics below and above
    a, b = ab[:, 0], ab[:, 1]
    out = a + (b - a) * (pos - lo)
    return torch.where(k > 0, out, torch.full((), float("nan"), dtype=x.dtype, device=x.device))


@dataclass(frozen=True)
class ZPrimeResult:
    """Z'(q) per query and per step, on the device.

    ``log_zprime`` ``[B]`` (NaN where Z' is absent: a Good–Turing group of singletons);
    ``suppression`` ``[B]`` = 1/Z'(q) (the factor applied to every unsampled mode);
    ``lower_bound`` ``[B]``: Thm 2.3's bound 1 + Σ_j N_j·A_j·π(o_j)/(βG), valid whenever the π
    used sum with the unseen mass to 1 (always here). Per step (0-d), over the queries that
    have a Z': ``queries`` (their number), ``mean`` of log Z', ``p90`` of log Z' (linear
    interpolation between order statistics, the default of ``torch.quantile``/
    ``numpy.quantile``), ``gt1_frac`` = fraction with log Z' > ``LOG_ZPRIME_GT1_TOL``
    (``_FP32`` for float32 work); NaN when no query has one. ``exact_support``: π came from
    log-probs (science.md §7), not Good–Turing.
    """

    log_zprime: torch.Tensor
    suppression: torch.Tensor
    lower_bound: torch.Tensor
    mean: torch.Tensor
    p90: torch.Tensor
    gt1_frac: torch.Tensor
    beta: float
    queries: torch.Tensor | None = None
    exact_support: bool = False


def log_zprime(
    advantages: torch.Tensor,
    modes: ModeAssignment,
    layout: GroupLayout,
    *,
    beta: float,
    ref_logprobs: torch.Tensor | None = None,
    sequences: ModeAssignment | None = None,
) -> ZPrimeResult:
    """log Z'(q) of every query (science.md §2 Decision, §7); exponent N_j·A_j/(βG).

    ``ref_logprobs`` (``[B, G]`` or ``[N]``): each response's sequence log-probability under
    π_ref, or under the old policy as its stand-in; with them the support is exact. Then
    ``sequences`` (modes by token sequence, :func:`modes_from_keys` of :func:`sequence_keys`)
    tells distinct sampled responses apart: a mode's π is the sum over its distinct sequences.
    Without log-probs: Good–Turing, and groups of singletons have no Z' (NaN).
    """
    (res,) = log_zprime_each(
        (advantages,), modes, layout, beta=beta, ref_logprobs=ref_logprobs, sequences=sequences
    )
    return res


def log_zprime_each(
    advantages: Sequence[torch.Tensor],
    modes: ModeAssignment,
    layout: GroupLayout,
    *,
    beta: float,
    ref_logprobs: torch.Tensor | None = None,
    sequences: ModeAssignment | None = None,
) -> tuple[ZPrimeResult, ...]:
    """:func:`log_zprime` of several advantage tensors (the raw and the used ones) under the
    same modes and π, in one batched pass: π, the unseen mass and which groups have a Z' do
    not depend on the advantages and are computed once, and the rest runs on ``[K, ...]``
    tensors (issue 21: a step's Z' section was ~60 small ops, each paying torch's per-op cost).
    Advantages whose dtypes call for different working precisions are computed separately."""
    if not beta > 0:
        raise ConfigurationError(f"beta must be > 0 for Z'(q), got {beta!r}")
    # float64 when the advantages are float64, else float32 (float64 transcendental functions
    # are two orders of magnitude slower on CPU builds of torch)
    dts = [torch.float64 if a.dtype == torch.float64 else torch.float32 for a in advantages]
    if len(set(dts)) > 1:
        return tuple(
            r
            for a in advantages
            for r in log_zprime_each(
                (a,), modes, layout, beta=beta, ref_logprobs=ref_logprobs, sequences=sequences
            )
        )
    dt = dts[0]
    adv = torch.stack([layout.flatten(a, "advantages").detach().to(dt) for a in advantages])
    kk, n = int(adv.shape[0]), int(adv.shape[1])
    dev = adv.device
    b, m = layout.num_groups, modes.num_modes
    mg = modes.mode_group
    # slots laid out [B, G]: per-group reductions over slots are row reductions of a view
    rows = modes.dense_shape if modes.dense_shape is not None and m == n else None
    ones = torch.ones(n, dtype=dt, device=dev)
    counts = segment_sum(ones, modes.mode_index, m)  # N_j
    adv_sum = torch.zeros((kk, m), dtype=dt, device=dev).index_add_(1, modes.mode_index, adv)
    g_of_mode = layout.sizes.to(dt).index_select(0, mg)
    beta_g = beta * g_of_mode  # βG per mode slot
    exponent = adv_sum / beta_g  # N_j·A_j/(βG)
    ninf = float("-inf")
    if ref_logprobs is not None:
        lp = layout.flatten(ref_logprobs, "ref_logprobs").detach().to(device=dev, dtype=dt)
        if sequences is None:
            log_pi = lp.index_select(0, modes.first_response)
        else:  # π(mode) = Σ π over the mode's distinct sampled sequences
            seq_count = segment_sum(ones, sequences.mode_index, sequences.num_modes)
            first = sequences.first_response
            log_pi_seq = torch.where(seq_count > 0, lp.index_select(0, first), ninf)
            log_pi = _segment_logsumexp(log_pi_seq, modes.mode_index.index_select(0, first), m)
        log_pi = torch.where(counts > 0, log_pi, torch.full_like(log_pi, ninf))
        log_seen = (
            _segment_logsumexp(log_pi, mg, b)
            if rows is None
            else torch.logsumexp(log_pi.reshape(rows), dim=-1)
        )
        log_unseen = _log1mexp(log_seen)
        valid = None  # every group has a Z'
    else:
        g = layout.sizes.to(dt)
        single = (counts == 1).to(dt)
        n1 = segment_sum(single, mg, b) if rows is None else single.reshape(rows).sum(dim=-1)
        m_hat = n1 / g  # Good–Turing unseen mass
        log_pi = torch.log(counts / g_of_mode) + torch.log1p(-m_hat).index_select(0, mg)
        log_unseen = torch.log(m_hat)
        valid = n1 < g  # all singletons: no information, no Z' (science.md §7)
    bound_terms = adv_sum * torch.exp(log_pi) / beta_g
    if rows is None:
        terms = torch.cat([log_pi + exponent, log_unseen.expand(kk, b)], dim=1)
        seg = torch.cat([mg, torch.arange(b, device=dev)])
        lse = _segment_logsumexp_rows(terms, seg, b)
        bound_sum = torch.zeros((kk, b), dtype=dt, device=dev).index_add_(1, mg, bound_terms)
    else:
        # reduced over the leading dim of a [G + 1, K, B] copy: a last-dim reduction over
        # G + 1 = 17 entries is a scalar loop on CPU, 3x slower
        seen = (log_pi + exponent).reshape(kk, *rows).permute(2, 0, 1)
        unseen = log_unseen.reshape(1, 1, b).expand(1, kk, b)
        lse = torch.logsumexp(torch.cat([seen, unseen]), dim=0)
        bound_sum = bound_terms.reshape(kk, *rows).sum(dim=-1)
    nan = torch.full((), float("nan"), dtype=dt, device=dev)
    lz = lse if valid is None else torch.where(valid, lse, nan)  # [K, B]
    bound = 1.0 + bound_sum
    tol = LOG_ZPRIME_GT1_TOL if dt == torch.float64 else LOG_ZPRIME_GT1_TOL_FP32
    if valid is None:  # the count and the quantile's positions are known on the host
        k = torch.full((), float(b), dtype=dt, device=dev)
        mean = lz.sum(dim=-1) / k
        p90 = quantile_linear(lz, 0.9)
        gt1 = (lz > tol).to(dt).sum(dim=-1) / k
    else:
        k = valid.to(dt).sum()
        mean = torch.where(valid, lz, torch.zeros((), dtype=dt, device=dev)).sum(dim=-1) / k
        p90 = _masked_quantile_rows(lz, valid, k, 0.9)
        gt1 = ((lz > tol) & valid).to(dt).sum(dim=-1) / k
    suppression = torch.exp(-lz)
    lower = bound if valid is None else torch.where(valid, bound, nan)
    return tuple(
        ZPrimeResult(
            log_zprime=lz[i],
            suppression=suppression[i],
            lower_bound=lower[i],
            mean=mean[i],
            p90=p90[i],
            gt1_frac=gt1[i],
            beta=beta,
            queries=k,
            exact_support=ref_logprobs is not None,
        )
        for i in range(kk)
    )


def zprime_lower_bound_normalized(
    p_plus: float, sigma: float, delta_pi: float, beta: float
) -> float:
    """Thm 2.3, simplified form for normalised binary advantages: 1 + p⁺(1−p⁺)/(βσ)·Δπ."""
    return 1.0 + p_plus * (1.0 - p_plus) / (beta * sigma) * delta_pi
