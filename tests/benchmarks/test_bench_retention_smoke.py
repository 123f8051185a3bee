"""``benchmarks/bench_retention.py`` runs end to end at a tiny size (its figures are in
docs/benchmarks.md; nothing here is timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_retention_runs_and_collects(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_retention.py"), "--backend", "sqlite",
         "--checkpoints", "2000", "--probe-steps", "20", "--probe-queries", "8",
         "--filler-steps", "10", "--queries", "64", "--full-steps", "5", "--keep-every", "2",
         "--repeat", "1"],
        capture_output=True, text=True, timeout=300, check=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "BENCH_TMP": str(tmp_path)},
    )  # fmt: skip
    checkpoint, collected = (json.loads(line) for line in out.stdout.strip().splitlines())
    # probe 20 × 8 = 160 rows, fillers of 10 steps × 64 until ≥ 2000: 160 + 29 × 64 = 2016.
    assert checkpoint["rows"] == 2016
    assert checkpoint["bytes"] > 0
    assert set(checkpoint["reads_ms"]) == {
        "query history", "step series (1000 steps)", "step detail", "page first load"
    }  # fmt: skip
    # Fillers: 10 + 10 + 9 steps (last step 9, 9, 8): steps ≤ 4 (≤ 3 for the last) that are odd go.
    assert collected["rows_deleted"] == (2 + 2 + 2) * 64
    assert collected["rows"] == 2016 - 6 * 64
