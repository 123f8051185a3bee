from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.base import Base
from service.db.engine import make_engine
from service.db.migrate import alembic_config, current_revision, head_revision, upgrade
from service.db.models import Run, Step
from service.wire.metrics import STEP_METRIC_NAMES
from tests._servers import postgres_url_or_skip, scratch_postgres_database


def test_autogenerate_finds_no_difference_between_models_and_migrations(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_database_is_at_head_after_upgrade(engine: Engine) -> None:
    assert current_revision(engine) == head_revision(engine)
    assert {"runs", "steps", "query_stats"} <= set(inspect(engine).get_table_names())


def test_every_standard_metric_is_a_step_column() -> None:
    columns = set(Step.__table__.columns.keys())
    assert columns >= STEP_METRIC_NAMES
    bookkeeping = {"id", "run_id", "step", "time", "received_at", "content_hash"}
    assert columns - STEP_METRIC_NAMES - bookkeeping == {
        "extras",
        "non_finite",
        "n_queries",
        "query_histograms",
    }


def test_0007_settles_duplicate_outstanding_commands_then_forbids_them(
    backend: str, tmp_path: Path
) -> None:
    """Rows from before revision 0007 that break "one outstanding per kind": the newest
    adjust_alpha and the oldest early_stop stay, the others expire; then the index holds."""
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.db'}"
        else:
            url = stack.enter_context(scratch_postgres_database(postgres_url_or_skip()))
        engine = make_engine(url)
        stack.callback(engine.dispose)
        upgrade(engine, "0006")
        now = datetime.now(UTC)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO runs (id, project, name, group_size, kl_beta, config, tags, "
                    "status, created_at, updated_at, verdict) VALUES (1, 'p', 'r', 8, 0.0, "
                    "'{}', '{}', 'running', :now, :now, 'healthy')"
                ),
                {"now": now},
            )
            for kind, status in [
                ("adjust_alpha", "pending"),
                ("adjust_alpha", "delivered"),
                ("adjust_alpha", "pending"),
                ("early_stop", "delivered"),
                ("early_stop", "pending"),
                ("adjust_alpha", "applied"),
            ]:
                connection.execute(
                    text(
                        "INSERT INTO commands (run_id, kind, status, source, reason, rules, "
                        "created_at) VALUES (1, :kind, :status, 'operator', 'r', '[]', :now)"
                    ),
                    {"kind": kind, "status": status, "now": now},
                )
        upgrade(engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, status FROM commands ORDER BY id")).all()
        assert [status for _, status in rows] == [
            "expired",
            "expired",
            "pending",
            "delivered",
            "expired",
            "applied",
        ]
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO commands (run_id, kind, status, source, reason, rules, "
                    "created_at) VALUES (1, 'early_stop', 'pending', 'operator', 'r', '[]', :now)"
                ),
                {"now": now},
            )


def test_revision_0008_moves_raw_zprime_from_extras_into_columns_and_back(
    database_url: str,
) -> None:
    """Steps stored before raw Z' had columns keep their values: upgrade moves them out of
    ``extras`` into the columns, downgrade moves them back."""
    engine = make_engine(database_url)
    try:
        command.downgrade(alembic_config(engine), "0007")
        as_json = "CAST(:extras AS jsonb)" if engine.dialect.name == "postgresql" else ":extras"
        empty = "CAST('{}' AS jsonb)" if engine.dialect.name == "postgresql" else "'{}'"
        empty_list = "CAST('[]' AS jsonb)" if engine.dialect.name == "postgresql" else "'[]'"
        extras = {"zprime_raw_gt1_frac": 0.4, "log_zprime_raw_mean": -0.1, "mine": 2.0}
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO runs (id, project, name, group_size, kl_beta, config, tags, "
                    f"status, created_at, updated_at) VALUES (1, 'p', 'r', 8, 0.0, {empty}, "
                    f"{empty}, 'running', :now, :now)"
                ),
                {"now": datetime(2026, 12, 2, tzinfo=UTC)},
            )
            for step, values in ((0, extras), (1, {"mine": 1.0})):
                connection.execute(
                    text(
                        "INSERT INTO steps (run_id, step, received_at, content_hash, extras, "
                        f"non_finite, n_queries) VALUES (1, :step, :now, 'h', {as_json}, "
                        f"{empty_list}, 0)"
                    ),
                    {
                        "step": step,
                        "now": datetime(2026, 12, 2, tzinfo=UTC),
                        "extras": json.dumps(values),
                    },
                )
        upgrade(engine)
        with Session(engine) as session:
            rows = {s.step: s for s in session.scalars(select(Step))}
            assert rows[0].zprime_raw_gt1_frac == 0.4
            assert rows[0].log_zprime_raw_mean == -0.1
            assert rows[0].log_zprime_raw_p90 is None
            assert rows[0].extras == {"mine": 2.0}
            assert rows[1].zprime_raw_gt1_frac is None
            assert rows[1].extras == {"mine": 1.0}
            assert session.scalars(select(Run)).one().alpha_pinned is False
        command.downgrade(alembic_config(engine), "0007")
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT extras FROM steps WHERE step = 0")).scalar()
        assert (json.loads(stored) if isinstance(stored, str) else stored) == extras
        upgrade(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_upgrading_a_populated_database_keeps_every_row(backend: str, tmp_path: Path) -> None:
    """Batch migrations rebuild ``runs`` on SQLite (copy, DROP, rename): with foreign keys
    enforced, that DROP cascaded and silently deleted every step of every run. Upgrades from
    revision 0004 to head and down and up again keep all rows."""
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.db'}"
        else:
            url = stack.enter_context(scratch_postgres_database(postgres_url_or_skip()))
        engine = make_engine(url)
        stack.callback(engine.dispose)
        upgrade(engine, "0004")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO runs (id, project, name, group_size, kl_beta, config, tags, "
                    "status, created_at, updated_at, verdict) VALUES (1, 'p', 'old', 8, 0.0, "
                    "'{}', '{}', 'running', :t, :t, 'healthy')"
                ),
                {"t": datetime(2026, 1, 1, tzinfo=UTC)},
            )
            for step in range(3):
                connection.execute(
                    text(
                        "INSERT INTO steps (run_id, step, received_at, content_hash, extras, "
                        "non_finite, n_queries) VALUES (1, :s, :t, 'h', '{}', '[]', 1)"
                    ),
                    {"s": step, "t": datetime(2026, 1, 1, tzinfo=UTC)},
                )
                connection.execute(
                    text(
                        "INSERT INTO query_stats (run_id, step, query_id, group_size, successes) "
                        "VALUES (1, :s, 'q', 8, 3)"
                    ),
                    {"s": step},
                )

        def counts() -> tuple[int, int, int]:
            with engine.connect() as connection:
                return tuple(  # type: ignore[return-value]
                    connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                    for table in ("runs", "steps", "query_stats")
                )

        upgrade(engine)
        assert counts() == (1, 3, 3)
        command.downgrade(alembic_config(engine), "0004")
        assert counts() == (1, 3, 3)
        upgrade(engine)
        assert counts() == (1, 3, 3)
        if backend == "sqlite":
            with engine.connect() as connection:
                assert connection.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
