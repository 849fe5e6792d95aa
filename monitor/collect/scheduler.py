"""APScheduler 3.x decides *when*; the work is plain coroutines that take the clock.

One job per collector (all accounts), plus retention and rule evaluation. Jobs coalesce, never
overlap themselves (``max_instances=1``), have a misfire grace time and a little jitter. The jobs
in flight are tracked so a graceful stop can wait for them (no half-written snapshot: each store
write is one transaction, and a stop waits for the running ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = structlog.get_logger("monitor.scheduler")

JobFn = Callable[[], Awaitable[object]]


class Scheduler:
    def __init__(self) -> None:
        self._aps = AsyncIOScheduler(timezone=UTC)
        self._inflight: set[asyncio.Task[object]] = set()

    def add(
        self,
        name: str,
        interval_s: float,
        fn: JobFn,
        *,
        first_run: datetime | None = None,
    ) -> None:
        """Run ``fn`` every ``interval_s``: first at ``first_run`` (now, if that has passed),
        or after one interval."""

        async def job() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)  # type: ignore[arg-type]
            try:
                await fn()
            except Exception:
                log.exception("job_failed", job=name)
            finally:
                if task is not None:
                    self._inflight.discard(task)  # type: ignore[arg-type]

        jitter = max(0.0, min(interval_s * 0.05, 5.0))
        kwargs = {}
        if first_run is not None:
            kwargs["next_run_time"] = max(first_run, datetime.now(UTC))
        self._aps.add_job(
            job,
            IntervalTrigger(seconds=interval_s, jitter=jitter or None),
            id=name,
            name=name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(interval_s // 2)),
            replace_existing=True,
            **kwargs,
        )

    def start(self) -> None:
        self._aps.start()

    def run_soon(self, names: Iterable[str]) -> list[str]:
        """Move the next run of these jobs to now (a catch-up after an outage); their interval
        then counts from this run. Unknown names are ignored; a job already running is not
        started twice (``max_instances=1``: that run is its catch-up). Returns the jobs moved."""
        moved = []
        for name in names:
            job = self._aps.get_job(name)
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))
                moved.append(name)
        return moved

    def job_ids(self) -> list[str]:
        return [j.id for j in self._aps.get_jobs()]

    async def stop(self, timeout_s: float = 8.0) -> None:
        """Stop scheduling, wait for jobs in flight up to ``timeout_s``, then cancel the rest."""
        if self._aps.running:
            self._aps.shutdown(wait=False)
        pending = {t for t in self._inflight if not t.done()}
        if pending:
            _done, still = await asyncio.wait(pending, timeout=timeout_s)
            for t in still:
                t.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
                log.warning("jobs_cancelled_at_stop", count=len(still))
