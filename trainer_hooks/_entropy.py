"""Token entropy of the policy (science.md §1 stage (b), §3 "entropy", §4 "actor entropy", §7).

Which distribution: the one the rollout sampled from, softmax(logits / temperature) (science.md
§7; TRL and veRL divide the logits by the sampling temperature before they compute entropy).

How (science.md §7, exact to <= 1e-4 nats against float64 at V = 152k, logit offsets of ±100,
std 10, fp32/bf16/fp16 inputs): per token row, centre z = (x − max x)/T <= 0, then with
s = Σ_v e^{z_v} >= 1

    H = log s − (Σ_v e^{z_v} z_v) / s

Both terms are >= 0, so nothing cancels: the uncentred form logsumexp(x) − Σ p·x subtracts two
numbers of the size of the logit offset (~100) and lost up to 0.05 nats in fp32. The centring
itself is exact for every entry that carries probability (Sterbenz). Rows go in chunks: extra
memory is two fp32 buffers of ``chunk_size × V`` whatever the input dtype, and accumulation is
fp32 (torch's cascade sums) also for bf16/fp16 logits.

Defined results (science.md §7): a ``-inf`` logit (a masked vocabulary entry) contributes 0; a
row whose logits are all ``-inf`` has no distribution: its entropy is NaN here and
:func:`entropy_summary` counts it as an input error (``empty``) instead of averaging it; a NaN or
``+inf`` logit makes its row NaN (a real non-finite model output). Masked token positions are
selected out, never multiplied: whatever sits there never reaches a metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainer_hooks._errors import ConfigurationError, ShapeError
from trainer_hooks._layout import GroupLayout, segment_sum

__all__ = ["EntropySummary", "entropy_summary", "token_entropy"]

DEFAULT_CHUNK_SIZE = 1024


def check_temperature(temperature: object, name: str = "temperature") -> float:
    """A sampling temperature: a finite number > 0."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ConfigurationError(f"{name} must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def token_entropy_rows(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(entropy [..., T] fp32, empty [..., T] bool)``: see :func:`token_entropy`; ``empty``
    marks rows whose logits are all ``-inf`` (their entropy is NaN)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    t = check_temperature(temperature)
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ShapeError(f"logits has shape {list(logits.shape)}; expected [..., V] with V >= 1")
    lead = logits.shape[:-1]
    v = int(logits.shape[-1])
    flat = logits.detach().reshape(-1, v)
    rows = int(flat.shape[0])
    dev = logits.device
    out = torch.empty(rows, dtype=torch.float32, device=dev)
    empty = torch.empty(rows, dtype=torch.bool, device=dev)
    if rows == 0:
        return out.reshape(lead), empty.reshape(lead)
    c = min(chunk_size, rows)
    floor = torch.finfo(torch.float32).min
    with torch.no_grad():
        zbuf = torch.empty((c, v), dtype=torch.float32, device=dev)
        pbuf = torch.empty((c, v), dtype=torch.float32, device=dev)
        for start in range(0, rows, c):
            stop = min(start + c, rows)
            z = zbuf[: stop - start]
            p = pbuf[: stop - start]
            z.copy_(flat[start:stop])
            mx = z.amax(dim=-1, keepdim=True)  # NaN propagates; all -inf rows give -inf
            none = mx == float("-inf")
            z.sub_(torch.where(none, torch.zeros_like(mx), mx))  # z <= 0, max entry exactly 0
            if t != 1.0:
                z.div_(t)
            z.clamp_(min=floor)  # -inf -> finite floor: e^z = 0 there and 0 * floor = 0
            torch.exp(z, out=p)
            s = p.sum(dim=-1)  # >= 1 for a row with a finite max (its max entry is e^0)
            p.mul_(z)
            pz = p.sum(dim=-1)  # Σ e^z·z <= 0: same-sign terms, no cancellation
            h = torch.log(s) - pz / s
            none = none.reshape(-1)
            out[start:stop] = torch.where(none, torch.full_like(h, float("nan")), h)
            empty[start:stop] = none
    return out.reshape(lead), empty.reshape(lead)


def token_entropy(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Entropy in nats of softmax(logits / temperature) over the last dim: ``[..., T, V] ->
    [..., T]`` (fp32), computed centred (module docstring; science.md §7).

    ``temperature``: the rollout's sampling temperature (default 1). ``chunk_size``: token rows
    processed at once. ``-inf`` logits (masked vocabulary entries) contribute 0; a row of all
    ``-inf`` and a row holding NaN or ``+inf`` give NaN. Runs under ``torch.no_grad``.
    """
    return token_entropy_rows(logits, temperature=temperature, chunk_size=chunk_size)[0]


@dataclass(frozen=True)
class EntropySummary:
    """Token-entropy means (nats) over the selected response tokens, all on the device.

    Selected tokens: mask true (nonzero) and not an ``empty`` row (all ``-inf`` logits, an input
    error). ``per_sequence`` ``[N]`` and ``per_query`` ``[B]``: mean over the selected tokens of
    the response / the group, NaN where there are none (a fully masked response contributes
    nothing); ``mean`` (0-d): mean over all selected tokens of the step (NaN when there are
    none); ``tokens_per_sequence`` ``[N]``: selected-token counts; ``tokens`` (0-d): their total;
    ``empty_tokens`` (0-d): unmasked positions whose logits were all ``-inf`` (left out).
    A NaN entropy at a selected position (NaN logits) is kept: it makes the means NaN, a real
    non-finite output.
    """

    per_sequence: torch.Tensor
    per_query: torch.Tensor
    mean: torch.Tensor
    tokens_per_sequence: torch.Tensor
    tokens: torch.Tensor
    empty_tokens: torch.Tensor


_CPU_BLOCK_ELEMENTS = 1_048_576  # ~4 MB of fp32 per block: fits the cache, few Python calls


def _row_dots(h: torch.Tensor, m: torch.Tensor, out: torch.Tensor) -> None:
    """``out[i] = Σ_t h[i, t]·m[i, t]`` for ``[n, T]`` tensors of one float dtype, reading each
    input once and materialising no product.

    Rows go in pairs through one batched matrix product, ``[n/2, 2, T] @ [n/2, T, 2]``, whose
    2×2 diagonals are the pairs' dot products (each output entry reads only its own two rows, so
    a non-finite entry of one row never reaches the other's). On a CPU this is as fast as a plain
    row sum of both inputs; ``bmm`` over ``[n, 1, T] @ [n, T, 1]`` (one dot per matrix) and
    ``mul(h, m).sum(-1)`` are 2–10× slower (docs/benchmarks.md). MKL accumulates in fp32 over
    several lanes (tests compare with float64)."""
    n, t = int(h.shape[0]), int(h.shape[-1])
    even = n - n % 2
    if even:
        half = (even // 2, 2, t)
        pairs = torch.bmm(h[:even].reshape(half), m[:even].reshape(half).transpose(1, 2))
        out[:even] = pairs.diagonal(dim1=1, dim2=2).reshape(-1)
    if even < n:
        out[even:] = torch.mul(h[even:], m[even:]).sum(dim=-1)


def _masked_row_sums(h: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t m, Σ_{t: m} h) per row of ``[N, T]`` tensors (``m`` bool, or 0/1 of any dtype):
    masked entries are selected out, never multiplied into the result (NaN·0 is NaN).

    On a GPU one fused ``where`` + ``sum``. On a CPU ``where`` (and even ``mask != 0``) costs
    several times a product, so each row's sum is the dot product ``h·m`` (:func:`_row_dots`;
    exact selection wherever the masked entries are finite: x·0 = 0), and only the rows whose
    sum came out non-finite (garbage such as ±inf or NaN under the mask, or a real NaN at a
    response token) are summed again with ``where``: the result is the selection's (see
    docs/benchmarks.md). A mask of another dtype than ``h`` is read as 0/1 of ``h``'s dtype in
    cache-sized blocks of one reused buffer (a bool mask through its bytes: converting bool
    itself, or a whole-tensor ``.to``, is several times slower)."""
    zero = torch.zeros((), dtype=h.dtype, device=h.device)
    if h.device.type != "cpu":
        mb = m if m.dtype == torch.bool else m != 0
        return mb.sum(dim=-1).to(h.dtype), torch.where(mb, h, zero).sum(dim=-1)
    n = int(h.shape[0])
    tok = torch.empty(n, dtype=h.dtype)
    ent = torch.empty(n, dtype=h.dtype)
    # token counts as the matrix-vector product m·1 (exact: integers below 2^24), 10-20%
    # faster than a row sum when the mask comes from memory rather than the cache
    ones = torch.ones(h.shape[-1], dtype=h.dtype)
    if m.dtype == h.dtype:
        torch.mv(m, ones, out=tok)
        _row_dots(h, m, ent)
    else:
        src = m.view(torch.uint8) if m.dtype == torch.bool else m
        rows = max(2, _CPU_BLOCK_ELEMENTS // max(1, h.shape[-1]))
        rows += rows % 2  # whole pairs per block
        as_float = torch.empty((min(rows, n), h.shape[-1]), dtype=h.dtype)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            block_m = as_float[: stop - start].copy_(src[start:stop])
            torch.mv(block_m, ones, out=tok[start:stop])
            _row_dots(h[start:stop], block_m, ent[start:stop])
    idx = torch.nonzero(~torch.isfinite(ent)).reshape(-1)  # usually empty: then a no-op
    mb = m.index_select(0, idx)
    mb = mb if mb.dtype == torch.bool else mb != 0
    ent.index_copy_(0, idx, torch.where(mb, h.index_select(0, idx), zero).sum(dim=-1))
    return tok, ent


def _as_rows(entropy: torch.Tensor, layout: GroupLayout, what: str) -> torch.Tensor:
    n = layout.num_responses
    if layout.dense_shape is not None and tuple(entropy.shape[:2]) == layout.dense_shape:
        if entropy.dim() == 3:
            return entropy.reshape(n, -1)
    elif entropy.dim() == 2 and entropy.shape[0] == n:
        return entropy
    raise ShapeError(
        f"{what} has shape {list(entropy.shape)}; expected [N, T] or [B, G, T] "
        f"matching {n} responses"
    )


def entropy_summary(
    entropy: torch.Tensor,
    mask: torch.Tensor | None,
    layout: GroupLayout,
    *,
    empty: torch.Tensor | None = None,
) -> EntropySummary:
    """Summarise per-token entropy ``[B, G, T]`` or ``[N, T]`` under the response ``mask``.

    ``mask`` (bool, or 0/1 of any dtype: nonzero = response token) selects positions;
    ``empty`` (bool, same shape, from :func:`token_entropy_rows`) marks all ``-inf`` rows, which
    are left out and counted in ``empty_tokens`` (science.md §7).
    """
    h = _as_rows(entropy, layout, "token entropy").detach().to(torch.float32)
    if mask is None:
        m = torch.ones(h.shape, dtype=torch.bool, device=h.device)
    else:
        if mask.numel() != h.numel() or mask.shape[-1] != h.shape[-1]:
            raise ShapeError(
                f"mask has shape {list(mask.shape)}; entropy has {list(entropy.shape)}"
            )
        if mask.device != h.device:
            raise ShapeError(f"mask is on {mask.device}; entropy is on {h.device}")
        m = mask.reshape(h.shape)  # bool, or 0/1 of any dtype (read as h's by the row sums)
    if empty is not None:
        e = empty.reshape(h.shape).to(h.device)
        mb = m if m.dtype == torch.bool else m != 0
        empty_tokens = (mb & e).sum().to(torch.float32)
        m = mb & ~e
    else:
        empty_tokens = torch.zeros((), dtype=torch.float32, device=h.device)
    tok, ent_sum = _masked_row_sums(h, m)
    nan = torch.full((), float("nan"), dtype=h.dtype, device=h.device)
    per_sequence = torch.where(tok > 0, ent_sum / tok.clamp_min(1.0), nan)
    q_tok = segment_sum(tok, layout.index, layout.num_groups)
    q_ent = segment_sum(ent_sum, layout.index, layout.num_groups)
    per_query = torch.where(q_tok > 0, q_ent / q_tok.clamp_min(1.0), nan)
    total = tok.sum()
    return EntropySummary(
        per_sequence=per_sequence,
        per_query=per_query,
        mean=torch.where(total > 0, ent_sum.sum() / total.clamp_min(1.0), nan),
        tokens_per_sequence=tok,
        tokens=total,
        empty_tokens=empty_tokens,
    )
