"""A step's ``queries`` in either shape, rows or columns, counted and read as rows the same way
(``service.wire.query_shapes``, issue 21)."""

from __future__ import annotations

import pytest

from service.wire.query import QUERY_FIELDS, QUERY_ROW_FIELDS
from service.wire.query_shapes import is_columns, query_count, query_rows

ROWS = [
    {"query_id": "a", "group_size": 4, "successes": 1, "entropy": 0.5},
    {"query_id": "b", "group_size": 4, "successes": 0, "entropy": None},
    {"query_id": "c", "group_size": 2, "successes": 2, "entropy": 1.5},
]
COLUMNS = {
    "query_id": ["a", "b", "c"],
    "group_size": [4, 4, 2],
    "successes": [1, 0, 2],
    "entropy": [0.5, None, 1.5],
}


def test_both_shapes_count_and_read_as_the_same_rows() -> None:
    assert (is_columns(COLUMNS), is_columns(ROWS)) == (True, False)
    assert query_count(COLUMNS) == query_count(ROWS) == 3
    absent = dict.fromkeys(f.name for f in QUERY_FIELDS if f.name != "entropy")
    expected = [row | absent for row in ROWS]
    from_columns = query_rows(COLUMNS)
    assert from_columns == expected
    assert [list(row) for row in from_columns] == [list(QUERY_ROW_FIELDS)] * 3  # wire order
    assert query_rows(ROWS) == ROWS  # rows stay as they are (copies)
    assert query_rows(ROWS)[0] is not ROWS[0]


def test_empty_and_odd_columns() -> None:
    assert query_count({}) == query_count([]) == 0
    assert query_rows({}) == [] == query_rows([])
    assert query_rows({"query_id": []}) == []
    nulls = query_rows({"query_id": ["a"], "group_size": [1], "successes": [0], "entropy": None})
    assert nulls == query_rows({"query_id": ["a"], "group_size": [1], "successes": [0]})
    assert nulls[0]["entropy"] is None
    # No query_id: counted by the longest column (the service refuses such a record anyway).
    assert query_count({"group_size": [1, 2]}) == 2
    # A column the wire does not know is kept, after the known fields.
    (row,) = query_rows({"query_id": ["a"], "group_size": [1], "successes": [0], "x": [7]})
    assert list(row)[-1] == "x"
    assert row["x"] == 7
    with pytest.raises(ValueError, match=r"queries\.successes has 1 values but queries\.query_id"):
        query_rows({"query_id": ["a", "b"], "group_size": [1, 1], "successes": [0]})
