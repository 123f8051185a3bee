"""The query row of the wire contract: one query's group at one step.

:class:`QueryMeasures` declares the per-query measurements once (type, bounds, unit, meaning);
:data:`QUERY_FIELDS`, the table the ORM's ``query_stats`` columns, the storage layer's column
lists, the trainer hooks' record builder and the schemas derive from, is read off it. A new field
here needs a migration for its column, and nothing else written out by hand.

A step's queries travel in one of two shapes: a list of :class:`QueryRow` objects, or
:data:`QueryColumns`, one list per row field (``QUERY_ROW_FIELDS``) with element i of every list
being query i, each element held to the row field's type and bounds (issue 21: one JSON object
per row was most of a batched request's cost). :class:`RowsOrColumns` tells them apart by JSON
type (object: columns; otherwise rows), so each shape keeps its own error locations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, get_args

from pydantic import (
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, core_schema

from service.wire.types import FiniteFloat, StrictModel

__all__ = [
    "MAX_QUERIES_PER_STEP",
    "QUERY_FIELDS",
    "QUERY_ROW_FIELDS",
    "QueryColumns",
    "QueryField",
    "QueryId",
    "QueryMeasures",
    "QueryRow",
    "RowsOrColumns",
    "query_row_dict",
    "rows_or_columns_schema",
]

MAX_QUERIES_PER_STEP = 65536

# No NUL (a text column cannot hold it); a pattern, not a Python validator: 512 ids a step.
QueryId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]


def _measure(unit: str, meaning: str, *, ge: float, le: float) -> Any:
    """An optional measurement field: null when the trainer has no value for it."""
    return Field(
        None, ge=ge, le=le, description=f"{meaning} ({unit})", json_schema_extra={"unit": unit}
    )


class QueryMeasures(StrictModel):
    """The per-query measurements (science.md section in brackets), all optional."""

    entropy: FiniteFloat | None = _measure(
        "nats", "mean token entropy of this query's responses", ge=0.0, le=1e4
    )
    log_zprime: FiniteFloat | None = _measure(
        "nats",
        "calibrated log Z'(q): from the advantages used for the update [§2]",
        ge=-1e6,
        le=1e6,
    )
    log_zprime_raw: FiniteFloat | None = _measure(
        "nats", "raw log Z'(q): from the advantages before IAC [§2]", ge=-1e6, le=1e6
    )
    n_modes: int | None = _measure(
        "count", "distinct answer keys in the group [§2]", ge=0, le=65536
    )
    reward_accuracy: FiniteFloat | None = _measure(
        "fraction 0..1", "pseudo vs oracle reward agreement [§4]", ge=0.0, le=1.0
    )
    response_length: FiniteFloat | None = _measure(
        "tokens", "mean response length in the group", ge=0.0, le=1e9
    )


class _QueryKey(StrictModel):
    query_id: QueryId = Field(description="Stable id of the query (prompt) across steps.")
    group_size: int = Field(ge=1, le=65536, description="Responses sampled for this query (count).")
    successes: int = Field(ge=0, le=65536, description="S+, correct responses (0..group_size).")


class QueryRow(QueryMeasures, _QueryKey):
    """One query's group at this step: its id, G, S+ and the measurements (in that order)."""

    @model_validator(mode="after")
    def _successes_within_group(self) -> QueryRow:
        if self.successes > self.group_size:
            raise ValueError(
                f"successes ({self.successes}) must not exceed group_size ({self.group_size})"
            )
        return self


@dataclass(frozen=True, slots=True)
class QueryField:
    """One per-query measurement: name, unit, meaning and its type (``int`` or ``float``)."""

    name: str
    unit: str
    description: str
    type: type[int] | type[float]


def _field_table() -> tuple[QueryField, ...]:
    fields = []
    for name, info in QueryMeasures.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        unit = extra["unit"]
        assert isinstance(unit, str)
        integral = info.annotation == int | None
        fields.append(QueryField(name, unit, info.description or "", int if integral else float))
    return tuple(fields)


#: The per-query measurements, in row order (each is a nullable column of ``query_stats``).
QUERY_FIELDS: tuple[QueryField, ...] = _field_table()

#: Every field of a query row, in order: what the storage layer inserts after run and step.
QUERY_ROW_FIELDS: tuple[str, ...] = tuple(QueryRow.model_fields)


def _dict_builder(keys: Sequence[str]) -> Callable[..., dict[str, object]]:
    """``f(*values) -> {keys[0]: values[0], ...}`` as one dict display, the way a hand-written
    literal builds each row (``dict(zip(keys, row))`` per row is markedly slower on 65k-query
    steps). The keys are the wire's field names, identifiers all."""
    assert all(key.isidentifier() for key in keys)
    source = f"lambda {', '.join(keys)}: {{{', '.join(f'{k!r}: {k}' for k in keys)}}}"
    built: Callable[..., dict[str, object]] = eval(source)
    return built


#: ``query_row_dict(*values)``: one query row as its wire dict, the values in
#: ``QUERY_ROW_FIELDS`` order (the hooks' record builder and the service's packed rows use it).
query_row_dict = _dict_builder(QUERY_ROW_FIELDS)


# ---------------------------------------------------------------------------------------------
# The columnar shape of a step's queries: one array per row field, element i of each is query i.


class _ColumnChecks(StrictModel):
    """What the rows' model checks across fields, checked per element across the columns."""

    @model_validator(mode="after")
    def _consistent(self) -> _ColumnChecks:
        columns: dict[str, list[Any] | None] = self.__dict__
        errors: list[InitErrorDetails] = []
        count = len(columns["query_id"] or ())
        for name, column in columns.items():
            if column is not None and len(column) != count:
                errors.append(
                    _error(
                        (name,),
                        f"has {len(column)} elements but query_id has {count}: "
                        "every column has one element per query",
                        len(column),
                    )
                )
        if not errors:
            group_sizes: list[int] = columns["group_size"] or []
            successes: list[int] = columns["successes"] or []
            if any(map(int.__gt__, successes, group_sizes)):
                errors.extend(
                    _error(
                        ("successes", index),
                        f"successes ({value}) must not exceed group_size ({size})",
                        value,
                    )
                    for index, (value, size) in enumerate(zip(successes, group_sizes, strict=True))
                    if value > size
                )
            ids: list[str] = columns["query_id"] or []
            if len(set(ids)) != len(ids):
                first: dict[str, int] = {}
                for index, query_id in enumerate(ids):
                    if query_id in first:
                        errors.append(
                            _error(
                                ("query_id", index),
                                f"query_id {query_id!r} appears twice in the step (first at "
                                f"index {first[query_id]}); each query has one row per step",
                                query_id,
                            )
                        )
                        break
                    first[query_id] = index
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


def _error(loc: tuple[str | int, ...], message: str, value: Any = None) -> InitErrorDetails:
    return {
        "type": "value_error",
        "loc": loc,
        "input": value,
        "ctx": {"error": ValueError(message)},
    }


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # omitted means null for every query; no default to show


def _column(name: str) -> tuple[Any, Any]:
    """Field ``name`` of the row as a column: a list of the row field's type and bounds."""
    info = QueryRow.model_fields[name]
    element: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    description = f"Column of `{name}`, one element per query: {info.description}"
    if info.is_required():
        return list[element], Field(max_length=MAX_QUERIES_PER_STEP, description=description)
    return list[element] | None, Field(
        None,
        max_length=MAX_QUERIES_PER_STEP,
        description=description + " Omitted: null for every query.",
        json_schema_extra=_no_default,
    )


if TYPE_CHECKING:

    class QueryColumns(_ColumnChecks):
        """(For type checkers: the fields are made from the row's at run time, below.)"""

        def __getattr__(self, name: str) -> list[Any] | None: ...

else:
    #: ``queries`` as columns: one list per field of :class:`QueryRow` (``QUERY_ROW_FIELDS``),
    #: each element validated as that field (type, bounds), ``successes <= group_size`` per
    #: element and unique ids; an optional measurement's column may be omitted (or null). An
    #: error names the column and the element's index (``queries.entropy[17]``).
    QueryColumns = create_model(
        "QueryColumns",
        __base__=_ColumnChecks,
        __doc__="A step's per-query rows as columns: element i of every column is query i.",
        **{name: _column(name) for name in QUERY_ROW_FIELDS},
    )


def rows_or_columns_schema(
    rows: core_schema.CoreSchema,
    columns: Callable[[dict[str, Any]], Any],
    documented_rows: core_schema.CoreSchema,
    documented_columns: core_schema.CoreSchema,
    serialization: core_schema.SerSchema | None = None,
) -> core_schema.CoreSchema:
    """``queries`` in either shape, told apart by the JSON type: an object is validated by
    ``columns``, anything else by ``rows`` (so a row's error keeps its location, with no union
    tag in it). The document shows both shapes (``anyOf``)."""

    def dispatch(value: Any, validate_rows: core_schema.ValidatorFunctionWrapHandler) -> Any:
        return columns(value) if isinstance(value, dict) else validate_rows(value)

    return core_schema.no_info_wrap_validator_function(
        dispatch,
        rows,
        json_schema_input_schema=core_schema.union_schema([documented_rows, documented_columns]),
        serialization=serialization,
    )


class RowsOrColumns:
    """The marker of a ``list[Row] | QueryColumns`` annotation: dispatched on the JSON type by
    :func:`rows_or_columns_schema`, not tried as a union."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        rows_type, columns_type = get_args(source)
        assert columns_type is QueryColumns
        rows = handler.generate_schema(rows_type)
        columns = handler.generate_schema(QueryColumns)
        return rows_or_columns_schema(rows, QueryColumns.model_validate, rows, columns)
