"""Builders for wire-contract payloads."""

from __future__ import annotations

from typing import Any

from service.wire.query import QUERY_ROW_FIELDS


def run_body(name: str = "run-a", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "project": "proj",
        "group_size": 8,
        "kl_beta": 0.04,
        "config": {"lr": 1e-6},
        "tags": {"model": "tiny"},
    }
    body.update(overrides)
    return body


def as_columns(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its ``queries`` sent as columns (a column only for the fields some row
    has; a row without a field has null there)."""
    rows = record["queries"]
    required = QUERY_ROW_FIELDS[:3]  # query_id, group_size, successes
    names = [name for name in QUERY_ROW_FIELDS if name in required or any(name in r for r in rows)]
    return record | {"queries": {name: [row.get(name) for row in rows] for name in names}}


def step_record(
    step: int, n_queries: int = 3, group_size: int = 8, **metrics: Any
) -> dict[str, Any]:
    values = {"entropy": 0.5 - step * 0.001, "success_rate": 0.4, "alpha": 1.0}
    values.update(metrics)
    return {
        "step": step,
        "time": "2026-11-23T10:00:00Z",
        "metrics": values,
        "queries": [
            {
                "query_id": f"q{i}",
                "group_size": group_size,
                "successes": (step + i) % (group_size + 1),
                "entropy": 0.3 + i * 0.01,
                "log_zprime": 0.01 * i,
                "n_modes": 2,
            }
            for i in range(n_queries)
        ],
    }
