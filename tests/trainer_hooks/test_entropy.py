"""Chunked token entropy against a float64 softmax reference (science.md §1, §3)."""

from __future__ import annotations

import pytest
import torch

from trainer_hooks import ConfigurationError, entropy_summary, make_layout, token_entropy


def _reference(logits: torch.Tensor) -> torch.Tensor:
    x = logits.double()
    p = torch.softmax(x, -1)
    logp = torch.log_softmax(x, -1)
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(-1)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunked_matches_reference_fp32(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, 37, generator=gen) * 3
    got = token_entropy(logits, chunk_size=chunk)
    assert got.shape == (3, 5, 11)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), _reference(logits), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_fp32(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(4, 9, 3000, generator=gen) * 2).to(dtype)
    got = token_entropy(logits, chunk_size=5)
    # the reference sees exactly the same (rounded) logits, in float64
    assert torch.allclose(got.double(), _reference(logits), atol=2e-4)


def test_neg_inf_logits_contribute_zero() -> None:
    logits = torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")]])
    assert token_entropy(logits).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_input_not_modified() -> None:
    logits = torch.tensor([[1.0, float("-inf"), 2.0]])
    before = logits.clone()
    token_entropy(logits)
    assert torch.equal(logits, before)


def test_bad_chunk_size() -> None:
    with pytest.raises(ConfigurationError, match="chunk_size"):
        token_entropy(torch.zeros(2, 3), chunk_size=0)


def test_summary_masked_means_match_loop() -> None:
    gen = torch.Generator().manual_seed(2)
    h = torch.rand(2, 3, 6, generator=gen)
    mask = (torch.rand(2, 3, 6, generator=gen) > 0.3).float()
    mask[0, 0] = 0.0  # a response with no tokens
    h[mask == 0] = 1e6  # finite garbage under the mask must not leak
    layout = make_layout(torch.zeros(2, 3))
    s = entropy_summary(h, mask, layout)
    hs, ms = h.tolist(), mask.tolist()
    for b in range(2):
        num = sum(hs[b][g][t] for g in range(3) for t in range(6) if ms[b][g][t])
        den = sum(ms[b][g][t] for g in range(3) for t in range(6))
        assert s.per_query[b].item() == pytest.approx(num / den, rel=1e-5)
    assert s.per_sequence[0].item() == 0.0
    tot = sum(hs[b][g][t] for b in range(2) for g in range(3) for t in range(6) if ms[b][g][t])
    assert s.mean.item() == pytest.approx(tot / mask.sum().item(), rel=1e-5)
