"""Transaction helpers the storage layer shares."""

from __future__ import annotations

from sqlalchemy.orm import Session


def begin_write(session: Session) -> None:
    """Begin a transaction that reads and then writes as a writer from its first statement.

    PostgreSQL needs nothing here: the callers lock the rows they read (``FOR UPDATE``). SQLite
    ignores ``FOR UPDATE`` and runs reads outside any transaction until the first write, so two
    reads of one pass may see different commits; ``BEGIN IMMEDIATE`` takes the database's single
    write lock first (waiting up to the busy timeout), so the whole pass sees one state. A
    connection already in a transaction is left alone: on SQLite the engine opens every
    transaction that way already (service.db.sqlite_transactions), a savepoint's too.
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    driver_connection = connection.connection.driver_connection
    if driver_connection is not None and not driver_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
