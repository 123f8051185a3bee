"""Z'(q) (science.md §2 Decision, Thm 2.2/2.3) against hand-worked groups and the bound."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer_hooks import (
    ConfigurationError,
    assign_modes,
    log_zprime,
    make_layout,
    zprime_lower_bound_normalized,
)
from trainer_hooks._zprime import quantile_linear


def _z(adv: list[list[float]], keys: list[str], beta: float, ref: list[float] | None = None):  # type: ignore[no-untyped-def]
    a = torch.tensor(adv, dtype=torch.float64)
    layout = make_layout(a)
    modes = assign_modes(keys, layout)
    ref_t = None if ref is None else torch.tensor([ref], dtype=torch.float64).log()
    return log_zprime(a, modes, layout, beta=beta, ref_logprobs=ref_t), modes


def test_hand_worked_group_good_turing() -> None:
    """G = 4, keys a a b c, advantages [1, 1, -1, -1], β = 0.5.

    Modes: a (N=2, A=1), b (N=1, A=-1), c (N=1, A=-1). Exponents N·A/(βG):
    a: 2·1/(0.5·4) = 1, b: c: 1·(-1)/2 = -0.5.
    Good–Turing: n₁ = 2 (b, c) -> M̂ = 2/4 = 0.5.
    π(a) = (2/4)(1 - 0.5) = 0.25, π(b) = π(c) = (1/4)(0.5) = 0.125, unseen mass 0.5.
    Z' = 0.25·e¹ + 2·0.125·e^(-0.5) + 0.5 = 0.679570 + 0.151633 + 0.5 = 1.331203.
    """
    res, modes = _z([[1.0, 1.0, -1.0, -1.0]], ["a", "a", "b", "c"], beta=0.5)
    want = 0.25 * math.e + 2 * 0.125 * math.exp(-0.5) + 0.5
    assert want == pytest.approx(1.331203, abs=1e-6)
    assert res.log_zprime.item() == pytest.approx(math.log(want), abs=1e-12)
    assert res.suppression.item() == pytest.approx(1 / want, abs=1e-12)
    assert modes.n_modes.tolist() == [3.0]


def test_hand_worked_group_with_reference_probs() -> None:
    """Same group with π_ref: a = 0.4 (both responses), b = 0.1, c = 0.2; unseen = 1 - 0.7 = 0.3.

    Z' = 0.4·e¹ + 0.1·e^(-0.5) + 0.2·e^(-0.5) + 0.3 = 1.087313 + 0.181959 + 0.3 = 1.569272.
    Thm 2.3 bound: 1 + (1/(βG))·Σ N_j A_j π_j = 1 + (2·1·0.4 - 0.1 - 0.2)/2 = 1.25.
    """
    res, _ = _z([[1.0, 1.0, -1.0, -1.0]], ["a", "a", "b", "c"], 0.5, [0.4, 0.4, 0.1, 0.2])
    want = 0.4 * math.e + 0.3 * math.exp(-0.5) + 0.3
    assert res.log_zprime.item() == pytest.approx(math.log(want), abs=1e-9)
    assert res.lower_bound.item() == pytest.approx(1.25, abs=1e-9)
    assert math.exp(res.log_zprime.item()) >= res.lower_bound.item()


def test_degenerate_group_has_z_one_and_step_metrics() -> None:
    res, _ = _z([[0.0] * 4, [1.0, 1.0, -1.0, -1.0]], list("aabb") + list("aabc"), beta=0.5)
    assert res.log_zprime[0].item() == pytest.approx(0.0, abs=1e-12)
    assert res.gt1_frac.item() == pytest.approx(0.5)
    assert res.mean.item() == pytest.approx(res.log_zprime.mean().item())


def test_no_overflow_with_huge_exponents() -> None:
    res, _ = _z([[5000.0, 5000.0, -1.0, -1.0]], list("aabc"), beta=1e-3)
    assert math.isfinite(res.log_zprime.item())


def test_all_singletons_give_no_zprime() -> None:
    """n₁ = G -> M̂ = 1: Good–Turing would give Z' = 1 whatever the advantages; the group has
    no Z' (absent, science.md §7), and the step statistics skip it."""
    res, _ = _z([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0]], list("abcd") + list("aabc"), 0.5)
    assert math.isnan(res.log_zprime[0].item())
    assert not math.isnan(res.log_zprime[1].item())
    assert res.queries is not None
    assert res.queries.item() == 1.0
    assert res.mean.item() == res.log_zprime[1].item() == res.p90.item()
    assert res.gt1_frac.item() == 1.0
    alone, _ = _z([[1.0, -1.0, 1.0, -1.0]], list("abcd"), beta=0.5)
    assert math.isnan(alone.mean.item())
    assert math.isnan(alone.p90.item())


def test_beta_must_be_positive() -> None:
    a = torch.zeros(1, 2)
    layout = make_layout(a)
    with pytest.raises(ConfigurationError, match="beta"):
        log_zprime(a, assign_modes(["x", "y"], layout), layout, beta=0.0)


def test_flat_variable_groups_match_dense_per_group() -> None:
    adv = [1.0, 1.0, -2.0, 0.5, -0.5, 0.3]
    keys = ["a", "a", "b", "x", "x", "z"]
    ids = [0, 0, 0, 1, 1, 2]
    t = torch.tensor(adv, dtype=torch.float64)
    layout = make_layout(t, ids)
    res = log_zprime(t, assign_modes(keys, layout), layout, beta=0.7)
    g0, _ = _z([[1.0, 1.0, -2.0]], ["a", "a", "b"], 0.7)
    g1, _ = _z([[0.5, -0.5]], ["x", "x"], 0.7)
    want = [g0.log_zprime.item(), g1.log_zprime.item()]
    assert res.log_zprime.tolist()[:2] == pytest.approx(want, abs=1e-12)
    assert math.isnan(res.log_zprime[2].item())  # a group of one singleton has no Z'


def test_float32_path_close_to_float64() -> None:
    a64 = torch.tensor([[1.0, 1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    keys = list("aabc") + list("aabb")
    layout = make_layout(a64)
    modes = assign_modes(keys, layout)
    r64 = log_zprime(a64, modes, layout, beta=0.5)
    r32 = log_zprime(a64.float(), modes, layout, beta=0.5)
    assert r32.log_zprime.dtype == torch.float32
    assert torch.allclose(r32.log_zprime.double(), r64.log_zprime, atol=1e-6)
    assert r32.gt1_frac.item() == r64.gt1_frac.item() == 0.5


def test_p90_is_linear_quantile() -> None:
    x = torch.tensor([3.0, -1.0, 0.5, 2.0, 7.0, 0.0, 1.0], dtype=torch.float64)
    assert quantile_linear(x, 0.9).item() == pytest.approx(torch.quantile(x, 0.9).item())
    assert quantile_linear(x[:1], 0.9).item() == 3.0


@st.composite
def _instance(draw: st.DrawFn) -> tuple[list[float], list[str], list[float], float, bool]:
    g = draw(st.integers(2, 12))
    n_modes = draw(st.integers(1, g))
    keys = [f"m{draw(st.integers(0, n_modes - 1))}" for _ in range(g)]
    distinct = sorted(set(keys))
    correct = {k: draw(st.booleans()) for k in distinct}
    weights = [draw(st.floats(0.01, 1.0)) for _ in range(len(distinct) + 1)]
    tot = sum(weights)
    pi = {k: w / tot for k, w in zip(distinct, weights, strict=False)}
    rewards = [1.0 if correct[k] else 0.0 for k in keys]
    beta = draw(st.floats(0.05, 5.0))
    return rewards, keys, [pi[k] for k in keys], beta, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(_instance())
def test_theorem_2_3_bound_holds(
    inst: tuple[list[float], list[str], list[float], float, bool],
) -> None:
    """Z'(q) >= 1 + (1/βG)[A₊ΣN_iπ_i − |A₋|ΣN_jπ_j] >= 1 + p⁺(1−p⁺)/(βσ)·Δπ (Thm 2.3)."""
    rewards, keys, ref, beta, _biased = inst
    g = len(rewards)
    p = sum(rewards) / g
    sigma = math.sqrt(p * (1 - p))  # population std of binary rewards
    # normalised binary advantages: A₊ = (1−p)/σ, A₋ = −p/σ (all 0 for a degenerate group)
    adv = [0.0] * g if sigma == 0 else [(r - p) / sigma for r in rewards]
    res, _ = _z([adv], keys, beta, ref)
    z = math.exp(res.log_zprime.item())
    bound = res.lower_bound.item()
    a_plus, a_minus = (1 - p) / (sigma or 1), p / (sigma or 1)
    seen: dict[str, tuple[int, float, bool]] = {}
    for k, pr, r in zip(keys, ref, rewards, strict=True):
        n, _, _ = seen.get(k, (0, pr, r > 0))
        seen[k] = (n + 1, pr, r > 0)
    hand = 1 + (
        a_plus * sum(n * pr for n, pr, c in seen.values() if c)
        - a_minus * sum(n * pr for n, pr, c in seen.values() if not c)
    ) / (beta * g)
    if sigma == 0:
        hand = 1.0
    assert bound == pytest.approx(hand, rel=1e-9, abs=1e-9)
    assert z >= bound * (1 - 1e-9)
    if 0 < p < 1:
        pos = [pr for _, pr, c in seen.values() if c]
        neg = [pr for _, pr, c in seen.values() if not c]
        simple = zprime_lower_bound_normalized(p, sigma, min(pos) - max(neg), beta)
        assert bound >= simple - 1e-9
