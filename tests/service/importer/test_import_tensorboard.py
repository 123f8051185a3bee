"""``sharpwatch import`` of event files written by TensorBoard's real SummaryWriter, against a real
service on SQLite and PostgreSQL: the collapse is reported where the stored curve crosses the
floor, the service's alerts equal a live replay of the same steps, a re-import adds nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.cli import main
from service.detectors import ActionKind, replay_detailed
from service.importer import map_run, read_logs, run_import
from tests._servers import ServerThread
from tests.service.importer._logs import FLOOR, expected_floor_step, write_summary_writer_run


def test_collapsing_run_reports_entropy_floor_where_the_curve_crosses(
    server: ServerThread, tmp_path: Path
) -> None:
    entropy = write_summary_writer_run(tmp_path / "runs" / "grpo-collapse", steps=60)
    crossing = expected_floor_step(entropy)
    assert crossing == 46  # below 0.10 from step 42; the window of 5 is full at 46

    (report,) = run_import([tmp_path / "runs"], url=server.url)

    assert report.name == "grpo-collapse"
    assert report.format == "tensorboard"
    assert (report.steps, report.accepted, report.duplicates) == (60, 60, 0)
    assert report.group_size == 4  # from the logged training arguments
    floor = report.first_alert("entropy_floor")
    assert floor is not None
    assert floor.first_step == crossing
    assert report.stop is not None
    assert (report.stop.step, report.stop.rules) == (crossing, ("entropy_floor",))
    last_healthy = max(s for s, v in enumerate(entropy) if v >= FLOOR)
    assert report.best_step == last_healthy == 41
    assert report.model_collapse_step is None
    assert "reward accuracy" in report.model_collapse_note
    assert report.mapped["train/entropy"] == "entropy"
    assert report.mapped["train/reward"] == "success_rate"
    assert report.mapped["train/frac_reward_zero_std"] == "frac_reward_zero_std"
    assert report.mapped["train/completions/mean_length"] == "response_length"
    not_run = {n.rule: n for n in report.not_run}
    assert set(not_run) == {
        "zprime_pressure",
        "model_collapse_step",
        "reward_accuracy_divergence",
        "rise_then_fall",
        "probe_decline",
        "repetition_collapse",
    }
    assert "Z'(q)" in not_run["zprime_pressure"].why
    assert report.link == f"{server.url}/#/runs/{report.run_id}"

    run = httpx.get(f"{server.url}/api/v1/runs/{report.run_id}").json()
    assert (run["source"], run["status"], run["project"]) == ("imported", "finished", "imported")
    steps = httpx.get(
        f"{server.url}/api/v1/runs/{report.run_id}/steps", params={"limit": 1000}
    ).json()["items"]
    assert [s["step"] for s in steps] == list(range(60))
    assert [s["metrics"]["entropy"] for s in steps] == entropy
    # The original wall times, as TensorBoard recorded them (one per step, non-decreasing).
    times = [s["time"] for s in steps]
    assert all(times)
    assert times == sorted(times)

    again = run_import([tmp_path / "runs"], url=server.url)[0]
    assert (again.run_id, again.accepted, again.duplicates) == (report.run_id, 0, 60)
    assert again.alerts == report.alerts


def test_the_service_decides_what_a_live_replay_of_the_same_steps_decides(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    write_summary_writer_run(tmp_path / "tb", steps=120)
    (logged,) = read_logs([tmp_path / "tb"])
    mapped = map_run(logged)
    live = replay_detailed(
        [{"step": s["step"], "metrics": s["metrics"]} for s in mapped.steps],
        group_size=4,
        stop_on_auto_stop=False,
    )
    (report,) = run_import([tmp_path / "tb"], url=sqlite_server.url)

    opened = sorted((a.rule, a.step) for a in live.actions if a.kind is ActionKind.OPEN)
    resolved = sorted((a.rule, a.step) for a in live.actions if a.kind is ActionKind.RESOLVE)
    assert opened, "the trace must open alerts for the comparison to mean anything"
    assert sorted((a.rule, a.first_step) for a in report.alerts) == opened
    assert sorted((a.rule, a.resolved_step) for a in report.alerts if a.resolved_step) == resolved
    assert report.stop is not None
    assert report.stop.step == live.stopped_at
    assert [d["step"] for d in report.alpha_changes] == [d.step for d in live.alpha_changes]


def test_cli_prints_the_report_and_marks_nothing_new_on_reimport(
    sqlite_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_summary_writer_run(tmp_path / "tb" / "old-run", steps=60)
    args = ["import", str(tmp_path / "tb"), "--url", sqlite_server.url, "--project", "history"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "old-run" in out
    assert "60 new, 0 already stored" in out
    assert "entropy_floor" in out
    assert "early_stop at step 46 on entropy_floor" in out
    assert "Best step to roll back to: 41" in out
    assert "zprime_pressure" in out
    assert "Detectors that could not run" in out
    assert "/#/runs/" in out
    assert main(args) == 0
    assert "0 new, 60 already stored" in capsys.readouterr().out


def test_cli_errors_name_the_problem(
    sqlite_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("hello\n")
    assert main(["import", str(odd), "--url", sqlite_server.url]) == 1
    assert "format not recognised" in capsys.readouterr().err
    write_summary_writer_run(tmp_path / "many" / "a", steps=3)
    write_summary_writer_run(tmp_path / "many" / "b", steps=3)
    assert main(["import", str(tmp_path / "many"), "--name", "x", "--url", sqlite_server.url]) == 1
    assert "--name names one run, but 2 were found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["import", str(odd), "--map", "reward"])
    assert exc.value.code == 2
    assert "THEIRS=OURS" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "many" / "a"), "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the service" in capsys.readouterr().err
