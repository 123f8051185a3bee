"""IAC (science.md §3): Ã = A·(G − S⁺)^α for A > 0, others untouched."""

from __future__ import annotations

import pytest
import torch

from trainer_hooks import ConfigurationError, grpo_advantages, iac_calibrate


def test_alpha_zero_is_bit_for_bit_identity() -> None:
    r = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    a = grpo_advantages(r).to(torch.bfloat16)
    out = iac_calibrate(a, r, alpha=0.0)
    assert out.dtype == a.dtype
    assert torch.equal(out, a)
    assert out.data_ptr() == a.data_ptr()


def test_alpha_one_hand_computation() -> None:
    # group 0: S+ = 3, G = 4 -> positives x (4-3)^1 = 1; group 1: S+ = 1 -> positives x 3
    r = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    a = torch.tensor([[0.5, -1.5, 0.5, 0.5], [-0.5, -0.5, 1.5, -0.5]])
    out = iac_calibrate(a, r, alpha=1.0)
    want = torch.tensor([[0.5, -1.5, 0.5, 0.5], [-0.5, -0.5, 4.5, -0.5]])
    assert torch.equal(out, want)


def test_alpha_two_and_fractional() -> None:
    r = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])  # S+ = 1, G = 5 -> factor 4^alpha
    a = torch.tensor([[-0.2, -0.2, 0.8, -0.2, -0.2]])
    assert iac_calibrate(a, r, alpha=2.0)[0, 2].item() == pytest.approx(0.8 * 16)
    assert iac_calibrate(a, r, alpha=1.5)[0, 2].item() == pytest.approx(0.8 * 8)
    assert torch.equal(iac_calibrate(a, r, alpha=2.0)[0, [0, 1, 3, 4]], a[0, [0, 1, 3, 4]])


def test_variable_group_sizes() -> None:
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    ids = [*["a", "a", "a", "b", "b", "b"][:3], "b", "b", "c"]
    a = torch.tensor([1.0, -1.0, -1.0, 2.0, 2.0, 3.0])
    # a: G=3, S+=1 -> x2 ; b: G=2, S+=2 -> x0 ; c: G=1, S+=0 -> x1
    out = iac_calibrate(a, r, ids, alpha=1.0)
    assert out.tolist() == [2.0, -1.0, -1.0, 0.0, 0.0, 3.0]


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "1", True])
def test_rejects_bad_alpha(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="alpha"):
        iac_calibrate(torch.zeros(1, 2), torch.zeros(1, 2), alpha=bad)  # type: ignore[arg-type]
