"""The daemon's pipeline driven by a :class:`~monitor.clock.ManualClock`: no scheduler, no
sleeping, any span of simulated time in a few calls.

Each :meth:`Pipeline.step` does what the daemon's schedule would do at the clock's ``now``:
the collectors that are due, the retention job when due (rollups: what the idle trace reads
before the raw minutes), one evaluation (alert states, notifications and planned actions
committed together), the act step (when the app has one), then the delivery of what is due.
:meth:`Pipeline.advance` moves the clock and steps. The end-to-end tests use it (a 45-minute
window and a 15-minute grace without waiting an hour), and so can a demo or a backtest::

    clock = ManualClock(start)
    app = App.open(config, clock, transport_factory=...)   # e.g. the simulator on ``clock``
    run = Pipeline(app, clock)
    await run.step()
    await run.advance(minutes=60, every=1)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from monitor.actions.execute import DUE_STATES
from monitor.app import App, task_intervals
from monitor.clock import ManualClock
from monitor.evaluate import CycleReport


class Pipeline:
    """An :class:`App` stepped like the daemon on a manual clock."""

    def __init__(
        self,
        app: App,
        clock: ManualClock,
        collectors: list[str] | None = None,
        keep: bool = True,
    ) -> None:
        """``keep``: remember every step's report and action outcomes (``cycles``,
        ``actions``; what tests read); False keeps the last step's only (a backtest of
        thousands of steps: memory, and the collector's time over it)."""
        self.app = app
        self.keep = keep
        self.clock = clock
        every = task_intervals(app.config)
        # async_tasks only matters while a task is watched
        names = collectors if collectors is not None else [n for n in every if n != "async_tasks"]
        self.intervals = {name: every[name] for name in names}
        self.last: dict[str, datetime] = {}
        self.cycles: list[CycleReport] = []
        self.actions: list[Any] = []

    def due(self) -> list[str]:
        """The collectors due at the clock's ``now`` (all of them at the first step)."""
        now = self.clock.now()
        return [
            name
            for name, every in self.intervals.items()
            if name not in self.last or now - self.last[name] >= timedelta(seconds=every)
        ]

    async def step(self) -> CycleReport:
        """Collect what is due, evaluate once, act, deliver; the evaluation's report (its
        ``deliveries`` are this step's)."""
        names = self.due()
        collectors = [n for n in names if n != "retention"]
        if collectors:
            await self.app.collect(collectors)
        if "retention" in names:  # after the collectors, as its hourly job mostly runs
            await self.app.collect(["retention"])
        for name in names:
            self.last[name] = self.clock.now()
        cycle = self.app.evaluate_only()
        outcomes = (await self.app.act(self.clock.now())).outcomes
        cycle.deliveries = await self.app.deliver()
        if not self.keep:
            self.cycles.clear()
            self.actions.clear()
        self.actions += outcomes
        self.cycles.append(cycle)
        return cycle

    async def act(self) -> bool:
        """The act step alone, as the daemon's own ``schedules.act`` runs it between
        evaluations, when some action is due at the clock's ``now`` (nothing else runs then);
        True when it ran. Its notices wait in the outbox for the next step's delivery."""
        now = self.clock.now()
        if not self.app.store.actions(states=list(DUE_STATES), due_by=now, limit=1):
            return False
        outcomes = (await self.app.act(now)).outcomes
        if not self.keep:
            self.actions.clear()
        self.actions += outcomes
        return True

    async def advance(self, minutes: float, every: float = 1) -> list[CycleReport]:
        """Move the clock ``every`` minutes at a time over ``minutes``, a step after each."""
        out = []
        for _ in range(int(minutes // every)):
            self.clock.advance(every * 60)
            out.append(await self.step())
        return out
