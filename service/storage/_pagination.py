"""Keyset pagination by id, shared by the listings."""

from __future__ import annotations

from typing import Protocol, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


RowT = TypeVar("RowT", bound=_HasId)


def keyset_page(session: Session, query: Select[RowT], limit: int) -> tuple[list[RowT], int | None]:
    """One page of ``query`` (already filtered and ordered by id), and the id to continue from
    (``None`` on the last page): one row more than the page is fetched to know."""
    rows = list(session.scalars(query.limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None
