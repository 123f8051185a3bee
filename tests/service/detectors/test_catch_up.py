"""``decide_pass``, the detection pass the service runs after each ingest, as pure decisions: a
pass over a whole trace decides what the one-step-at-a-time replay decides, and the working α
follows the trainer's reports except those older than an acknowledged α change."""

from __future__ import annotations

from typing import Any

import pytest

from service.detectors import DetectorConfig, DetectorState, RunPolicy, StepRecord, replay_detailed
from service.detectors.catch_up import RunSnapshot, decide_pass
from tests.service.detectors import _traces


def _snapshot(records: list[StepRecord], **overrides: Any) -> RunSnapshot:
    fields: dict[str, Any] = {
        "config": DetectorConfig(),
        "policy": RunPolicy(),
        "group_size": 8,
        "state": DetectorState(),
        "records": records,
        "pending": [r.step for r in records],
        "open_alerts": {},
        "status": "running",
        "verdict": "healthy",
        "best_step": None,
        "alpha_pinned": False,
        "commanded_alpha": None,
        "acknowledged_alpha": None,
        "acknowledged_step": None,
        "stop_outstanding": False,
    }
    return RunSnapshot(**(fields | overrides))


@pytest.mark.parametrize("name", ["entropy_collapse", "rise_then_fall", "starvation"])
def test_one_pass_over_a_trace_decides_what_the_replay_decides(name: str) -> None:
    trace = getattr(_traces, name)()
    decisions = decide_pass(_snapshot([StepRecord.from_mapping(r) for r in trace]))
    expected = replay_detailed(trace, group_size=8, stop_on_auto_stop=False)
    actions = [a for d in decisions.steps for a in d.outcome.transitions.actions]
    assert actions == list(expected.actions)
    assert [d.alpha for d in decisions.steps if d.alpha] == list(expected.alpha_changes)
    stops = [d.stop.step for d in decisions.steps if d.stop is not None]
    assert stops == ([] if expected.stopped_at is None else [expected.stopped_at])
    assert decisions.state == expected.state
    assert decisions.verdict == ("stopped" if stops else expected.verdict.value)


def _reporting(alpha_at: dict[int, float], steps: range) -> list[StepRecord]:
    return [
        StepRecord(s, {"entropy": 0.45, "success_rate": 0.4, "alpha": alpha_at.get(s, 1.0)})
        for s in steps
    ]


def test_records_older_than_an_acknowledged_alpha_do_not_set_the_working_alpha() -> None:
    """The trainer acked α = 1.75 from step 3 before its sender delivered steps 0..2 (which
    report the old 1.0): the controller works from 1.75 on every step of the pass."""
    records = _reporting({3: 1.75, 4: 1.75}, range(5))
    acked = _snapshot(records, acknowledged_alpha=1.75, acknowledged_step=3)
    assert [d.outcome.alpha.old_alpha for d in decide_pass(acked).steps] == [1.75] * 5
    unacked = _snapshot(records)
    assert [d.outcome.alpha.old_alpha for d in decide_pass(unacked).steps] == [1.0] * 3 + [1.75] * 2


def test_the_working_alpha_carries_over_from_the_newest_report_before_the_pass() -> None:
    """Steps 2 and 3 report no α: the pass works from step 1's report, unless that report is
    older than the acknowledged change (then the ack's α); an outstanding command's α wins."""
    reports = [StepRecord(s, {"entropy": 0.45, "success_rate": 0.4, "alpha": 0.5}) for s in (0, 1)]
    silent = [StepRecord(s, {"entropy": 0.45, "success_rate": 0.4}) for s in (2, 3)]
    records = reports + silent

    def working(**overrides: Any) -> list[float]:
        decisions = decide_pass(_snapshot(records, pending=[2, 3], **overrides))
        return [d.outcome.alpha.old_alpha for d in decisions.steps]

    assert working() == [0.5, 0.5]
    assert working(acknowledged_alpha=0.25, acknowledged_step=0) == [0.5, 0.5]
    assert working(acknowledged_alpha=0.25, acknowledged_step=2) == [0.25, 0.25]
    assert working(commanded_alpha=2.0, acknowledged_alpha=0.25, acknowledged_step=0) == [2.0] * 2
    assert decide_pass(_snapshot(silent)).steps[0].outcome.alpha.old_alpha == 1.0


def test_nothing_pending_decides_nothing() -> None:
    decisions = decide_pass(_snapshot(_reporting({}, range(3)), pending=[]))
    assert (decisions.steps, decisions.verdict, decisions.best_step) == ((), None, None)
