"""Alert transitions: open → update → resolve, one open alert per rule, cooldown, auto-stop."""

from __future__ import annotations

from collections.abc import Sequence

from service.detectors import (
    ActionKind,
    AlertAction,
    DetectorConfig,
    DetectorState,
    Evaluation,
    OpenAlert,
    RunPolicy,
    Severity,
    StepRecord,
    Transitions,
    compute_transitions,
    evaluate,
    replay,
)
from tests.service.detectors._traces import build


def kinds(actions: Sequence[AlertAction]) -> list[tuple[str, str, int]]:
    return [(a.kind.value, a.rule, a.step) for a in actions]


def test_open_update_resolve_lifecycle() -> None:
    trace = build(30, {"entropy": lambda s: 0.05 if 10 <= s < 20 else 0.5})
    policy = RunPolicy(auto_stop_rules=frozenset())
    actions = replay(trace, DetectorConfig(), policy)
    floor = [a for a in actions if a.rule == "entropy_floor"]
    assert kinds(floor) == [
        ("open", "entropy_floor", 14),
        *[("update", "entropy_floor", s) for s in range(15, 20)],
        ("resolve", "entropy_floor", 20),
    ]
    assert all(a.first_step == 14 for a in floor)
    assert floor[0].firing is not None
    assert floor[-1].firing is None
    assert floor[0].severity is Severity.CRITICAL


def test_cooldown_suppresses_reopen_then_allows_it() -> None:
    # entropy low 10..14 (fires 14), recovers 15..16 (resolve 15), low again from 17 (fires 21)
    trace = build(40, {"entropy": lambda s: 0.05 if 10 <= s < 15 or s >= 17 else 0.5})
    policy = RunPolicy(auto_stop_rules=frozenset())
    config = DetectorConfig.model_validate({"entropy_floor": {"cooldown_steps": 10}})
    floor = [a for a in replay(trace, config, policy) if a.rule == "entropy_floor"]
    assert kinds(floor)[:3] == [
        ("open", "entropy_floor", 14),
        ("resolve", "entropy_floor", 15),
        ("open", "entropy_floor", 25),  # fires from 21, suppressed until 15 + 10
    ]
    no_cooldown = DetectorConfig.model_validate({"entropy_floor": {"cooldown_steps": 0}})
    floor0 = [a for a in replay(trace, no_cooldown, policy) if a.rule == "entropy_floor"]
    assert kinds(floor0)[2] == ("open", "entropy_floor", 21)


def test_resolve_after_holds_a_flapping_alert_open() -> None:
    # With a 1-step window the floor rule follows the entropy: below the floor from 10, clear at
    # 16 and at 20-21 (flapping), clear for good from 26.
    def entropy(s: int) -> float:
        return 0.5 if s < 10 or s in (16, 20, 21) or s >= 26 else 0.05

    trace = build(40, {"entropy": entropy})
    policy = RunPolicy(auto_stop_rules=frozenset())

    def lifecycle(settings: dict[str, int]) -> list[tuple[str, int, int]]:
        config = DetectorConfig.model_validate({"entropy_floor": {"window": 1} | settings})
        floor = [a for a in replay(trace, config, policy) if a.rule == "entropy_floor"]
        return [(a.kind.value, a.step, a.first_step) for a in floor if a.kind != ActionKind.UPDATE]

    assert lifecycle({"cooldown_steps": 0}) == [
        ("open", 10, 10),
        ("resolve", 16, 10),
        ("open", 17, 17),
        ("resolve", 20, 17),
        ("open", 22, 22),
        ("resolve", 26, 22),
    ]
    assert lifecycle({"cooldown_steps": 0, "resolve_after": 3}) == [
        ("open", 10, 10),
        ("resolve", 28, 10),  # clear at 26, 27, 28: the third clear evaluation in a row
    ]


def test_clear_streak_is_kept_in_state_and_reset_by_a_firing() -> None:
    config = DetectorConfig.model_validate({"entropy_floor": {"resolve_after": 2}})
    policy = RunPolicy(auto_stop_rules=frozenset())
    alert = {"entropy_floor": OpenAlert("entropy_floor", 4, 9, Severity.CRITICAL)}
    clear = compute_transitions(config, policy, _eval_at(12, 0.5, DetectorState()), alert)
    assert [a.kind for a in clear.actions if a.rule == "entropy_floor"] == []
    assert clear.state.clear_streak == {"entropy_floor": 1}
    assert "entropy_floor" in clear.open_alerts
    fired = compute_transitions(config, policy, _eval_at(13, 0.05, clear.state), alert)
    assert fired.state.clear_streak == {}
    resolved = compute_transitions(config, policy, _eval_at(13, 0.5, clear.state), alert)
    assert [a.kind for a in resolved.actions if a.rule == "entropy_floor"] == [ActionKind.RESOLVE]
    assert resolved.state.clear_streak == {}
    assert "entropy_floor" not in resolved.open_alerts


def _eval_at(trace_len: int, entropy: float, state: DetectorState) -> Evaluation:
    records = [StepRecord.from_mapping(r) for r in build(trace_len, {"entropy": lambda s: entropy})]
    return evaluate(DetectorConfig(), 8, records, state)


def test_suppressed_listed_and_auto_stop_rules_ignore_cooldown() -> None:
    state = DetectorState(last_step=8, last_resolved={"entropy_floor": 7})
    ev = _eval_at(10, 0.01, state)  # step 9: entropy_floor fires, resolved 2 steps ago
    no_stop = compute_transitions(DetectorConfig(), RunPolicy(auto_stop_rules=frozenset()), ev, {})
    assert no_stop.actions == ()
    assert no_stop.suppressed == ("entropy_floor",)
    assert not no_stop.stop
    stop = compute_transitions(DetectorConfig(), RunPolicy(), ev, {})
    assert kinds(stop.actions) == [("open", "entropy_floor", 9)]
    assert stop.actions[0].auto_stop
    assert stop.stop
    assert stop.stop_rules == ("entropy_floor",)


def test_update_keeps_first_step_and_one_open_per_rule() -> None:
    ev = _eval_at(10, 0.01, DetectorState())
    open_alerts = {"entropy_floor": OpenAlert("entropy_floor", 5, 8, Severity.CRITICAL)}
    tr = compute_transitions(DetectorConfig(), RunPolicy(), ev, open_alerts)
    assert kinds(tr.actions) == [("update", "entropy_floor", 9)]
    assert tr.actions[0].first_step == 5
    assert tr.open_alerts["entropy_floor"] == OpenAlert("entropy_floor", 5, 9, Severity.CRITICAL)
    assert len(tr.open_alerts) == 1


def test_resolve_records_step_for_cooldown_and_disabled_resolves() -> None:
    ev = _eval_at(10, 0.5, DetectorState())
    open_alerts = {"entropy_floor": OpenAlert("entropy_floor", 2, 8, Severity.CRITICAL)}
    tr: Transitions = compute_transitions(DetectorConfig(), RunPolicy(), ev, open_alerts)
    assert kinds(tr.actions) == [("resolve", "entropy_floor", 9)]
    assert tr.state.last_resolved == {"entropy_floor": 9}
    assert tr.open_alerts == {}
    disabled = DetectorConfig.model_validate({"entropy_floor": {"enabled": False}})
    records = [StepRecord.from_mapping(r) for r in build(10, {"entropy": lambda s: 0.01})]
    ev2 = evaluate(disabled, 8, records, DetectorState())
    tr2 = compute_transitions(disabled, RunPolicy(), ev2, open_alerts)
    assert [a.kind for a in tr2.actions] == [ActionKind.RESOLVE]
    assert tr2.actions[0].reason == "disabled in config"


def test_not_evaluable_keeps_alert_open() -> None:
    records = [StepRecord.from_mapping(r) for r in build(10, {"entropy": lambda s: 0.01})]
    records.append(StepRecord(10, {"success_rate": 0.4}))  # no entropy on the newest step
    ev = evaluate(DetectorConfig(), 8, records, DetectorState())
    open_alerts = {"entropy_floor": OpenAlert("entropy_floor", 5, 9, Severity.CRITICAL)}
    tr = compute_transitions(DetectorConfig(), RunPolicy(), ev, open_alerts)
    assert [a for a in tr.actions if a.rule == "entropy_floor"] == []
    assert tr.open_alerts["entropy_floor"].last_step == 9


def test_skipped_evaluation_has_no_actions() -> None:
    records = [StepRecord.from_mapping(r) for r in build(10, {"entropy": lambda s: 0.01})]
    ev = evaluate(DetectorConfig(), 8, records, DetectorState(last_step=9))
    assert ev.skipped
    tr = compute_transitions(DetectorConfig(), RunPolicy(), ev, {})
    assert tr.actions == ()
    assert not tr.stop


def test_out_of_order_ingestion_does_not_corrupt_state() -> None:
    trace = build(30, {"entropy": lambda s: 0.05 if s >= 10 else 0.5})
    policy = RunPolicy(auto_stop_rules=frozenset())
    in_order = replay(trace, DetectorConfig(), policy)
    shuffled = [*trace[:12], trace[14], trace[12], trace[13], *trace[15:]]
    late = replay(shuffled, DetectorConfig(), policy)
    # 12 and 13 arrive after 14: they are skipped (no actions); step 14 was evaluated without
    # them (window 8, 9, 10, 11, 14 holds two healthy values), so the floor opens at 15 instead of
    # 14 — where the late steps are part of the window again. Nothing else changes.
    expected = [k for k in kinds(in_order) if k[2] not in (12, 13, 14)]
    expected[expected.index(("update", "entropy_floor", 15))] = ("open", "entropy_floor", 15)
    assert kinds(late) == expected
    dup = replay([*trace[:20], trace[5], *trace[20:]], DetectorConfig(), policy)
    assert kinds(dup) == kinds(in_order)
