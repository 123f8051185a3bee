"""Token entropy of the policy (science.md §1 stage (b), §3 "entropy", §4 "actor entropy").

H_t = −Σ_v p_v log p_v with p = softmax(logits_t), computed as H = logsumexp(x) − Σ_v p_v x_v per
chunk of token rows: extra memory is two fp32 buffers of ``chunk_size × V`` (reused across
chunks) whatever the input dtype, and accumulation is fp32 also for bf16/fp16 logits. Trainers
that already compute per-token entropy (veRL, TRL) pass it in instead; nothing is computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer_hooks._errors import ConfigurationError, ShapeError
from trainer_hooks._layout import GroupLayout, segment_sum

__all__ = ["EntropySummary", "entropy_summary", "token_entropy"]

DEFAULT_CHUNK_SIZE = 1024


def token_entropy(logits: torch.Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last dim: ``[..., T, V] -> [..., T]`` (fp32).

    ``chunk_size`` is the number of token rows processed at once. ``-inf`` logits (masked
    vocabulary entries) contribute 0. Runs under ``torch.no_grad``: this is a metric.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ShapeError(f"logits has shape {list(logits.shape)}; expected [..., V] with V >= 1")
    lead = logits.shape[:-1]
    v = int(logits.shape[-1])
    flat = logits.detach().reshape(-1, v)
    rows = int(flat.shape[0])
    out = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows == 0:
        return out.reshape(lead)
    c = min(chunk_size, rows)
    floor = torch.finfo(torch.float32).min
    with torch.no_grad():
        xbuf = torch.empty((c, v), dtype=torch.float32, device=logits.device)
        pbuf = torch.empty((c, v), dtype=torch.float32, device=logits.device)
        for start in range(0, rows, c):
            stop = min(start + c, rows)
            x = xbuf[: stop - start]
            p = pbuf[: stop - start]
            x.copy_(flat[start:stop])
            x.clamp_(min=floor)  # -inf -> finite floor: p = 0 there and 0 * floor = 0
            lse = torch.logsumexp(x, dim=-1, keepdim=True)
            torch.sub(x, lse, out=p)
            p.exp_()
            # Σ_v p_v x_v as a batched dot product (no [c, V] temporary)
            px = torch.bmm(p.unsqueeze(1), x.unsqueeze(2)).reshape(-1)
            out[start:stop] = lse.reshape(-1) - px
    return out.reshape(lead)


@dataclass(frozen=True)
class EntropySummary:
    """Masked token-entropy means (nats), all on the device.

    ``per_sequence`` ``[N]``: mean over the sequence's response tokens (0 when it has none);
    ``per_query`` ``[B]``: token-weighted mean over all response tokens of the group;
    ``mean`` (0-d): token-weighted mean over all response tokens of the step (NaN when there are
    none); ``tokens_per_sequence`` ``[N]``: response-token counts.
    """

    per_sequence: torch.Tensor
    per_query: torch.Tensor
    mean: torch.Tensor
    tokens_per_sequence: torch.Tensor


_CPU_BLOCK_ELEMENTS = 1_048_576  # ~4 MB of fp32 per block: fits the cache, few Python calls


def _masked_row_sums(h: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t m, Σ_t h·m) per row of ``[N, T]`` tensors, in one pass over memory.

    On a GPU one fused ``einsum`` reads each tensor once. On a CPU the batched dot behind
    ``einsum`` is slow and a plain ``(h * m).sum`` writes an ``[N, T]`` temporary, so rows go
    in cache-sized blocks: each block's product and both sums are computed while it is in cache
    (2.5x faster than ``einsum`` at [8192 × 1024] here, see docs/benchmarks.md)."""
    if h.device.type != "cpu":
        return m.sum(dim=-1), torch.einsum("nt,nt->n", h, m)
    rows = max(1, _CPU_BLOCK_ELEMENTS // max(1, h.shape[-1]))
    tok = torch.empty(h.shape[0], dtype=h.dtype)
    ent = torch.empty(h.shape[0], dtype=h.dtype)
    for start in range(0, h.shape[0], rows):
        block_m = m[start : start + rows]
        tok[start : start + rows] = block_m.sum(dim=-1)
        ent[start : start + rows] = torch.mul(h[start : start + rows], block_m).sum(dim=-1)
    return tok, ent


def entropy_summary(
    entropy: torch.Tensor, mask: torch.Tensor | None, layout: GroupLayout
) -> EntropySummary:
    """Summarise per-token entropy ``[B, G, T]`` or ``[N, T]`` under the response ``mask``."""
    n = layout.num_responses
    if layout.dense_shape is not None and tuple(entropy.shape[:2]) == layout.dense_shape:
        h = entropy.reshape(n, -1) if entropy.dim() == 3 else None
    elif entropy.dim() == 2 and entropy.shape[0] == n:
        h = entropy
    else:
        h = None
    if h is None:
        raise ShapeError(
            f"token entropy has shape {list(entropy.shape)}; expected [N, T] or [B, G, T] "
            f"matching {n} responses"
        )
    h = h.detach().to(torch.float32)
    if mask is None:
        m = torch.ones_like(h)
    else:
        if mask.numel() != h.numel() or mask.shape[-1] != h.shape[-1]:
            raise ShapeError(
                f"mask has shape {list(mask.shape)}; entropy has {list(entropy.shape)}"
            )
        m = mask.reshape(h.shape).to(device=h.device, dtype=torch.float32)
    if h.device != m.device:
        raise ShapeError(f"mask is on {m.device}; entropy is on {h.device}")
    # Entropy under the mask must be finite (NaN there makes the sums NaN, reported as
    # non-finite, never silently wrong).
    tok, ent_sum = _masked_row_sums(h, m)
    per_sequence = ent_sum / tok.clamp_min(1.0)
    q_tok = segment_sum(tok, layout.index, layout.num_groups)
    per_query = segment_sum(ent_sum, layout.index, layout.num_groups) / q_tok.clamp_min(1.0)
    return EntropySummary(
        per_sequence=per_sequence,
        per_query=per_query,
        mean=ent_sum.sum() / tok.sum(),
        tokens_per_sequence=tok,
    )
