"""The α controller: raises under pressure, bounded, cooldown honoured, lowers when appropriate,
never while stopping, and records reasons and inputs."""

from __future__ import annotations

import pytest

from service.detectors import (
    AlphaAction,
    DetectorConfig,
    DetectorState,
    RunPolicy,
    StepRecord,
    decide_alpha,
    evaluate,
    replay_detailed,
)
from tests.service.detectors import _traces as tr

PRESSURE = tr.build(
    150, {"zprime_raw_gt1_frac": lambda s: 0.7}
)  # zprime_pressure fires from step 9
DECLINE = tr.build(120, {"success_rate": lambda s: max(0.15, 0.6 - 0.004 * s)})


def changes(trace: tr.Trace, policy: RunPolicy, alpha: float = 1.0) -> list[tuple[int, str, float]]:
    result = replay_detailed(trace, DetectorConfig(), policy, initial_alpha=alpha)
    return [(c.step, c.action.value, c.new_alpha) for c in result.alpha_changes]


def test_raises_under_zprime_pressure_once_per_cooldown_and_stops_at_max() -> None:
    assert changes(PRESSURE, RunPolicy()) == [
        (9, "raise", 1.25),
        (29, "raise", 1.5),
        (49, "raise", 1.75),
        (69, "raise", 2.0),
    ]


@pytest.mark.parametrize("cooldown", [0, 5, 13])
def test_cooldown_honoured(cooldown: int) -> None:
    steps = [s for s, _, _ in changes(PRESSURE, RunPolicy(alpha_cooldown_steps=cooldown))]
    assert steps == [9 + i * max(cooldown, 1) for i in range(4)]


def test_bounds_respected() -> None:
    got = changes(PRESSURE, RunPolicy(alpha_max=1.6, alpha_step=0.5))
    assert got == [(9, "raise", 1.5), (29, "raise", 1.6)]
    # already above the bound: a raise is held, never pushes further
    result = replay_detailed(PRESSURE, DetectorConfig(), RunPolicy(), initial_alpha=2.0)
    assert result.alpha_changes == ()
    assert result.final_alpha == 2.0


def test_raise_decision_records_reason_and_inputs() -> None:
    records = [StepRecord.from_mapping(r) for r in PRESSURE[:12]]
    ev = evaluate(DetectorConfig(), 8, records, DetectorState())
    d = decide_alpha(RunPolicy(), DetectorConfig(), records, ev, ev.state, 1.0)
    assert d.action is AlphaAction.RAISE
    assert d.triggers == ("zprime_pressure",)
    assert "zprime_pressure" in d.reason
    assert d.inputs["alpha"] == 1.0
    assert d.inputs["zprime_pressure.zprime_raw_gt1_frac_mean"] == pytest.approx(0.7)
    assert d.state.alpha_last_adjust_step == 11
    held = decide_alpha(RunPolicy(), DetectorConfig(), records, ev, d.state, 1.25)
    assert held.action is AlphaAction.HOLD
    assert "cooldown" in held.reason
    assert held.new_alpha == 1.25


def test_lowers_when_entropy_healthy_and_success_degrades() -> None:
    # success slope −0.004/step <= −0.002 with entropy 0.45 >= 0.2 from the first full window
    got = changes(DECLINE, RunPolicy())
    assert got[:4] == [
        (19, "lower", 0.75),
        (39, "lower", 0.5),
        (59, "lower", 0.25),
        (79, "lower", 0.0),
    ]
    assert all(a >= 0.0 for _, _, a in got)


def test_no_lowering_when_entropy_not_healthy_or_decline_slow() -> None:
    low_entropy = tr.build(
        120,
        {"success_rate": lambda s: max(0.15, 0.6 - 0.004 * s), "entropy": lambda s: 0.15},
    )
    assert changes(low_entropy, RunPolicy()) == []
    slow = tr.build(120, {"success_rate": lambda s: 0.6 - 0.001 * s})
    assert changes(slow, RunPolicy()) == []


def test_never_lowers_while_starvation_fires() -> None:
    trace = tr.starvation()
    result = replay_detailed(trace, DetectorConfig(), RunPolicy())
    firing: set[int] = set()
    open_since: dict[str, int] = {}
    for a in result.actions:
        if a.rule in ("signal_starvation", "degenerate_groups"):
            if a.kind.value == "resolve":
                firing.update(range(open_since.pop(a.rule), a.step))
            elif a.kind.value == "open":
                open_since[a.rule] = a.step
    assert firing  # the trace exercises the block
    lowers = [c.step for c in result.alpha_changes if c.action is AlphaAction.LOWER]
    assert not set(lowers) & firing


def test_hold_when_off_stopping_or_stale() -> None:
    records = [StepRecord.from_mapping(r) for r in PRESSURE[:12]]
    ev = evaluate(DetectorConfig(), 8, records, DetectorState())
    off = decide_alpha(RunPolicy(auto_alpha=False), DetectorConfig(), records, ev, ev.state, 1.0)
    assert (off.action, off.reason) == (AlphaAction.HOLD, "automatic α adjustment is off")
    stopping = decide_alpha(
        RunPolicy(), DetectorConfig(), records, ev, ev.state, 1.0, stopping=True
    )
    assert (stopping.action, stopping.reason) == (AlphaAction.HOLD, "run is stopping")
    stale = evaluate(DetectorConfig(), 8, records, ev.state)
    d = decide_alpha(RunPolicy(), DetectorConfig(), records, stale, stale.state, 1.0)
    assert d.action is AlphaAction.HOLD
    assert not d.changed


def test_policy_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="alpha_min"):
        RunPolicy(alpha_min=1.5, alpha_max=1.0)
    with pytest.raises(ValueError, match="alpha_raise_on"):
        RunPolicy.model_validate({"alpha_raise_on": ["no_such_rule"]})


# --- science.md §7: act on the policy (raw Z', entropy), settle, relax, respect the pin ---------


def test_calibrated_zprime_alone_moves_nothing() -> None:
    # IAC inflates the calibrated share (here 0.99) while the policy's raw share is low
    trace = tr.build(200, {"zprime_gt1_frac": lambda s: 0.99, "zprime_raw_gt1_frac": lambda s: 0.1})
    result = replay_detailed(trace, DetectorConfig(), RunPolicy())
    assert result.alpha_changes == ()
    assert [a for a in result.actions if a.rule == "zprime_pressure"] == []


def test_relaxes_back_to_the_baseline_once_the_policy_calms() -> None:
    trace = tr.build(200, {"zprime_raw_gt1_frac": lambda s: 0.7 if s < 50 else 0.1})
    got = changes(trace, RunPolicy())
    assert got[:3] == [(9, "raise", 1.25), (29, "raise", 1.5), (49, "raise", 1.75)]
    relaxes = got[3:]
    # the 20-observation mean of the raw share first reaches <= 0.25 at step 64; cooldown to 69
    assert relaxes == [(69, "lower", 1.5), (89, "lower", 1.25), (109, "lower", 1.0)]
    result = replay_detailed(trace, DetectorConfig(), RunPolicy())
    assert result.final_alpha == 1.0  # never below the baseline: nothing after step 109
    assert "relaxing toward the baseline 1" in result.alpha_changes[-1].reason
    assert result.state.alpha_baseline == 1.0


def test_holds_in_the_dead_band() -> None:
    # pressure, then a share between the relax level (0.25) and the pressure level (0.5)
    trace = tr.build(300, {"zprime_raw_gt1_frac": lambda s: 0.7 if s < 30 else 0.35})
    got = changes(trace, RunPolicy())
    assert got == [(9, "raise", 1.25), (29, "raise", 1.5)]
    records = [StepRecord.from_mapping(r) for r in trace]
    ev = evaluate(DetectorConfig(), 8, records[-30:], DetectorState())
    d = decide_alpha(
        RunPolicy(),
        DetectorConfig(),
        records[-30:],
        ev,
        DetectorState(alpha_baseline=1.0),
        1.5,
    )
    assert d.action is AlphaAction.HOLD
    assert "dead band" in d.reason
    assert d.inputs["zprime_raw_gt1_frac_mean"] == pytest.approx(0.35)


def test_relaxes_on_entropy_alone_when_no_raw_zprime_is_reported() -> None:
    trace = tr.build(
        160,
        {"entropy": lambda s: 0.45 - 0.006 * s if s < 40 else 0.45},
        drop=("zprime_gt1_frac", "zprime_raw_gt1_frac"),
    )
    result = replay_detailed(trace, DetectorConfig(), RunPolicy())
    actions = [(c.action, c.new_alpha) for c in result.alpha_changes]
    assert actions[0] == (AlphaAction.RAISE, 1.25)
    assert result.alpha_changes[0].triggers == ("entropy_slope",)
    assert actions[-1] == (AlphaAction.LOWER, 1.0)
    assert "no raw Z' reported" in result.alpha_changes[-1].reason


def test_pinned_alpha_holds_under_pressure_and_becomes_the_baseline() -> None:
    records = [StepRecord.from_mapping(r) for r in PRESSURE[:12]]
    ev = evaluate(DetectorConfig(), 8, records, DetectorState())
    assert ev.is_firing("zprime_pressure")
    d = decide_alpha(RunPolicy(), DetectorConfig(), records, ev, ev.state, 0.5, pinned=True)
    assert d.action is AlphaAction.HOLD
    assert "pinned" in d.reason
    assert "alpha_pinned" in d.reason  # says how to release it
    assert d.state.alpha_baseline == 0.5
    released = decide_alpha(RunPolicy(), DetectorConfig(), records, ev, d.state, 0.5)
    assert (released.action, released.new_alpha) == (AlphaAction.RAISE, 0.75)
