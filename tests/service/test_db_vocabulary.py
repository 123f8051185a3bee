"""The database's CHECK constraints hold exactly the wire's vocabularies (issue 15), on both
databases: the migrated constraint lists each enum's values, every value is stored, any other is
refused."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import pytest
from sqlalchemy import CheckConstraint, Engine, insert, inspect
from sqlalchemy.exc import IntegrityError

from service.db.models import Command, Run
from service.db.vocabulary import in_values
from service.wire import CommandKind, CommandSource, CommandStatus, RunSource

# (table, column, vocabulary): every column a CHECK constraint confines to an enum's values.
CHECKED: list[tuple[str, str, type[StrEnum]]] = [
    ("runs", "source", RunSource),
    ("commands", "kind", CommandKind),
    ("commands", "status", CommandStatus),
]


def _run_row(name: str, **values: Any) -> dict[str, Any]:
    return {"project": "vocabulary", "name": name, "group_size": 8, "kl_beta": 0.0} | values


def _insert_row(engine: Engine, table: str, column: str, value: str, name: str) -> None:
    """One row with ``column = value``; a command gets a run of its own (one outstanding command
    of each kind per run)."""
    with engine.begin() as connection:
        if table == "runs":
            connection.execute(insert(Run).values(_run_row(name, **{column: value})))
            return
        run_id = connection.execute(insert(Run).values(_run_row(name)).returning(Run.id)).scalar()
        command = {
            "run_id": run_id,
            "kind": CommandKind.EARLY_STOP,
            "status": CommandStatus.APPLIED,
            "source": CommandSource.OPERATOR,
            "reason": "vocabulary test",
        }
        connection.execute(insert(Command).values(command | {column: value}))


@pytest.mark.parametrize(("table", "column", "vocabulary"), CHECKED)
def test_the_migrated_check_lists_the_enums_values(
    engine: Engine, table: str, column: str, vocabulary: type[StrEnum]
) -> None:
    checks = [
        str(check["sqltext"])
        for check in inspect(engine).get_check_constraints(table)
        if check["name"] == f"ck_{table}_{column}_known"
    ]
    assert len(checks) == 1, checks
    # SQLite keeps the text as written; PostgreSQL rewrites it to `= ANY (ARRAY[...])`.
    assert set(re.findall(r"'([a-z_]+)'", checks[0])) == {member.value for member in vocabulary}


@pytest.mark.parametrize(("table", "column", "vocabulary"), CHECKED)
def test_every_value_is_stored_and_any_other_is_refused(
    engine: Engine, table: str, column: str, vocabulary: type[StrEnum]
) -> None:
    for member in vocabulary:
        _insert_row(engine, table, column, member.value, f"{column}-{member.value}")
    for bad in ("unknown", member.value.upper(), ""):
        with pytest.raises(IntegrityError, match=f"{column}_known"):
            _insert_row(engine, table, column, bad, f"{column}-bad-{bad}")


def test_the_models_render_the_migrations_text() -> None:
    """The rendered constraints are the literal SQL the migrations wrote (so autogenerate sees no
    change and no migration was needed)."""
    rendered = {
        str(check.name): str(check.sqltext)
        for table in (Run.__table__, Command.__table__)
        for check in table.constraints
        if isinstance(check, CheckConstraint) and str(check.name).endswith("_known")
    }
    assert rendered == {
        "ck_runs_source_known": "source IN ('live', 'imported')",
        "ck_commands_kind_known": "kind IN ('early_stop', 'adjust_alpha')",
        "ck_commands_status_known": (
            "status IN ('pending', 'delivered', 'applied', 'rejected', 'expired')"
        ),
    }


@pytest.mark.parametrize("values", [[], ["it's"], ["Upper"], ["a b"]])
def test_a_vocabulary_that_would_need_quoting_is_refused(values: list[str]) -> None:
    with pytest.raises(ValueError, match="plain lowercase words"):
        in_values("kind", values)
