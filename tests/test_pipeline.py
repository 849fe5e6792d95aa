"""The clock-driven pipeline does what the daemon's schedule does, the retention job included:
the idle trace reads the rollups before the raw minutes, and a pipeline that never rolled up
(demo, backtest) read a week of raw minutes per idle instance at every evaluation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from monitor.clock import ManualClock
from monitor.pipeline import Pipeline
from tests.helpers import open_app


async def test_retention_runs_on_its_schedule_after_the_collectors(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock, extra="schedules: {retention: 1h}\n")
    run = Pipeline(app, clock)
    try:
        assert "retention" in run.intervals
        await run.step()
        first = app.store.last_success("main", "retention")
        assert first == clock.now()
        # the first sight backfilled the rules' window: its completed hours are rolled up
        assert app.store.rollup_watermark() == first - timedelta(hours=1)
        await run.advance(minutes=90, every=5)
        # due again an hour later, after that step's collectors: the hour since is rolled up
        assert app.store.last_success("main", "retention") == first + timedelta(hours=1)
        assert app.store.rollup_watermark() == first
        # and the idle trace reads it: the evaluation still finds the forgotten notebook idle
        assert ("idle-gpu", "demo-notebook") in {
            (a.rule, a.resource_id) for a in run.cycles[-1].firing
        }
    finally:
        await app.aclose()


async def test_keep_false_remembers_the_last_step_only(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    run = Pipeline(app, clock, keep=False)
    try:
        reports = await run.advance(minutes=3, every=1)
        assert run.cycles == [reports[-1]]  # a backtest's thousands of steps are not kept
    finally:
        await app.aclose()
