"""One step's per-query rows held column by column (issue 14: an accepted maximum-size body
peaks under 4× its size).

A 31 MB ingest body carries ~150k per-query rows; one pydantic model per row held ~4× the body.
``QueryRows`` is what ``StepIn.queries`` validates into: each row is still validated as a
``QueryIn`` (same rules, same error locations and messages), then the step's rows are packed into
a tuple of ids and typed arrays (~0.3× the body) as soon as the step's list is validated, so only
one step's models are ever alive. Queries sent as columns (``service.wire.query.QueryColumns``,
issue 21) are validated list by list and packed into the same arrays with no row built; the
content digest and the storage layer's inserts read those arrays (:meth:`QueryRows.packed`).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from service.wire.query import (
    QUERY_FIELDS,
    QUERY_ROW_FIELDS,
    QueryColumns,
    query_row_dict,
    rows_or_columns_schema,
)

if TYPE_CHECKING:
    from service.schemas.steps import QueryIn


class QueryTuple(NamedTuple):
    """One validated per-query row: the fields of ``service.wire.query.QueryRow``, in its order
    (``QUERY_ROW_FIELDS``; a test keeps the two equal)."""

    query_id: str
    group_size: int
    successes: int
    entropy: float | None
    log_zprime: float | None
    log_zprime_raw: float | None
    n_modes: int | None
    reward_accuracy: float | None
    response_length: float | None


_new_row: Callable[[tuple[Any, ...]], QueryTuple] = partial(tuple.__new__, QueryTuple)  # C speed
# A model's fields live in its ``__dict__``: reading them there is 3x faster than getattr.
_fields_of: Callable[[Any], dict[str, Any]] = attrgetter("__dict__")
_values_of: Callable[[dict[str, Any]], tuple[Any, ...]] = itemgetter(*QueryTuple._fields)
# How each field is held: ids in a tuple, the rest in typed arrays. Floats are finite once
# validated, so NaN stands for null; counts are never negative, so -1 does.
_TYPECODES = ("", "l", "l", *("l" if field.type is int else "d" for field in QUERY_FIELDS))
_NULL: dict[str, Any] = {"d": math.nan, "l": -1}


def _pack(values: Sequence[Any], typecode: str) -> tuple[Sequence[Any], bool]:
    """A column's storage, and whether it holds a null."""
    if not typecode:
        return values, False
    try:
        return array(typecode, values), False
    except TypeError:  # a None
        null = _NULL[typecode]
    return array(typecode, [null if value is None else value for value in values]), True


def _with_nulls(column: Sequence[Any]) -> Iterator[Any]:
    if isinstance(column, array) and column.typecode == "d":
        return (None if value != value else value for value in column)  # NaN != NaN
    return (None if value == -1 else value for value in column)


class QueryRows(Sequence[QueryTuple]):
    """A step's per-query rows; indexing and iteration give ``QueryTuple``s built on
    demand."""

    __slots__ = ("_columns", "_nulls")

    def __init__(self, rows: Iterable[QueryIn] = ()) -> None:
        values = list(map(_values_of, map(_fields_of, rows)))
        columns = zip(*values, strict=True) if values else [()] * len(_TYPECODES)
        packed = [_pack(c, code) for c, code in zip(columns, _TYPECODES, strict=True)]
        self._columns = tuple(column for column, _ in packed)
        self._nulls = tuple(null for _, null in packed)

    @classmethod
    def from_columns(cls, columns: QueryColumns) -> QueryRows:
        """The rows of validated columns, packed straight from the lists (no row is built)."""
        values: dict[str, list[Any] | None] = columns.__dict__
        count = len(values["query_id"] or ())
        packed: list[tuple[Sequence[Any], bool]] = []
        for name, code in zip(QUERY_ROW_FIELDS, _TYPECODES, strict=True):
            column = values[name]
            if column is None:  # omitted: null for every query
                packed.append((array(code, [_NULL[code]]) * count, count > 0))
            else:
                packed.append(_pack(tuple(column) if not code else column, code))
        rows = cls.__new__(cls)
        rows._columns = tuple(column for column, _ in packed)
        rows._nulls = tuple(null for _, null in packed)
        return rows

    def packed(self) -> tuple[tuple[Sequence[Any], bool], ...]:
        """Each field's storage in ``QUERY_ROW_FIELDS`` order, and whether it holds a null:
        the ids as a tuple of str, the rest as typed arrays (``array('l')`` of counts, -1 for
        null; ``array('d')`` of floats, NaN for null: validated floats are finite)."""
        return tuple(zip(self._columns, self._nulls, strict=True))

    def columns(self) -> list[Iterable[Any]]:
        """Every field's values in ``QUERY_ROW_FIELDS`` order, nulls restored (lazily)."""
        return self._readers()

    def _readers(self) -> list[Iterable[Any]]:
        """The columns in row order, nulls restored (lazily)."""
        return [
            _with_nulls(column) if null else column
            for column, null in zip(self._columns, self._nulls, strict=True)
        ]

    def __len__(self) -> int:
        return len(self._columns[0])

    def __iter__(self) -> Iterator[QueryTuple]:
        return map(_new_row, zip(*self._readers(), strict=True))

    @overload
    def __getitem__(self, index: int) -> QueryTuple: ...
    @overload
    def __getitem__(self, index: slice) -> list[QueryTuple]: ...
    def __getitem__(self, index: int | slice) -> QueryTuple | list[QueryTuple]:
        if isinstance(index, slice):
            return list(self)[index]
        index = range(len(self))[index]  # IndexError as a list's
        values = [column[index] for column in self._columns]
        for position, null in enumerate(self._nulls):
            if null:
                values[position] = next(_with_nulls(self._columns[position][index : index + 1]))
        return _new_row(tuple(values))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueryRows):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"QueryRows({list(self)!r})"

    @property
    def query_ids(self) -> Sequence[str]:
        return self._columns[0]

    def column(self, name: str) -> Iterable[Any]:
        """One field's values in row order (nulls as None), without building the rows."""
        position = QueryTuple._fields.index(name)
        column = self._columns[position]
        return _with_nulls(column) if self._nulls[position] else column

    def dump(self) -> list[dict[str, Any]]:
        """The rows as ``QueryIn.model_dump()`` writes them (JSON-safe: floats are finite)."""
        return list(map(query_row_dict, *self._readers()))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        from service.schemas.steps import MAX_QUERIES_PER_STEP, QueryIn  # imports this module

        rows = core_schema.list_schema(
            handler.generate_schema(QueryIn), max_length=MAX_QUERIES_PER_STEP
        )
        pack: Callable[[list[QueryIn]], QueryRows] = cls
        packed_rows = core_schema.no_info_after_validator_function(
            pack, core_schema.no_info_before_validator_function(_unpacked, rows)
        )

        def from_columns(value: dict[str, Any]) -> QueryRows:
            return cls.from_columns(QueryColumns.model_validate(value))

        return rows_or_columns_schema(
            packed_rows,
            from_columns,
            rows,
            handler.generate_schema(QueryColumns),
            serialization=core_schema.plain_serializer_function_ser_schema(
                cls.dump, return_schema=core_schema.list_schema(core_schema.any_schema())
            ),
        )


def _unpacked(value: Any) -> Any:
    """Rows already packed (``StepIn(queries=other.queries)``) are validated again as dicts."""
    return value.dump() if isinstance(value, QueryRows) else value
