"""Data problems: values from the API the monitor could not use (did not parse, or fell outside
their physical bounds), counted per account, kind, resource and field, for ``status`` to show."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.models import RAW_LIMIT, DataProblem
from monitor.store.sql import insert_statement


class DataProblemsRepo(StoreBase):
    """Data problems."""

    def record_data_problems(
        self, account: str, problems: Iterable[DataProblem], now: datetime
    ) -> None:
        """Count values from the API that could not be used, one row per (account, kind,
        resource_id, field): a new one starts at the number of times it is in ``problems``
        with ``first_seen`` = ``now``; a known one adds that number to ``count`` and moves
        ``last_seen``, keeping ``first_seen``. ``raw`` becomes the latest value, cut to
        :data:`~monitor.store.models.RAW_LIMIT` characters. Only ``kind``, ``resource_id``,
        ``field`` and ``raw`` of each problem are read."""
        if now.tzinfo is None:
            raise ValueError("record_data_problems needs an aware datetime")
        account_id = self.ensure_account(account)
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for problem in problems:
            key = (problem.kind, problem.resource_id or "", problem.field or "")
            raw = None if problem.raw is None else str(problem.raw)[:RAW_LIMIT]
            row = rows.get(key)
            if row is None:
                rows[key] = {
                    "account_id": account_id,
                    "kind": key[0],
                    "resource_id": key[1],
                    "field": key[2],
                    "raw": raw,
                    "count": 1,
                    "first_seen": now,
                    "last_seen": now,
                }
            else:
                row["count"] += 1
                row["raw"] = raw
        if not rows:
            return
        d = t.data_problems
        with self.engine.begin() as conn:
            stmt = insert_statement(conn, d)
            stmt = stmt.on_conflict_do_update(
                index_elements=["account_id", "kind", "resource_id", "field"],
                set_={
                    "count": d.c["count"] + stmt.excluded["count"],
                    "last_seen": stmt.excluded.last_seen,
                    "raw": stmt.excluded.raw,
                },
            )
            conn.execute(stmt, list(rows.values()))

    def data_problems(self, account: str) -> list[DataProblem]:
        """The account's data problems, by kind, resource and field."""
        account_id = self.ensure_account(account)
        d = t.data_problems.c
        return self._load(
            select(DataProblem)
            .where(d.account_id == account_id)
            .order_by(d.kind, d.resource_id, d.field)
        )
