"""Opening the database: engine, SQLite pragmas, migrations to head.

``open_store(url)`` is the only entry point the rest of the daemon needs::

    store = open_store("sqlite:////var/lib/novita-monitor/monitor.db")
    ...
    store.close()

Migrations run at every open (alembic, programmatically; a no-op when already at head), so an
upgraded daemon upgrades its database and keeps the data.

Every command opens the database through :func:`open_store`, so every command fails the same
way, in one line: :class:`DatabaseUnusable` (exit 2) for what the user must fix (a folder that
cannot be created, a file that is not a database, a schema newer than this code, a refused
login), :class:`DatabaseUnavailable` (exit 1) for what may pass on a retry (the server down or
starting, the file locked).

A SQLite database holds the account's history and what its instances run: it is created
private to the daemon's user (0600, and 0700 for any folder created for it); SQLite gives its
``-wal`` and ``-shm`` files the database file's mode. An existing database that others can read
gets a warning.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from monitor.errors import RuntimeFailure, UserError
from monitor.store.facade import Store

log = structlog.get_logger("monitor.store")

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


class DatabaseUnusable(UserError):
    """The database cannot be used as configured; the user must fix something (exit 2)."""


class DatabaseUnavailable(RuntimeFailure):
    """The database cannot be reached now; a retry may succeed (exit 1)."""


#: PostgreSQL refusals at connection time that are passing states, not configuration errors
_PG_TRANSIENT = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many clients",
    "remaining connection slots are reserved",
)
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "57")


def _private_sqlite_file(path: Path) -> None:
    """Create the folders (0700 each: ``mkdir -p`` would give the missing parents the default
    mode) and an empty database file (0600, which SQLite then gives its ``-wal`` and ``-shm``
    files), or warn when an existing database can be read by others."""
    missing: list[Path] = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    loose = []
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = candidate.stat()
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode) and mode & (stat.S_IRWXG | stat.S_IRWXO):
            loose.append(f"{candidate.name} {mode:04o}")
    if loose:
        log.warning(
            "database readable by other users; run chmod 600 on it and its -wal and -shm files",
            path=str(path),
            modes=", ".join(loose),
        )


def _sqlite_path(url: Any) -> Path | None:
    """The file of a SQLite URL (None for ``:memory:`` and ``file:`` URIs)."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database).expanduser()


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file, its folder and the file are created private
    to this user (see the module docstring)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_path(parsed)
        if path is not None:
            _private_sqlite_file(path)
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
    """Create the engine, migrate to head, and return the :class:`Store` facade.

    Raises :class:`DatabaseUnusable` or :class:`DatabaseUnavailable` with a one-line message
    (never the URL's password, never a SQL statement)."""
    where = make_url(url).render_as_string(hide_password=True)
    try:
        engine = create_store_engine(url)
    except OSError as exc:
        target = exc.filename or url
        reason = exc.strerror or type(exc).__name__
        raise DatabaseUnusable(
            f"database {where}: cannot create {target}: {reason} "
            "(expected a path the daemon's user can create and write)"
        ) from None
    try:
        migrate(engine)
    except Exception as exc:
        error = _open_error(exc, where, engine)
        engine.dispose()
        raise error from None
    return Store(engine)


def _open_error(exc: Exception, where: str, engine: Engine) -> Exception:
    """The one-line error for a failure while opening and migrating."""
    if isinstance(exc, CommandError) and "Can't locate revision" in str(exc):
        try:
            found = current_revision(engine)
        except Exception:
            found = None
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        return DatabaseUnusable(
            f"database {where}: its schema (revision {found or '?'}) is newer than this "
            f"novita-monitor knows (head {head}); run the newer novita-monitor, or point "
            "this one at another database"
        )
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        reason = _first_line(orig if orig is not None else exc)
        if isinstance(orig, sqlite3.Error):
            if "locked" in reason or "busy" in reason:
                return DatabaseUnavailable(f"database {where}: {reason} (try again)")
            return DatabaseUnusable(f"database {where}: {reason}")
        if engine.dialect.name == "postgresql":
            state = getattr(orig, "sqlstate", None)
            if state is None:  # refused while connecting: libpq passes no SQLSTATE on
                transient = "FATAL:" not in reason or any(t in reason for t in _PG_TRANSIENT)
            else:  # connection lost, resources, shutdown, conflicts
                transient = state[:2] in _PG_TRANSIENT_CLASSES
            if transient:
                return DatabaseUnavailable(f"database {where}: {reason} (try again)")
        return DatabaseUnusable(f"database {where}: {reason}")
    return DatabaseUnavailable(f"database {where}: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__
