from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from service.db.base import Base
from service.db.migrate import current_revision, head_revision
from service.db.models import Step
from service.metric_names import STEP_METRIC_NAMES


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
