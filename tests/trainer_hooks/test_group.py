"""Group statistics (science.md §1) against hand values and python-loop references."""

from __future__ import annotations

import math

import pytest
import torch

from trainer_hooks import (
    ConfigurationError,
    ShapeError,
    group_stats,
    grpo_advantages,
    p_star,
    p_star_mirror,
)


def test_p_star_published_values() -> None:
    # science.md §1: p*(8) = 0.0830, p*(16) = 0.0424
    assert round(p_star(8), 4) == 0.0830
    assert round(p_star(16), 4) == 0.0424
    assert p_star(1) == pytest.approx(0.5)
    assert p_star_mirror(8) == pytest.approx(1 - p_star(8))


@pytest.mark.parametrize("g", [2, 4, 8, 16, 64])
def test_p_star_is_where_half_the_groups_are_all_fail(g: int) -> None:
    p = p_star(g)
    assert (1 - p) ** g == pytest.approx(0.5)
    assert (1 - 1.1 * p) ** g < 0.5 < (1 - 0.9 * p) ** g


def test_p_star_tensor_matches_int() -> None:
    gs = torch.tensor([4, 8, 16])
    assert torch.allclose(p_star(gs), torch.tensor([p_star(4), p_star(8), p_star(16)]).double())


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_p_star_rejects_bad_group_size(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="group_size"):
        p_star(bad)  # type: ignore[call-overload]


def _loop_reference(rows: list[list[float]], thr: float) -> dict[str, float]:
    succ = [sum(1 for r in row if r >= thr) for row in rows]
    p_hat = [s / len(row) for s, row in zip(succ, rows, strict=True)]
    rate = sum(p_hat) / len(rows)
    var = []
    for row in rows:
        m = sum(row) / len(row)
        var.append(sum((r - m) ** 2 for r in row) / len(row))
    exp = [rate * (1 - rate) * (len(row) - 1) / len(row) for row in rows]
    return {
        "rate": rate,
        "fail": sum(1 for s in succ if s == 0) / len(rows),
        "pass": sum(1 for s, row in zip(succ, rows, strict=True) if s == len(row)) / len(rows),
        "var_obs": sum(var) / len(rows),
        "var_exp": sum(exp) / len(rows),
    }


@pytest.mark.parametrize("seed", range(5))
def test_dense_matches_loop(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    r = (torch.rand(13, 8, generator=gen) < torch.rand(13, 1, generator=gen)).float()
    r[0] = 0.0
    r[1] = 1.0
    st = group_stats(r)
    ref = _loop_reference(r.tolist(), 0.5)
    assert st.successes.tolist() == [float(sum(1 for x in row if x >= 0.5)) for row in r.tolist()]
    assert st.success_rate.item() == pytest.approx(ref["rate"])
    assert st.degenerate_all_fail.item() == pytest.approx(ref["fail"])
    assert st.degenerate_all_pass.item() == pytest.approx(ref["pass"])
    assert st.reward_var_observed.item() == pytest.approx(ref["var_obs"], abs=1e-6)
    assert st.reward_var_expected.item() == pytest.approx(ref["var_exp"], abs=1e-6)
    assert st.all_fail[0]
    assert st.all_pass[1]


def test_expected_variance_hand_value() -> None:
    # p = 0.5, G = 4: p(1-p)(G-1)/G = 0.25 * 3/4 = 0.1875
    r = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    st = group_stats(r)
    assert st.reward_var_expected.item() == pytest.approx(0.1875)
    assert st.reward_var_observed.item() == pytest.approx(0.25)


def test_non_binary_rewards_use_threshold() -> None:
    r = torch.tensor([[0.2, 0.7, 0.9, 0.4]])
    assert group_stats(r, success_threshold=0.5).successes.item() == 2
    assert group_stats(r, success_threshold=0.8).successes.item() == 1


def test_flat_with_group_ids_equals_dense() -> None:
    gen = torch.Generator().manual_seed(3)
    r = (torch.rand(6, 4, generator=gen) > 0.5).float()
    dense = group_stats(r)
    ids = [f"u{i}" for i in range(6) for _ in range(4)]
    perm = torch.randperm(24, generator=gen)
    flat = group_stats(r.reshape(-1)[perm], [ids[i] for i in perm.tolist()])
    order = [int(k[1:]) for k in flat.layout.host_keys or ()]
    assert torch.equal(flat.successes, dense.successes[order])
    for name in ("success_rate", "degenerate_all_fail", "reward_var_observed"):
        assert getattr(flat, name).item() == pytest.approx(getattr(dense, name).item())


def test_variable_group_sizes_match_loop() -> None:
    rows = [[1.0, 0.0, 1.0], [0.0] * 5, [1.0, 1.0], [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]]
    flat = torch.tensor([x for row in rows for x in row])
    ids = [i for i, row in enumerate(rows) for _ in row]
    st = group_stats(flat, ids)
    ref = _loop_reference(rows, 0.5)
    assert st.sizes.tolist() == [3.0, 5.0, 2.0, 7.0]
    assert st.success_rate.item() == pytest.approx(ref["rate"])
    assert st.degenerate_all_fail.item() == pytest.approx(0.25)
    assert st.degenerate_all_pass.item() == pytest.approx(0.25)
    assert st.reward_var_expected.item() == pytest.approx(ref["var_exp"])
    assert st.reward_var_observed.item() == pytest.approx(ref["var_obs"])


def test_tensor_group_ids_need_num_groups() -> None:
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    gid = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ConfigurationError, match="num_groups"):
        group_stats(r, gid)
    from trainer_hooks import make_layout

    st = group_stats(r, layout=make_layout(r, gid, num_groups=2))
    assert st.successes.tolist() == [1.0, 2.0]


def test_shape_errors() -> None:
    with pytest.raises(ShapeError):
        group_stats(torch.zeros(5))
    with pytest.raises(ShapeError):
        group_stats(torch.zeros(4), ["a", "b"])


@pytest.mark.parametrize("normalize", [True, False])
def test_grpo_advantages_match_loop(normalize: bool) -> None:
    rows = [[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.3, 0.9, 0.5, 0.1]]
    adv = grpo_advantages(torch.tensor(rows), normalize=normalize)
    for row, got in zip(rows, adv.tolist(), strict=True):
        m = sum(row) / len(row)
        sd = math.sqrt(sum((x - m) ** 2 for x in row) / (len(row) - 1))
        want = [(x - m) / (sd + 1e-6) if normalize else x - m for x in row]
        assert got == pytest.approx(want, abs=1e-5)
