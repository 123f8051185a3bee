"""Alembic environment. The engine comes from the caller (``service.db.migrate``) or, for the
alembic CLI, from ``SHARPWATCH_DATABASE_URL``."""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Engine

from service.db import models  # noqa: F401  (registers the tables on Base.metadata)
from service.db.base import Base, UTCDateTime
from service.db.engine import make_engine
from service.settings import Settings

target_metadata = Base.metadata


def _engine() -> Engine:
    engine = context.config.attributes.get("engine")
    if isinstance(engine, Engine):
        return engine
    return make_engine(Settings().database_url)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render the service's own column types as plain SQLAlchemy ones in new revisions."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _sqlite_foreign_keys(connection: Any, on: bool) -> None:
    """Switch SQLite's foreign-key enforcement. Batch migrations rebuild a table (copy, DROP,
    rename); with enforcement on, the DROP of ``runs`` cascades and deletes every step, alert and
    command. The pragma is a no-op inside a transaction, so it goes to the driver connection
    before Alembic begins one."""
    driver = connection.connection.driver_connection
    driver.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.commit()  # end the autobegun transaction, if any, so the pragma applies
            _sqlite_foreign_keys(connection, on=False)
        try:
            _migrate(connection)
        finally:
            if sqlite:
                _sqlite_foreign_keys(connection, on=True)


def _migrate(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


run_migrations_online()
