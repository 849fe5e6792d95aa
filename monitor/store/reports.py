"""Scheduled reports' storage: each (schedule, due time) recorded once, with the rendered report
its notifications attach (``report_runs``, revision 0006). Only persistence: the schedule is
``monitor.report.schedule``'s."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from monitor.store import tables as t
from monitor.store.base import StoreBase
from monitor.store.models import NotificationRecord, ReportRun

_RUN_COLUMNS = [c.name for c in t.report_runs.columns if c.name != "id"]
_NOTIFICATION_COLUMNS = [c.name for c in t.notifications.columns if c.name != "id"]


class ReportsRepo(StoreBase):
    """Report runs: the latest due time per schedule, insert-once, the attachment."""

    def last_report_due(self, schedule: str) -> datetime | None:
        """The latest due time recorded for ``schedule`` (sent or baseline), or None."""
        r = t.report_runs.c
        with self.engine.connect() as conn:
            # ``max`` keeps the column's type: an aware UTC datetime comes back
            value: datetime | None = conn.execute(
                select(func.max(r.due_at)).where(r.schedule == schedule)
            ).scalar_one_or_none()
        return value

    def record_report(
        self, run: ReportRun, notifications: Sequence[NotificationRecord] = ()
    ) -> int | None:
        """Record ``run`` and queue ``notifications`` (each attaching it) in one transaction;
        the run's id, or None when its (schedule, due time) is already recorded (by this
        process earlier, or by another: nothing is queued twice)."""
        r = t.report_runs.c
        try:
            with self.engine.begin() as conn:
                held = conn.execute(
                    select(r.id).where(r.schedule == run.schedule, r.due_at == run.due_at)
                ).first()
                if held is not None:
                    return None
                values = {name: getattr(run, name) for name in _RUN_COLUMNS}
                run_id = int(
                    conn.execute(
                        insert(t.report_runs).values(**values).returning(r.id)
                    ).scalar_one()
                )
                for row in notifications:
                    row.report_id = run_id
                self.insert_notifications(list(notifications), conn)  # type: ignore[attr-defined]
                return run_id
        except IntegrityError:  # another process recorded it between the read and the insert
            return None

    def report_run(self, report_id: int) -> ReportRun | None:
        rows = self._load(select(ReportRun).where(t.report_runs.c.id == report_id))
        return rows[0] if rows else None

    def report_runs(self, schedule: str | None = None) -> list[ReportRun]:
        """Recorded runs (of ``schedule``), oldest due first."""
        r = t.report_runs.c
        query = select(ReportRun)
        if schedule is not None:
            query = query.where(r.schedule == schedule)
        return self._load(query.order_by(r.due_at, r.id))
