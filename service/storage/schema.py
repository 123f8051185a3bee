"""Whether the store is reachable and its schema at the code's head: one check that readiness
(``/readyz``) and ``sharpwatch doctor`` both report."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.db.migrate import current_revision, head_revision

UPGRADE_FIX = "run `sharpwatch db upgrade` (or start `sharpwatch serve`, which migrates)"


@dataclass(frozen=True)
class SchemaStatus:
    """``problem`` is empty when the schema is at head; else what is wrong, and ``fix`` what to
    do. ``cause`` is the database's own error when it could not be read (for local tools only:
    it may name hosts)."""

    current: str | None = None
    head: str | None = None
    problem: str = ""
    fix: str = ""
    cause: str = ""

    @property
    def ready(self) -> bool:
        return not self.problem


def schema_status(engine: Engine) -> SchemaStatus:
    try:
        current, head = current_revision(engine), head_revision(engine)
    except SQLAlchemyError as exc:
        return SchemaStatus(problem=f"database unreachable: {type(exc).__name__}", cause=str(exc))
    if current != head:
        return SchemaStatus(
            current, head, f"schema at revision {current}, the code needs {head}", UPGRADE_FIX
        )
    return SchemaStatus(current, head)
