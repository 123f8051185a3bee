"""The sharpwatch half of the side-by-side ingest benchmark, with tiny sizes, so the benchmark
code cannot rot (the peers need their own virtual environment and are not run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._servers import ServerThread

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _workload  # noqa: E402
import bench_peers  # noqa: E402


def test_workload_counts_values_as_documented() -> None:
    record = _workload.step_record(3, queries=5)
    assert _workload.count_values(record) == _workload.values_per_step(5) == 20 + 8 * 5
    metrics = _workload.mlflow_metrics(record, timestamp_ms=0)
    assert len(metrics) == _workload.count_values(record)
    assert all(m["step"] == 3 for m in metrics)
    assert _workload.step_record(3, 5) == record  # deterministic


@pytest.mark.parametrize("batch", [1, 3])
def test_sharpwatch_ingest_benchmark_runs(server: ServerThread, batch: int) -> None:
    seconds, values, requests = bench_peers.ingest_sharpwatch(
        server.url, steps=5, queries=4, batch=batch
    )
    assert seconds > 0
    assert values == 5 * _workload.values_per_step(4)
    assert requests == -(-5 // batch)


def test_latency_benchmark_runs(server: ServerThread) -> None:
    result = bench_peers.bench_latency(server.url, samples=2, setup="smoke")
    assert len(result.from_send_ms) == 2
    assert all(0 < ms < 10_000 for ms in result.from_send_ms)


def test_import_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_import.py"), "--steps", "30"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    rows = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| verl") or line.startswith("| tensorboard")
    ]
    assert len(rows) == 2, result.stdout
    assert "| 900 |" in rows[0]  # 30 steps × 30 veRL metrics
    assert "| 240 |" in rows[1]  # 30 steps × 8 TensorBoard scalars


def test_gpu_check_dry_run_on_cpu(tmp_path: Path) -> None:
    """The GPU check passes a dry run without CUDA: every section runs its CPU fallback, says so,
    and the results file holds the figures."""
    import json

    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "gpu_check.py"),
            "--out",
            str(out),
            "--quick",
            "--skip",
            "cuda_tests",
            "tiny_grpo",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "CUDA is absent: running the CPU fallbacks" in result.stderr
    data = json.loads(out.read_text())
    assert data["environment"]["cuda_available"] is False
    step = data["monitor_step"]
    assert step["fallback"] is True
    assert step["host_syncs_per_step"] == 1
    assert step["median_ms"] > 0
    entropy = data["entropy_bandwidth"]
    assert entropy["shape"][-1] == 152064
    assert entropy["share_of_copy"] > 0
