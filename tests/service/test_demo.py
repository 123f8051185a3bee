"""``sharpwatch demo`` for real: the in-process service, the two toy runs, and what the service
stored about them (read back through the REST API of a fresh service on the kept database)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.cli import build_parser
from service.demo import run_demo
from service.settings import Settings
from tests._servers import ServerThread


def test_demo_collapses_then_holds_and_the_service_stored_it(tmp_path: Path) -> None:
    out = io.StringIO()
    started = time.monotonic()
    report = run_demo(database=tmp_path / "demo.db", out=out)
    elapsed = time.monotonic() - started
    text = out.getvalue()
    assert elapsed < 120  # under a minute on an idle laptop; slack for a loaded CI runner
    collapsing, calibrated = report.runs
    assert "Where to look" in text
    assert f"{report.url}/metrics" in text

    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'demo.db'}"), registry=CollectorRegistry()
    )
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        # The collapsing configuration: entropy fell below the floor, the service stopped it.
        run = http.get(f"/api/v1/runs/{collapsing.run_id}").json()
        assert run["status"] == "stopped"
        alerts = http.get(f"/api/v1/runs/{collapsing.run_id}/alerts").json()["items"]
        assert "entropy_floor" in {a["rule"] for a in alerts}
        commands = http.get(f"/api/v1/runs/{collapsing.run_id}/commands/history").json()["items"]
        stops = [c for c in commands if c["kind"] == "early_stop"]
        assert len(stops) == 1
        assert stops[0]["status"] == "applied"
        steps = http.get(f"/api/v1/runs/{collapsing.run_id}/steps").json()["items"]
        assert len(steps) == collapsing.steps < 150  # it stopped early
        assert steps[-1]["metrics"]["entropy"] < 0.1
        assert "entropy_floor" in text
        assert "early_stop" in text

        # IAC + DLC: ran its whole budget, never collapsed, kept both correct answers.
        run = http.get(f"/api/v1/runs/{calibrated.run_id}").json()
        assert run["status"] == "finished"
        alerts = http.get(f"/api/v1/runs/{calibrated.run_id}/alerts").json()["items"]
        assert "entropy_floor" not in {a["rule"] for a in alerts}
        steps = http.get(f"/api/v1/runs/{calibrated.run_id}/steps").json()["items"]
        assert len(steps) == 150
        assert min(s["metrics"]["entropy"] for s in steps) > 0.2
        assert min(calibrated.correct_mass) > 0.05
        commands = http.get(f"/api/v1/runs/{calibrated.run_id}/commands/history").json()["items"]
        assert all(c["kind"] == "adjust_alpha" for c in commands)
        # The α the service asked for is the α the run trained with.
        applied = [c for c in commands if c["status"] == "applied"]
        for command in applied:
            at = http.get(f"/api/v1/runs/{calibrated.run_id}/steps/{command['applied_step']}")
            assert at.json()["metrics"]["alpha"] == command["alpha"]


def test_demo_is_a_cli_subcommand() -> None:
    args = build_parser().parse_args(["demo", "--seed", "3"])
    assert args.seed == 3
    assert callable(args.handler)


def test_importing_the_demo_does_not_import_torch() -> None:
    code = "import sys, service.demo, service.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
