"""The α loop closed end to end (issue 13 item 3, science.md §7): the real Monitor measures a
policy whose sharpening responds to α, the real detector pipeline decides α, and the decision goes
back into the Monitor. Before the fix the controller raised α on the calibrated Z', which α itself
inflates, and every one of these runs climbed to alpha_max."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from service.detectors import Replayer, RunPolicy
from tests._alpha_plant import Plant, run_loop
from trainer_hooks import Monitor

ALPHA_MAX = RunPolicy().alpha_max
OVER_SHARPENING = 2.1  # the trainer's sharpening drive; 1.0 is what α = 1 holds in check


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # tiny tensors: thread fan-out costs more than it gains on a shared CI machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present)


def test_calibrated_zprime_grows_with_alpha_raw_does_not() -> None:
    """The feedback the controller must not act on: the same batch, measured at α = 0, 1, 2."""
    plant = Plant(seed=3)
    batch = plant.sample()
    raw, calibrated = [], []
    for alpha in (0.0, 1.0, 2.0):
        metrics = (
            Monitor(group_size=16, kl_beta=0.0, reference_beta=2.0, alpha=alpha).step(batch).metrics
        )
        raw.append(metrics["log_zprime_raw_mean"])
        calibrated.append(metrics["log_zprime_mean"])
    assert raw[0] == pytest.approx(raw[1])
    assert raw[1] == pytest.approx(raw[2])
    assert calibrated[0] == pytest.approx(raw[0])  # α = 0: no calibration
    assert calibrated[0] < calibrated[1] < calibrated[2]


def test_stationary_healthy_run_leaves_alpha_alone() -> None:
    trace = run_loop(300, lambda step: 1.0)
    assert trace.replayer.alpha_changes == []
    assert set(trace.alpha) == {1.0}
    # the trap: the calibrated share sits near 1 while the policy's own (raw) share is low
    assert _mean([m["zprime_gt1_frac"] for m in trace.metrics]) > 0.9
    assert _mean([m["zprime_raw_gt1_frac"] for m in trace.metrics]) < 0.3


def test_over_sharpening_raises_alpha_which_settles_below_alpha_max() -> None:
    trace = run_loop(400, lambda step: OVER_SHARPENING)
    changes = trace.replayer.alpha_changes
    assert changes
    assert changes[0].action.value == "raise"
    assert "zprime_pressure" in changes[0].triggers
    settled = trace.alpha[200:]
    assert len(set(settled)) == 1, "α still moving in the second half"
    assert 1.0 < settled[0] < ALPHA_MAX
    # it settled because the policy calmed, not because it hit a bound
    assert _mean([m["zprime_raw_gt1_frac"] for m in trace.metrics[200:]]) < 0.5
    for action in trace.replayer.actions:
        if action.rule == "zprime_pressure" and action.firing is not None:
            assert "zprime_raw_gt1_frac_mean" in action.firing.observed


def test_recovering_run_brings_alpha_back_down_to_its_baseline() -> None:
    trace = run_loop(400, lambda step: OVER_SHARPENING if step < 150 else 1.0)
    assert max(trace.alpha[:150]) >= 1.5
    assert trace.alpha[-100:] == [1.0] * 100
    relaxes = [c for c in trace.replayer.alpha_changes if c.step >= 150]
    assert relaxes
    assert all(c.action.value == "lower" for c in relaxes)
    assert all(c.new_alpha >= 1.0 for c in relaxes)  # never below the run's baseline
    assert "relaxing toward the baseline 1" in relaxes[-1].reason


def test_operator_pin_holds_alpha_until_released_then_the_controller_resumes() -> None:
    def operator(step: int, replayer: Replayer, monitor: Monitor) -> None:
        if step == 100:
            replayer.pin_alpha(0.5)
            monitor.set_alpha(0.5, reason="operator")
        if step == 250:
            replayer.release_alpha()

    trace = run_loop(350, lambda step: OVER_SHARPENING, operator=operator)
    # under pressure the whole time, yet the operator's 0.5 holds from step 101 to 250
    assert trace.alpha[101:251] == [0.5] * 150
    assert not [c for c in trace.replayer.alpha_changes if 100 <= c.step < 250]
    assert any(a.rule == "zprime_pressure" and 110 <= a.step < 250 for a in trace.replayer.actions)
    resumed = [c for c in trace.replayer.alpha_changes if c.step >= 250]
    assert resumed
    assert resumed[0].action.value == "raise"
    assert resumed[0].old_alpha == 0.5
    # the operator's value became the baseline the controller relaxes back to
    assert trace.replayer.state.alpha_baseline == 0.5
