"""Scheduled reports: which due times a schedule has reached, and producing them.

Due times are anchored at midnight UTC: ``ANCHOR + k x every`` (``ANCHOR`` a Monday, so a
``7d`` report is due on Mondays at 00:00 UTC, a ``1d`` one every midnight). Each due time is
recorded in the database (``report_runs``) in the transaction that queues the report's
notifications in the outbox: a restart neither resends a report (the due time is recorded)
nor skips one (every due time after the latest recorded is produced, the oldest first, up to
:data:`MAX_CATCH_UP`). A schedule seen for the first time records its latest past due time as
a baseline (nothing sent): its first report goes out at its next due time.

    step = due_step(last, every, now)        # pure: what is due
    await produce(store, schedules, ...)     # the daemon's job: build, render, record, queue
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.logs import get_logger
from monitor.report.model import build_report
from monitor.report.render import MEDIA, render, summary_text

log = get_logger("monitor.report")

#: due times are ``ANCHOR + k x every``: Monday 1970-01-05, 00:00 UTC
ANCHOR = datetime(1970, 1, 5, tzinfo=UTC)
#: at most this many missed due times are produced after a long stop (the older ones are
#: recorded as ``missed`` and logged: a year offline does not send 365 daily reports)
MAX_CATCH_UP = 7


@dataclass(frozen=True)
class DueStep:
    """What a schedule has to do at ``now``: record a ``baseline`` (first sight), produce the
    ``due`` times (oldest first), record the ``missed`` ones without sending."""

    baseline: datetime | None
    due: tuple[datetime, ...]
    missed: tuple[datetime, ...] = ()


def latest_due(every: timedelta, now: datetime) -> datetime:
    """The latest due time at or before ``now``."""
    return ANCHOR + ((now - ANCHOR) // every) * every


def due_step(last: datetime | None, every: timedelta, now: datetime) -> DueStep:
    """The due times reached after ``last`` (the latest recorded one) by ``now``."""
    latest = latest_due(every, now)
    if last is None:
        return DueStep(baseline=latest, due=())
    times = []
    at = last + every
    while at <= latest:
        times.append(at)
        at += every
    cut = max(0, len(times) - MAX_CATCH_UP)
    return DueStep(baseline=None, due=tuple(times[cut:]), missed=tuple(times[:cut]))


@dataclass(frozen=True)
class Produced:
    """One scheduled report recorded (and queued to its channels)."""

    schedule: str
    due_at: datetime
    report_id: int
    channels: tuple[str, ...]


def produce(
    store: Any,
    schedules: Sequence[Any],
    facts_at: Callable[[datetime], Any],
    now: datetime,
    *,
    expire_after: timedelta,
) -> list[Produced]:
    """Record and queue every scheduled report due at ``now`` (``schedules``: the
    configuration's ``reports:`` entries). Each report covers the ``since`` (default
    ``every``) before its due time, its figures as of the due time."""
    from monitor.store.models import NotificationRecord, ReportRun

    out: list[Produced] = []
    for schedule in schedules:
        every = timedelta(seconds=schedule.every)
        key = schedule.key
        step = due_step(store.last_report_due(key), every, now)
        if step.baseline is not None:
            store.record_report(
                ReportRun(schedule=key, due_at=step.baseline, created_at=now, kind="baseline")
            )
            log.info("report_scheduled", schedule=key, next_due=_iso(step.baseline + every))
        for missed in step.missed:
            store.record_report(
                ReportRun(schedule=key, due_at=missed, created_at=now, kind="missed")
            )
            log.warning("report_missed", schedule=key, due_at=_iso(missed))
        for due in step.due:
            # exactly the span before the due time (at midnight for whole days: anchored)
            start, end = due - timedelta(seconds=schedule.since or schedule.every), due
            report = build_report(facts_at(due), start, end)
            media, suffix = MEDIA[schedule.format]
            title = f"novita-monitor report {start:%Y-%m-%d} - {end:%Y-%m-%d %H:%M} UTC"
            rows = [
                NotificationRecord(
                    channel=channel,
                    kind="report",
                    fingerprints=[],
                    created_at=now,
                    status="pending",
                    attempts=0,
                    title=title,
                    body=summary_text(report),
                    notify_type="info",
                    next_attempt_at=now,
                    expires_at=now + expire_after,
                )
                for channel in schedule.channels
            ]
            run = ReportRun(
                schedule=key,
                due_at=due,
                created_at=now,
                kind="report",
                format=schedule.format,
                filename=f"novita-monitor-report-{end:%Y-%m-%d}.{suffix}",
                media_type=media,
                content=render(report, schedule.format).encode("utf-8"),
            )
            report_id = store.record_report(run, rows)
            if report_id is None:
                continue  # another process recorded this due time first
            log.info("report_queued", schedule=key, due_at=_iso(due), channels=len(rows))
            out.append(Produced(key, due, report_id, tuple(schedule.channels)))
    return out


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")
