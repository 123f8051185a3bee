"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis).

Every operation is fuzzed with valid (positive) and invalid (negative) inputs against the
in-process app on SQLite. Path parameters are steered towards rows that exist (a registered run,
its steps, a query and a command), so the fuzz reaches the storage layer rather than stopping at
404. Checks: no 5xx, every response matches its documented schema and content type, and invalid
input is never accepted. The budget is fixed and the generation derandomised, so CI runs the
same examples every time in well under two minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from prometheus_client import CollectorRegistry
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
)

from service.app import create_app
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.settings import Settings
from tests.service._helpers import run_body, step_record

MAX_EXAMPLES = 25  # per operation and mode; ~20 operations × 2 modes stays under a minute
LONG_POLL_CAP = 0.05  # seconds: `GET .../commands?wait=` may ask for 300, the service caps it


def _settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, command_poll_max_wait=LONG_POLL_CAP)


# The schema does not depend on the database: load it once, at collection.
schema = schemathesis.openapi.from_dict(
    create_app(_settings("sqlite://"), registry=CollectorRegistry()).openapi()
)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True
)

# Real rows the fuzz is steered to (filled in by the fixture, read by the hook at generation).
EXISTING: dict[str, Any] = {}


@schema.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any]) -> dict[str, Any]:
    """Three times in four, replace a well-formed id with one that exists; malformed ids (the
    negative mode's) are left alone so they still test rejection."""
    if not EXISTING or not path_parameters:
        return path_parameters
    steered = dict(path_parameters)
    for name, existing in (
        ("run_id", EXISTING["run_id"]),
        ("step", EXISTING["step"]),
        ("command_id", EXISTING["command_id"]),
    ):
        value = steered.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and value % 4:
            steered[name] = existing
    query_id = steered.get("query_id")
    if isinstance(query_id, str) and query_id and len(query_id) % 4:
        steered["query_id"] = EXISTING["query_id"]
    return steered


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "sharpwatch.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine)
    app = create_app(_settings(url), engine=engine, registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as client:
        run = client.post("/api/v1/runs", json=run_body("fuzz-target"))
        assert run.status_code == 201, run.text
        run_id = int(run.json()["id"])
        steps = client.post(
            f"/api/v1/runs/{run_id}/steps", json={"steps": [step_record(s) for s in range(5)]}
        )
        assert steps.status_code == 200, steps.text
        command = client.post(
            f"/api/v1/runs/{run_id}/commands",
            json={"kind": "adjust_alpha", "reason": "fuzz", "alpha": 0.5},
        )
        assert command.status_code == 201, command.text
        EXISTING.update(run_id=run_id, step=2, query_id="q1", command_id=int(command.json()["id"]))
        yield client
    EXISTING.clear()
    engine.dispose()


def _send(client: TestClient, case: Any) -> Any:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": {k: v for k, v in kwargs.get("headers", {}).items() if k != "Connection"},
        "params": kwargs.get("params") or None,
        "cookies": kwargs.get("cookies") or None,
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data.encode() if isinstance(data, str) else data
    return client.request(**request)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a fixed budget in CI
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case: Any, fuzz_client: TestClient) -> None:
    response = _send(fuzz_client, case)
    checks = [
        not_a_server_error,
        response_schema_conformance,
        content_type_conformance,
        negative_data_rejection,
    ]
    case.validate_response(response, checks=checks)
