"""``sharpwatch demo`` for real: the in-process service, the two toy runs, and what the service
stored about them (read back through the REST API of a fresh service on the kept database)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.cli import build_parser
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.demo import run_demo
from service.settings import Settings
from tests._servers import ServerThread


def test_demo_feeds_the_running_service_and_its_links_stay_live(tmp_path: Path) -> None:
    """The README's walk-through: `sharpwatch serve` in one terminal, `sharpwatch demo` in
    another. The runs land in the running service; every link the demo prints still answers
    after the demo has exited."""
    out = io.StringIO()
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    engine = make_engine(url)
    upgrade(engine)  # as `sharpwatch serve` does before it serves
    engine.dispose()
    app = create_app(Settings(database_url=url), registry=CollectorRegistry())
    with ServerThread(app) as server, httpx.Client(base_url=server.url) as http:
        started = time.monotonic()
        report = run_demo(url=server.url, out=out)
        elapsed = time.monotonic() - started
        text = out.getvalue()
        assert text.splitlines()[0].startswith(
            f"sharpwatch demo: streaming two toy runs to the service at {server.url}"
        )
        assert elapsed < 120  # under a minute on an idle laptop; slack for a loaded CI runner
        assert report.url == server.url
        collapsing, calibrated = report.runs
        assert "Where to look" in text
        where = text.split("Where to look", 1)[1]
        links = [u for u in re.findall(r"(http://\S+)", where) if u.startswith(server.url)]
        assert len(links) >= 10
        assert f"{server.url}/#/runs/{collapsing.run_id}" in links
        for link in links:
            assert httpx.get(link.split("#")[0]).status_code == 200, link
        listed = {run["id"] for run in http.get("/api/v1/runs").json()["items"]}
        assert {collapsing.run_id, calibrated.run_id} <= listed

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
    args = build_parser().parse_args(["demo", "--seed", "3", "--url", "http://127.0.0.1:9"])
    assert args.seed == 3
    assert args.url == "http://127.0.0.1:9"
    assert callable(args.handler)


def test_demo_without_a_running_service_says_what_to_do() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "demo", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no sharpwatch service answers at http://127.0.0.1:9" in result.stderr
    assert "sharpwatch serve" in result.stderr
    assert "--serve" in result.stderr


def test_demo_serve_keeps_its_own_service_up_after_the_runs(tmp_path: Path) -> None:
    """`--serve`: the demo's own service stays up, with the runs, until it is told to stop."""
    out = io.StringIO()
    seen: dict[str, int] = {}

    def browse_then_quit() -> None:  # stands in for the person browsing until Ctrl-C
        url = out.getvalue().splitlines()[0].split("own service on ")[1].split(" ")[0]
        runs = httpx.get(f"{url}/api/v1/runs").json()["items"]
        seen["runs"] = len(runs)
        seen["page"] = httpx.get(f"{url}/").status_code
        seen["thread"] = threading.active_count()

    report = run_demo(
        serve=True, port=0, database=tmp_path / "own.db", out=out, wait_forever=browse_then_quit
    )
    assert seen["runs"] == 2
    assert seen["page"] == 200
    assert (tmp_path / "own.db").exists()
    assert report.database == str(tmp_path / "own.db")
    assert "keeps serving after the runs" in out.getvalue().splitlines()[0]


def test_importing_the_demo_does_not_import_torch() -> None:
    code = "import sys, service.demo, service.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
