"""The API's closed vocabularies are the wire's enums (issue 15): the OpenAPI document lists each
enum's values, a JSON string validates into the member under strict mode, and a bad value is the
422 a ``Literal`` gave (same reason and type)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.schemas.commands import CommandAck, CommandCreate
from service.schemas.runs import RunCreate, RunUpdate
from service.wire import (
    AlertStatus,
    CommandKind,
    CommandSource,
    CommandStatus,
    RunSource,
    RunStatus,
    Severity,
    Verdict,
)
from tests.service._helpers import run_body


def _values(vocabulary: type[StrEnum]) -> list[str]:
    return [member.value for member in vocabulary]


def _enum_of(schema: dict[str, Any]) -> list[str]:
    """The ``enum`` of a property, looking through ``anyOf`` (nullable fields)."""
    if "enum" in schema:
        return list(schema["enum"])
    (listed,) = [option["enum"] for option in schema.get("anyOf", []) if "enum" in option]
    return list(listed)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.settings import Settings

    return create_app(Settings(database_url="sqlite://"), registry=CollectorRegistry()).openapi()


@pytest.mark.parametrize(
    ("model", "field", "values"),
    [
        ("CommandCreate", "kind", _values(CommandKind)),
        ("CommandAck", "status", ["applied", "rejected"]),
        ("CommandOut", "kind", _values(CommandKind)),
        ("CommandOut", "status", _values(CommandStatus)),
        ("CommandOut", "source", _values(CommandSource)),
        ("RunCreate", "source", _values(RunSource)),
        ("RunUpdate", "status", _values(RunStatus)),
        ("RunOut", "status", _values(RunStatus)),
        ("RunOut", "verdict", _values(Verdict)),
        ("AlertOut", "status", _values(AlertStatus)),
        ("AlertOut", "severity", _values(Severity)),
        ("CollapseSummary", "verdict", _values(Verdict)),
        ("SubscriptionCreate", "severities", _values(Severity)),
    ],
)
def test_openapi_lists_each_enums_values(
    openapi: dict[str, Any], model: str, field: str, values: list[str]
) -> None:
    prop = openapi["components"]["schemas"][model]["properties"][field]
    assert _enum_of(prop.get("items", prop)) == values


@pytest.mark.parametrize(
    ("path", "parameter", "values"),
    [
        ("/api/v1/runs", "status", _values(RunStatus)),
        ("/api/v1/alerts", "severity", _values(Severity)),
        ("/api/v1/alerts", "status", _values(AlertStatus)),
        ("/api/v1/runs/{run_id}/commands/history", "kind", _values(CommandKind)),
        ("/api/v1/runs/{run_id}/commands/history", "status", _values(CommandStatus)),
    ],
)
def test_openapi_lists_each_query_parameters_values(
    openapi: dict[str, Any], path: str, parameter: str, values: list[str]
) -> None:
    (param,) = [p for p in openapi["paths"][path]["get"]["parameters"] if p["name"] == parameter]
    assert _enum_of(param["schema"]) == values


def test_a_json_string_becomes_the_member_under_strict_mode() -> None:
    create = CommandCreate.model_validate_json(
        '{"kind": "adjust_alpha", "reason": "r", "alpha": 1}'
    )
    assert create.kind is CommandKind.ADJUST_ALPHA
    # The service validates the parsed body (Python objects), not the bytes: the same holds.
    assert CommandAck.model_validate({"status": "applied"}).status is CommandStatus.APPLIED
    assert RunCreate.model_validate(run_body(source="imported")).source is RunSource.IMPORTED
    assert RunUpdate.model_validate({"status": "failed"}).status is RunStatus.FAILED
    assert RunCreate.model_validate(run_body()).source is RunSource.LIVE


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            {"kind": "stop", "reason": "r"},
            "kind",
            "Input should be 'early_stop' or 'adjust_alpha'",
        ),
        ({"kind": 1, "reason": "r"}, "kind", "Input should be 'early_stop' or 'adjust_alpha'"),
        (
            {"kind": "EARLY_STOP", "reason": "r"},
            "kind",
            "Input should be 'early_stop' or 'adjust_alpha'",
        ),
    ],
)
def test_a_bad_command_kind_is_the_literal_422(
    client: TestClient, body: dict[str, Any], field: str, reason: str
) -> None:
    run_id = client.post("/api/v1/runs", json=run_body()).json()["id"]
    response = client.post(f"/api/v1/runs/{run_id}/commands", json=body)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": field, "reason": reason, "type": "literal_error"}
    ]


def test_an_ack_takes_only_applied_or_rejected(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json=run_body()).json()["id"]
    command = client.post(
        f"/api/v1/runs/{run_id}/commands", json={"kind": "early_stop", "reason": "r"}
    ).json()
    response = client.post(
        f"/api/v1/runs/{run_id}/commands/{command['id']}/ack", json={"status": "expired"}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "status",
            "reason": "Input should be 'applied' or 'rejected'",
            "type": "literal_error",
        }
    ]


def test_a_bad_query_value_is_the_literal_422(client: TestClient) -> None:
    response = client.get("/api/v1/runs", params={"status": "paused"})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "status",
            "reason": "Input should be 'running', 'stopped', 'finished' or 'failed'",
            "type": "literal_error",
        }
    ]
