"""The shared ingest workload of the side-by-side benchmark (stdlib only: the peers' virtual
environment imports it too).

One *step record* is what a trainer sends per training step in sharpwatch's wire contract
(``POST /api/v1/runs/{id}/steps``): the 20 standard step metrics and one per-query row per query.

**Metric values** (the unit every system is measured in): every step metric counts as one value,
and every numeric field of a per-query row counts as one value (``group_size``, ``successes``,
``entropy``, ``log_zprime``, ``log_zprime_raw``, ``n_modes``, ``reward_accuracy``,
``response_length``: 8 per query; the ``query_id`` string is the row's key, not a value). So a
step with Q queries carries ``20 + 8·Q`` values. Every value is present (no nulls), so each peer
receives exactly the same numbers.
"""

from __future__ import annotations

import random
from typing import Any

STEP_METRICS = (
    "entropy",
    "success_rate",
    "degenerate_all_fail",
    "degenerate_all_pass",
    "log_zprime_mean",
    "log_zprime_p90",
    "zprime_gt1_frac",
    "reward_accuracy",
    "label_accuracy",
    "proxy_reward",
    "gt_reward",
    "response_length",
    "repetition_rate",
    "kl",
    "alpha",
    "mu",
    "probe_success",
    "probe_entropy",
    "loss",
    "grad_norm",
)
QUERY_FIELDS = (
    "group_size",
    "successes",
    "entropy",
    "log_zprime",
    "log_zprime_raw",
    "n_modes",
    "reward_accuracy",
    "response_length",
)
GROUP_SIZE = 8


def values_per_step(queries: int) -> int:
    return len(STEP_METRICS) + len(QUERY_FIELDS) * queries


def step_record(step: int, queries: int, seed: int = 0) -> dict[str, Any]:
    """One wire-contract step record, deterministic in (step, queries, seed). Values stay inside
    the contract's ranges and keep the detectors quiet (a healthy run)."""
    rng = random.Random(seed * 1_000_003 + step)
    metrics = {name: round(rng.uniform(0.2, 0.8), 6) for name in STEP_METRICS}
    metrics["entropy"] = round(1.5 + rng.uniform(-0.05, 0.05), 6)
    metrics["success_rate"] = round(0.5 + rng.uniform(-0.05, 0.05), 6)
    metrics["degenerate_all_fail"] = 0.05
    metrics["degenerate_all_pass"] = 0.05
    metrics["reward_accuracy"] = round(0.9 + rng.uniform(-0.02, 0.02), 6)
    metrics["alpha"] = 1.0
    metrics["mu"] = 0.0
    metrics["log_zprime_mean"] = round(rng.uniform(-0.2, 0.0), 6)
    metrics["log_zprime_p90"] = round(rng.uniform(-0.1, 0.0), 6)
    metrics["zprime_gt1_frac"] = 0.01
    rows = []
    for q in range(queries):
        rows.append(
            {
                "query_id": f"q{q:06d}",
                "group_size": GROUP_SIZE,
                "successes": rng.randint(1, GROUP_SIZE - 1),
                "entropy": round(rng.uniform(0.5, 2.5), 6),
                "log_zprime": round(rng.uniform(-1.0, 0.2), 6),
                "log_zprime_raw": round(rng.uniform(-1.0, 0.2), 6),
                "n_modes": rng.randint(1, 4),
                "reward_accuracy": round(rng.uniform(0.8, 1.0), 6),
                "response_length": float(rng.randint(50, 500)),
            }
        )
    return {
        "step": step,
        "time": "2026-01-01T00:00:00Z",
        "metrics": metrics,
        "non_finite": [],
        "queries": rows,
    }


SHAPES = ("rows", "columns")


def columnar(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its ``queries`` as the wire's columns (one list per row field, element i
    of each being query i): the same values, the shape the trainer hooks send (issue 21)."""
    rows = record["queries"]
    names = ["query_id", *QUERY_FIELDS]
    return record | {"queries": {name: [row.get(name) for row in rows] for name in names}}


def step_record_shaped(step: int, queries: int, shape: str, seed: int = 0) -> dict[str, Any]:
    """:func:`step_record` with its ``queries`` in ``shape`` (``rows`` or ``columns``)."""
    record = step_record(step, queries, seed)
    return columnar(record) if shape == "columns" else record


def count_values(record: dict[str, Any]) -> int:
    """Metric values in one step record (the definition above), counted from the record."""
    n = sum(1 for v in record["metrics"].values() if v is not None)
    queries = record["queries"]
    if isinstance(queries, dict):  # columns
        return n + sum(1 for f in QUERY_FIELDS for v in queries.get(f, ()) if v is not None)
    for row in queries:
        n += sum(1 for f in QUERY_FIELDS if row.get(f) is not None)
    return n


def mlflow_metrics(record: dict[str, Any], timestamp_ms: int) -> list[dict[str, Any]]:
    """The same values as MLflow metrics with the step number: step metrics under their name,
    per-query fields under ``q/<query_id>/<field>``."""
    step = record["step"]
    out = [
        {"key": name, "value": value, "timestamp": timestamp_ms, "step": step}
        for name, value in record["metrics"].items()
        if value is not None
    ]
    for row in record["queries"]:
        prefix = f"q/{row['query_id']}/"
        for field in QUERY_FIELDS:
            value = row.get(field)
            if value is not None:
                out.append(
                    {"key": prefix + field, "value": value, "timestamp": timestamp_ms, "step": step}
                )
    return out
