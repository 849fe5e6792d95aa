"""The scheduler's stop: collectors cancelled at once, graceful jobs given their grace, and no
ERROR-level log for a job a stop ended. Jobs here wait on events, never on time."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from monitor.collect.scheduler import Scheduler


class Job:
    """A job that says when it started and when it was cancelled, and ends when released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False

    async def __call__(self) -> None:
        self.started.set()
        try:
            await self.release.wait()  # a GET that is not answered, a delivery under way
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.finished = True


def now() -> datetime:
    return datetime.now(UTC)  # APScheduler's own clock: due at once


async def test_stop_cancels_collectors_at_once_and_lets_graceful_jobs_finish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = Scheduler()
    collector, evaluation = Job(), Job()
    scheduler.add("main:instances", 3600, collector, first_run=now())
    scheduler.add("evaluate", 3600, evaluation, first_run=now(), graceful=True)
    scheduler.start()
    await collector.started.wait()
    await evaluation.started.wait()

    with capture_logs() as events, caplog.at_level(logging.INFO):
        stopping = asyncio.ensure_future(scheduler.stop(grace_s=60))
        await collector.cancelled.wait()  # at once, while the evaluation still runs
        assert not stopping.done() and not evaluation.cancelled.is_set()
        evaluation.release.set()
        await stopping

    assert evaluation.finished and not collector.finished
    assert {"event": "job_cancelled", "job": "main:instances", "log_level": "info"} in events
    assert not [e for e in events if e["log_level"] in ("error", "critical", "warning")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_graceful_job_past_its_grace_is_cancelled_with_a_warning() -> None:
    scheduler = Scheduler()
    evaluation = Job()
    scheduler.add("evaluate", 3600, evaluation, first_run=now(), graceful=True)
    scheduler.start()
    await evaluation.started.wait()

    with capture_logs() as events:
        await scheduler.stop(grace_s=0.01)

    assert evaluation.cancelled.is_set() and not evaluation.finished
    (warning,) = [e for e in events if e["log_level"] == "warning"]
    assert warning["event"] == "jobs_cancelled_after_grace" and warning["count"] == 1
    assert not [e for e in events if e["log_level"] in ("error", "critical")]


async def test_a_job_cancelled_by_a_stop_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Before: APScheduler logged every job a stop cancelled at ERROR level, with a traceback."""
    scheduler = Scheduler()
    hung = Job()
    scheduler.add("main:balance", 3600, hung, first_run=now())
    scheduler.start()
    await hung.started.wait()

    with caplog.at_level(logging.INFO):
        await scheduler.stop()

    assert hung.cancelled.is_set()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_tracked_work_ends_with_the_stop() -> None:
    """The daemon's first cycle runs outside the schedule, and a stop ends it all the same."""
    scheduler = Scheduler()
    first = Job()
    task = scheduler.track("first-cycle:collect", first())
    await first.started.wait()

    await scheduler.stop()

    assert first.cancelled.is_set() and task.done() and task.result() is None
