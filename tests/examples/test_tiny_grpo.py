"""The tiny GRPO example for real, shortened: SFT, then the baseline and the IAC run from the same
checkpoint and seeds, both streamed to a real service. Asserted: the comparison is like for like,
the baseline's entropy falls, and the service stored both runs' curves and IAC's effect on Z'(q).
(Whether IAC delays collapse is measured by the full run in docs/tiny_grpo.md, not asserted.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import httpx
import pytest

from tests._servers import ServerThread

_PATH = Path(__file__).resolve().parents[2] / "examples" / "tiny_grpo.py"
_spec = importlib.util.spec_from_file_location("tiny_grpo", _PATH)
assert _spec is not None
assert _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
sys.modules["tiny_grpo"] = tiny
_spec.loader.exec_module(tiny)

pytestmark = pytest.mark.slow
STEPS = 30


def test_tiny_grpo_baseline_and_iac_stream_to_the_service(sqlite_server: ServerThread) -> None:
    cfg = tiny.TinyConfig(sft_steps=100, steps=STEPS, prompts_per_step=8, seed=0)
    lines: list[str] = []
    results = tiny.experiment(cfg, url=sqlite_server.url, log=lines.append)
    base, iac = results["baseline"], results["iac"]

    # Like for like: the same checkpoint and sampling seed give the same first step.
    assert base.entropy[0] == pytest.approx(iac.entropy[0])
    assert base.success_rate[0] == pytest.approx(iac.success_rate[0])
    assert len(base.entropy) == len(iac.entropy) == STEPS
    assert not any("refused" in line for line in lines)
    # GRPO sharpens: the baseline's entropy falls well below where it started.
    start, end = sum(base.entropy[:5]) / 5, sum(base.entropy[-5:]) / 5
    assert end < 0.7 * start, (start, end)
    assert sum(base.success_rate[-5:]) / 5 > sum(base.success_rate[:5]) / 5

    with httpx.Client(base_url=sqlite_server.url) as http:
        runs = {r["name"]: r for r in http.get("/api/v1/runs").json()["items"]}
        assert set(runs) == {"tiny-grpo-baseline-seed0", "tiny-grpo-iac-seed0"}
        stored = {}
        for name, curves in (("baseline", base), ("iac", iac)):
            run_id = runs[f"tiny-grpo-{name}-seed0"]["id"]
            assert run_id == curves.run_id
            steps = http.get(f"/api/v1/runs/{run_id}/steps").json()["steps"]
            assert [s["step"] for s in steps] == list(range(STEPS))
            assert [s["metrics"]["entropy"] for s in steps] == pytest.approx(curves.entropy)
            stored[name] = steps
            assert runs[f"tiny-grpo-{name}-seed0"]["status"] == "finished"
    assert {s["metrics"]["iac"] for s in stored["baseline"]} == {0.0}
    assert {s["metrics"]["iac"] for s in stored["iac"]} == {1.0}
    # IAC changed the advantages the update used (Z'(q) from them differs from the raw one).
    assert any(
        s["metrics"]["log_zprime_mean"] != pytest.approx(s["metrics"]["log_zprime_raw_mean"])
        for s in stored["iac"]
    )
    assert all(
        s["metrics"]["log_zprime_mean"] == pytest.approx(s["metrics"]["log_zprime_raw_mean"])
        for s in stored["baseline"]
    )
