"""The clock-driven pipeline does what the daemon's schedule does, the retention job included:
the idle trace reads the rollups before the raw minutes, and a pipeline that never rolled up
(demo, backtest) read a week of raw minutes per idle instance at every evaluation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from monitor.actions import STOP_IDLE_GPUS
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


async def test_the_act_step_runs_between_steps_only_when_an_action_is_due(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    """``Pipeline.act`` is the daemon's own act schedule between evaluations (the backtest runs
    it every 60 s): nothing due, nothing runs; a stop runs when its grace has ended and a
    sample past it is in, not at the next evaluation."""
    rules = tmp_path / "stop.yaml"
    rules.write_text(STOP_IDLE_GPUS)
    app = open_app(tmp_path, sim_app, clock, extra=f"rules: [{rules}]\n")
    run = Pipeline(app, clock)
    try:
        await run.step()  # the idle notebook and error box are announced, due in 15 minutes
        announced = app.store.actions(states=["announced"])
        assert {r.instance_id for r in announced} == {"demo-notebook", "demo-error"}
        due = {r.due_at for r in announced}
        assert due == {clock.now() + timedelta(minutes=15)}
        clock.advance(60)
        assert await run.act() is False  # nothing due: the act step did not run
        clock.set(due.pop())
        assert await run.act() is True  # due; the newest samples are from before the grace's end
        assert len(app.store.actions(states=["announced"])) == 2
        clock.advance(60)
        assert await run.act() is True
        done = app.store.actions(states=["succeeded"])
        assert {r.id for r in done} == {r.id for r in announced}
        assert {r.started_at for r in done} == {clock.now()}
        assert [o.state for o in run.actions] == ["succeeded", "succeeded"]
    finally:
        await app.aclose()
