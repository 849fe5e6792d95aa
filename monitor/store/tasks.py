"""Training tasks, watched async tasks (the API cannot list them), and collector runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.models import CollectorRun, TrainingTaskRecord, WatchedTask
from monitor.store.records import TASK_FINISHED, Event
from monitor.store.sql import upsert
from monitor.store.types import from_epoch, to_epoch

RUN_OUTCOMES = frozenset({"ok", "partial", "failed"})
#: what a listed training task handed to :meth:`TasksRepo.upsert_training_tasks` carries
TRAINING_TASK_FIELDS = (
    "task_id",
    "name",
    "task_type",
    "status",
    "terminal",
    "created_at",
    "models",
)
#: what a poll of a watched task handed to :meth:`TasksRepo.update_async_task` carries
ASYNC_TASK_FIELDS = ("task_id", "status", "terminal", "reason", "task_type", "progress_percent")


class TasksRepo(StoreBase):
    """Tasks and collector runs."""

    # -- training tasks ---------------------------------------------------------------------

    def upsert_training_tasks(
        self, account: str, tasks: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[Event]:
        """Store training tasks (mappings of :data:`TRAINING_TASK_FIELDS`, as the collector
        converts them); an event for each task that reached a terminal status.

        A task first seen already terminal produces an event only if the account's tasks were
        synced before (so the first sync does not replay history).
        """
        account_id = self.ensure_account(account)
        c = t.training_tasks.c
        events: list[Event] = []
        meta_key = f"training_synced:{account_id}"
        with self.engine.begin() as conn:
            synced_before = self._meta(conn, meta_key) is not None
            stored = {
                r.task_id: r
                for r in conn.execute(
                    select(c.task_id, c.status, c.first_seen, c.status_changed_at).where(
                        c.account_id == account_id
                    )
                )
            }
            rows = []
            for task in {tk["task_id"]: tk for tk in tasks}.values():
                task_id, status = task["task_id"], task["status"]
                old = stored.get(task_id)
                changed = old is None or old.status != status
                if task["terminal"] and (
                    (old is not None and old.status != status) or (old is None and synced_before)
                ):
                    events.append(
                        Event(
                            account,
                            now,
                            TASK_FINISHED,
                            "training_task",
                            task_id,
                            old.status if old else None,
                            status,
                        )
                    )
                rows.append(
                    {
                        "account_id": account_id,
                        **{f: task[f] for f in TRAINING_TASK_FIELDS},
                        "first_seen": old.first_seen if old else now,
                        "last_seen": now,
                        "status_changed_at": (
                            now if changed or old is None else old.status_changed_at
                        ),
                    }
                )
            upsert(conn, t.training_tasks, rows, keys=["account_id", "task_id"])
            self._set_meta(conn, meta_key, now.isoformat())
            self._write_events(conn, account_id, events)
        return events

    def training_tasks(self, account: str) -> list[TrainingTaskRecord]:
        account_id = self.ensure_account(account)
        c = t.training_tasks.c
        return self._load(
            select(TrainingTaskRecord).where(c.account_id == account_id).order_by(c.task_id)
        )

    # -- watched async tasks ----------------------------------------------------------------

    def watch_task(self, account: str, task_id: str, label: str, now: datetime) -> None:
        """Register an async task id to poll (the API cannot list them). Re-adding relabels."""
        account_id = self.ensure_account(account)
        row = {
            "account_id": account_id,
            "task_id": task_id,
            "label": label or "",
            "status": "",
            "terminal": False,
            "added_at": now,
        }
        with self.engine.begin() as conn:
            upsert(conn, t.watched_tasks, [row], keys=["account_id", "task_id"], update=["label"])

    def watched_tasks(self, account: str, include_terminal: bool = False) -> list[WatchedTask]:
        account_id = self.ensure_account(account)
        c = t.watched_tasks.c
        query = select(WatchedTask).where(c.account_id == account_id)
        if not include_terminal:
            query = query.where(c.terminal.is_(False))
        return self._load(query.order_by(c.added_at, c.task_id))

    def update_async_task(
        self, account: str, task: Mapping[str, Any], now: datetime
    ) -> Event | None:
        """Record a poll of a watched task (a mapping of :data:`ASYNC_TASK_FIELDS`); returns
        an event when it just became terminal."""
        account_id = self.ensure_account(account)
        c = t.watched_tasks.c
        task_id, status, terminal = task["task_id"], task["status"], task["terminal"]
        where = and_(c.account_id == account_id, c.task_id == task_id)
        with self.engine.begin() as conn:
            old = conn.execute(select(c.status, c.terminal).where(where)).first()
            if old is None:
                upsert(
                    conn,
                    t.watched_tasks,
                    [{"account_id": account_id, "task_id": task_id, "added_at": now}],
                    keys=["account_id", "task_id"],
                    update=[],
                )
            values: dict[str, Any] = {f: task[f] for f in ASYNC_TASK_FIELDS if f != "task_id"}
            values["last_checked"] = now
            if old is None or old.status != status:
                values["status_changed_at"] = now
            conn.execute(update(t.watched_tasks).where(where).values(**values))
            event = None
            if terminal and (old is None or not old.terminal):
                event = Event(
                    account,
                    now,
                    TASK_FINISHED,
                    "async_task",
                    task_id,
                    old.status if old else None,
                    status,
                )
                self._write_events(conn, account_id, [event])
        return event

    # -- collector runs ---------------------------------------------------------------------

    def record_run(
        self,
        account: str,
        collector: str,
        started: datetime,
        finished: datetime,
        outcome: str,
        counts: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """One collector run: outcome ``ok``, ``partial`` or ``failed``, counts, error text."""
        if outcome not in RUN_OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(RUN_OUTCOMES)}, got {outcome!r}")
        account_id = self.ensure_account(account)
        with self.engine.begin() as conn:
            if outcome != "failed":
                first_key = f"first_success:{account_id}:{collector}"
                if self._meta(conn, first_key) is None:  # kept when old runs are pruned
                    self._set_meta(conn, first_key, str(to_epoch(finished)))
            conn.execute(
                insert(t.collector_runs).values(
                    account_id=account_id,
                    collector=collector,
                    started=started,
                    finished=finished,
                    outcome=outcome,
                    counts=counts or {},
                    error=error,
                )
            )

    def last_success(
        self, account: str, collector: str, include_partial: bool = True
    ) -> datetime | None:
        """When ``collector`` last finished ``ok`` (or ``partial``) for the account."""
        account_id = self.ensure_account(account)
        c = t.collector_runs.c
        outcomes = ["ok", "partial"] if include_partial else ["ok"]
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.max(c.finished)).where(
                    c.account_id == account_id,
                    c.collector == collector,
                    c.outcome.in_(outcomes),
                )
            ).scalar_one_or_none()

    def first_success(self, account: str, collector: str) -> datetime | None:
        """When ``collector`` first finished ``ok`` or ``partial`` for the account (kept in
        ``store_meta``, so retention of old runs does not move it): how far back the collected
        history reaches."""
        account_id = self.ensure_account(account)
        c = t.collector_runs.c
        with self.engine.connect() as conn:
            value = self._meta(conn, f"first_success:{account_id}:{collector}")
            if value is not None:
                return from_epoch(int(value))
            return conn.execute(
                select(func.min(c.finished)).where(
                    c.account_id == account_id,
                    c.collector == collector,
                    c.outcome.in_(["ok", "partial"]),
                )
            ).scalar_one_or_none()

    def last_runs(self, account: str) -> dict[str, CollectorRun]:
        """The latest run of each collector of the account."""
        account_id = self.ensure_account(account)
        c = t.collector_runs.c
        latest = (
            select(c.collector, func.max(c.id).label("id"))
            .where(c.account_id == account_id)
            .group_by(c.collector)
            .subquery()
        )
        runs = self._load(select(CollectorRun).join(latest, latest.c.id == c.id))
        return {r.collector: r for r in runs}
