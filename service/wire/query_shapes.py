"""The two shapes of a step record's ``queries`` (issue 21), read the same way on both sides.

- **rows**: a list of row objects, one per query (``{"query_id": ..., "group_size": ...}``);
- **columns**: one object of columns, each a list with one value per query, named by
  :data:`service.wire.query.QUERY_ROW_FIELDS`: ``query_id``, ``group_size`` and ``successes``
  required, every measurement optional (a column left out, or null, is null for every
  query), all the same length, a non-finite float sent as null.

The trainer hooks send columns (one list per field parses, validates and stores several times
cheaper than one object per query, and is smaller); rows stay valid (a user's own record, a
write-ahead log written by an older client). Code that counts a record's queries or wants its
rows reads either shape through :func:`query_count` and :func:`query_rows`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import islice, repeat
from typing import Any

from service.wire.query import QUERY_ROW_FIELDS, query_row_dict

__all__ = ["ColumnsMapping", "RowsSequence", "is_columns", "query_count", "query_rows"]

#: ``queries`` as columns: field name → one value per query.
ColumnsMapping = Mapping[str, Sequence[Any]]
#: ``queries`` as rows: one mapping per query.
RowsSequence = Sequence[Mapping[str, Any]]


def is_columns(queries: object) -> bool:
    """True for the columnar shape (an object), False for rows (a list)."""
    return isinstance(queries, Mapping)


def query_count(queries: ColumnsMapping | RowsSequence) -> int:
    """How many queries (rows) ``queries`` holds, in either shape. For columns: the length of
    ``query_id`` (the longest column when it is missing: such a record is refused anyway)."""
    if not isinstance(queries, Mapping):
        return len(queries)
    ids = queries.get("query_id")
    if ids is not None:
        return len(ids)
    return max((len(column) for column in queries.values() if column is not None), default=0)


def query_rows(queries: ColumnsMapping | RowsSequence) -> list[dict[str, Any]]:
    """``queries`` as one dict per query, from either shape. From columns each row holds every
    field of ``QUERY_ROW_FIELDS`` in that order (an absent or null column: ``None``), then any
    other column present; ``ValueError`` when a column's length differs from ``query_id``'s."""
    if not isinstance(queries, Mapping):
        return [dict(row) for row in queries]
    count = query_count(queries)
    queries = {name: column for name, column in queries.items() if column is not None}
    for name, column in queries.items():
        if len(column) != count:
            raise ValueError(
                f"queries.{name} has {len(column)} values but queries.query_id has {count}"
            )
    known: list[Iterable[Any]] = [
        queries[name] if name in queries else repeat(None) for name in QUERY_ROW_FIELDS
    ]
    # map stops at the shortest column; islice, for a record whose columns are all absent.
    rows = list(islice(map(query_row_dict, *known), count))
    extra = [name for name in queries if name not in QUERY_ROW_FIELDS]
    for index, row in enumerate(rows):
        for name in extra:
            row[name] = queries[name][index]
    return rows
