"""SQLite transaction control: a transaction that writes holds the write lock from its start.

SQLite has one write lock per database. A transaction that has read and then writes (a deferred
one) asks to upgrade its snapshot, and SQLite refuses at once, without waiting out the busy
timeout, whenever another connection holds the write lock or has committed since that read:
"database is locked", a 503 to the caller, although the other writer (the notification worker,
another request) would have been done in milliseconds. So no transaction here is deferred:

- the driver opens no transaction of its own (its legacy mode would open deferred ones, and its
  newer default opens one before the first read);
- a write (INSERT, UPDATE, DELETE, REPLACE, or a WITH that writes) outside a transaction is
  preceded by ``BEGIN IMMEDIATE``, which waits for the write lock (busy timeout) and then reads
  the newest commit; reads outside a transaction run on their own, as they always did;
- a SAVEPOINT outside a transaction (a nested session transaction, a session joined to a
  connection) would open a deferred transaction that reads before it writes: it is preceded by
  ``BEGIN IMMEDIATE`` as well, and releasing that savepoint commits, as in SQLite itself, while
  rolling back to it rolls the transaction back instead of leaving its snapshot open.

A pass that must read and write one state begins with ``storage._transactions.begin_write``.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from sqlalchemy import Connection, Engine, event

__all__ = ["install"]

_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
_WRITE_WORD = re.compile(r"\b(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
_OPENING_SAVEPOINT = "sharpwatch.opening_savepoint"  # key in the pooled connection's info


def install(engine: Engine) -> None:
    """Put the engine's SQLite connections under this module's transaction control."""
    event.listen(engine, "connect", _driver_opens_no_transaction)
    event.listen(engine, "before_cursor_execute", _begin_immediate_before_writing)
    event.listen(engine, "after_cursor_execute", _end_with_the_opening_savepoint)


def _driver_opens_no_transaction(dbapi_connection: Any, _record: Any) -> None:
    # Python >= 3.12 has ``autocommit``; its legacy value is the one in which
    # ``isolation_level = None`` means that the driver never begins.
    legacy = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", None)
    if legacy is not None:
        dbapi_connection.autocommit = legacy
    dbapi_connection.isolation_level = None


def _words(statement: str) -> list[str]:
    return statement.split(None, 3)


def _writes(first_word: str, statement: str) -> bool:
    if first_word in _WRITES:
        return True
    return first_word == "WITH" and _WRITE_WORD.search(statement) is not None


def _begin_immediate_before_writing(
    conn: Connection,
    cursor: Any,
    statement: str,
    _parameters: Any,
    _context: Any,
    _executemany: bool,
) -> None:
    if cursor.connection.in_transaction:
        return
    conn.info.pop(_OPENING_SAVEPOINT, None)  # any transaction it opened has ended
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    words = _words(statement)
    first = words[0].upper() if words else ""
    if first == "SAVEPOINT" and len(words) > 1:
        cursor.execute("BEGIN IMMEDIATE")
        conn.info[_OPENING_SAVEPOINT] = words[1]
    elif _writes(first, statement):
        cursor.execute("BEGIN IMMEDIATE")


def _end_with_the_opening_savepoint(
    conn: Connection,
    cursor: Any,
    statement: str,
    _parameters: Any,
    _context: Any,
    _executemany: bool,
) -> None:
    opening = conn.info.get(_OPENING_SAVEPOINT)
    if opening is None:
        return
    words = [word.upper() for word in _words(statement)]
    if words[:1] == ["RELEASE"] and words[-1] == opening.upper():
        conn.info.pop(_OPENING_SAVEPOINT)
        cursor.connection.commit()
    elif words[:2] == ["ROLLBACK", "TO"] and words[-1] == opening.upper():
        conn.info.pop(_OPENING_SAVEPOINT)
        cursor.connection.rollback()
