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
    # threshold form: a: G=3, S+=1 -> x2 ; b: G=2, S+=2 -> x0 ; c: G=1, S+=0 -> x1
    out = iac_calibrate(a, r, ids, alpha=1.0, s_plus="threshold")
    assert out.tolist() == [2.0, -1.0, -1.0, 0.0, 0.0, 3.0]
    # Algorithm 1 counts positive advantages: c's one response has A = 3 > 0 -> S+ = 1 -> x0
    out = iac_calibrate(a, r, ids, alpha=1.0)
    assert out.tolist() == [2.0, -1.0, -1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "1", True])
def test_rejects_bad_alpha(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="alpha"):
        iac_calibrate(torch.zeros(1, 2), torch.zeros(1, 2), alpha=bad)  # type: ignore[arg-type]


# -- Algorithm 1 of seed 002 (issue 13 item 5; science.md §7) -------------------------------


def _algorithm_1(adv: list[list[float]], alpha: float) -> list[list[float]]:
    """Lines 11–18 of Algorithm 1, written from the paper, one group at a time."""
    out = []
    for row in adv:
        g = len(row)
        s_plus = [s for s in range(g) if row[s] > 0]  # line 11
        n_plus = len(s_plus)  # line 12
        out.append([a * (g - n_plus) ** alpha if s in s_plus else a for s, a in enumerate(row)])
    return out


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("rewards", ["binary", "graded"])
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_algorithm_1(alpha: float, rewards: str, normalize: bool) -> None:
    gen = torch.Generator().manual_seed(int(alpha * 10))
    if rewards == "binary":
        r = (torch.rand(64, 8, generator=gen) < 0.4).double()
    else:  # graded: partial credit in quarters
        r = torch.randint(0, 5, (64, 8), generator=gen).double() / 4
    a = grpo_advantages(r, normalize=normalize)
    want = torch.tensor(_algorithm_1(a.tolist(), alpha), dtype=torch.float64)
    got = iac_calibrate(a, r, alpha=alpha)
    assert torch.allclose(got, want, rtol=1e-12, atol=0.0)


def test_graded_rewards_differ_from_the_threshold_form() -> None:
    """Graded rewards [0.7, 0.5, 0.45, 0.35] (mean 0.5): one positive advantage, two rewards
    >= 0.5. Algorithm 1 scales the positive by 4 − 1, the threshold form by 4 − 2."""
    r = torch.tensor([[0.7, 0.5, 0.45, 0.35]], dtype=torch.float64)  # mean 0.5: A > 0 once
    a = grpo_advantages(r)
    alg = iac_calibrate(a, r, alpha=1.0)
    thr = iac_calibrate(a, r, alpha=1.0, s_plus="threshold")
    assert alg[0, 0].item() == pytest.approx(a[0, 0].item() * 3)  # G - |{A > 0}| = 4 - 1
    assert thr[0, 0].item() == pytest.approx(a[0, 0].item() * 2)  # G - |{r >= 0.5}| = 4 - 2
    assert torch.equal(alg, torch.tensor(_algorithm_1(a.tolist(), 1.0), dtype=torch.float64))


def test_rejects_bad_s_plus() -> None:
    with pytest.raises(ConfigurationError, match="s_plus"):
        iac_calibrate(torch.ones(1, 2), torch.ones(1, 2), s_plus="reward")
