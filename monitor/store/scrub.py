"""Rewriting the database file after a migration removed secrets from it.

An ``UPDATE`` that drops a value from a row leaves the old bytes where they were: in the freed
space of the page, in pages on SQLite's free list, in older copies of the page in the ``-wal``
file (and, on PostgreSQL, in the dead tuple until a vacuum). Migration 0005 removes the values
of instance environments (users keep tokens there); a migration that removes secrets asks for
this rewrite by setting :data:`DUE` in ``store_meta`` (in its own transaction), and
:func:`finish_scrub` (run by ``monitor.store.db.migrate`` once the migrations are committed,
outside any transaction, as ``VACUUM`` requires) rewrites the file and clears the flag:

* SQLite: ``VACUUM`` (the file is rebuilt from the live rows: no free page, no freed cell
  survives), then ``wal_checkpoint(TRUNCATE)`` (the ``-wal`` file is emptied);
* PostgreSQL: ``VACUUM FULL instances`` (the table is rewritten without its dead tuples).

It costs a rewrite of the whole SQLite file (seconds per hundred megabytes, and as much free
disk space as the file takes), once. When it cannot be done now (another process holds the
database, the disk is full), it is left to the next open: the flag stays.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import structlog
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import DBAPIError

from monitor.store import tables as t

log = structlog.get_logger("monitor.store")

#: the ``store_meta`` key a migration sets when the file must be rewritten (value: why)
DUE = "scrub_due"


def _due(engine: Engine) -> str | None:
    with engine.connect() as conn:
        value = conn.execute(
            select(t.store_meta.c.value).where(t.store_meta.c.key == DUE)
        ).scalar_one_or_none()
        conn.rollback()
    return value


def finish_scrub(engine: Engine) -> bool:
    """Rewrite the database when a migration asked for it (see the module docstring); True
    when it was rewritten now. A rewrite that fails (another process holds the file, the disk
    is full) is logged and left to the next open: it never keeps the monitor from starting."""
    why = _due(engine)
    if why is None:
        return False
    log.info("database_rewrite", why=why)  # a whole-file rewrite: the start takes longer once
    try:
        if engine.dialect.name == "sqlite":
            _sqlite_rewrite(engine)
        elif engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM FULL instances")
    except (sqlite3.Error, DBAPIError) as exc:
        log.warning("database_rewrite_postponed", why=why, error=str(exc).splitlines()[0])
        return False
    with engine.begin() as conn:
        conn.execute(delete(t.store_meta).where(t.store_meta.c.key == DUE))
    log.info("database_rewritten", why=why)
    return True


def _sqlite_rewrite(engine: Engine) -> None:
    database = engine.url.database
    if not database or database == ":memory:":
        return  # nothing on disk
    raw: Any = engine.raw_connection()
    try:
        driver = raw.driver_connection
        previous = driver.isolation_level
        driver.isolation_level = None  # VACUUM runs outside a transaction
        try:
            driver.execute("VACUUM")
            driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            driver.isolation_level = previous
    finally:
        raw.close()
