"""Our numbers in TRL's own loggers: a real GRPOTrainer run with ``report_to="tensorboard"`` writes
event files, read back with TensorBoard's own EventAccumulator: ``sharpwatch/*`` scalars at the
steps they belong to, equal to the service's record of that step and to values recomputed here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import TrainerCallback
from trl import GRPOTrainer

from tests._servers import ServerThread
from tests.trainer_hooks.integrations.test_trl import (
    G,
    _args,
    _dataset,
    _model,
    _tokenizer,
    _wait,
    digit_reward,
)
from trainer_hooks import p_star, watch
from trainer_hooks.integrations.trl import IACGRPOTrainer, SharpwatchCallback

pytestmark = [
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    pytest.mark.slow,
]


def _scalars(out_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the run's event files: tag -> {step: value}."""
    files = list(out_dir.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event files under {out_dir}"
    series: dict[str, dict[int, float]] = {}
    for directory in {f.parent for f in files}:
        acc = EventAccumulator(str(directory))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                series.setdefault(tag, {})[event.step] = event.value
    return series


def _tb_args(tmp_path: Path, max_steps: int) -> Any:
    args = _args(tmp_path, max_steps=max_steps)
    args.report_to = ["tensorboard"]
    return args


# entropy_floor with a floor no 15-token policy can reach opens an alert at the first step;
# nothing stops the run or changes α, so the run and its numbers stay the test's.
DETECTORS = {"entropy_floor": {"floor": 10.0, "window": 1}}
POLICY = {"auto_stop_rules": [], "auto_alpha": False}


def test_callback_puts_sharpwatch_scalars_in_tensorboard_at_their_steps(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    tokenizer = _tokenizer()
    calls: list[list[float]] = []

    def recorded_reward(completions: list[str], **kwargs: Any) -> list[float]:
        calls.append(digit_reward(completions))
        return calls[-1]

    class WaitForAlert(TrainerCallback):  # type: ignore[misc]
        """After step 2 the step-0 alert is open on the service: wait until the status has it,
        so step 3's log must carry open_alerts = 1 (no timing luck in the assertion)."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 2:
                assert callback.status is not None
                _wait(lambda: callback.status is not None and callback.status.open_alerts == 1)

    with watch(
        sqlite_server.url,
        name="trl-tensorboard",
        group_size=G,
        kl_beta=0.0,
        reference_beta=0.04,
        iac=False,
        detectors=DETECTORS,
        policy=POLICY,
    ) as run:
        callback = SharpwatchCallback(run)
        trainer = GRPOTrainer(
            model=_model(tokenizer),
            reward_funcs=[callback.reward_func(recorded_reward)],
            args=_tb_args(tmp_path, max_steps=3),
            train_dataset=_dataset(),
            processing_class=tokenizer,
            callbacks=[callback, WaitForAlert()],
        )
        callback.bind(trainer, status_interval=0.05)
        assert callback.status is not None
        _wait(lambda: callback.status is not None and callback.status.open_alerts == 0)
        trainer.train()
        assert run.run is not None
        run_id = run.run.id
    series = _scalars(tmp_path / "out")
    ours = {tag for tag in series if tag.startswith("train/sharpwatch/")}
    for name in ("entropy", "success_rate", "p_star", "alpha", "open_alerts"):
        assert f"train/sharpwatch/{name}" in ours, sorted(series)
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps").json()["items"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    # TensorBoard's step is TRL's global_step after the update; our record's step is the one
    # before it (0-based). Every logged step carries its own record's numbers.
    for tb_step, record in zip([1, 2, 3], steps, strict=True):
        metrics = record["metrics"]
        # Recomputed here from the rewards the reward function returned at that step.
        rewards = torch.tensor(calls[tb_step - 1])
        expected_success = float((rewards >= 0.5).double().mean())
        got = series["train/sharpwatch/success_rate"][tb_step]
        assert got == pytest.approx(expected_success, abs=1e-6)
        assert got == pytest.approx(metrics["success_rate"], abs=1e-6)
        assert series["train/sharpwatch/p_star"][tb_step] == pytest.approx(p_star(G), abs=1e-6)
        # Entropy is TRL's own, logged at the same step.
        assert series["train/sharpwatch/entropy"][tb_step] == pytest.approx(
            series["train/entropy"][tb_step], rel=1e-5
        )
        assert series["train/sharpwatch/entropy"][tb_step] == pytest.approx(
            metrics["entropy"], rel=1e-5
        )
        assert series["train/sharpwatch/alpha"][tb_step] == 1.0
    assert series["train/sharpwatch/open_alerts"][1] == 0.0
    assert series["train/sharpwatch/open_alerts"][3] == 1.0


def test_iac_trainer_logs_raw_and_calibrated_zprime(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    tokenizer = _tokenizer()
    with watch(
        sqlite_server.url,
        name="trl-iac-tensorboard",
        group_size=G,
        kl_beta=0.0,
        reference_beta=0.04,
        alpha=1.5,
        policy=POLICY,
    ) as run:
        trainer = IACGRPOTrainer(
            model=_model(tokenizer),
            reward_funcs=[digit_reward],
            args=_tb_args(tmp_path, max_steps=2),
            train_dataset=_dataset(),
            processing_class=tokenizer,
            sharpwatch=run,
        )
        trainer.train()
        assert run.run is not None
        run_id = run.run.id
    series = _scalars(tmp_path / "out")
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps").json()["items"]
    assert [s["step"] for s in steps] == [0, 1]
    for tb_step, record in zip([1, 2], steps, strict=True):
        metrics = record["metrics"]
        for name in ("log_zprime_raw_mean", "log_zprime_mean", "alpha", "entropy"):
            if metrics.get(name) is None:
                # Z'(q) is absent on a step whose answer keys never repeat (science.md §7):
                # then nothing is logged for it either
                assert name.startswith("log_zprime"), name
                assert tb_step not in series.get(f"train/sharpwatch/{name}", {}), name
                continue
            assert series[f"train/sharpwatch/{name}"][tb_step] == pytest.approx(
                metrics[name], rel=1e-5, abs=1e-6
            ), name
        assert series["train/sharpwatch/alpha"][tb_step] == 1.5


def test_bind_validates_its_trainer() -> None:
    from collections import defaultdict
    from types import SimpleNamespace

    from trainer_hooks import ConfigurationError

    def make() -> Any:
        return SimpleNamespace(
            _metrics={"train": defaultdict(list)},
            log=lambda logs, start_time=None: None,
            model=SimpleNamespace(training=True),
        )

    with watch(None, name="bind", group_size=G, kl_beta=0.1) as run:
        callback = SharpwatchCallback(run)
        trainer = make()
        assert callback.bind(trainer) is callback
        assert callback.bind(trainer) is callback  # idempotent
        assert callback.status is None  # no service: no open-alert reads
        with pytest.raises(ConfigurationError, match="already bound"):
            callback.bind(make())
        with pytest.raises(ConfigurationError, match="_metrics"):
            SharpwatchCallback(run).bind(SimpleNamespace(log=print))
        # Evaluation logs and the end-of-training summary are not training steps.
        wrapped = callback.reward_func(digit_reward)
        wrapped(completions=["1", "2", "3", "5"])
        trainer.log({"eval_loss": 1.0})
        trainer.log({"train_runtime": 3.0})
        assert dict(trainer._metrics["train"]) == {}
        trainer.state = SimpleNamespace(global_step=1)
        trainer.log({"loss": 0.5})
        assert trainer._metrics["train"]["sharpwatch/success_rate"] == [0.75]
        assert trainer._metrics["train"]["sharpwatch/p_star"] == [pytest.approx(p_star(G))]
