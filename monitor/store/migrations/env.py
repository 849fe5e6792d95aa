"""Alembic environment: always driven from code with a live connection.

``monitor.store.db.migrate`` builds the alembic ``Config`` and passes the connection in
``config.attributes["connection"]``; there is no ``alembic.ini`` and no URL here, so the same
migrations run on SQLite (in batch mode, which rebuilds tables for ALTER) and PostgreSQL.
"""

from __future__ import annotations

from alembic import context

from monitor.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the store migrations through monitor.store.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
