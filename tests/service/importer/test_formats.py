"""W&B CSV exports, veRL file-logger lines and trainer_state.json: reading, format detection,
and a real import of each into a running service."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from service.importer import LogReadError, detect_format, read_logs, run_import
from tests._servers import ServerThread
from tests.service.importer._logs import (
    collapsing_entropy,
    expected_floor_step,
    write_summary_writer_run,
    write_verl_lines,
    write_wandb_chart_csv,
)


def test_wandb_chart_exports_merge_by_run_across_files(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    entropy = collapsing_entropy(60)
    healthy = dict.fromkeys(range(0, 60, 2), 0.5)  # a second run, logged every other step
    write_wandb_chart_csv(
        tmp_path / "entropy.csv",
        {"grpo-a": dict(enumerate(entropy)), "grpo-b": healthy},
        "train/entropy",
    )
    write_wandb_chart_csv(
        tmp_path / "reward.csv",
        {"grpo-a": dict.fromkeys(range(60), 0.4), "grpo-b": dict.fromkeys(range(0, 60, 2), 0.6)},
        "train/reward",
    )
    assert detect_format(tmp_path / "entropy.csv") == "wandb-csv"
    runs = {r.name: r for r in read_logs([tmp_path / "entropy.csv", tmp_path / "reward.csv"])}
    assert set(runs) == {"grpo-a", "grpo-b"}
    assert runs["grpo-a"].values[7] == {"train/entropy": entropy[7], "train/reward": 0.4}
    assert sorted(runs["grpo-b"].values) == list(range(0, 60, 2))  # empty cells are absent
    assert len(runs["grpo-a"].paths) == 2

    reports = {
        r.name: r
        for r in run_import(
            [tmp_path / "entropy.csv", tmp_path / "reward.csv"], url=sqlite_server.url
        )
    }
    collapsed = reports["grpo-a"].first_alert("entropy_floor")
    assert collapsed is not None
    assert collapsed.first_step == expected_floor_step(entropy)
    assert reports["grpo-b"].first_alert("entropy_floor") is None
    assert reports["grpo-b"].steps == 30
    assert reports["grpo-a"].group_size == 8  # not in a W&B chart: the default, said so
    assert "assumed" in reports["grpo-a"].group_size_source


def test_wandb_history_csv_keeps_step_times(sqlite_server: ServerThread, tmp_path: Path) -> None:
    path = tmp_path / "grpo-history.csv"
    start = 1_780_000_000.0
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "_step", "_runtime", "_timestamp", "actor/entropy", "note"])
        for step in range(12):
            writer.writerow([step, step, step * 3.0, start + 3.0 * step, 0.5, "x"])
    assert detect_format(path) == "wandb-csv"
    (report,) = run_import([path], url=sqlite_server.url, group_size=16)
    assert (report.name, report.group_size, report.steps) == ("grpo-history", 16, 12)
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{report.run_id}/steps").json()["items"]
    first = datetime.fromisoformat(steps[0]["time"].replace("Z", "+00:00"))
    assert first == datetime.fromtimestamp(start, tz=UTC)
    assert steps[11]["metrics"]["entropy"] == 0.5
    assert "note" not in steps[0]["metrics"]  # text columns are not metrics


def test_verl_file_logger_lines(sqlite_server: ServerThread, tmp_path: Path) -> None:
    entropy = collapsing_entropy(30)
    records = []
    for step in range(1, 31):
        data = {
            "actor/entropy": entropy[step - 1],
            "critic/score/mean": 0.5,
            "response_length/mean": 100.0,
            "actor/kl_loss": 0.01,
            "actor/pg_loss": -0.02,
            "actor/grad_norm": None if step == 25 else 1.0,  # orjson's NaN
            "timing_s/gen": 3.5,
            "training/global_step": step,
        }
        records.append((step, data))
        if step % 10 == 0:  # validation in a line of its own, same step
            records.append((step, {"val-core/openai/gsm8k/reward/mean@1": 0.7}))
    path = tmp_path / "qwen-grpo.jsonl"
    write_verl_lines(path, records)
    assert detect_format(path) == "verl-jsonl"
    (report,) = run_import([path], url=sqlite_server.url, group_size=5)
    assert report.format == "verl-jsonl"
    assert report.mapped == {
        "actor/entropy": "entropy",
        "critic/score/mean": "success_rate",
        "response_length/mean": "response_length",
        "actor/kl_loss": "kl",
        "actor/pg_loss": "loss",
        "actor/grad_norm": "grad_norm",
    }
    nan_alert = report.first_alert("non_finite")
    assert nan_alert is not None
    assert nan_alert.first_step == 25
    assert report.stop is not None
    assert report.stop.step == 25  # non_finite stops before entropy reaches its floor
    steps = httpx.get(
        f"{sqlite_server.url}/api/v1/runs/{report.run_id}/steps", params={"limit": 100}
    ).json()["items"]
    by_step = {s["step"]: s for s in steps}
    assert by_step[10]["metrics"]["val-core/openai/gsm8k/reward/mean_1"] == 0.7
    assert by_step[10]["metrics"]["entropy"] == entropy[9]
    assert by_step[25]["non_finite"] == ["grad_norm"]
    assert by_step[25]["metrics"].get("grad_norm") is None


def test_trainer_state_log_history(sqlite_server: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "grpo-out" / "checkpoint-20"
    out.mkdir(parents=True)
    history: list[dict[str, object]] = []
    for step in range(1, 21):
        history.append(
            {
                "step": step,
                "epoch": step / 20,
                "entropy": 0.4,
                "reward": 2.5,  # a graded reward: not a success rate
                "frac_reward_zero_std": 0.75,
                "loss": 0.1,
            }
        )
        if step % 5 == 0:
            history.append({"step": step, "epoch": step / 20, "eval_reward": 0.3})
    history.append({"step": 20, "train_runtime": 12.0, "train_loss": 0.1, "total_flos": 0.0})
    (out / "trainer_state.json").write_text(json.dumps({"global_step": 20, "log_history": history}))
    assert detect_format(out.parent) == "trl-state"
    (logged,) = read_logs([out.parent])
    assert logged.name == "grpo-out"
    assert logged.values[20] == {
        "entropy": 0.4,
        "reward": 2.5,
        "frac_reward_zero_std": 0.75,
        "loss": 0.1,
        "eval_reward": 0.3,
    }
    (report,) = run_import([out.parent], url=sqlite_server.url, group_size=4)
    assert "reward" not in report.mapped
    assert any("reward has values outside [0, 1]" in note for note in report.notes)
    degenerate = report.first_alert("degenerate_groups")
    assert degenerate is not None
    assert degenerate.first_step == 5  # window of 5 observations at 0.75 > 0.5
    assert "signal_starvation" in {n.rule for n in report.not_run}


def test_detection_and_unreadable_files(tmp_path: Path) -> None:
    write_summary_writer_run(tmp_path / "tb", steps=2)
    assert detect_format(tmp_path / "tb") == "tensorboard"
    event_file = next((tmp_path / "tb").iterdir())
    assert detect_format(event_file) == "tensorboard"
    bad_csv = tmp_path / "table.csv"
    bad_csv.write_text("a,b\n1,2\n")
    with pytest.raises(LogReadError, match="format not recognised"):
        detect_format(bad_csv)
    with pytest.raises(LogReadError, match="not a W&B export"):
        read_logs([bad_csv], "wandb-csv")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"step": 1, "data": {"x": 1}}\n{"step": "two"}\n')
    assert detect_format(broken) == "verl-jsonl"
    with pytest.raises(LogReadError, match=r"broken.jsonl:2: not a veRL file-logger line"):
        read_logs([broken])
    with pytest.raises(LogReadError, match="no such file"):
        read_logs([tmp_path / "missing"])
    assert math.isnan(float("nan"))  # the NaN sentinel used by readers is a float NaN


DATA = Path(__file__).resolve().parent / "data"


def test_a_file_written_by_verls_own_file_logger(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    """``data/verl_file_logger.jsonl`` was written by veRL 0.9.1's ``Tracking`` (backend
    ``file``; ``data/make_verl_file_log.py`` says how to write it again)."""
    path = DATA / "verl_file_logger.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    entropy = {rec["step"]: rec["data"]["actor/entropy"] for rec in lines if rec["step"] > 0}
    steps = sorted(entropy)
    crossing = steps[expected_floor_step([entropy[s] for s in steps])]
    assert crossing == 47  # below 0.10 from step 43; the window of 5 is full at 47

    assert detect_format(path) == "verl-jsonl"
    (report,) = run_import([path], url=sqlite_server.url, group_size=5)
    assert report.name == "verl_file_logger"
    assert report.steps == 61  # step 0 holds the first validation only
    floor = report.first_alert("entropy_floor")
    assert floor is not None
    assert floor.first_step == crossing
    assert report.stop is not None
    assert report.stop.step == crossing
    nan = report.first_alert("non_finite")
    assert nan is not None
    assert nan.first_step == 50  # orjson wrote veRL's NaN grad norm as null
    assert report.best_step == 42  # the last step with entropy at or above the floor
    assert "degenerate_groups" in {n.rule for n in report.not_run}  # veRL logs no such share
