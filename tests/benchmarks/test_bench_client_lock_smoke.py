"""``bench_hooks.py --lock-vs``, with two steps, so the benchmark code cannot rot."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _client_lock  # noqa: E402


def test_submit_and_lock_times_side_by_side() -> None:
    res = _client_lock.compare("HEAD", steps=2, block=1)
    for name in _client_lock.CONFIGS:
        for label in ("before", "after"):
            assert len(res[name][f"submit_{label}"]) == 2
            assert len(res[name][f"acquire_{label}"]) == 2
            assert all(0 < t < 60 for t in res[name][f"submit_{label}"])
            # the acquire is part of the submit it was timed in
            pairs = zip(res[name][f"acquire_{label}"], res[name][f"submit_{label}"], strict=True)
            assert all(0 <= a <= s for a, s in pairs)
            assert res[name][f"writer_hold_{label}"], "the writer placed the records under the lock"
