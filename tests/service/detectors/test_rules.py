"""Unit tests, one group per rule: fires at the right step, warm-up, window, missing data, clear."""

from __future__ import annotations

import math
from typing import Any

import pytest

from service.detectors import (
    RULE_NAMES,
    DetectorConfig,
    DetectorState,
    Evaluation,
    RuleStatus,
    Severity,
    StepRecord,
    evaluate,
)
from tests.service.detectors._traces import Trace, build, np_slope, window_steps


def run(
    trace: Trace, config: DetectorConfig | None = None, group_size: int = 8
) -> list[Evaluation]:
    """Evaluate every step in order, threading the state (no transitions)."""
    cfg = config or DetectorConfig()
    records = [StepRecord.from_mapping(r) for r in trace]
    state = DetectorState()
    out = []
    for i in range(len(records)):
        ev = evaluate(cfg, group_size, records[: i + 1], state)
        state = ev.state
        out.append(ev)
    return out


def firing_steps(evals: list[Evaluation], rule: str) -> list[int]:
    return [e.step for e in evals if e.result(rule).status is RuleStatus.FIRING]


def status_at(evals: list[Evaluation], rule: str, step: int) -> RuleStatus:
    return next(e for e in evals if e.step == step).result(rule).status


def cfg(**rules: dict[str, Any]) -> DetectorConfig:
    return DetectorConfig.model_validate(rules)


# --- general ---------------------------------------------------------------------------------


def test_healthy_constant_trace_fires_nothing() -> None:
    evals = run(build(60))
    assert all(not e.firings for e in evals)
    assert [r.rule for r in evals[-1].results] == list(RULE_NAMES)


def test_results_in_rule_order_and_state_advances() -> None:
    ev = run(build(3))[-1]
    assert tuple(r.rule for r in ev.results) == RULE_NAMES
    assert ev.state.last_step == 2
    assert not ev.skipped


def test_stale_and_duplicate_steps_are_skipped() -> None:
    records = [StepRecord.from_mapping(r) for r in build(5)]
    first = evaluate(DetectorConfig(), 8, records, DetectorState())
    again = evaluate(DetectorConfig(), 8, records, first.state)
    assert again.skipped
    assert again.state == first.state
    assert all(r.status is RuleStatus.NOT_EVALUABLE for r in again.results)
    older = evaluate(DetectorConfig(), 8, records[:3], first.state)
    assert older.skipped


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_group_size_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="group_size"):
        evaluate(DetectorConfig(), bad, [StepRecord(0, {})], DetectorState())


def test_unsorted_or_empty_history_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        evaluate(DetectorConfig(), 8, [], DetectorState())
    with pytest.raises(ValueError, match="increasing"):
        evaluate(DetectorConfig(), 8, [StepRecord(2, {}), StepRecord(1, {})], DetectorState())


def test_disabled_rule_reports_disabled() -> None:
    config = cfg(entropy_floor={"enabled": False})
    ev = run(build(10, {"entropy": lambda s: 0.01}), config)[-1]
    assert ev.result("entropy_floor").status is RuleStatus.DISABLED


# --- entropy_floor ---------------------------------------------------------------------------


def test_entropy_floor_fires_after_full_window_below_floor() -> None:
    # entropy 0.5 for steps < 20, 0.05 from step 20: window 5 -> first firing at step 24
    evals = run(build(40, {"entropy": lambda s: 0.5 if s < 20 else 0.05}))
    steps = firing_steps(evals, "entropy_floor")
    assert steps == list(range(24, 40))
    f = evals[24].result("entropy_floor").firing
    assert f is not None
    assert f.severity is Severity.CRITICAL
    assert f.thresholds["floor"] == pytest.approx(0.10)
    assert f.observed["entropy"] == pytest.approx(0.05)
    assert f.rollback_step == 19
    assert "roll back to step 19" in f.action


def test_entropy_floor_single_dip_does_not_fire() -> None:
    evals = run(build(30, {"entropy": lambda s: 0.05 if s in (10, 12, 14) else 0.5}))
    assert firing_steps(evals, "entropy_floor") == []


def test_entropy_floor_warmup_and_window_settings() -> None:
    trace = build(30, {"entropy": lambda s: 0.05})
    evals = run(trace, cfg(entropy_floor={"warmup_steps": 10, "window": 3}))
    assert status_at(evals, "entropy_floor", 9) is RuleStatus.NOT_EVALUABLE
    assert firing_steps(evals, "entropy_floor")[0] == 10
    evals = run(trace)
    assert status_at(evals, "entropy_floor", 3) is RuleStatus.NOT_EVALUABLE  # 4 of 5
    assert firing_steps(evals, "entropy_floor")[0] == 4


def test_entropy_floor_clears_when_entropy_recovers() -> None:
    evals = run(build(40, {"entropy": lambda s: 0.05 if 10 <= s < 20 else 0.5}))
    assert firing_steps(evals, "entropy_floor") == list(range(14, 20))
    assert status_at(evals, "entropy_floor", 20) is RuleStatus.CLEAR


def test_missing_metric_is_not_evaluable() -> None:
    trace = build(20, {"entropy": lambda s: 0.05 if s < 19 else None})
    evals = run(trace)
    assert status_at(evals, "entropy_floor", 18) is RuleStatus.FIRING
    assert status_at(evals, "entropy_floor", 19) is RuleStatus.NOT_EVALUABLE


# --- entropy_slope ---------------------------------------------------------------------------


def test_entropy_slope_fires_when_projection_within_horizon() -> None:
    trace = build(80, {"entropy": lambda s: 0.5 if s < 30 else max(0.3, 0.5 - 0.004 * (s - 29))})

    def oracle(xs: list[int], ys: list[float]) -> bool:
        b = np_slope(xs, ys)
        fitted = float(sum(ys) / len(ys) + b * (xs[-1] - sum(xs) / len(xs)))
        return b < 0 and (fitted <= 0.1 or (fitted - 0.1) / -b <= 100)

    expected = window_steps(trace, "entropy", 20, oracle)
    evals = run(trace)
    assert expected  # the trace must exercise the rule
    assert firing_steps(evals, "entropy_slope") == expected
    f = next(e for e in evals if e.step == expected[0]).result("entropy_slope").firing
    assert f is not None
    assert f.observed["entropy_slope"] < 0
    assert f.observed["steps_to_floor"] <= 100
    assert f.severity is Severity.WARNING


def test_entropy_slope_slow_decline_does_not_fire() -> None:
    evals = run(build(100, {"entropy": lambda s: 0.5 - 0.0005 * s}))
    assert firing_steps(evals, "entropy_slope") == []


def test_entropy_slope_horizon_setting_changes_outcome() -> None:
    trace = build(60, {"entropy": lambda s: 0.5 - 0.002 * s})  # floor reached ~200 steps out
    assert firing_steps(run(trace), "entropy_slope") == []
    long = run(trace, cfg(entropy_slope={"horizon_steps": 250}))
    assert firing_steps(long, "entropy_slope") == list(range(19, 60))


# --- signal_starvation / degenerate_groups ---------------------------------------------------


@pytest.mark.parametrize(
    ("group_size", "rate", "fires"),
    [(8, 0.08, True), (8, 0.09, False), (16, 0.045, False), (16, 0.04, True)],
)
def test_signal_starvation_uses_p_star_of_group_size(
    group_size: int, rate: float, fires: bool
) -> None:
    # p*(8) = 0.0830, p*(16) = 0.0424 (science.md §1)
    evals = run(build(10, {"success_rate": lambda s: rate}), group_size=group_size)
    assert (status_at(evals, "signal_starvation", 9) is RuleStatus.FIRING) is fires


def test_signal_starvation_mirror_side_and_action() -> None:
    evals = run(build(10, {"success_rate": lambda s: 0.95}))
    f = evals[-1].result("signal_starvation").firing
    assert f is not None
    assert f.thresholds["p_star_mirror"] == pytest.approx(1 - (1 - 2 ** (-1 / 8)))
    assert "raise task difficulty" in f.action
    low = run(build(10, {"success_rate": lambda s: 0.05}))[-1].result("signal_starvation").firing
    assert low is not None
    assert "G >= 14" in low.action  # smallest G with p*(G) < 0.05
    assert low.thresholds["p_star"] == pytest.approx(0.0830, abs=1e-4)


def test_signal_starvation_uses_window_mean() -> None:
    trace = build(20, {"success_rate": lambda s: 0.3 if s < 10 else 0.02})
    # mean of last 5 < 0.083 first when (0.3*(5-k) + 0.02*k)/5 < 0.083 -> k >= 4 -> step 13
    assert firing_steps(run(trace), "signal_starvation")[0] == 13


def test_degenerate_groups_threshold_and_partial_metrics() -> None:
    trace = build(
        12,
        {
            "degenerate_all_fail": lambda s: 0.4 if s >= 5 else 0.1,
            "degenerate_all_pass": lambda s: 0.2,
        },
    )
    # 0.6 per step from step 5: mean of 5 > 0.5 when (0.3*(5-k)+0.6k)/5 > 0.5 -> k >= 4 -> step 8
    assert firing_steps(run(trace), "degenerate_groups") == [8, 9, 10, 11]
    only_fail = build(8, {"degenerate_all_fail": lambda s: 0.7}, drop=("degenerate_all_pass",))
    assert firing_steps(run(only_fail), "degenerate_groups") == [4, 5, 6, 7]
    neither = build(8, drop=("degenerate_all_pass", "degenerate_all_fail"))
    assert status_at(run(neither), "degenerate_groups", 7) is RuleStatus.NOT_EVALUABLE


# --- zprime_pressure -------------------------------------------------------------------------


def test_zprime_pressure_high_fraction() -> None:
    trace = build(20, {"zprime_raw_gt1_frac": lambda s: 0.6 if s >= 5 else 0.2})
    # the jump itself is a rising trend (slope >= 0.01/step, level 0.6 >= 0.25) from step 9
    assert firing_steps(run(trace), "zprime_pressure")[0] == 9
    evals = run(trace, cfg(zprime_pressure={"rising_slope": 1.0}))
    # mean of 10 >= 0.5 when (0.2*(10-k)+0.6k)/10 >= 0.5 -> k >= 7.5 -> step 12
    assert firing_steps(evals, "zprime_pressure")[0] == 12
    f = evals[12].result("zprime_pressure").firing
    assert f is not None
    assert "raise IAC alpha" in f.action


def test_zprime_pressure_rising_trend() -> None:
    trace = build(30, {"zprime_raw_gt1_frac": lambda s: 0.1 + 0.015 * s})
    expected = window_steps(
        trace,
        "zprime_raw_gt1_frac",
        10,
        lambda xs, ys: sum(ys) / 10 >= 0.5 or (np_slope(xs, ys) >= 0.01 and ys[-1] >= 0.25),
    )
    assert firing_steps(run(trace), "zprime_pressure") == expected
    assert expected[0] == 10  # 0.1 + 0.015*10 = 0.25


# --- model_collapse_step ---------------------------------------------------------------------


def test_model_collapse_step_recorded_once() -> None:
    trace = build(30, {"reward_accuracy": lambda s: 0.5 if s < 12 or 15 <= s < 20 else 0.005})
    evals = run(trace)
    assert firing_steps(evals, "model_collapse_step") == [12, 13, 14, *range(20, 30)]
    assert evals[11].state.model_collapse_step is None
    assert evals[12].state.model_collapse_step == 12
    assert evals[-1].state.model_collapse_step == 12  # the first step, kept
    f = evals[25].result("model_collapse_step").firing
    assert f is not None
    assert f.observed["model_collapse_step"] == 12
    assert f.severity is Severity.CRITICAL
    assert "stop the run" in f.action


def test_model_collapse_threshold_configurable() -> None:
    trace = build(10, {"reward_accuracy": lambda s: 0.03})
    assert firing_steps(run(trace), "model_collapse_step") == []
    evals = run(trace, cfg(model_collapse_step={"threshold": 0.05}))
    assert firing_steps(evals, "model_collapse_step") == list(range(10))
    assert evals[0].result("model_collapse_step").firing is not None


# --- reward_accuracy_divergence --------------------------------------------------------------


def test_reward_accuracy_divergence() -> None:
    trace = build(
        60,
        {
            "proxy_reward": lambda s: 0.3 + 0.004 * s,
            "reward_accuracy": lambda s: 0.9 if s < 30 else 0.9 - 0.006 * (s - 29),
        },
    )
    expected = [
        s
        for s in window_steps(trace, "proxy_reward", 20, lambda xs, ys: np_slope(xs, ys) >= 0.002)
        if s
        in window_steps(trace, "reward_accuracy", 20, lambda xs, ys: np_slope(xs, ys) <= -0.002)
    ]
    assert expected
    assert firing_steps(run(trace), "reward_accuracy_divergence") == expected


def test_reward_accuracy_divergence_not_when_both_fall() -> None:
    trace = build(
        40,
        {"proxy_reward": lambda s: 0.9 - 0.01 * s, "reward_accuracy": lambda s: 0.9 - 0.01 * s},
    )
    assert firing_steps(run(trace), "reward_accuracy_divergence") == []


# --- rise_then_fall --------------------------------------------------------------------------


def test_rise_then_fall_records_best_step() -> None:
    trace = build(60, {"gt_reward": lambda s: 0.5 + 0.01 * s if s <= 20 else 0.7 - 0.01 * (s - 20)})
    evals = run(trace)
    # 3-mean peaks at step 21 (mean of 0.69,0.70,0.69 = 0.6933 > step 20's 0.69); drop >= 0.05 when
    # current 3-mean <= 0.6433: mean(0.7-0.01(s-22..s-20)) = 0.7-0.01(s-21) <= 0.6433 -> s >= 27
    assert evals[-1].state.peak is not None
    assert evals[-1].state.peak.step == 21
    steps = firing_steps(evals, "rise_then_fall")
    assert steps[0] == 31  # patience: 10 steps after the peak
    f = evals[31].result("rise_then_fall").firing
    assert f is not None
    assert f.rollback_step == 21
    assert f.observed["best_step"] == 21
    assert "roll back to step 21" in f.action


def test_rise_then_fall_custom_metric_and_no_patience() -> None:
    trace = build(30, {"probe_success": lambda s: 0.8 if s < 10 else 0.6})
    config = cfg(rise_then_fall={"metric": "probe_success", "patience_steps": 0, "window": 1})
    assert firing_steps(run(trace, config), "rise_then_fall") == list(range(10, 30))


def test_rise_then_fall_peak_resets_when_metric_changes() -> None:
    trace = build(5, {"gt_reward": lambda s: 0.9, "probe_success": lambda s: 0.1})
    ev = run(trace)[-1]
    other = evaluate(
        cfg(rise_then_fall={"metric": "probe_success", "window": 1}),
        8,
        [StepRecord.from_mapping(r) for r in build(6, {"probe_success": lambda s: 0.1})],
        ev.state,
    )
    assert other.state.peak is not None
    assert other.state.peak.metric == "probe_success"
    assert other.state.peak.value == pytest.approx(0.1)


# --- probe_decline ---------------------------------------------------------------------------


def test_probe_decline_fires_on_probe_steps_only() -> None:
    trace = build(
        80,
        {
            "success_rate": lambda s: 0.3 + 0.004 * s,
            "probe_success": lambda s: (0.6 - 0.003 * s) if s % 10 == 0 else None,
        },
    )
    evals = run(trace)
    steps = firing_steps(evals, "probe_decline")
    assert steps == [40, 50, 60, 70]  # 5 probe evaluations needed
    assert status_at(evals, "probe_decline", 41) is RuleStatus.NOT_EVALUABLE


def test_probe_decline_entropy_variant_and_no_fire_when_training_flat() -> None:
    rising = build(
        60,
        {
            "success_rate": lambda s: 0.3 + 0.004 * s,
            "probe_entropy": lambda s: (0.5 - 0.005 * s) if s % 5 == 0 else None,
        },
    )
    assert firing_steps(run(rising), "probe_decline") == list(range(20, 60, 5))
    flat = build(60, {"probe_entropy": lambda s: (0.5 - 0.005 * s) if s % 5 == 0 else None})
    assert firing_steps(run(flat), "probe_decline") == []


# --- length_collapse / repetition_collapse ---------------------------------------------------


def test_length_collapse_needs_length_and_entropy_to_fall() -> None:
    both = build(
        40,
        {"response_length": lambda s: 300 * 0.98**s, "entropy": lambda s: 0.5 * 0.98**s},
    )
    assert firing_steps(run(both), "length_collapse") == list(range(19, 40))
    only_len = build(40, {"response_length": lambda s: 300 * 0.98**s})
    assert firing_steps(run(only_len), "length_collapse") == []


def test_repetition_collapse() -> None:
    trace = build(40, {"repetition_rate": lambda s: 0.05 + 0.01 * s})
    # slope 0.01 >= 0.005 from the first full window (step 19); level >= 0.2 from step 15
    assert firing_steps(run(trace), "repetition_collapse") == list(range(19, 40))
    low = build(40, {"repetition_rate": lambda s: 0.01 + 0.001 * s})
    assert firing_steps(run(low), "repetition_collapse") == []


# --- non_finite ------------------------------------------------------------------------------


def test_non_finite_listed_or_nan_value_fires_at_once() -> None:
    records = [StepRecord.from_mapping(r) for r in build(3)]
    listed = StepRecord(3, {"entropy": None, "loss": 1.0}, frozenset({"entropy"}))
    nan = StepRecord(4, {"loss": math.nan, "grad_norm": math.inf})
    ev = evaluate(DetectorConfig(), 8, [*records, listed], DetectorState())
    f = ev.result("non_finite").firing
    assert f is not None
    assert f.severity is Severity.CRITICAL
    assert f.step == 3
    assert "entropy" in f.message
    ev2 = evaluate(DetectorConfig(), 8, [*records, listed, nan], ev.state)
    f2 = ev2.result("non_finite").firing
    assert f2 is not None
    assert f2.observed["non_finite_count"] == 2
    assert "grad_norm, loss" in f2.message
    # a NaN value never reaches another rule as a number
    assert nan.value("loss") is None
    clean = StepRecord(5, {"loss": 1.0})
    ev3 = evaluate(DetectorConfig(), 8, [*records, listed, nan, clean], ev2.state)
    assert ev3.result("non_finite").status is RuleStatus.CLEAR


def test_extreme_finite_values_give_not_evaluable_not_crashes() -> None:
    big = 1e308
    trace = build(
        30,
        {
            "entropy": lambda s: big,
            "response_length": lambda s: big if s % 2 else -big,
            "success_rate": lambda s: big,  # the window sum overflows to inf
            "zprime_raw_gt1_frac": lambda s: big,
        },
    )
    ev = run(trace)[-1]
    for rule in ("entropy_slope", "length_collapse", "signal_starvation", "zprime_pressure"):
        result = ev.result(rule)
        assert result.status is RuleStatus.NOT_EVALUABLE, rule
        assert "not finite" in result.reason
    assert ev.result("non_finite").status is RuleStatus.CLEAR
