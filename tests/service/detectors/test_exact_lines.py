"""Lines drawn on counts are compared on counts, exactly (issue 13 item 6; science.md §7).

Each case sits exactly on its line: float arithmetic (an fp32 ratio, a sum of float ratios, the
binary value of 0.01) crossed it; the rules must not fire there, and must fire one count past."""

from __future__ import annotations

from service.detectors import DetectorConfig, DetectorState, RuleStatus, StepRecord, evaluate
from service.detectors._stats import count_below, exact_fraction, exact_mean, line


def _eval(records: list[dict[str, object]], cfg: DetectorConfig | None = None, g: int = 8):
    recs = [StepRecord.from_mapping(r) for r in records]
    return evaluate(cfg or DetectorConfig(), g, recs, DetectorState())


def test_helpers() -> None:
    assert line(0.01) == exact_fraction(8 / 800) == exact_fraction(0.01)
    assert exact_fraction(0.1) + exact_fraction(0.2) == line(0.3)
    assert exact_mean([0.1, 0.2, 0.6]) == line(0.3)
    assert not count_below(8, 800, 0.01)
    assert count_below(7, 800, 0.01)
    # a float that is not a small-denominator ratio keeps its exact binary value
    x = 0.123456789012345
    assert exact_fraction(x) == __import__("fractions").Fraction(x)


def test_model_collapse_step_on_counts() -> None:
    # the ratio an fp32 client computed (0.0099999998), with the counts beside it
    on_line = {"step": 0, "reward_accuracy": 0.009999999776482582}
    ev = _eval([{**on_line, "reward_accuracy_agree": 8, "reward_accuracy_total": 800}])
    assert ev.result("model_collapse_step").status is RuleStatus.CLEAR
    ev = _eval([{"step": 0, "reward_accuracy": 7 / 800}])
    assert ev.result("model_collapse_step").status is RuleStatus.FIRING
    assert ev.state.model_collapse_step == 0
    # a float64 ratio alone is read back as its counts: 8/800 == 0.01 is not below 0.01
    ev = _eval([{"step": 0, "reward_accuracy": 8 / 800}])
    assert ev.result("model_collapse_step").status is RuleStatus.CLEAR
    assert ev.state.model_collapse_step is None


def test_degenerate_groups_on_the_line() -> None:
    cfg = DetectorConfig.model_validate(
        {"degenerate_groups": {"max_fraction": 0.3, "window": 1, "warmup_steps": 0}}
    )
    at = [{"step": 0, "degenerate_all_fail": 0.1, "degenerate_all_pass": 0.2}]  # 0.1 + 0.2 > 0.3
    assert _eval(at, cfg).result("degenerate_groups").status is RuleStatus.CLEAR
    past = [{"step": 0, "degenerate_all_fail": 0.1, "degenerate_all_pass": 0.21}]
    assert _eval(past, cfg).result("degenerate_groups").status is RuleStatus.FIRING


def test_zprime_pressure_mean_on_the_line() -> None:
    cfg = DetectorConfig.model_validate(
        {"zprime_pressure": {"max_fraction": 0.3, "window": 10, "warmup_steps": 0}}
    )
    vals = [0.3] * 10  # float mean 0.29999999999999993 < 0.3
    recs = [{"step": i, "zprime_raw_gt1_frac": v} for i, v in enumerate(vals)]
    assert _eval(recs, cfg).result("zprime_pressure").status is RuleStatus.FIRING
    recs = [{"step": i, "zprime_raw_gt1_frac": v} for i, v in enumerate([0.3] * 9 + [0.29])]
    assert _eval(recs, cfg).result("zprime_pressure").status is RuleStatus.CLEAR


def test_repetition_level_on_the_line() -> None:
    cfg = DetectorConfig.model_validate(
        {"repetition_collapse": {"min_level": 0.3, "window": 3, "warmup_steps": 0}}
    )
    recs = [{"step": i, "repetition_rate": v} for i, v in enumerate([0.1, 0.2, 0.7 - 0.4])]
    # 0.7 - 0.4 = 0.29999999999999993 is 3/10 computed with round-off: at the level
    ev = _eval(recs, cfg)
    assert ev.result("repetition_collapse").status is RuleStatus.FIRING
