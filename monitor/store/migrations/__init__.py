"""Alembic migrations of the store, run in code by :func:`monitor.store.db.open_store`."""
