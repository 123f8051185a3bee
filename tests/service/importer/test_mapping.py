"""The framework-name → our-name mapping, overrides, name sanitising and NaN handling."""

from __future__ import annotations

import math
import re

import pytest

from service.importer import LoggedRun, map_run, parse_override
from service.importer._mapping import metric_name
from service.schemas.steps import StepBatchIn


def _run(values: dict[int, dict[str, float]]) -> LoggedRun:
    return LoggedRun(name="r", format="verl-jsonl", paths=["x"], values=values)


def test_standard_and_prefixed_names_map_and_the_rest_are_extras() -> None:
    mapped = map_run(
        _run(
            {
                0: {
                    "train/entropy": 0.5,
                    "train/kl": 0.01,
                    "train/reward": 0.25,
                    "train/rewards/acc/mean": 0.25,
                    "critic/score/max": 1.0,
                    "ttrl/reward_accuracy": 0.9,
                    "entropy_floor_extra?": 2.0,
                }
            }
        )
    )
    assert mapped.mapped == {
        "train/entropy": "entropy",
        "train/kl": "kl",
        "train/reward": "success_rate",
        "ttrl/reward_accuracy": "reward_accuracy",
    }
    metrics = mapped.steps[0]["metrics"]
    assert metrics["entropy"] == 0.5
    assert metrics["train/rewards/acc/mean"] == 0.25
    assert metrics["critic/score/max"] == 1.0
    assert metrics["entropy_floor_extra_"] == 2.0
    StepBatchIn.model_validate({"steps": mapped.steps})  # what the service accepts


def test_overrides_win_and_a_graded_reward_is_not_a_success_rate() -> None:
    run = _run({s: {"reward": 3.0 * s, "val/acc": 0.5, "entropy": 0.3} for s in range(3)})
    plain = map_run(run)
    assert "reward" not in plain.mapped
    assert plain.steps[2]["metrics"]["reward"] == 6.0
    assert any("outside [0, 1]" in note for note in plain.notes)
    forced = map_run(run, {"val/acc": "gt_reward", "reward": "proxy_reward"})
    assert forced.mapped["val/acc"] == "gt_reward"
    assert forced.mapped["reward"] == "proxy_reward"
    assert forced.steps[1]["metrics"]["proxy_reward"] == 3.0


def test_two_keys_for_one_metric_keep_the_first() -> None:
    mapped = map_run(_run({0: {"entropy": 0.4, "train/entropy": 0.5}}))
    assert mapped.mapped == {"entropy": "entropy"}
    assert mapped.steps[0]["metrics"]["train/entropy"] == 0.5
    assert any("train/entropy not mapped to entropy" in note for note in mapped.notes)


def test_non_finite_values() -> None:
    mapped = map_run(_run({0: {"entropy": math.nan, "odd/metric": math.inf, "loss": 1.0}}))
    record = mapped.steps[0]
    assert record["metrics"] == {"entropy": None, "loss": 1.0}
    assert record["non_finite"] == ["entropy"]
    assert any("1 NaN/inf values of unmapped metrics" in note for note in mapped.notes)


@pytest.mark.parametrize(
    "key",
    ["val-core/openai/gsm8k/reward/mean@1", "9lives", "a" * 200, "päd", "x y"],
)
def test_metric_names_are_valid_and_bounded(key: str) -> None:
    name = metric_name(key)
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:/-]*", name)
    assert len(name) <= 64
    assert metric_name(key) == name  # stable across imports (steps stay duplicates)
    assert metric_name("a" * 200) != metric_name("a" * 199 + "b")


def test_parse_override() -> None:
    assert parse_override("val-core/x/acc/mean@1=gt_reward") == (
        "val-core/x/acc/mean@1",
        "gt_reward",
    )
    for bad in ("reward", "=x", "reward=", "reward=not a name"):
        with pytest.raises(ValueError, match="--map"):
            parse_override(bad)
