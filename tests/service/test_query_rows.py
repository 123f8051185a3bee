"""A step's per-query rows are validated as ``QueryIn`` and kept column by column (issue 14)."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import struct
import tracemalloc
from typing import Any

import pytest
from pydantic import ValidationError

from service.schemas.query_rows import QueryRows, QueryTuple
from service.schemas.steps import MAX_QUERIES_PER_STEP, QueryIn, StepBatchIn, StepIn
from service.wire.query import QUERY_ROW_FIELDS
from tests.service import _helpers


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


def test_the_legacy_content_hash_is_the_canonical_json_of_every_field() -> None:
    """Steps stored before digest version 2 carry this one: it must not change."""
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
    assert record.legacy_content_hash() == digest
    assert (
        StepIn.model_validate(
            {"step": 7, "metrics": {"alpha": 1.0}, "queries": as_columns([query])}
        ).legacy_content_hash()
        == digest
    )


def _digest_v2(record: dict[str, Any]) -> str:
    """Version 2 of the content digest, written out from its definition (StepIn.content_hash):
    the canonical JSON of the non-query fields, the row count, the ids joined by NUL, then
    each column as 8-byte little-endian items (null: NaN for floats, -1 for counts)."""
    rows = record["queries"]
    digest = hashlib.sha256(b"sharpwatch step content v2\0")
    content = {
        "step": record["step"],
        "time": record.get("time"),
        "metrics": record.get("metrics", {}),
        "non_finite": record.get("non_finite", []),
    }
    digest.update(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    digest.update(struct.pack("<q", len(rows)))
    digest.update("\0".join(row["query_id"] for row in rows).encode())
    for field in QUERY_ROW_FIELDS[1:]:
        integral = field in ("group_size", "successes", "n_modes")
        values = [row.get(field) for row in rows]
        if integral:
            digest.update(struct.pack(f"<{len(rows)}q", *(-1 if v is None else v for v in values)))
        else:
            packed = (math.nan if v is None else float(v) for v in values)
            digest.update(struct.pack(f"<{len(rows)}d", *packed))
    return digest.hexdigest()


def as_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return _helpers.as_columns({"queries": rows})["queries"]


def test_the_content_hash_does_not_depend_on_the_shape_rows_came_in() -> None:
    """A step sent as rows and re-sent as columns with the same values is a duplicate."""
    rows = [_query(i) for i in range(5)]
    rows[1] = {"query_id": "sparse", "group_size": 4, "successes": 0, "log_zprime": -0.0}
    rows[2] |= {"entropy": 0, "n_modes": None, "reward_accuracy": 5e-324}
    record = {"step": 9, "time": "2026-11-23T10:00:00Z", "metrics": {"alpha": 0.5}, "queries": rows}
    as_rows = StepIn.model_validate(record)
    as_cols = StepIn.model_validate(record | {"queries": as_columns(rows)})
    assert as_rows.content_hash() == as_cols.content_hash() == _digest_v2(record)
    assert as_rows.legacy_content_hash() == as_cols.legacy_content_hash()
    # An optional column left out is the same as a column of nulls.
    sparse = [{"query_id": "a", "group_size": 2, "successes": 1}]
    omitted = StepIn.model_validate({"step": 1, "queries": as_columns(sparse)})
    nulls = StepIn.model_validate(
        {"step": 1, "queries": {**as_columns(sparse), "entropy": [None], "n_modes": [None]}}
    )
    assert (
        omitted.content_hash() == nulls.content_hash() == _digest_v2({"step": 1, "queries": sparse})
    )
    empty = StepIn.model_validate({"step": 1, "queries": as_columns([])})
    assert empty.content_hash() == StepIn.model_validate({"step": 1}).content_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"log_zprime": 0.0},  # -0.0 was sent
        {"entropy": math.nextafter(0.1 + 1 / 7, 1.0)},
        {"n_modes": None},
        {"successes": 0},
        {"query_id": "gsm8k/train/000001 "},
    ],
)
def test_any_changed_value_changes_the_content_hash(change: dict[str, Any]) -> None:
    rows = [_query(0) | {"log_zprime": -0.0}, _query(1)]
    changed = [rows[0], rows[1] | change]
    if "log_zprime" in change:
        changed = [rows[0] | change, rows[1]]
    before = StepIn.model_validate({"step": 1, "queries": as_columns(rows)})
    after = StepIn.model_validate({"step": 1, "queries": changed})
    assert before.content_hash() != after.content_hash()


def test_ids_split_differently_hash_differently() -> None:
    one = [
        {"query_id": "ab", "group_size": 1, "successes": 0},
        {"query_id": "c", "group_size": 1, "successes": 0},
    ]
    two = [
        {"query_id": "a", "group_size": 1, "successes": 0},
        {"query_id": "bc", "group_size": 1, "successes": 0},
    ]
    digests = {StepIn.model_validate({"step": 1, "queries": q}).content_hash() for q in (one, two)}
    assert len(digests) == 2


def test_columns_pack_as_the_rows_do() -> None:
    rows = [_query(i) for i in range(4)]
    rows[3] = {"query_id": "sparse", "group_size": 4, "successes": 4, "n_modes": 0}
    from_rows = StepIn.model_validate({"step": 1, "queries": rows})
    from_columns = StepIn.model_validate({"step": 1, "queries": as_columns(rows)})
    assert from_columns.queries == from_rows.queries
    assert from_columns.model_dump(mode="json") == from_rows.model_dump(mode="json")
    assert isinstance(from_columns.queries[3].entropy, type(None))
    assert isinstance(from_columns.queries[0].response_length, float)


_COLUMNS = {"query_id": ["a", "b", "c"], "group_size": [8, 8, 8], "successes": [1, 2, 3]}


@pytest.mark.parametrize(
    ("columns", "loc", "message"),
    [
        (_COLUMNS | {"bogus": [1, 2, 3]}, ("queries", "bogus"), "Extra inputs are not permitted"),
        ({"query_id": ["a"], "group_size": [8]}, ("queries", "successes"), "Field required"),
        (
            _COLUMNS | {"entropy": [0.5, None]},
            ("queries", "entropy"),
            "has 2 elements but query_id has 3",
        ),
        (_COLUMNS | {"group_size": [8, 8, 8, 8]}, ("queries", "group_size"), "has 4 elements"),
        (
            _COLUMNS | {"successes": [1, 9, 3]},
            ("queries", "successes", 1),
            "successes (9) must not exceed group_size (8)",
        ),
        (
            _COLUMNS | {"query_id": ["a", "b", "a"]},
            ("queries", "query_id", 2),
            "query_id 'a' appears twice in the step (first at index 0)",
        ),
        (
            _COLUMNS | {"query_id": ["a", "", "c"]},
            ("queries", "query_id", 1),
            "at least 1 character",
        ),
        (_COLUMNS | {"query_id": ["a", "b\x00", "c"]}, ("queries", "query_id", 1), "pattern"),
        (
            _COLUMNS | {"query_id": ["a", "b", "x" * 257]},
            ("queries", "query_id", 2),
            "at most 256 characters",
        ),
        (
            _COLUMNS | {"group_size": [8, 0, 8]},
            ("queries", "group_size", 1),
            "greater than or equal to 1",
        ),
        (_COLUMNS | {"successes": [1, True, 3]}, ("queries", "successes", 1), "valid integer"),
        (_COLUMNS | {"successes": [1, "2", 3]}, ("queries", "successes", 1), "valid integer"),
        (_COLUMNS | {"entropy": [0.5, None, math.inf]}, ("queries", "entropy", 2), "finite number"),
        (
            _COLUMNS | {"entropy": [0.5, None, 1e4 + 1]},
            ("queries", "entropy", 2),
            "less than or equal to 10000",
        ),
        (
            _COLUMNS | {"reward_accuracy": [0.5, -0.1, 1]},
            ("queries", "reward_accuracy", 1),
            "greater than or equal to 0",
        ),
        (_COLUMNS | {"n_modes": [1, 2.5, 3]}, ("queries", "n_modes", 1), "valid integer"),
        (_COLUMNS | {"entropy": 0.5}, ("queries", "entropy"), "valid list"),
        (_COLUMNS | {"query_id": "abc"}, ("queries", "query_id"), "valid list"),
    ],
)
def test_column_errors_name_the_column_and_element(
    columns: dict[str, Any], loc: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        StepIn.model_validate({"step": 1, "queries": columns})
    errors = [(error["loc"], error["msg"]) for error in caught.value.errors()]
    assert any(where == loc and message in msg for where, msg in errors), errors


def test_a_column_longer_than_a_step_is_refused() -> None:
    count = MAX_QUERIES_PER_STEP + 1
    columns = {
        "query_id": [f"q{i}" for i in range(count)],
        "group_size": [1] * count,
        "successes": [0] * count,
    }
    with pytest.raises(ValidationError) as caught:
        StepIn.model_validate({"step": 1, "queries": columns})
    locations = {error["loc"] for error in caught.value.errors()}
    assert locations == {
        ("queries", "query_id"),
        ("queries", "group_size"),
        ("queries", "successes"),
    }
    rows = [
        {"query_id": f"q{i}", "group_size": 1, "successes": 0} for i in range(MAX_QUERIES_PER_STEP)
    ]
    assert (
        len(StepIn.model_validate({"step": 1, "queries": as_columns(rows)}).queries)
        == MAX_QUERIES_PER_STEP
    )


def test_rows_keep_their_error_locations_next_to_columns() -> None:
    """The shapes are told apart by JSON type, not tried as a union: no union tag in a row's
    location, and a value that is neither still reads as a bad list."""
    for queries, loc in [
        ([_query(0), {**_query(1), "successes": 9}], ("queries", 1)),
        ([{**_query(0), "entropy": "x"}], ("queries", 0, "entropy")),
        ("rows", ("queries",)),
    ]:
        with pytest.raises(ValidationError) as caught:
            StepIn.model_validate({"step": 1, "queries": queries})
        assert [error["loc"] for error in caught.value.errors()] == [loc]


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
