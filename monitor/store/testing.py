"""Helpers for tests that need a store (shipped with the package, as structlog ships its own).

``store_url(backend, tmp_path)`` gives a fresh database URL: a SQLite file under ``tmp_path``, or
the PostgreSQL database named by ``NOVITA_MONITOR_TEST_PG_URL``, emptied first (every table of the
store and alembic's version table dropped), so each test starts from a blank schema.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, text

from monitor.store.tables import metadata

PG_ENV = "NOVITA_MONITOR_TEST_PG_URL"


def pg_url() -> str | None:
    """The PostgreSQL URL for tests, or None (test code only: it reads the environment)."""
    return os.environ.get(PG_ENV) or None


def reset_database(url: str) -> None:
    """Drop every table of the store (and alembic's) from the database at ``url``."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
            conn.execute(text("DROP TABLE IF EXISTS extra_notes"))
    finally:
        engine.dispose()


def store_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'monitor.db'}"
    url = pg_url()
    if url is None:
        raise RuntimeError(f"{PG_ENV} is not set")
    reset_database(url)
    return url
