"""Opening the database: engine, SQLite pragmas, migrations to head.

``open_store(url)`` is the only entry point the rest of the daemon needs::

    store = open_store("sqlite:////var/lib/novita-monitor/monitor.db")
    ...
    store.close()

Migrations run at every open (alembic, programmatically; a no-op when already at head), so an
upgraded daemon upgrades its database and keeps the data.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from monitor.store.facade import Store

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: PostgreSQL advisory lock id held while migrating (any constant unique to this application)
MIGRATION_LOCK = 0x4E4F5649


def _switch_to_wal(cursor: Any, attempts: int = 100) -> None:
    """``PRAGMA journal_mode=WAL`` (persistent in the file, so done once per database).

    SQLite does not call the busy handler for this switch, so when several openers create a new
    database at once, the losers retry briefly here instead of failing with "database is locked".
    """
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every new SQLite connection: WAL, foreign keys, and waiting (not failing) on a lock."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file, the parent directory is created."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            parsed = parsed.set(database=str(path))
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(connection: Any = None) -> Config:
    """An alembic ``Config`` built in code (no ini file), pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _sqlite_migration_engine(url: Any) -> Engine:
    """A one-connection engine whose transactions are real and exclusive (``BEGIN IMMEDIATE``).

    Python's sqlite3 runs DDL outside any transaction by default, so a migration would be
    neither atomic nor serialised against another process opening the same file. This engine
    takes the write lock first (others wait up to the busy timeout, then find the schema at head).
    """
    engine = create_engine(url, poolclass=NullPool)

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, record)
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves

    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    return engine


def migrate(engine: Engine, revision: str = "head", config: Config | None = None) -> None:
    """Upgrade the schema to ``revision`` (idempotent, atomic, safe against a concurrent open)."""
    database = engine.url.database
    sqlite = engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
    target = _sqlite_migration_engine(engine.url) if sqlite else engine
    try:
        with target.begin() as connection:
            if connection.dialect.name == "postgresql":
                # replicas starting together: one migrates, the others wait and then find head
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            cfg = config or alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
        from monitor.store.scrub import finish_scrub  # a migration that removed secrets

        finish_scrub(target)  # rewrites the file, outside the migration's transaction
    finally:
        if sqlite:
            target.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def open_store(url: str) -> Store:
    """Create the engine, migrate to head, and return the :class:`Store` facade."""
    engine = create_store_engine(url)
    try:
        migrate(engine)
    except Exception:
        engine.dispose()
        raise
    return Store(engine)
