"""``bench_hooks.py --trainer-vs``, with one step, so the benchmark code cannot rot."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _trainer_ab  # noqa: E402


def test_two_trees_step_side_by_side() -> None:
    res = _trainer_ab.compare("HEAD", steps=2, gap=0.0, threads=1)
    for name in _trainer_ab.CONFIGS:
        for key in ("before", "after", "cpu_before", "cpu_after"):
            assert len(res[name][key]) == 2
            assert all(t > 0 for t in res[name][key])


def test_writer_thread_record_cost_side_by_side() -> None:
    res = _trainer_ab.compare_record("HEAD", repeats=2)
    for name in _trainer_ab.CONFIGS:
        for key in ("before", "after", "cpu_before", "cpu_after", "bytes_before", "bytes_after"):
            assert len(res[name][key]) == 2
            assert all(t > 0 for t in res[name][key])
        assert len(set(res[name]["bytes_after"])) == 1  # the same record every time


def test_section_costs_name_every_section() -> None:
    import trainer_hooks._sections as sections_mod

    times = _trainer_ab.sections(1)
    names = {s.__name__ for s in sections_mod.SECTIONS}
    assert names <= set(times)
    assert "one device-to-host copy (to_host)" in times
    assert sections_mod.SECTIONS[0].__name__ == "group_section"  # restored afterwards
    assert all(len(v) == 1 for v in times.values())
