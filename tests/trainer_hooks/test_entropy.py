"""Chunked token entropy against a float64 softmax reference (science.md §1, §3)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer_hooks import ConfigurationError, entropy_summary, make_layout, token_entropy
from trainer_hooks._entropy import token_entropy_rows


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
    assert math.isnan(s.per_sequence[0].item())  # no tokens: undefined, not 0 (science.md §7)
    tot = sum(hs[b][g][t] for b in range(2) for g in range(3) for t in range(6) if ms[b][g][t])
    assert s.mean.item() == pytest.approx(tot / mask.sum().item(), rel=1e-5)


# -- LLM scale (issue 13 item 1; science.md §7) ---------------------------------------------


def _peaked(v: int, target_gen: torch.Generator, std: float, offset: float) -> torch.Tensor:
    """Rows of real-model spread: Gaussian logits plus one dominant token per row, raised so
    the entropies run from ~0.1 nats (the collapse floor) to ~log V."""
    x = torch.randn(4, v, generator=target_gen, dtype=torch.float64) * std
    x[0, 0] += 30.0 + 3.0 * std  # entropy near 0.1 at std 1
    x[1, 1] += 12.0 + 2.0 * std
    return x + offset


@pytest.mark.parametrize("v", [128_256, 152_064])
@pytest.mark.parametrize("offset", [-100.0, 0.0, 37.5, 100.0])
@pytest.mark.parametrize("std", [1.0, 4.0, 10.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_exact_at_llm_scale(v: int, offset: float, std: float, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(v + int(offset) + int(std))
    logits = _peaked(v, gen, std, offset).to(dtype)
    ref = _reference(logits)  # float64 on exactly the (rounded) logits the monitor sees
    got = token_entropy(logits, chunk_size=3)
    assert (got.double() - ref).abs().max().item() <= 1e-4


def test_entropy_near_the_floor_at_qwen_scale() -> None:
    """A Qwen-sized row whose true entropy is 0.11 nats, just above the 0.10 floor, with an
    offset of 40 (issue 13 item 1: the uncentred form was off by more than 1e-4 here)."""
    v = 151_936
    x = torch.zeros(1, v, dtype=torch.float64)
    x[0, 1:] = torch.randn(v - 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x[0, 0] = 17.5
    x = x + 40.0
    ref = _reference(x.float()).item()
    assert 0.10 < ref < 0.12
    assert abs(token_entropy(x.float()).item() - ref) <= 1e-4


@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.3])
def test_temperature_is_the_sampled_distribution(temperature: float) -> None:
    gen = torch.Generator().manual_seed(9)
    logits = (torch.randn(6, 50_000, generator=gen) * 4 + 20).to(torch.bfloat16)
    ref = _reference(logits.double() / temperature)
    got = token_entropy(logits, temperature=temperature)
    assert (got.double() - ref).abs().max().item() <= 1e-4
    if temperature != 1.0:  # it is not the T=1 entropy
        assert (got.double() - _reference(logits)).abs().min().item() > 1e-2


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, True, "1"])
def test_bad_temperature(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="temperature"):
        token_entropy(torch.zeros(2, 3), temperature=bad)  # type: ignore[arg-type]


def test_defined_results_for_degenerate_rows() -> None:
    ninf, inf, nan = float("-inf"), float("inf"), float("nan")
    logits = torch.tensor(
        [
            [ninf, ninf, ninf],  # no distribution: NaN, flagged empty
            [0.0, nan, 1.0],  # NaN logit: NaN (a real non-finite output)
            [0.0, inf, 1.0],  # +inf logit: NaN
            [5.0, ninf, ninf],  # one finite entry: a point mass, 0 nats
            [1e30, 1e30, -1e30],  # huge but finite: two equal modes, log 2
        ]
    )
    h, empty = token_entropy_rows(logits)
    assert empty.tolist() == [True, False, False, False, False]
    assert math.isnan(h[0])
    assert math.isnan(h[1])
    assert math.isnan(h[2])
    assert h[3].item() == 0.0
    assert h[4].item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_chunked_memory_stays_two_buffers() -> None:
    """Extra memory is two fp32 chunk buffers whatever the number of rows (the chunked version
    keeps its bound): the result equals the one-chunk result bit for bit."""
    gen = torch.Generator().manual_seed(4)
    logits = (torch.randn(37, 2000, generator=gen) * 3 + 50).to(torch.bfloat16)
    assert torch.equal(token_entropy(logits, chunk_size=5), token_entropy(logits, chunk_size=64))
