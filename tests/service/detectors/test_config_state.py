"""Config defaults and bounds, state JSON, records, p*(G), verdict, public surface."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import service.detectors as det
from service.detectors import (
    RULE_NAMES,
    DetectorConfig,
    DetectorState,
    OpenAlert,
    Peak,
    RunPolicy,
    Severity,
    StepRecord,
    Verdict,
    p_star,
    verdict,
)
from service.detectors.names import group_size_for_rate


def test_rule_names_are_the_public_strings() -> None:
    assert RULE_NAMES == (
        "entropy_floor",
        "entropy_slope",
        "signal_starvation",
        "degenerate_groups",
        "zprime_pressure",
        "model_collapse_step",
        "reward_accuracy_divergence",
        "rise_then_fall",
        "probe_decline",
        "length_collapse",
        "repetition_collapse",
        "non_finite",
    )
    assert set(DetectorConfig.model_fields) == {"history_steps", *RULE_NAMES}


def test_defaults_follow_science_section_5() -> None:
    c = DetectorConfig()
    assert c.entropy_floor.floor == 0.10
    assert c.model_collapse_step.threshold == 0.01
    assert c.entropy_floor.severity is Severity.CRITICAL
    assert c.model_collapse_step.severity is Severity.CRITICAL
    assert c.non_finite.severity is Severity.CRITICAL
    p = RunPolicy()
    assert (p.alpha_min, p.alpha_max) == (0.0, 2.0)
    assert p.auto_alpha
    assert p.auto_stop_rules == {"model_collapse_step", "entropy_floor", "non_finite"}


@pytest.mark.parametrize(
    "bad",
    [
        {"entropy_floor": {"floor": 0}},
        {"entropy_floor": {"window": 0}},
        {"entropy_slope": {"window": 2}},
        {"signal_starvation": {"cooldown_steps": -1}},
        {"degenerate_groups": {"max_fraction": 1.5}},
        {"rise_then_fall": {"metric": "bad metric!"}},
        {"entropy_floor": {"severity": "fatal"}},
        {"entropy_floor": {"unknown": 1}},
        {"no_such_rule": {}},
        {"history_steps": 0},
    ],
)
def test_config_bounds(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DetectorConfig.model_validate(bad)


def test_every_field_documented() -> None:
    for name in RULE_NAMES:
        settings = DetectorConfig().rule(name)
        for fname, field in type(settings).model_fields.items():
            assert field.description, f"{name}.{fname} has no description"


def test_history_needed_covers_windows_and_config_json_round_trip() -> None:
    c = DetectorConfig.model_validate({"history_steps": 10, "entropy_slope": {"window": 50}})
    assert c.history_needed() == 50
    disabled = DetectorConfig.model_validate(
        {"history_steps": 10, "entropy_slope": {"window": 50, "enabled": False}}
    )
    assert disabled.history_needed() == 20
    assert DetectorConfig.model_validate_json(c.model_dump_json()) == c
    with pytest.raises(KeyError):
        c.rule("history_steps")


def test_p_star_values() -> None:
    assert p_star(8) == pytest.approx(0.0830, abs=5e-5)
    assert p_star(16) == pytest.approx(0.0424, abs=5e-5)
    assert p_star(1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="group_size"):
        p_star(0)


@given(st.floats(min_value=0.0, max_value=1.0))
def test_group_size_for_rate_is_minimal(rate: float) -> None:
    g = group_size_for_rate(rate)
    if g is None:
        assert rate == 0.0 or p_star(4096) >= rate
        return
    assert p_star(g) < rate
    assert g == 1 or p_star(g - 1) >= rate


def test_group_size_for_tiny_rates_terminates() -> None:
    assert group_size_for_rate(5e-324) is None
    assert group_size_for_rate(1e-12) is None
    assert group_size_for_rate(0.05) == 14


def test_state_json_round_trip_and_validation() -> None:
    s = DetectorState(
        last_step=12,
        peak=Peak("gt_reward", 0.6, 10),
        model_collapse_step=11,
        last_resolved={"entropy_slope": 5},
        alpha_last_adjust_step=3,
        clear_streak={"entropy_floor": 2},
        alpha_baseline=1.25,
    )
    doc = json.loads(json.dumps(s.to_json()))
    assert doc == {
        "version": 1,
        "last_step": 12,
        "peak": {"metric": "gt_reward", "value": 0.6, "step": 10},
        "model_collapse_step": 11,
        "last_resolved": {"entropy_slope": 5},
        "alpha_last_adjust_step": 3,
        "clear_streak": {"entropy_floor": 2},
        "alpha_baseline": 1.25,
    }
    assert DetectorState.from_json(doc) == s
    older = {k: v for k, v in doc.items() if k != "clear_streak"}  # written before resolve_after
    assert DetectorState.from_json(older).clear_streak == {}
    before_pin = {k: v for k, v in doc.items() if k != "alpha_baseline"}  # before the α pin
    assert DetectorState.from_json(before_pin).alpha_baseline is None
    assert DetectorState.from_json(None) == DetectorState()
    assert DetectorState.from_json({"last_resolved": {"gone_rule": 3}}).last_resolved == {}
    for bad, match in (
        ({"version": 2}, "version"),
        ({"last_step": "x"}, "last_step"),
        ({"last_step": True}, "last_step"),
        ({"peak": {"metric": "m", "value": "high", "step": 1}}, "peak.value"),
        ({"peak": {"metric": "m", "value": 1.0, "step": None}}, "peak.step"),
        ({"peak": 3}, "peak"),
        ({"last_resolved": []}, "last_resolved"),
        ({"last_resolved": {"entropy_floor": "3"}}, "last_resolved.entropy_floor"),
        ({"clear_streak": [1]}, "clear_streak"),
        ({"clear_streak": {"entropy_floor": 1.5}}, "clear_streak.entropy_floor"),
        ({"alpha_baseline": "1"}, "alpha_baseline"),
        ({"alpha_baseline": True}, "alpha_baseline"),
        ({"alpha_baseline": float("nan")}, "alpha_baseline"),
    ):
        with pytest.raises(ValueError, match=match):
            DetectorState.from_json(bad)


def test_step_record_parsing() -> None:
    flat = StepRecord.from_mapping({"step": 3, "entropy": 1, "loss": None})
    nested = StepRecord.from_mapping(
        {"step": 3, "metrics": {"entropy": 1.0, "loss": None}, "non_finite": []}
    )
    assert flat == nested
    assert flat.value("entropy") == 1.0
    assert flat.value("loss") is None
    assert flat.value("absent") is None
    nf = StepRecord.from_mapping({"step": 1, "metrics": {"kl": 2.0}, "non_finite": ["kl"]})
    assert nf.value("kl") is None
    assert nf.non_finite_names() == ("kl",)
    assert StepRecord(1, {"x": math.inf}).non_finite_names() == ("x",)
    for bad, match in (
        ({"metrics": {}}, "no 'step'"),
        ({"step": 1.5}, "step must be an int"),
        ({"step": True}, "step must be an int"),
        ({"step": 1, "metrics": {"a": "1"}}, "metric 'a'"),
        ({"step": 1, "metrics": {"a": True}}, "metric 'a'"),
        ({"step": 1, "metrics": [1]}, "metrics must be a mapping"),
        ({"step": 1, "non_finite": "kl"}, "non_finite"),
    ):
        with pytest.raises(ValueError, match=match):
            StepRecord.from_mapping(bad)


def test_verdict() -> None:
    warn = OpenAlert("entropy_slope", 1, 2, Severity.WARNING)
    crit = OpenAlert("entropy_floor", 1, 2, Severity.CRITICAL)
    assert verdict({}, stopped=False) is Verdict.HEALTHY
    assert verdict([warn], stopped=False) is Verdict.WARNING
    assert verdict({"a": warn, "b": crit}, stopped=False) is Verdict.CRITICAL
    assert verdict([warn, crit], stopped=True) is Verdict.STOPPED
    assert verdict([], stopped=True) is Verdict.STOPPED


def test_public_surface() -> None:
    for name in det.__all__:
        assert hasattr(det, name), name
    assert det.__doc__ is not None
    for rule in RULE_NAMES:
        assert f"``{rule}``" in det.__doc__
