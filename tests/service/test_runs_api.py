from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.service._helpers import run_body


def test_register_returns_201_then_200_for_same_project_and_name(client: TestClient) -> None:
    first = client.post("/api/v1/runs", json=run_body())
    assert first.status_code == 201, first.text
    run = first.json()
    assert run["name"] == "run-a"
    assert run["project"] == "proj"
    assert run["group_size"] == 8
    assert run["kl_beta"] == 0.04
    assert run["config"] == {"lr": 1e-6}
    assert run["tags"] == {"model": "tiny"}
    assert run["status"] == "running"
    assert run["created_at"].endswith("Z")
    again = client.post("/api/v1/runs", json=run_body())
    assert again.status_code == 200
    assert again.json()["id"] == run["id"]
    other = client.post("/api/v1/runs", json=run_body(project="other"))
    assert other.status_code == 201
    assert other.json()["id"] != run["id"]


def test_get_and_list_runs_with_filters_and_cursor(client: TestClient) -> None:
    ids = [client.post("/api/v1/runs", json=run_body(f"r{i}")).json()["id"] for i in range(5)]
    client.post("/api/v1/runs", json=run_body("elsewhere", project="p2"))
    assert client.get(f"/api/v1/runs/{ids[2]}").json()["name"] == "r2"

    seen: list[int] = []
    cursor = None
    while True:
        params = {"project": "proj", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/runs", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert client.get("/api/v1/runs", params={"status": "stopped"}).json()["items"] == []


def test_unknown_run_is_404_naming_it(client: TestClient) -> None:
    response = client.get("/api/v1/runs/999")
    assert response.status_code == 404
    assert response.json() == {"detail": "run 999 does not exist", "field": "run_id"}


def test_run_validation_names_the_field(client: TestClient) -> None:
    cases = {
        "group_size": (run_body(group_size=0), "greater than or equal to 1"),
        "kl_beta": (run_body(kl_beta=-1), "greater than or equal to 0"),
        "name": (run_body(name=""), "at least 1 character"),
        "surprise": (run_body(surprise=1), "Extra inputs are not permitted"),
    }
    for field, (body, reason) in cases.items():
        response = client.post("/api/v1/runs", json=body)
        assert response.status_code == 422, field
        error = response.json()["errors"][0]
        assert error["field"] == field
        assert reason in error["reason"]
    assert client.get("/api/v1/runs").json()["items"] == []


def test_a_run_is_live_unless_registered_as_imported(client: TestClient) -> None:
    live = client.post("/api/v1/runs", json=run_body("live-run")).json()
    assert live["source"] == "live"
    imported = client.post("/api/v1/runs", json=run_body("old-run") | {"source": "imported"})
    assert imported.status_code == 201, imported.text
    assert imported.json()["source"] == "imported"
    assert client.get(f"/api/v1/runs/{imported.json()['id']}").json()["source"] == "imported"
    bad = client.post("/api/v1/runs", json=run_body("odd-run") | {"source": "replayed"})
    assert bad.status_code == 422
    assert "source" in bad.text


def test_failed_run_keeps_its_reason_and_never_reads_healthy(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json=run_body(name="fails")).json()["id"]
    assert client.get(f"/api/v1/runs/{run_id}").json()["failure_reason"] is None
    answer = client.patch(
        f"/api/v1/runs/{run_id}",
        json={"status": "failed", "failure_reason": "step 3 failed in trainer_hooks: ShapeError"},
    )
    assert answer.status_code == 200, answer.text
    run = client.get(f"/api/v1/runs/{run_id}").json()
    assert (run["status"], run["verdict"]) == ("failed", "failed")
    assert run["failure_reason"] == "step 3 failed in trainer_hooks: ShapeError"
    # Reopening clears both.
    client.patch(f"/api/v1/runs/{run_id}", json={"status": "running"})
    run = client.get(f"/api/v1/runs/{run_id}").json()
    assert (run["verdict"], run["failure_reason"]) == ("healthy", None)


def test_failure_reason_needs_the_failed_status(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json=run_body(name="not-failing")).json()["id"]
    answer = client.patch(
        f"/api/v1/runs/{run_id}", json={"status": "finished", "failure_reason": "x"}
    )
    assert answer.status_code == 422
    assert [e["field"] for e in answer.json()["errors"]] == ["failure_reason"]
    assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"


def test_delete_run_removes_everything_it_owns(client: TestClient, app: FastAPI) -> None:
    from sqlalchemy import func, select

    from service.db.models import Command, QueryStat, Step
    from tests.service._helpers import step_record

    run_id = client.post("/api/v1/runs", json=run_body(name="doomed")).json()["id"]
    keep = client.post("/api/v1/runs", json=run_body(name="kept")).json()["id"]
    for rid in (run_id, keep):
        stored = client.post(
            f"/api/v1/runs/{rid}/steps", json={"steps": [step_record(s) for s in range(3)]}
        )
        assert stored.status_code == 200, stored.text
    client.post(f"/api/v1/runs/{run_id}/commands", json={"kind": "early_stop", "reason": "x"})
    assert client.delete(f"/api/v1/runs/{run_id}").status_code == 204
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 404
    assert client.get(f"/api/v1/runs/{run_id}/steps").status_code == 404
    assert client.delete(f"/api/v1/runs/{run_id}").status_code == 404
    with app.state.session_factory() as session:
        for table in (Step, QueryStat, Command):
            rows = session.scalar(select(func.count()).where(table.run_id == run_id))
            assert rows == 0, table.__tablename__
        # (query_stats has no foreign key, revision 0012: delete_run removes its rows itself)
        kept_rows = session.scalar(select(func.count()).where(QueryStat.run_id == keep))
        assert kept_rows == 9
    # The other run is untouched.
    assert len(client.get(f"/api/v1/runs/{keep}/steps").json()["items"]) == 3
    assert client.get(f"/api/v1/runs/{keep}/steps/1").json()["n_queries"] == 3


def test_a_failed_run_reads_everywhere(client: TestClient) -> None:
    """Every read of a failed run answers (its collapse summary and listings once 500'd on the
    new verdict)."""
    run_id = client.post("/api/v1/runs", json=run_body(name="failed-read")).json()["id"]
    client.patch(f"/api/v1/runs/{run_id}", json={"status": "failed", "failure_reason": "boom"})
    for path in (f"/api/v1/runs/{run_id}/collapse", "/api/v1/runs", f"/api/v1/runs/{run_id}"):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text)
    assert client.get(f"/api/v1/runs/{run_id}/collapse").json()["verdict"] == "failed"
