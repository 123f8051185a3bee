"""Reading a step record's ``queries`` in tests, whichever shape it carries (columns, which the
monitor sends, or rows): every value is still checked, one dict per query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.wire.query_shapes import query_rows


def rows_of(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The record's queries, one dict per query (every field of the wire's row, absent columns
    as ``None``)."""
    queries = record["queries"]
    assert isinstance(queries, Mapping | list), type(queries)
    return query_rows(queries)
