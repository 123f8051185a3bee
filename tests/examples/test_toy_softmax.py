"""examples/toy_softmax.py: its command line, the ordering counts it computes, and the docs that
quote them (science.md §6, issue 13 item 7).

The counts are computed by code (``evaluate``), written to ``toy_orderings.json``, and rendered to
the markdown table docs/science.md §6 carries; these tests check that machinery against a
from-scratch count on real runs, check that the committed docs are that rendering of the committed
summary, and recompute some committed rows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_PATH = ROOT / "examples" / "toy_softmax.py"
_spec = importlib.util.spec_from_file_location("toy_softmax", _PATH)
assert _spec is not None
assert _spec.loader is not None
toy = importlib.util.module_from_spec(_spec)
sys.modules["toy_softmax"] = toy
_spec.loader.exec_module(toy)

COMMITTED = ROOT / "docs" / "img"
SCIENCE = ROOT / "docs" / "science.md"
README = ROOT / "README.md"


def _script(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(_PATH), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def _committed_mtimes() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in COMMITTED.iterdir()}


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def test_help_prints_help_and_runs_nothing(tmp_path: Path) -> None:
    before = _committed_mtimes()
    start = time.monotonic()
    proc = _script(tmp_path, "--help")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    for flag in ("--out", "--seeds", "--steps"):
        assert flag in proc.stdout
    assert _tree(tmp_path) == set()  # nothing written where it ran (docs/img included)
    assert _committed_mtimes() == before
    assert elapsed < 60  # imports only; a 6-seed sweep takes minutes


def test_out_is_required(tmp_path: Path) -> None:
    proc = _script(tmp_path)
    assert proc.returncode == 2
    assert "--out" in proc.stderr
    assert _tree(tmp_path) == set()


@pytest.mark.parametrize(
    ("args", "name"), [(["--seeds", "0"], "--seeds"), (["--steps", "0"], "--steps")]
)
def test_bad_counts_are_refused(tmp_path: Path, args: list[str], name: str) -> None:
    proc = _script(tmp_path, "--out", "out", *args)
    assert proc.returncode == 2
    assert name in proc.stderr
    assert _tree(tmp_path) == set()


@pytest.mark.slow
def test_small_run_writes_only_into_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = _committed_mtimes()
    threads = torch.get_num_threads()
    written = toy.main(["--out", "run/out", "--seeds", "2", "--steps", "12"])
    assert torch.get_num_threads() == threads  # the script's one-thread setting is undone
    expected = {toy.SUMMARY_JSON, toy.SUMMARY_MD, *toy.FIGURES}
    assert {p.name for p in written} == expected
    assert _tree(tmp_path) == {"run", "run/out"} | {f"run/out/{n}" for n in expected}
    assert _committed_mtimes() == before
    for name in toy.FIGURES:
        assert (tmp_path / "run" / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "run/out" / toy.SUMMARY_JSON).read_text())
    _check_structure(summary, seeds=2, steps=12)
    assert (tmp_path / "run/out" / toy.SUMMARY_MD).read_text() == toy.render_markdown(summary)


# ---------------------------------------------------------------------------------------------
# the counts
# ---------------------------------------------------------------------------------------------


def _pairs(check: object) -> int:
    return len(check.a)  # type: ignore[attr-defined]


def _check_structure(summary: dict, seeds: int, steps: int) -> None:  # type: ignore[type-arg]
    assert summary["seeds"] == list(range(seeds))
    assert summary["steps"] == steps
    keys = [o.key for o in toy.ORDERINGS]
    assert [r["key"] for r in summary["orderings"]] == keys
    assert summary["orderings_total"] == len(keys)
    reproduced = 0
    for row, ordering in zip(summary["orderings"], toy.ORDERINGS, strict=True):
        assert row["source"] == ordering.source
        checks = (ordering.faithful, *ordering.variants)
        assert [c["label"] for c in row["checks"]] == [c.label for c in checks]
        assert [c["faithful"] for c in row["checks"]] == [True] + [False] * len(ordering.variants)
        for c, check in zip(row["checks"], checks, strict=True):
            assert c["of"] == _pairs(check) * seeds
            assert 0 <= c["held"] <= c["of"]
            assert c["verdict"] == toy.verdict(c["held"], c["of"])
        reproduced += row["checks"][0]["verdict"] == "reproduced"
    assert summary["reproduced"] == reproduced


def test_verdict_rule() -> None:
    assert toy.verdict(6, 6) == "reproduced"
    assert toy.verdict(5, 6) == "reproduced"
    assert toy.verdict(4, 6) == "mixed"
    assert toy.verdict(3, 6) == "not reproduced"
    assert toy.verdict(0, 6) == "not reproduced"
    assert toy.verdict(15, 18) == "reproduced"
    assert toy.verdict(14, 18) == "mixed"
    with pytest.raises(ValueError, match="of"):
        toy.verdict(0, 0)


def test_counts_match_a_count_by_hand_on_real_runs() -> None:
    """``Check.count`` against a direct per-seed comparison of freshly run results."""
    seeds, steps = (0, 1, 2), 40
    runs = toy.Runs(seeds, steps)
    fast = toy.ToyConfig(optimizer="adamw", steps=steps)
    slow = toy.ToyConfig(steps=steps)
    ra = [toy.run_toy(fast, s) for s in seeds]
    rb = [toy.run_toy(slow, s) for s in seeds]

    def minority(r: object) -> float:
        cat, per = float(r.probs[-1, 0]), float(r.probs[-1, 1])  # type: ignore[attr-defined]
        return min(cat, per) / (cat + per)

    by_hand = sum(a.collapse_step < b.collapse_step for a, b in zip(ra, rb, strict=True))
    assert toy.Check("x", "faster", (fast,), (slow,)).count(runs) == (by_hand, 3)
    by_hand = sum(minority(a) < minority(b) for a, b in zip(ra, rb, strict=True))
    assert toy.Check("x", "faster", (fast,), (slow,), "minority").count(runs) == (by_hand, 3)
    collapsed = sum(a.collapse_step <= 20 for a in ra)
    assert toy.Check("x", "collapses", (fast,), within=20).count(runs) == (collapsed, 3)
    # ``within`` beyond the run's length is the run's length: a censored run never counts
    assert toy.Check("x", "collapses", (slow,), within=10**6).count(runs) == (
        sum(b.collapse_step <= steps for b in rb),
        3,
    )
    held = sum(a.collapse_step > steps for a in ra)
    assert toy.Check("x", "holds", (fast,)).count(runs) == (held, 3)


def test_check_validates_its_pairs() -> None:
    with pytest.raises(ValueError, match="b"):
        toy.Check("x", "faster", (toy.ToyConfig(),))
    with pytest.raises(ValueError, match="seeds"):
        toy.Runs([], 10)
    with pytest.raises(ValueError, match="steps"):
        toy.Runs([0], 0)


def test_markdown_escapes_pipes_and_carries_every_count() -> None:
    summary = json.loads((COMMITTED / toy.SUMMARY_JSON).read_text())
    md = toy.render_markdown(summary)
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + len(summary["orderings"])
    for line, row in zip(table[1:], summary["orderings"], strict=True):
        cells = line.replace("\\|", "¦").split("|")[1:-1]
        assert len(cells) == 6
        f = row["checks"][0]
        assert cells[3].strip() == f"{f['held']}/{f['of']}"
        assert cells[4].strip() == f["verdict"]
        for v in row["checks"][1:]:
            assert f"{v['held']}/{v['of']} {v['verdict']}" in cells[5]


# ---------------------------------------------------------------------------------------------
# the committed summary, the docs and the figures quote it
# ---------------------------------------------------------------------------------------------


def test_committed_summary_is_six_seeds_of_the_full_experiment() -> None:
    summary = json.loads((COMMITTED / toy.SUMMARY_JSON).read_text())
    _check_structure(summary, seeds=6, steps=500)
    assert (COMMITTED / toy.SUMMARY_MD).read_text() == toy.render_markdown(summary)


def test_science_md_carries_the_generated_table() -> None:
    summary = json.loads((COMMITTED / toy.SUMMARY_JSON).read_text())
    text = SCIENCE.read_text()
    assert toy.render_markdown(summary) in text
    assert "Expected:" not in text  # orderings are reported as measured, not as expected


def test_readme_quotes_the_headline_and_no_longer_claims_reproduction() -> None:
    summary = json.loads((COMMITTED / toy.SUMMARY_JSON).read_text())
    text = README.read_text()
    assert toy.headline(summary) in text
    assert "reproduces the toy experiment" not in text


def test_figure_titles_carry_the_counts() -> None:
    summary = json.loads((COMMITTED / toy.SUMMARY_JSON).read_text())
    titles = toy.figure_titles(summary)
    assert set(titles) == set(toy.FIGURES)
    shown = {
        "toy_fig1_advantages.png": (
            "all_collapse",
            "raw_before_mean_shifted",
            "mean_shifted_before_normalized",
            "larger_g_delays_collapse",
        ),
        "toy_fig2_coupling.png": ("larger_g_speeds_siamese_fall", "similarity_speeds_siamese_fall"),
        "toy_fig4_optimizers.png": ("momentum_before_sgd", "adamw_before_sgd"),
        "toy_fig5_calibration.png": (
            "iac_delays_sgd",
            "iac_delays_adamw",
            "iac_dlc_holds_sgd",
            "iac_dlc_holds_adamw",
        ),
    }
    rows = {r["key"]: r["checks"][0] for r in summary["orderings"]}
    for name, keys in shown.items():
        for key in keys:
            assert f"{rows[key]['held']}/{rows[key]['of']}" in titles[name], (name, key)
    assert (
        "IAC delays collapse, IAC + DLC holds both modes" not in titles["toy_fig5_calibration.png"]
    )


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The script's own setting (4×4 matrices): threads only add overhead on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(("momentum_before_sgd", "adamw_before_sgd"), id="figure4"),
        pytest.param(("iac_dlc_holds_sgd", "iac_dlc_holds_adamw"), id="figure5-iac-dlc"),
    ],
)
def test_committed_rows_recompute(keys: tuple[str, ...], one_thread: None) -> None:
    """Rows of the committed summary, recomputed from scratch at its seeds and steps (Figure 4:
    18 runs of 500 steps; Figure 5's IAC + DLC rows, AdamW lr 0.03 variant included: 18 runs)."""
    summary = json.loads((COMMITTED / toy.SUMMARY_JSON).read_text())
    runs = toy.Runs(summary["seeds"], summary["steps"])
    fresh = toy.evaluate(runs, [o for o in toy.ORDERINGS if o.key in keys])
    committed = {r["key"]: r for r in summary["orderings"] if r["key"] in keys}
    for row in fresh["orderings"]:
        assert row["checks"] == committed[row["key"]]["checks"]
