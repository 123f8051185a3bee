"""A training loop streams 200 steps with per-query rows through the client to a real uvicorn
server; every step reads back exactly once with its values (SQLite and PostgreSQL)."""

from __future__ import annotations

import random

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from service.wire.query_shapes import query_rows
from tests._servers import ServerThread
from trainer_hooks import SharpwatchClient

STEPS = 200
QUERIES = 16
GROUP = 8


def _loop_record(step: int, rng: random.Random, shape: str) -> dict[str, object]:
    successes = [rng.randint(0, GROUP) for _ in range(QUERIES)]
    rows = [
        {"query_id": f"q{i}", "group_size": GROUP, "successes": s, "entropy": rng.random()}
        for i, s in enumerate(successes)
    ]
    return {
        "step": step,
        "metrics": {
            "entropy": rng.uniform(0.05, 1.5),
            "success_rate": sum(successes) / (GROUP * QUERIES),
            "degenerate_all_fail": sum(s == 0 for s in successes) / QUERIES,
            "degenerate_all_pass": sum(s == GROUP for s in successes) / QUERIES,
            "log_zprime_mean": rng.uniform(-0.5, 0.5),
            "my_extra": float(step),
        },
        # The hooks send columns (one list per field); a record may also carry rows.
        "queries": {k: [r[k] for r in rows] for k in rows[0]} if shape == "columns" else rows,
    }


@pytest.mark.parametrize("shape", ["rows", "columns"])
def test_two_hundred_steps_round_trip_exactly_once(database_url: str, shape: str) -> None:
    rng = random.Random(7)
    sent = [_loop_record(step, rng, shape) for step in range(STEPS)]
    app = create_app(Settings(database_url=database_url), registry=CollectorRegistry())
    with ServerThread(app) as server:
        with SharpwatchClient(server.url, batch_size=16, flush_interval=0.005) as client:
            run = client.register_run("e2e", group_size=GROUP, kl_beta=0.0)
            for record in sent:
                client.submit(record)
            assert client.flush(timeout=60)
            # A resumed trainer re-sends its last steps: duplicates, not new rows.
            for record in sent[-5:]:
                client.submit(record)
            assert client.flush(timeout=20)

        got = httpx.get(f"{server.url}/api/v1/runs/{run.id}/steps", params={"limit": 10000}).json()[
            "items"
        ]
        assert [s["step"] for s in got] == list(range(STEPS))
        for record, stored in zip(sent, got, strict=True):
            for name, value in record["metrics"].items():  # type: ignore[attr-defined]
                assert stored["metrics"][name] == pytest.approx(value), (record["step"], name)
            assert stored["n_queries"] == QUERIES

        history = httpx.get(f"{server.url}/api/v1/runs/{run.id}/queries/q3").json()["points"]
        assert [p["step"] for p in history] == list(range(STEPS))
        for record, point in zip(sent, history, strict=True):
            assert point["successes"] == query_rows(record["queries"])[3]["successes"]  # type: ignore[arg-type]
        detail = httpx.get(f"{server.url}/api/v1/runs/{run.id}/steps/123").json()
        assert len(detail["queries"]) == QUERIES
