"""The table of what each rule reads agrees with the rules: without a group the rule is not
evaluable, with every group it evaluates."""

from __future__ import annotations

import pytest

from service.detectors import (
    RULE_NAMES,
    DetectorConfig,
    DetectorState,
    RuleStatus,
    StepRecord,
    evaluate,
    missing_inputs,
    rule_inputs,
)
from service.wire.metrics import STEP_METRIC_NAMES

ALL = {*STEP_METRIC_NAMES, "frac_reward_zero_std"}


def _history(metrics: set[str], steps: int = 40) -> list[StepRecord]:
    return [
        StepRecord(step=s, metrics=dict.fromkeys(metrics, 0.3 + 0.001 * s)) for s in range(steps)
    ]


def _status(rule: str, metrics: set[str]) -> RuleStatus:
    ev = evaluate(DetectorConfig(), 8, _history(metrics), DetectorState())
    return next(r.status for r in ev.results if r.rule == rule)


def test_every_rule_has_an_entry() -> None:
    assert set(rule_inputs()) == set(RULE_NAMES)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_each_group_is_needed_and_the_groups_suffice(rule: str) -> None:
    groups = rule_inputs()[rule]
    assert _status(rule, ALL) in (RuleStatus.CLEAR, RuleStatus.FIRING)
    for group in groups:
        assert _status(rule, ALL - set(group)) is RuleStatus.NOT_EVALUABLE, group
        for metric in group:  # any one metric of the group will do
            others = set(group) - {metric}
            assert _status(rule, ALL - others) is not RuleStatus.NOT_EVALUABLE, metric


def test_missing_inputs_names_what_is_lacking() -> None:
    lacking = missing_inputs({"entropy", "frac_reward_zero_std"})
    assert "entropy_floor" not in lacking
    assert "degenerate_groups" not in lacking
    assert lacking["length_collapse"] == ("response_length",)
    assert lacking["reward_accuracy_divergence"] == ("proxy_reward", "reward_accuracy")
    assert "non_finite" not in missing_inputs(set())
    assert missing_inputs(
        set(), DetectorConfig.model_validate({"rise_then_fall": {"metric": "val/acc"}})
    )["rise_then_fall"] == ("val/acc",)
