"""Replays of traces recorded from the real toy experiment (science.md §6), not synthetic ones:
the collapsing configuration opens entropy_floor exactly where an independent reading of the
trace says it must and requests a stop there; the configuration that holds both modes
(IAC + DLC, SGD) raises no entropy alarm at all."""

from __future__ import annotations

from typing import Any

from service.detectors import ActionKind, DetectorConfig, replay_detailed
from trainer_hooks import Monitor
from trainer_hooks._toy import ToyConfig, run_toy


def _trace(cfg: ToyConfig, seed: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []

    class Recorder:
        def submit(self, record: dict[str, object]) -> None:
            records.append(record)

    monitor = Monitor(**cfg.monitor_options(), sender=Recorder())
    run_toy(cfg, seed=seed, monitor=monitor)
    return [{"step": r["step"], "metrics": r["metrics"]} for r in records]


def _first_sustained_below(trace: list[dict[str, Any]], floor: float, window: int) -> int | None:
    run = 0
    for record in trace:
        entropy = record["metrics"].get("entropy")
        run = run + 1 if entropy is not None and entropy < floor else 0
        if run >= window:
            return int(record["step"])
    return None


def test_collapsing_toy_run_opens_entropy_floor_where_the_trace_crosses_it() -> None:
    trace = _trace(ToyConfig(advantage="raw", optimizer="momentum", steps=200), seed=0)
    floor = DetectorConfig().entropy_floor
    expected = _first_sustained_below(trace, floor.floor, floor.window)
    assert expected is not None, "the collapsing configuration must collapse within 200 steps"

    result = replay_detailed(trace, group_size=8)
    opened = [a for a in result.actions if a.kind is ActionKind.OPEN and a.rule == "entropy_floor"]
    assert opened[0].step == expected
    assert opened[0].severity.value == "critical"
    assert result.stopped_at == expected
    assert "entropy_floor" in result.stop_rules


def test_toy_run_that_holds_both_modes_raises_no_entropy_alarm() -> None:
    cfg = ToyConfig(advantage="raw", optimizer="sgd", steps=300, iac=True, dlc=True)
    trace = _trace(cfg, seed=1)
    assert _first_sustained_below(trace, 0.10, 5) is None
    result = replay_detailed(trace, group_size=8)
    rules = {a.rule for a in result.actions if a.kind is ActionKind.OPEN}
    assert not rules & {"entropy_floor", "non_finite", "model_collapse_step"}
    assert result.stopped_at is None
