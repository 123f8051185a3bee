"""Authentication and the authorisation matrix: every endpoint × every token kind × own run /
other run. A route missing from ACCESS fails the test, so new endpoints must be classified."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings
from service.storage import tokens as token_store
from tests._routes import api_routes
from tests.service._helpers import run_body, step_record

# Access classes: who may call.
PUBLIC, FLEET_READ, OPERATOR, RUN_READ, RUN_WRITE, RUN_END = (
    "public",
    "fleet_read",
    "operator",
    "run_read",
    "run_write",
    "run_end",
)
ACCESS: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): FLEET_READ,
    ("POST", "/api/v1/runs"): OPERATOR,
    ("GET", "/api/v1/runs"): FLEET_READ,
    ("GET", "/api/v1/runs/{run_id}"): RUN_READ,
    ("PATCH", "/api/v1/runs/{run_id}"): RUN_END,
    ("POST", "/api/v1/runs/{run_id}/steps"): RUN_WRITE,
    ("GET", "/api/v1/runs/{run_id}/steps"): RUN_READ,
    ("GET", "/api/v1/runs/{run_id}/steps/{step}"): RUN_READ,
    ("GET", "/api/v1/runs/{run_id}/queries/{query_id:path}"): RUN_READ,
    ("GET", "/api/v1/alerts"): FLEET_READ,
    ("GET", "/api/v1/runs/{run_id}/alerts"): RUN_READ,
    ("GET", "/api/v1/runs/{run_id}/collapse"): RUN_READ,
    ("POST", "/api/v1/triage"): FLEET_READ,
    ("POST", "/api/v1/runs/{run_id}/commands"): OPERATOR,
    ("GET", "/api/v1/runs/{run_id}/commands"): RUN_WRITE,
    ("POST", "/api/v1/runs/{run_id}/commands/{command_id}/ack"): RUN_WRITE,
    ("GET", "/api/v1/runs/{run_id}/commands/history"): RUN_READ,
    ("GET", "/api/v1/runs/{run_id}/alpha-decisions"): RUN_READ,
    ("GET", "/api/v1/projects/{project}/retention"): FLEET_READ,
    ("PUT", "/api/v1/projects/{project}/retention"): OPERATOR,
    ("DELETE", "/api/v1/projects/{project}/retention"): OPERATOR,
    ("POST", "/api/v1/notifications/channels"): OPERATOR,
    ("GET", "/api/v1/notifications/channels"): OPERATOR,
    ("DELETE", "/api/v1/notifications/channels/{channel_id}"): OPERATOR,
    ("POST", "/api/v1/notifications/subscriptions"): OPERATOR,
    ("GET", "/api/v1/notifications/subscriptions"): OPERATOR,
    ("DELETE", "/api/v1/notifications/subscriptions/{subscription_id}"): OPERATOR,
    ("GET", "/api/v1/notifications/deliveries"): FLEET_READ,
    ("DELETE", "/api/v1/runs/{run_id}"): OPERATOR,
    ("POST", "/api/v1/notifications/deliveries/{delivery_id}/retry"): OPERATOR,
}
CALLERS = ("none", "invalid", "read", "operator", "ingest_own", "ingest_other")

ALLOWED: dict[str, set[str]] = {
    PUBLIC: set(CALLERS),
    FLEET_READ: {"read", "operator"},
    OPERATOR: {"operator"},
    RUN_READ: {"read", "operator", "ingest_own"},
    RUN_WRITE: {"ingest_own"},
    RUN_END: {"operator", "ingest_own"},
}


def _bodies(command_id: int) -> dict[tuple[str, str], Any]:
    return {
        ("POST", "/api/v1/runs"): run_body("another"),
        # "stopped", not "finished": ending a run revokes its ingest tokens (test_token_lifetime).
        ("PATCH", "/api/v1/runs/{run_id}"): {"status": "stopped"},
        ("POST", "/api/v1/runs/{run_id}/steps"): {"steps": [step_record(99)]},
        ("POST", "/api/v1/triage"): {
            "group_size": 8,
            "candidates": [{"name": "a", "entropy": 0.5, "pass_at_1": 0.3}],
        },
        ("POST", "/api/v1/runs/{run_id}/commands"): {
            "kind": "adjust_alpha",
            "alpha": 1.5,
            "reason": "t",
        },
        ("POST", "/api/v1/runs/{run_id}/commands/{command_id}/ack"): {"status": "rejected"},
        ("PUT", "/api/v1/projects/{project}/retention"): {"full_steps": 10, "keep_every": 2},
        ("POST", "/api/v1/notifications/channels"): {
            "name": "hook",
            "kind": "slack",
            "url": "https://hooks.example.org/x",
        },
        ("POST", "/api/v1/notifications/subscriptions"): {"channel_id": 999},
    }


def test_authorisation_matrix(
    auth_client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        _, operator = token_store.issue(session, "operator", "ops")
        _, reader = token_store.issue(session, "read", "grafana")
    ops = {"authorization": f"Bearer {operator}"}
    own = auth_client.post("/api/v1/runs", json=run_body("own"), headers=ops).json()
    other = auth_client.post("/api/v1/runs", json=run_body("other"), headers=ops).json()
    assert own["ingest_token"].startswith("swi_")
    command = auth_client.post(
        f"/api/v1/runs/{own['id']}/commands",
        json={"kind": "early_stop", "reason": "x"},
        headers=ops,
    ).json()
    tokens = {
        "none": None,
        "invalid": "swr_not-a-token",
        "read": reader,
        "operator": operator,
        "ingest_own": own["ingest_token"],
        "ingest_other": other["ingest_token"],
    }
    routes = {
        (method, route.path)
        for route in api_routes(auth_client.app)
        if route.include_in_schema
        for method in route.methods
    }
    unclassified = routes - set(ACCESS)
    assert not unclassified, f"classify these routes in ACCESS: {sorted(unclassified)}"

    doomed = auth_client.post("/api/v1/runs", json=run_body("doomed"), headers=ops).json()
    bodies = _bodies(command["id"])
    failures = []
    for (method, template), access in sorted(ACCESS.items()):
        run_id = doomed["id"] if method == "DELETE" and template.endswith("{run_id}") else own["id"]
        path = (
            template.replace("{run_id}", str(run_id))
            .replace("{step}", "0")
            .replace("{query_id:path}", "q0")
            .replace("{command_id}", str(command["id"]))
            .replace("{project}", "proj")
            .replace("{channel_id}", "999")
            .replace("{subscription_id}", "999")
            .replace("{delivery_id}", "999")
        )
        for caller, token in tokens.items():
            headers = {} if token is None else {"authorization": f"Bearer {token}"}
            kwargs: dict[str, Any] = {"headers": headers}
            if (method, template) in bodies:
                kwargs["json"] = bodies[(method, template)]
            status = auth_client.request(method, path, **kwargs).status_code
            allowed = caller in ALLOWED[access]
            expected = "allowed" if allowed else ("401" if caller in ("none", "invalid") else "403")
            got = "allowed" if status not in (401, 403) else str(status)
            if got != expected:
                failures.append(f"{method} {template} as {caller}: {status}, expected {expected}")
    assert not failures, "\n".join(failures)


def test_401_names_the_fix(auth_client: TestClient) -> None:
    response = auth_client.get("/api/v1/runs")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "sharpwatch tokens create" in response.json()["detail"]


def test_revoked_token_is_refused(
    auth_client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        row, token = token_store.issue(session, "read", "temp")
        assert (
            auth_client.get(
                "/api/v1/runs", headers={"authorization": f"Bearer {token}"}
            ).status_code
            == 200
        )
        token_store.revoke(session, row.id)
    auth_client.app.state.token_cache.clear()  # type: ignore[attr-defined]
    refused = auth_client.get("/api/v1/runs", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 401


def test_tokens_are_stored_hashed(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        row, token = token_store.issue(session, "operator", "x")
        assert token not in (row.token_hash, row.prefix)
        assert re.fullmatch(r"[0-9a-f]{64}", row.token_hash)
        assert token_store.lookup(session, token) is not None
        assert token_store.lookup(session, token + "x") is None


def test_no_auth_off_a_loopback_address() -> None:
    with pytest.raises(ValueError, match="SHARPWATCH_AUTH=true"):
        Settings(host="0.0.0.0")
    assert Settings(host="0.0.0.0", auth=True).auth
    with pytest.raises(ValueError, match="requires SHARPWATCH_AUTH"):
        Settings(env="prod", database_url="postgresql+psycopg://x@h/db")
