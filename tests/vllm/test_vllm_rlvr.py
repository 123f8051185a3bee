"""examples/vllm_rlvr.py for real: vLLM rollouts with DLC in the multi-process engine, the torch
trainer, weights loaded into vLLM every step, every step streamed to a real service; an operator's
adjust_alpha takes effect from the next step and an early_stop ends the loop."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._servers import ServerThread
from tests.vllm._venv import ROOT, vllm_python

# engine starts take about a minute each on a loaded 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MAX_STEPS = 500


def _wait(what: str, check: Any, proc: subprocess.Popen[str], log: Path, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(
                f"the loop exited ({proc.returncode}) before {what}:\n" + _tail(log)
            )
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n" + _tail(log))


def _tail(log: Path) -> str:
    lines = [ln for ln in log.read_text().splitlines() if not ln.startswith("WARNING: Location")]
    return "\n".join(lines[-40:])


def test_loop_obeys_adjust_alpha_from_the_next_step_and_stops_on_early_stop(
    sqlite_server: ServerThread, tmp_path: Path
) -> None:
    python = vllm_python()
    out, log = tmp_path / "curves.json", tmp_path / "loop.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    args = ["examples/vllm_rlvr.py", "--url", sqlite_server.url, "--steps", str(MAX_STEPS)]
    args += ["--observe-only", "--name", "vllm-rlvr-test", "--json", str(out)]
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [python, *args], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    try:
        with httpx.Client(base_url=sqlite_server.url, timeout=30) as http:

            def run_id() -> int | None:
                items = http.get("/api/v1/runs", params={"project": "vllm-rlvr"}).json()["items"]
                return int(items[0]["id"]) if items else None

            rid = _wait("the run to register", run_id, proc, log, 420)

            def stored_steps() -> list[dict[str, Any]]:
                body = http.get(f"/api/v1/runs/{rid}/steps", params={"limit": 10000})
                return list(body.json()["items"])

            _wait("three stored steps", lambda: len(stored_steps()) >= 3, proc, log, 300)
            created = http.post(
                f"/api/v1/runs/{rid}/commands",
                json={"kind": "adjust_alpha", "alpha": 0.25, "reason": "test: halve and more"},
            )
            assert created.status_code == 201, created.text

            def applied(kind: str) -> dict[str, Any] | None:
                items = http.get(
                    f"/api/v1/runs/{rid}/commands/history", params={"kind": kind}
                ).json()["items"]
                return items[0] if items and items[0]["status"] == "applied" else None

            alpha_cmd = _wait(
                "adjust_alpha applied", lambda: applied("adjust_alpha"), proc, log, 120
            )
            created = http.post(
                f"/api/v1/runs/{rid}/commands",
                json={"kind": "early_stop", "reason": "test: stop the loop"},
            )
            assert created.status_code == 201, created.text
            proc.wait(timeout=180)
            assert proc.returncode == 0, _tail(log)
            steps = stored_steps()
            stop_cmd = http.get(
                f"/api/v1/runs/{rid}/commands/history", params={"kind": "early_stop"}
            ).json()["items"][0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = json.loads(out.read_text())
    loop = result["loop"]
    # early_stop ended the loop long before its budget, at the step it was acknowledged with
    assert loop["stopped_at"] is not None
    assert loop["steps"] == loop["stopped_at"] + 1 < MAX_STEPS
    assert stop_cmd["status"] in {"applied", "delivered"}
    # adjust_alpha: α = 1 before the step it was applied at, 0.25 from that step on
    s = alpha_cmd["applied_step"]
    assert 1 <= s < loop["steps"]
    assert loop["alpha"] == [1.0] * s + [0.25] * (loop["steps"] - s)
    # the service stored every step, with the α the loop used and the rollout's Z'(q)
    assert [st["step"] for st in steps] == list(range(loop["steps"]))
    assert [st["metrics"]["alpha"] for st in steps] == loop["alpha"]
    assert result["service"]["alpha"] == loop["alpha"]
    assert all(st["metrics"]["entropy"] is not None for st in steps)
    assert any(st["metrics"]["log_zprime_mean"] is not None for st in steps)
