"""The wire's tables are the one list of step metrics and query fields: the ORM, the storage
layer and the schemas derive theirs from them (issue 15)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Float, Integer, Table

from service.db.models import QueryStat, Step
from service.schemas.query_rows import QueryRows
from service.schemas.steps import QueryIn, QueryOut, QueryPoint, StepIn
from service.storage import steps as storage_steps
from service.wire.metrics import (
    HOOK_STEP_METRICS,
    STEP_COLUMNS,
    STEP_METRIC_NAMES,
    STEP_METRICS,
    Storage,
)
from service.wire.query import QUERY_FIELDS, QUERY_ROW_FIELDS, QueryRow
from service.wire.query_shapes import query_rows


def test_every_column_stored_metric_is_a_nullable_float_column_of_steps() -> None:
    table = cast(Table, Step.__table__)
    for name in STEP_COLUMNS:
        assert isinstance(table.c[name].type, Float), name
        assert table.c[name].nullable, name
    assert set(STEP_COLUMNS) == STEP_METRIC_NAMES == {m.name for m in STEP_METRICS}


def test_hook_metrics_go_to_extras_and_no_name_is_in_both_lists() -> None:
    assert {m.storage for m in STEP_METRICS} == {Storage.COLUMN}
    assert {m.storage for m in HOOK_STEP_METRICS} == {Storage.EXTRAS}
    table = cast(Table, Step.__table__)
    for metric in HOOK_STEP_METRICS:
        assert metric.name not in table.c
        assert metric.name not in STEP_METRIC_NAMES


def test_every_query_field_is_a_column_of_the_orm_with_its_type() -> None:
    table = cast(Table, QueryStat.__table__)
    for field in QUERY_FIELDS:
        column = table.c[field.name]
        assert column.nullable, field.name
        assert isinstance(column.type, Integer if field.type is int else Float), field.name


def test_every_query_field_is_a_field_of_the_query_models() -> None:
    names = [f.name for f in QUERY_FIELDS]
    assert list(QUERY_ROW_FIELDS) == ["query_id", "group_size", "successes", *names]
    for model in (QueryRow, QueryIn, QueryOut):
        assert list(model.model_fields) == list(QUERY_ROW_FIELDS), model
    assert set(names) < set(QueryPoint.model_fields)
    assert issubclass(QueryIn, QueryRow)
    # A step's rows are validated as QueryIn (the name the schema and errors show), then held by
    # column (issue 14: service.schemas.query_rows).
    assert StepIn.model_fields["queries"].annotation is QueryRows
    schema = StepIn.model_json_schema()
    rows, columns = schema["properties"]["queries"]["anyOf"]  # or as columns: QueryColumns
    assert rows["type"] == "array"
    assert rows["items"] == {"$ref": "#/$defs/QueryIn"}
    assert columns == {"$ref": "#/$defs/QueryColumns"}
    assert list(schema["$defs"]["QueryColumns"]["properties"]) == list(QUERY_ROW_FIELDS)


def test_storage_inserts_every_row_field_after_run_and_step() -> None:
    row = QueryIn.model_validate(
        {"query_id": "q", "group_size": 4, "successes": 1, "entropy": 0.5, "n_modes": 2}
    )
    record = StepIn.model_validate({"step": 3, "queries": [row.model_dump()]})
    (values,) = storage_steps._query_tuples(7, [record])
    inserted = dict(zip(storage_steps._QUERY_INSERT_COLUMNS, values, strict=True))
    assert inserted == {"run_id": 7, "step": 3, **row.model_dump()}


def test_every_query_field_documents_its_unit() -> None:
    schema = QueryIn.model_json_schema()["properties"]
    for field in QUERY_FIELDS:
        assert field.unit
        assert f"({field.unit})" in schema[field.name]["description"]


def test_the_hooks_build_query_columns_from_the_table() -> None:
    from trainer_hooks._record import build_queries

    host = {"q_size": [4.0, 4.0], "q_successes": [1.0, 4.0], "q_n_modes": [2.0, 1.0]}
    host |= {f"q_{f.name}": [0.5, float("nan")] for f in QUERY_FIELDS if f.type is float}
    columns = build_queries(host, ["a", "b"], 2)
    assert list(columns) == list(QUERY_ROW_FIELDS)
    rows = query_rows(columns)
    for row in rows:
        QueryIn.model_validate(row)
    assert rows[1]["entropy"] is None
    assert rows[0]["n_modes"] == 2
    assert type(rows[0]["n_modes"]) is int
    # A field the step has no host column for is left out: null for every query.
    without = build_queries({"q_size": [2.0], "q_successes": [0.0]}, None, 1)
    assert without == {"query_id": ["q0"], "group_size": [2], "successes": [0]}
    assert query_rows(without) == [
        {"query_id": "q0", "group_size": 2, "successes": 0}
        | dict.fromkeys(f.name for f in QUERY_FIELDS)
    ]
