"""The one dialect-specific helper: ``INSERT ... ON CONFLICT DO UPDATE``.

SQLite and PostgreSQL both support it with the same semantics; SQLAlchemy exposes it per dialect,
so the dialect of the connection picks the construct and the rest of the store stays portable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_statement(connection: Connection, table: Table) -> Any:
    """The dialect's ``INSERT`` construct for ``table`` (it has ``on_conflict_do_update``)."""
    return _insert(connection, table)


def _insert(connection: Connection, table: Table) -> Any:
    name = connection.dialect.name
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise NotImplementedError(f"upsert is not implemented for {name!r}")


def insert_ignore(connection: Connection, table: Table, keys: Iterable[str]) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` for ``table`` (statement only)."""
    return _insert(connection, table).on_conflict_do_nothing(index_elements=list(keys))


def upsert(
    connection: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Iterable[str],
    update: Iterable[str] | None = None,
) -> int:
    """Insert ``rows``; on a conflict on ``keys``, overwrite the ``update`` columns.

    ``update=None`` overwrites every non-key column present in the first row; an empty ``update``
    keeps existing rows untouched (insert-or-ignore). Returns the number of rows sent.
    """
    if not rows:
        return 0
    keys = tuple(keys)
    columns = tuple(c for c in rows[0] if c not in keys) if update is None else tuple(update)
    cache_key = (connection.dialect.name, table, keys, columns)
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:  # built once per shape: a collection cycle upserts the same shapes often
        stmt = _insert(connection, table)
        if columns:
            stmt = stmt.on_conflict_do_update(
                index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns}
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        _UPSERTS[cache_key] = stmt
    connection.execute(stmt, list(rows))
    return len(rows)


_UPSERTS: dict[tuple[str, Table, tuple[str, ...], tuple[str, ...]], Any] = {}
