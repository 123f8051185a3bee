"""Ingest tokens end with their run (issue 14): a re-registration rotates the run's ingest
token, ending the run (finished or failed) revokes it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.storage import tokens as token_store
from tests.service._helpers import run_body, step_record


@pytest.fixture
def operator(session_factory: sessionmaker[Session]) -> dict[str, str]:
    with session_factory() as session:
        _, token = token_store.issue(session, "operator", "ops")
    return {"authorization": f"Bearer {token}"}


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_reregistration_rotates_the_ingest_token(
    auth_client: TestClient, operator: dict[str, str]
) -> None:
    first = auth_client.post("/api/v1/runs", json=run_body("r"), headers=operator).json()
    path = f"/api/v1/runs/{first['id']}/steps"
    sent = auth_client.post(
        path, json={"steps": [step_record(0)]}, headers=_bearer(first["ingest_token"])
    )
    assert sent.status_code == 200
    again = auth_client.post("/api/v1/runs", json=run_body("r"), headers=operator)
    assert again.status_code == 200
    second = again.json()
    assert second["id"] == first["id"]
    assert second["ingest_token"] != first["ingest_token"]
    stale = auth_client.post(
        path, json={"steps": [step_record(1)]}, headers=_bearer(first["ingest_token"])
    )
    assert stale.status_code == 401
    fresh = auth_client.post(
        path, json={"steps": [step_record(1)]}, headers=_bearer(second["ingest_token"])
    )
    assert fresh.status_code == 200
    assert fresh.json()["accepted"] == [1]


@pytest.mark.parametrize("end", ["finished", "failed"])
def test_ending_the_run_revokes_its_ingest_tokens(
    auth_client: TestClient, operator: dict[str, str], end: str
) -> None:
    run = auth_client.post("/api/v1/runs", json=run_body("r"), headers=operator).json()
    own = _bearer(run["ingest_token"])
    path = f"/api/v1/runs/{run['id']}"
    assert (
        auth_client.post(f"{path}/steps", json={"steps": [step_record(0)]}, headers=own).status_code
        == 200
    )
    assert auth_client.patch(path, json={"status": end}, headers=own).status_code == 200
    after = auth_client.post(f"{path}/steps", json={"steps": [step_record(1)]}, headers=own)
    assert after.status_code == 401
    assert auth_client.get(f"{path}/commands", headers=own).status_code == 401
    # The run's data is still readable by others, and a re-registration gets a working token.
    assert auth_client.get(path, headers=operator).json()["last_step"] == 0
    renewed = auth_client.post("/api/v1/runs", json=run_body("r"), headers=operator).json()
    resumed = auth_client.post(
        f"{path}/steps", json={"steps": [step_record(1)]}, headers=_bearer(renewed["ingest_token"])
    )
    assert resumed.status_code == 200


def test_a_stopped_run_keeps_its_token_until_it_ends(
    auth_client: TestClient, operator: dict[str, str]
) -> None:
    """early_stop marks a run stopped while its trainer still sends its last steps."""
    run = auth_client.post("/api/v1/runs", json=run_body("r"), headers=operator).json()
    own = _bearer(run["ingest_token"])
    path = f"/api/v1/runs/{run['id']}"
    assert auth_client.patch(path, json={"status": "stopped"}, headers=own).status_code == 200
    late = auth_client.post(f"{path}/steps", json={"steps": [step_record(0)]}, headers=own)
    assert late.status_code == 200
