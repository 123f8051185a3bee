"""Trace replays: whole synthetic runs through ``replay`` (exactly as the service would ingest them)
with the exact expected alerts, derived from the rule definitions with independent oracles."""

from __future__ import annotations

import json

import pytest

from service.detectors import (
    AlertAction,
    AlphaAction,
    DetectorConfig,
    RunPolicy,
    Verdict,
    replay,
    replay_detailed,
)
from tests.service.detectors import _traces as tr


def opens_and_resolves(actions: list[AlertAction]) -> list[tuple[str, str, int]]:
    return [(a.kind.value, a.rule, a.step) for a in actions if a.kind.value != "update"]


def first_slope_step(trace: tr.Trace) -> int:
    """First step where the 20-observation least-squares entropy line reaches 0.10 within 100
    steps (numpy oracle of entropy_slope's definition)."""

    def hit(xs: list[int], ys: list[float]) -> bool:
        b = tr.np_slope(xs, ys)
        fitted = sum(ys) / len(ys) + b * (xs[-1] - sum(xs) / len(xs))
        return b < 0 and (fitted <= 0.1 or (fitted - 0.1) / -b <= 100)

    return tr.window_steps(trace, "entropy", 20, hit)[0]


@pytest.mark.parametrize("seed", range(5))
def test_healthy_run_raises_nothing(seed: int) -> None:
    result = replay_detailed(tr.healthy_run(seed=seed), DetectorConfig(), RunPolicy())
    assert result.actions == ()
    assert result.alpha_changes == ()
    assert result.stopped_at is None
    assert result.verdict is Verdict.HEALTHY
    assert result.state.last_step == 299


def test_entropy_collapse_trace() -> None:
    trace = tr.entropy_collapse()
    result = replay_detailed(trace, DetectorConfig(), RunPolicy())
    s1 = first_slope_step(trace)
    # first step with 5 consecutive entropies < 0.10 (entropy < 0.10 from step 140)
    floor_step = tr.window_steps(trace, "entropy", 5, lambda xs, ys: max(ys) < 0.1)[0]
    assert floor_step == 144
    assert opens_and_resolves(list(result.actions)) == [
        ("open", "entropy_slope", s1),
        ("open", "entropy_floor", floor_step),
    ]
    updates = [a.step for a in result.actions if a.kind.value == "update"]
    assert updates == list(range(s1 + 1, floor_step + 1))  # entropy_slope stays open to the end
    # sustained entropy_floor is an auto-stop rule: the run stops there
    assert result.stopped_at == floor_step
    assert result.stop_rules == ("entropy_floor",)
    assert result.verdict is Verdict.STOPPED
    stop = next(a for a in result.actions if a.rule == "entropy_floor")
    assert stop.auto_stop
    assert stop.firing is not None
    assert stop.firing.rollback_step == 139  # last entropy >= 0.10
    # α raised on the early warning, then once per 20-step cooldown while it persists
    assert [(c.step, c.action) for c in result.alpha_changes] == [
        (s, AlphaAction.RAISE) for s in range(s1, floor_step, 20)
    ]
    assert result.final_alpha == pytest.approx(1.0 + 0.25 * len(result.alpha_changes))


@pytest.mark.parametrize("seed", range(3))
def test_noisy_entropy_collapse_still_caught(seed: int) -> None:
    trace = tr.build(
        200,
        {"entropy": lambda s: max(0.02, 0.505 - 0.01 * max(0, s - 99))},
        seed=seed,
        noise=0.03,
    )
    result = replay_detailed(trace, DetectorConfig(), RunPolicy())
    entropy_opens = [
        (a.rule, a.step) for a in result.actions if a.kind.value == "open" and "entropy" in a.rule
    ]
    assert [r for r, _ in entropy_opens] == ["entropy_slope", "entropy_floor"]
    assert 100 < entropy_opens[0][1] < 120
    assert result.stopped_at is not None
    assert 144 <= result.stopped_at <= 147


def test_starvation_below_p_star_trace() -> None:
    trace = tr.starvation()
    p_star_8 = 0.0830  # science.md §1
    starve = tr.window_steps(trace, "success_rate", 5, lambda xs, ys: sum(ys) / 5 < p_star_8)
    degenerate = [
        s
        for s in tr.window_steps(trace, "degenerate_all_fail", 5, lambda xs, ys: True)
        if sum(
            r["metrics"]["degenerate_all_fail"] + r["metrics"]["degenerate_all_pass"]
            for r in trace[s - 4 : s + 1]
        )
        / 5
        > 0.5
    ]
    assert starve == list(range(54, 100))
    assert degenerate == list(range(53, 101))
    actions = replay(trace, DetectorConfig(), RunPolicy(auto_alpha=False), group_size=8)
    assert opens_and_resolves(actions) == [
        ("open", "degenerate_groups", 53),
        ("open", "signal_starvation", 54),
        ("resolve", "signal_starvation", 100),
        ("resolve", "degenerate_groups", 101),
    ]
    opened = next(a for a in actions if a.rule == "signal_starvation")
    assert opened.firing is not None
    assert "increase group size" in opened.firing.action
    # with G = 16, p*(16) = 0.0424 < 0.05: no starvation
    g16 = replay(trace, DetectorConfig(), RunPolicy(auto_alpha=False), group_size=16)
    assert "signal_starvation" not in {a.rule for a in g16}


def _rise_then_fall_oracle(
    trace: tr.Trace, window: int = 3, margin: float = 0.05, patience: int = 10
) -> list[int]:
    obs = tr.series(trace, "gt_reward")
    peak, peak_step, out = None, None, []
    for i in range(window - 1, len(obs)):
        step = obs[i][0]
        cur = sum(v for _, v in obs[i - window + 1 : i + 1]) / window
        if peak is None or cur > peak:
            peak, peak_step = cur, step
        assert peak_step is not None
        if peak - cur >= margin and step - peak_step >= patience:
            out.append(step)
    return out


def test_reward_accuracy_collapse_trace() -> None:
    trace = tr.reward_accuracy_collapse()
    divergence = [
        s
        for s in tr.window_steps(trace, "proxy_reward", 20, lambda x, y: tr.np_slope(x, y) >= 0.002)
        if s
        in tr.window_steps(trace, "reward_accuracy", 20, lambda x, y: tr.np_slope(x, y) <= -0.002)
    ]
    mcs = next(s for s, v in tr.series(trace, "reward_accuracy") if v < 0.01)
    rtf = _rise_then_fall_oracle(trace)
    assert mcs == 150
    result = replay_detailed(trace, DetectorConfig(), RunPolicy())
    assert opens_and_resolves(list(result.actions)) == sorted(
        [
            ("open", "reward_accuracy_divergence", divergence[0]),
            ("open", "rise_then_fall", rtf[0]),
            ("open", "model_collapse_step", mcs),
        ],
        key=lambda k: k[2],
    )
    assert result.stopped_at == mcs
    assert result.stop_rules == ("model_collapse_step",)
    assert result.state.model_collapse_step == mcs
    collapse = next(a for a in result.actions if a.rule == "model_collapse_step")
    assert collapse.firing is not None
    assert collapse.firing.observed["model_collapse_step"] == mcs
    assert collapse.firing.rollback_step == 80  # best gt_reward, before the collapse
    assert "roll back to step 80" in collapse.firing.action


def test_rise_then_fall_trace() -> None:
    trace = tr.rise_then_fall()
    expected = _rise_then_fall_oracle(trace)
    assert expected == list(range(110, 135))
    result = replay_detailed(trace, DetectorConfig(), RunPolicy())
    assert opens_and_resolves(list(result.actions)) == [
        ("open", "rise_then_fall", 110),
        ("resolve", "rise_then_fall", 135),
    ]
    opened = result.actions[0]
    assert opened.firing is not None
    assert opened.firing.rollback_step == 100
    assert opened.firing.action == "stop the run and roll back to step 100 (best gt_reward)"
    assert result.stopped_at is None  # not an auto-stop rule by default
    stopping = replay_detailed(
        trace, DetectorConfig(), RunPolicy(auto_stop_rules=frozenset({"rise_then_fall"}))
    )
    assert stopping.stopped_at == 110


def test_replay_accepts_flat_dicts_and_continues_after_stop() -> None:
    flat = [{"step": r["step"], **r["metrics"]} for r in tr.entropy_collapse()]
    nested = replay(tr.entropy_collapse())
    assert replay(flat) == nested
    full = replay_detailed(flat, stop_on_auto_stop=False)
    assert full.stopped_at == 144
    assert full.state.last_step == 199
    assert full.verdict is Verdict.STOPPED
    assert all(c.step < 144 for c in full.alpha_changes)  # never adjust once stopping


def test_actions_and_alpha_decisions_serialise_to_json() -> None:
    result = replay_detailed(tr.entropy_collapse(), DetectorConfig(), RunPolicy())
    docs = json.loads(json.dumps([a.to_json() for a in result.actions]))
    opened = next(d for d in docs if d["rule"] == "entropy_floor")
    assert opened["kind"] == "open"
    assert opened["severity"] == "critical"
    assert opened["auto_stop"] is True
    assert opened["firing"]["thresholds"]["floor"] == 0.1
    assert opened["firing"]["rollback_step"] == 139
    alpha_doc = json.loads(json.dumps(result.alpha_changes[0].to_json()))
    assert alpha_doc["action"] == "raise"
    assert alpha_doc["triggers"] == ["entropy_slope"]
    assert alpha_doc["new_alpha"] - alpha_doc["old_alpha"] == 0.25
