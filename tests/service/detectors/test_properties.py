"""Property tests: random traces never give two open alerts for one rule, transitions are always
consistent with the open set, α stays within bounds, the state always survives JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.detectors import (
    ActionKind,
    DetectorConfig,
    DetectorState,
    OpenAlert,
    RunPolicy,
    StepRecord,
    process_step,
)

METRICS = (
    "entropy",
    "success_rate",
    "degenerate_all_fail",
    "degenerate_all_pass",
    "zprime_raw_gt1_frac",
    "reward_accuracy",
    "proxy_reward",
    "gt_reward",
    "response_length",
    "repetition_rate",
    "probe_success",
    "probe_entropy",
)

value = st.one_of(
    st.none(),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=-1e308, max_value=1e308),
    st.sampled_from([0.0, 0.005, 0.05, 0.5, 0.95, math.nan, math.inf]),
)
record = st.fixed_dictionaries(
    {"step": st.integers(0, 60)},
    optional={
        "metrics": st.dictionaries(st.sampled_from(METRICS), value, max_size=len(METRICS)),
        "non_finite": st.lists(st.sampled_from(METRICS), max_size=2),
    },
)
small_window = st.integers(1, 4)
rule_settings = st.fixed_dictionaries(
    {"window": st.integers(3, 5), "cooldown_steps": st.integers(0, 5)},
    optional={"warmup_steps": st.integers(0, 5), "enabled": st.booleans()},
)
configs = st.fixed_dictionaries(
    {
        "entropy_floor": st.fixed_dictionaries(
            {"window": small_window, "cooldown_steps": st.integers(0, 5)}
        ),
        "entropy_slope": rule_settings,
        "signal_starvation": st.fixed_dictionaries({"window": small_window}),
        "zprime_pressure": rule_settings,
        "rise_then_fall": st.fixed_dictionaries(
            {"window": small_window, "patience_steps": st.integers(0, 5)}
        ),
        "probe_decline": rule_settings,
        "repetition_collapse": rule_settings,
    }
)
policies = st.builds(
    RunPolicy,
    alpha_min=st.floats(0.0, 1.0),
    alpha_max=st.floats(1.0, 2.0),
    alpha_step=st.floats(0.01, 1.0),
    alpha_cooldown_steps=st.integers(0, 5),
    alpha_lower_window=st.integers(3, 6),
    alpha_lower_slope=st.floats(1e-4, 0.1),
    auto_stop_rules=st.frozensets(st.sampled_from(["entropy_floor", "non_finite"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trace=st.lists(record, min_size=1, max_size=60),
    config_doc=configs,
    policy=policies,
    group_size=st.integers(1, 32),
    toggle=st.booleans(),
)
def test_random_traces_keep_invariants(
    trace: list[dict[str, Any]],
    config_doc: dict[str, Any],
    policy: RunPolicy,
    group_size: int,
    toggle: bool,
) -> None:
    config = DetectorConfig.model_validate(config_doc)
    alpha = min(policy.alpha_max, max(policy.alpha_min, 1.0))
    stored: dict[int, StepRecord] = {}
    state = DetectorState()
    open_alerts: dict[str, OpenAlert] = {}
    last_adjust: int | None = None
    for item in trace:
        rec = StepRecord.from_mapping(item)
        if rec.step in stored:
            continue
        stored[rec.step] = rec
        history = [stored[s] for s in sorted(stored)][-config.history_needed() :]
        out = process_step(
            config, policy, group_size, history, state, open_alerts, alpha, stopped=toggle
        )
        for a in out.transitions.actions:
            if a.kind is ActionKind.OPEN:
                assert a.rule not in open_alerts, f"second open alert for {a.rule}"
                open_alerts[a.rule] = OpenAlert(a.rule, a.step, a.step, a.severity)
            else:
                assert a.rule in open_alerts, f"{a.kind} of a rule with no open alert"
                if a.kind is ActionKind.RESOLVE:
                    del open_alerts[a.rule]
                else:
                    open_alerts[a.rule] = OpenAlert(a.rule, a.first_step, a.step, a.severity)
        assert open_alerts == dict(out.transitions.open_alerts)
        rules = [a.rule for a in out.transitions.actions]
        assert len(rules) == len(set(rules))
        d = out.alpha
        if toggle or out.transitions.stop:
            assert not d.changed
        if d.changed:
            assert policy.alpha_min <= d.new_alpha <= policy.alpha_max
            if last_adjust is not None:
                assert d.step - last_adjust >= policy.alpha_cooldown_steps
            last_adjust = d.step
            alpha = d.new_alpha
        assert policy.alpha_min <= alpha <= policy.alpha_max
        for a in out.transitions.actions:
            json.dumps(a.to_json(), allow_nan=False)  # storable as strict JSON
        json.dumps(out.alpha.to_json(), allow_nan=False)
        state = DetectorState.from_json(json.loads(json.dumps(out.state.to_json())))
        assert state == out.state
        if out.evaluation.skipped:
            assert out.transitions.actions == ()
