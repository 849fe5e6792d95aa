"""APScheduler 3.x decides *when*; the work is plain coroutines that take the clock.

One job per collector (all accounts), plus retention and rule evaluation. Jobs coalesce, never
overlap themselves (``max_instances=1``), have a misfire grace time and a little jitter.

The jobs in flight are tracked so a stop can end them in order (:meth:`Scheduler.stop`): a job
added with ``graceful=False`` (a collector) is cancelled at once, which cancels its GET requests
in flight; a write it has already handed to the store's writer thread finishes there (each is
one transaction, and closing the store waits for it), so nothing is half-written and the next
run fetches again what was not stored. A ``graceful`` job (the evaluation, which records and
delivers notifications) gets a bounded grace to finish first. A job ended by a stop logs no
error: APScheduler would log a cancelled job at ERROR level with a traceback, so the job wrapper
ends quietly instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = structlog.get_logger("monitor.scheduler")

JobFn = Callable[[], Awaitable[object]]

#: how long jobs in flight get to finish at a stop: inside the 10 s a service manager allows
STOP_GRACE_S = 8.0


class Scheduler:
    def __init__(self) -> None:
        self._aps = AsyncIOScheduler(timezone=UTC)
        self._inflight: dict[asyncio.Task[Any], bool] = {}  # task -> graceful
        self._stopping = False

    def add(
        self,
        name: str,
        interval_s: float,
        fn: JobFn,
        *,
        first_run: datetime | None = None,
        graceful: bool = False,
    ) -> None:
        """Run ``fn`` every ``interval_s``: first at ``first_run`` (now, if that has passed),
        or after one interval. ``graceful``: a stop lets a run in flight finish (within the
        grace) instead of cancelling it at once."""

        async def job() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight[task] = graceful
            try:
                await fn()
            except asyncio.CancelledError:
                # a stop (or a reload) ended it: not an error, and not APScheduler's to log
                log.info("job_cancelled", job=name)
            except Exception:
                log.exception("job_failed", job=name)
            finally:
                if task is not None:
                    self._inflight.pop(task, None)

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

    def track(
        self, name: str, work: Coroutine[Any, Any, Any], *, graceful: bool = False
    ) -> asyncio.Task[Any]:
        """Run ``work`` now, outside the schedule (the daemon's first cycle), as a job in
        flight that :meth:`stop` ends like the scheduled ones. Its outcome (result or
        exception) is the task's; a cancellation by the stop is logged, not raised."""

        async def run() -> Any:
            try:
                return await work
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                log.info("job_cancelled", job=name)
                return None

        task = asyncio.ensure_future(run())
        self._inflight[task] = graceful
        task.add_done_callback(lambda t: self._inflight.pop(t, None))
        return task

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

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop scheduling; cancel the jobs in flight at once, except the graceful ones, which
        get up to ``grace_s`` to finish before they are cancelled too."""
        self._stopping = True
        if self._aps.running:
            # no new run starts; shutting APScheduler down now would cancel every job in
            # flight at once (its asyncio executor's shutdown cancels them): that comes last
            self._aps.pause()
        quick = [t for t, graceful in self._inflight.items() if not graceful and not t.done()]
        for task in quick:
            task.cancel()
        patient = {t for t, graceful in self._inflight.items() if graceful and not t.done()}
        if patient:
            _done, late = await asyncio.wait(patient, timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("jobs_cancelled_after_grace", count=len(late), grace_s=grace_s)
        remaining = {t for t in self._inflight if not t.done()}
        if remaining:  # cancelled above: they end at their next await
            await asyncio.wait(remaining, timeout=1.0)
        if self._aps.running:
            self._aps.shutdown(wait=False)
