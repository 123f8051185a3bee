"""The toy experiment (science.md §6) reproduces the paper's orderings over several seeds.

Comparisons use medians over seeds of the collapse step (first step one of Cat/Persian holds
>= 95 % of the correct mass at Persian; censored at steps + 1), the Siamese fall step (π(Siamese|
Siamese) below half its start) or the final minority share min(π_Cat, π_Persian)/(π_Cat +
π_Persian) at Persian (lower = more collapsed). One ordering of the paper does not reproduce in
this faithful setup (mean-shifted vs normalised; see docs/benchmarks.md / the lead's report) and is
not asserted.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "examples" / "toy_softmax.py"
_spec = importlib.util.spec_from_file_location("toy_softmax", _PATH)
assert _spec is not None
assert _spec.loader is not None
toy = importlib.util.module_from_spec(_spec)
sys.modules["toy_softmax"] = toy
_spec.loader.exec_module(toy)

SEEDS = range(6)
pytestmark = pytest.mark.slow


def _runs(cfg: object) -> list:  # type: ignore[type-arg]
    return [toy.run_toy(cfg, s) for s in SEEDS]


def _median(results: list, attr: str = "collapse_step") -> float:  # type: ignore[type-arg]
    return statistics.median(float(getattr(r, attr)) for r in results)


def _minority_share(results: list) -> float:  # type: ignore[type-arg]
    vals = []
    for r in results:
        cat, per = float(r.probs[-1, toy.CAT]), float(r.probs[-1, toy.PERSIAN])
        vals.append(min(cat, per) / (cat + per))
    return statistics.median(vals)


def test_raw_rewards_collapse_fastest() -> None:
    base = toy.ToyConfig(steps=300)
    raw = _minority_share(_runs(base))
    mean_shifted = _minority_share(_runs(replace(base, advantage="mean_shifted")))
    normalized = _minority_share(_runs(replace(base, advantage="normalized")))
    assert raw < mean_shifted
    assert raw < normalized


def test_momentum_and_adamw_collapse_faster_than_sgd() -> None:
    base = toy.ToyConfig(steps=150)
    sgd = _median(_runs(base))
    assert _median(_runs(replace(base, optimizer="momentum"))) < sgd
    assert _median(_runs(replace(base, optimizer="adamw"))) < sgd


def test_larger_group_delays_collapse_at_persian() -> None:
    base = toy.ToyConfig(steps=400)
    assert _median(_runs(replace(base, group_size=4))) < _median(
        _runs(replace(base, group_size=16))
    )


def test_larger_group_and_similarity_speed_the_fall_of_siamese() -> None:
    base = toy.ToyConfig(advantage="normalized", steps=80)
    g4 = _median(_runs(replace(base, group_size=4)), "siamese_fall_step")
    g16 = _median(_runs(replace(base, group_size=16)), "siamese_fall_step")
    low = _median(_runs(replace(base, group_size=4, similarity="low")), "siamese_fall_step")
    assert g16 < g4 < low


def test_iac_delays_collapse() -> None:
    sgd = toy.ToyConfig(steps=300)
    assert _minority_share(_runs(replace(sgd, iac=True))) > _minority_share(_runs(sgd))
    adamw = toy.ToyConfig(optimizer="adamw", steps=300)
    assert _median(_runs(replace(adamw, iac=True))) > _median(_runs(adamw))


def test_iac_plus_dlc_holds_both_modes() -> None:
    cfg = toy.ToyConfig(iac=True, dlc=True, steps=300)
    results = _runs(cfg)
    assert all(r.collapse_step > cfg.steps for r in results)
    assert _minority_share(results) > 0.3
    assert _minority_share(results) > _minority_share(_runs(replace(cfg, dlc=False)))
