"""An operator's adjust_alpha pins α until an operator releases it (issue 13 item 3, science.md
§7): the controller sends no adjust_alpha while pinned, GET /runs/{id} shows the pin, PATCH
{"alpha_pinned": false} (operator only) hands α back. Before the fix the controller overrode the
operator's 0.5 a few steps later."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.storage import tokens as token_store
from tests.service._helpers import run_body

PRESSURE = 0.7  # raw Z'>1 share: zprime_pressure fires from step 9 and keeps firing


def _steps(first: int, last: int, alpha: float) -> dict[str, Any]:
    return {
        "steps": [
            {
                "step": s,
                "metrics": {
                    "entropy": 0.45,
                    "success_rate": 0.4,
                    "zprime_raw_gt1_frac": PRESSURE,
                    "zprime_gt1_frac": 0.95,
                    "alpha": alpha,
                },
            }
            for s in range(first, last + 1)
        ]
    }


def _post(client: TestClient, run_id: int, first: int, last: int, alpha: float, **kw: Any) -> None:
    for s in range(first, last + 1):  # one step per request: detection runs after each
        response = client.post(f"/api/v1/runs/{run_id}/steps", json=_steps(s, s, alpha), **kw)
        assert response.status_code == 200, response.text


def _alpha_commands(client: TestClient, run_id: int, **kw: Any) -> list[dict[str, Any]]:
    page = client.get(
        f"/api/v1/runs/{run_id}/commands/history",
        params={"kind": "adjust_alpha", "limit": 1000},
        **kw,
    ).json()
    return sorted(page["items"], key=lambda c: c["id"])


def test_operator_alpha_is_not_overridden_and_release_hands_control_back(
    client: TestClient,
) -> None:
    run_id = client.post("/api/v1/runs", json=run_body("pin")).json()["id"]
    assert client.get(f"/api/v1/runs/{run_id}").json()["alpha_pinned"] is False
    _post(client, run_id, 0, 25, alpha=1.0)
    first = _alpha_commands(client, run_id)
    assert [(c["source"], c["issued_step"], c["alpha"]) for c in first] == [("detector", 9, 1.25)]

    # the operator sets 0.5 at step 25; cooldown since step 9 ends at 29: the reported bug
    made = client.post(
        f"/api/v1/runs/{run_id}/commands",
        json={"kind": "adjust_alpha", "alpha": 0.5, "reason": "too aggressive"},
    )
    assert made.status_code == 201, made.text
    assert client.get(f"/api/v1/runs/{run_id}").json()["alpha_pinned"] is True
    _post(client, run_id, 26, 27, alpha=1.25)  # the trainer has not applied it yet
    _post(client, run_id, 28, 80, alpha=0.5)  # then it runs at 0.5 under pressure
    after = _alpha_commands(client, run_id)
    assert [(c["source"], c["alpha"]) for c in after[1:]] == [("operator", 0.5)]
    assert after[0]["status"] == "expired"  # superseded by the operator's
    run = client.get(f"/api/v1/runs/{run_id}").json()
    assert run["alpha_pinned"] is True
    alerts = client.get(f"/api/v1/runs/{run_id}/alerts", params={"status": "open"}).json()
    assert "zprime_pressure" in [a["rule"] for a in alerts["items"]]  # pressure is still there

    released = client.patch(f"/api/v1/runs/{run_id}", json={"alpha_pinned": False})
    assert released.status_code == 200, released.text
    assert released.json()["alpha_pinned"] is False
    _post(client, run_id, 81, 82, alpha=0.5)
    resumed = _alpha_commands(client, run_id)[2:]
    assert [(c["source"], c["issued_step"], c["alpha"]) for c in resumed] == [
        ("detector", 81, 0.75)
    ]
    decisions = client.get(f"/api/v1/runs/{run_id}/alpha-decisions").json()
    assert (decisions[0]["old_alpha"], decisions[0]["new_alpha"]) == (0.5, 0.75)


def test_patch_can_pin_alpha_where_it_is(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json=run_body("pin-here")).json()["id"]
    pinned = client.patch(f"/api/v1/runs/{run_id}", json={"alpha_pinned": True})
    assert pinned.json()["alpha_pinned"] is True
    _post(client, run_id, 0, 40, alpha=1.0)
    assert _alpha_commands(client, run_id) == []


@pytest.mark.parametrize("bad", ["false", 0, None, [False]])
def test_alpha_pinned_must_be_a_boolean(client: TestClient, bad: object) -> None:
    run_id = client.post("/api/v1/runs", json=run_body("pin-bad")).json()["id"]
    client.patch(f"/api/v1/runs/{run_id}", json={"alpha_pinned": True})
    response = client.patch(f"/api/v1/runs/{run_id}", json={"alpha_pinned": bad})
    if bad is None:  # null means "leave as is", like every optional PATCH field
        assert response.status_code == 200
        assert response.json()["alpha_pinned"] is True
        return
    assert response.status_code == 422
    assert "alpha_pinned" in response.text
    assert client.get(f"/api/v1/runs/{run_id}").json()["alpha_pinned"] is True


def test_only_an_operator_releases_the_pin(
    auth_client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        _, operator = token_store.issue(session, "operator", "ops")
        _, reader = token_store.issue(session, "read", "grafana")
    ops = {"authorization": f"Bearer {operator}"}
    run = auth_client.post("/api/v1/runs", json=run_body("pin-auth"), headers=ops).json()
    run_id = run["id"]
    ingest = {"authorization": f"Bearer {run['ingest_token']}"}
    made = auth_client.post(
        f"/api/v1/runs/{run_id}/commands",
        json={"kind": "adjust_alpha", "alpha": 0.5, "reason": "hold"},
        headers=ingest,
    )
    assert made.status_code == 403  # only an operator sets (and so pins) α
    auth_client.post(
        f"/api/v1/runs/{run_id}/commands",
        json={"kind": "adjust_alpha", "alpha": 0.5, "reason": "hold"},
        headers=ops,
    )
    for headers in (ingest, {"authorization": f"Bearer {reader}"}):
        refused = auth_client.patch(
            f"/api/v1/runs/{run_id}", json={"alpha_pinned": False}, headers=headers
        )
        assert refused.status_code == 403, refused.text
    assert auth_client.get(f"/api/v1/runs/{run_id}", headers=ops).json()["alpha_pinned"] is True
    ok = auth_client.patch(f"/api/v1/runs/{run_id}", json={"alpha_pinned": False}, headers=ops)
    assert ok.status_code == 200
    assert ok.json()["alpha_pinned"] is False
