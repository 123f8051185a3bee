"""``runs.alpha`` has one writer, the trainer's ack of an adjust_alpha (issue 15). A run that has
acknowledged none shows the α its newest step reports, in every read that shows a run's α."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Run
from tests.service._helpers import run_body, step_record


def _stored_alpha(session_factory: sessionmaker[Session], run_id: int) -> float | None:
    with session_factory() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run.alpha


def _shown(client: TestClient, run_id: int) -> list[float | None]:
    runs = client.get("/api/v1/runs").json()["items"]
    return [
        client.get(f"/api/v1/runs/{run_id}").json()["alpha"],
        next(r["alpha"] for r in runs if r["id"] == run_id),
        client.get(f"/api/v1/runs/{run_id}/collapse").json()["alpha"],
    ]


def test_steps_are_shown_as_the_alpha_but_only_the_ack_stores_it(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    run_id = client.post("/api/v1/runs", json=run_body("one-writer")).json()["id"]
    assert _shown(client, run_id) == [None, None, None]
    steps = [step_record(s, alpha=0.7) for s in range(3)]
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": steps}).status_code == 200
    assert _shown(client, run_id) == [0.7, 0.7, 0.7]
    assert _stored_alpha(session_factory, run_id) is None  # ingest does not write runs.alpha

    path = f"/api/v1/runs/{run_id}/commands"
    command = client.post(path, json={"kind": "adjust_alpha", "alpha": 1.5, "reason": "r"}).json()
    ack = client.post(f"{path}/{command['id']}/ack", json={"status": "applied", "step": 3})
    assert ack.status_code == 200, ack.text
    assert _stored_alpha(session_factory, run_id) == 1.5
    assert _shown(client, run_id) == [1.5, 1.5, 1.5]
    later = [step_record(s, alpha=1.5) for s in (3, 4)]
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": later}).status_code == 200
    assert _shown(client, run_id) == [1.5, 1.5, 1.5]
