"""A step's per-query rows are validated as ``QueryIn`` and kept column by column (issue 14)."""

from __future__ import annotations

import gc
import hashlib
import json
import tracemalloc
from typing import Any

import pytest
from pydantic import ValidationError

from service.schemas.query_rows import QueryRows, QueryTuple
from service.schemas.steps import QueryIn, StepBatchIn, StepIn
from service.wire.query import QUERY_ROW_FIELDS


def _query(index: int) -> dict[str, Any]:
    return {
        "query_id": f"gsm8k/train/{index:06d}",
        "group_size": 8,
        "successes": index % 9,
        "entropy": 0.1 + index / 7,
        "log_zprime": -0.25 + index / 1e5,
        "log_zprime_raw": -0.5,
        "n_modes": index % 5,
        "reward_accuracy": 0.75,
        "response_length": 123.5 + index,
    }


def test_a_row_has_the_fields_of_the_wire_row_in_order() -> None:
    assert QueryTuple._fields == QUERY_ROW_FIELDS == tuple(QueryIn.model_fields)


def test_values_and_nulls_come_back_as_sent() -> None:
    sent = [
        _query(1),
        {"query_id": "sparse", "group_size": 4, "successes": 0},
        {**_query(2), "entropy": 0, "log_zprime": -0.0, "n_modes": 0, "response_length": 1e9},
    ]
    record = StepIn.model_validate({"step": 3, "queries": sent})
    expected = [{name: query.get(name) for name in QueryTuple._fields} for query in sent]
    assert [row._asdict() for row in record.queries] == expected
    assert record.model_dump(mode="json")["queries"] == expected
    assert len(record.queries) == 3
    assert record.queries[-1] == QueryTuple(**expected[2])
    assert record.queries[1].n_modes is None
    assert record.queries[1].entropy is None
    assert isinstance(record.queries[2].entropy, float)  # 0 sent, a float stored


def test_the_content_hash_is_the_canonical_json_of_every_field() -> None:
    """Trainers re-send steps across versions: the digest must not depend on how rows are held."""
    query = {"query_id": "q", "group_size": 8, "successes": 3, "log_zprime": 0.5}
    record = StepIn.model_validate({"step": 7, "metrics": {"alpha": 1.0}, "queries": [query]})
    canonical = {
        "step": 7,
        "time": None,
        "metrics": {"alpha": 1.0},
        "non_finite": [],
        "queries": [{name: query.get(name) for name in QueryTuple._fields}],
    }
    digest = hashlib.sha256(
        json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert record.content_hash() == digest


def test_packed_rows_validate_again() -> None:
    record = StepIn.model_validate({"step": 1, "queries": [_query(i) for i in range(3)]})
    again = StepIn(step=2, queries=record.queries)
    assert again.queries == record.queries
    assert StepIn(step=3).queries == QueryRows()


def test_row_errors_still_name_the_row_and_field() -> None:
    bad = [_query(0), {**_query(1), "successes": 9}, {**_query(2), "group_size": "8"}]
    with pytest.raises(ValidationError) as caught:
        StepIn.model_validate({"step": 1, "queries": bad})
    locations = {error["loc"] for error in caught.value.errors()}
    assert locations == {("queries", 1), ("queries", 2, "group_size")}


def test_a_validated_batch_holds_its_rows_in_under_the_body_size() -> None:
    """One pydantic model per row held ~4x the JSON's size; the columns hold ~0.3x."""
    steps = [
        {"step": step, "queries": [_query(step * 2000 + i) for i in range(2000)]}
        for step in range(10)
    ]
    body = json.dumps({"steps": steps}).encode()
    parsed = json.loads(body)
    gc.collect()
    tracemalloc.start()
    try:
        batch = StepBatchIn.model_validate(parsed)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(record.queries) for record in batch.steps) == 20_000
    assert held < 0.6 * len(body), f"validated rows hold {held / len(body):.2f}x the body"
