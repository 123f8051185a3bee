"""Every API route refuses a query parameter it does not declare with a 422 naming it (its query
model, ``service.schemas.query``); health and ``/metrics`` take whatever probes append."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

SAMPLE_PATH_VALUES = {"project": "p", "query_id": "q"}  # the others are ids: 1


def _api_operations(client: TestClient) -> list[tuple[str, str]]:
    document = client.get("/openapi.json").json()
    return [
        (method.upper(), re.sub(r"\{(\w+)(?::\w+)?\}", _sample, path))
        for path, operations in document["paths"].items()
        if path.startswith("/api/")
        for method in operations
    ]


def _sample(match: re.Match[str]) -> str:
    return SAMPLE_PATH_VALUES.get(match.group(1), "1")


def test_every_api_route_names_an_unknown_query_parameter(client: TestClient) -> None:
    operations = _api_operations(client)
    assert len(operations) >= 25
    for method, path in operations:
        body = {} if method in ("POST", "PUT", "PATCH") else None
        response = client.request(method, f"{path}?zz_unknown=1", json=body)
        assert response.status_code == 422, (method, path, response.text[:300])
        answer = response.json()
        assert "unknown query parameter 'zz_unknown'; this route takes: " in answer["detail"]
        assert "zz_unknown" in [error["field"] for error in answer["errors"]], (method, path)


def test_the_parameters_a_route_takes_are_listed(client: TestClient) -> None:
    answer = client.get("/api/v1/runs?limt=5").json()
    assert answer["errors"] == [
        {
            "field": "limt",
            "reason": "unknown query parameter 'limt'; this route takes: cursor, limit, project, "
            "status",
            "type": "unknown_query_parameter",
        }
    ]
    assert client.get("/api/v1/runs?limit=5&status=running").status_code == 200


def test_probes_and_scrapers_may_append_anything(client: TestClient) -> None:
    assert client.get("/healthz?probe=1").status_code == 200
    assert client.get("/readyz?probe=1").status_code == 200
    assert client.get("/metrics?scrape=1").status_code == 200
