"""Issue 21: the cheaper device reductions of a step give exactly the numbers they replaced."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import trainer_hooks._entropy as entropy_mod
import trainer_hooks._sections as sections_mod
from tests.trainer_hooks._records import rows_of
from trainer_hooks import Monitor, StepInputs, grpo_advantages, make_layout
from trainer_hooks._entropy import _masked_row_sums
from trainer_hooks._unsupervised import response_lengths
from trainer_hooks._zprime import assign_modes


def _reference_row_sums(h: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 selection: per row, the number of selected tokens and the sum of their ``h``."""
    sel = m != 0
    h64 = h.to(torch.float64)
    return sel.sum(dim=-1).to(torch.float64), torch.where(sel, h64, 0.0).sum(dim=-1)


@pytest.mark.parametrize("rows", [23, 24, 1])
@pytest.mark.parametrize(
    "mask_dtype", [torch.bool, torch.float32, torch.int64, torch.float64, torch.uint8]
)
def test_row_sums_match_float64(
    mask_dtype: torch.dtype, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairs of rows through one batched matrix product, masks of other dtypes in blocks of a
    reused buffer (4 rows a block here, a ragged tail, an odd row out): the float64 sums."""
    monkeypatch.setattr(entropy_mod, "_CPU_BLOCK_ELEMENTS", 4 * 37)
    gen = torch.Generator().manual_seed(3)
    h = torch.rand(rows, 37, generator=gen) * 5
    m = torch.rand(rows, 37, generator=gen) < 0.7
    tok, ent = _masked_row_sums(h, m.to(mask_dtype))
    ref_tok, ref_ent = _reference_row_sums(h, m)
    assert tok.dtype == ent.dtype == torch.float32
    assert torch.equal(tok.to(torch.float64), ref_tok)
    torch.testing.assert_close(ent.to(torch.float64), ref_ent, rtol=1e-6, atol=1e-5)


def test_row_sums_stay_accurate_over_long_rows() -> None:
    """T = 2^17 tokens of ~1000 (sums ~1e8, where fp32's spacing is 8): a one-accumulator fp32
    sum may drift by T·ε relative (~1e-2); the row sums stay within a few 1e-7 of float64."""
    gen = torch.Generator().manual_seed(5)
    t = 1 << 17
    h = 1000 + torch.rand(5, t, generator=gen) * 10
    m = torch.rand(5, t, generator=gen) < 0.9
    for mask in (m, m.to(torch.float32)):
        tok, ent = _masked_row_sums(h, mask)
        ref_tok, ref_ent = _reference_row_sums(h, m)
        assert torch.equal(tok.to(torch.float64), ref_tok)
        assert ((ent.to(torch.float64) - ref_ent).abs() / ref_ent).max().item() < 2e-6


def test_buffered_row_sums_still_select_garbage_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entropy_mod, "_CPU_BLOCK_ELEMENTS", 2 * 5)
    h = torch.ones(5, 5)
    h[1, 4] = float("nan")
    h[3, 0] = float("inf")
    m = torch.ones(5, 5, dtype=torch.bool)
    m[1, 4] = False
    m[3, 0] = False
    tok, ent = _masked_row_sums(h, m)
    assert tok.tolist() == [5.0, 4.0, 5.0, 4.0, 5.0]
    assert ent.tolist() == [5.0, 4.0, 5.0, 4.0, 5.0]


def _step_inputs(mask: torch.Tensor) -> StepInputs:
    gen = torch.Generator().manual_seed(0)
    r = (torch.rand(6, 4, generator=gen) < 0.5).float()
    return StepInputs(
        rewards=r,
        advantages=grpo_advantages(r),
        token_entropy=torch.rand(6, 4, 9, generator=gen),
        mask=mask,
    )


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.int64])
def test_lengths_come_from_the_entropy_pass_with_the_same_values(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The response lengths reuse the entropy section's token counts (no second pass over the
    [N, T] mask) and equal what ``response_lengths`` computes from the mask."""
    gen = torch.Generator().manual_seed(1)
    mask = (torch.rand(6, 4, 9, generator=gen) < 0.6).to(dtype)
    inputs = _step_inputs(mask)
    expected = response_lengths(make_layout(inputs.rewards), mask=mask)
    seen: list[torch.Tensor] = []
    original = sections_mod.segment_sum

    def spy(values: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        seen.append(values)
        return original(values, *a, **k)

    def no_second_pass(*a: Any, **k: Any) -> torch.Tensor:
        raise AssertionError("the mask was read a second time for the response lengths")

    monkeypatch.setattr(sections_mod, "response_lengths", no_second_pass)
    monkeypatch.setattr(sections_mod, "segment_sum", spy)
    res = Monitor(group_size=4, kl_beta=0.04).step(inputs)
    assert torch.equal(seen[0], expected)
    assert res.metrics["response_length"] == pytest.approx(float(expected.mean()), abs=0)
    per_query = expected.reshape(6, 4).sum(-1) / 4
    queries = rows_of(res.record)
    assert [q["response_length"] for q in queries] == per_query.tolist()


def test_lengths_without_entropy_still_read_the_mask() -> None:
    mask = torch.ones(6, 4, 9)
    mask[0, 0, 5:] = 0
    inputs = _step_inputs(mask)
    plain = StepInputs(rewards=inputs.rewards, advantages=inputs.advantages, mask=mask)
    res = Monitor(group_size=4, kl_beta=0.04).step(plain)
    assert res.metrics["response_length"] == pytest.approx((23 * 9 + 5) / 24)


def test_answer_keys_reach_the_device_unchanged() -> None:
    """The C-array path to the device gives the same mode ids as per-key hashing."""
    keys = [f"k{i % 5}" for i in range(40)]
    keys[7] = None  # type: ignore[call-overload]
    layout = make_layout(torch.zeros(8, 5))
    modes = assign_modes(keys, layout)
    ids = modes.mode_index.tolist()
    for g in range(8):
        group = keys[g * 5 : (g + 1) * 5]
        slot = ids[g * 5 : (g + 1) * 5]
        for i in range(5):
            for j in range(5):
                same = group[i] == group[j] and group[i] is not None
                assert (slot[i] == slot[j]) == (same or i == j)
