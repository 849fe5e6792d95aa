"""``novita-monitor demo``: the simulator's ``demo`` scenario and the daemon's pipeline on one
simulated clock, in one process, told on the console as it happens.

The simulator (:mod:`monitor.sim`) serves the demo account on a real socket (127.0.0.1, a free
port) from a thread; the daemon's own pipeline (:class:`monitor.pipeline.Pipeline`: the
collectors when due, one evaluation, the act step, the delivery) runs against it through the
real client, over the composition root (:class:`monitor.app.App`), with the shipped rules plus
:data:`DEMO_RULES` (the README's canonical ``stop-idle-gpus`` rule and a renewal rule). Both
read one :class:`~monitor.clock.ManualClock`, which this module moves a simulated minute at a
time, as fast as the work allows but no faster than ``speed`` simulated seconds per wall
second, so the story takes about half a minute.

What is printed: the console channel's notifications (exactly what a daemon without channels
prints), a line for each change of the action ledger, a progress line every
:data:`PROGRESS_EVERY` of simulated time, and a closing summary. Every figure comes from the
facts (:mod:`monitor.status`'s account figures, :class:`monitor.facts.StoreFacts`), the alert
rows or the action ledger, as the daemon's own do.

The story, at the demo scenario's figures: the forgotten notebook (idle for hours) is announced
and stopped after the rule's 15-minute grace with its idle cost and what the stop saves; the
busy trainer is left alone; the runway alert fires (40 h of runway); the used subscription
expiring in 3 days gets a renewal refused (it would overdraw the balance) until, at
:data:`TOP_UP_AT`, the simulated user tops up :data:`TOP_UP_USD` through the simulator's
``/_sim/topup``: the runway alert resolves and the renewal is planned, awaiting approval; the
failed training tasks; the subscription advice with its monthly saving; the summary.
"""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from monitor import economics
from monitor.actions import STOP_IDLE_GPUS
from monitor.actions.savings import savings_by_rule
from monitor.app import App
from monitor.clock import ManualClock, SystemClock
from monitor.config import Config
from monitor.errors import UserError
from monitor.pipeline import Pipeline
from monitor.rules.durations import format_duration
from monitor.status import account_status
from monitor.store.models import ActionRecord, AlertRecord

#: the demo's rules beside the shipped ones: the README's canonical stop rule (a short grace)
#: and a renewal of used subscriptions (approval required, the default)
DEMO_RULES = (
    STOP_IDLE_GPUS
    + """
  - name: renew-used-subscriptions
    resource: instance
    when: {expiring_subscription: {within: 5d, lookback: 7d, min_util: 20}}
    actions:
      - renew: {months: 1}
"""
)

ACCOUNT = "demo"
#: any non-empty key works against the simulator; this one never leaves the process
DEMO_KEY = "demo-key-not-a-secret"
#: the pipeline's step: the daemon's shortest schedule (instances and metrics, 60 s)
STEP = timedelta(minutes=1)
#: a progress line this often (simulated time)
PROGRESS_EVERY = timedelta(minutes=10)
#: the default simulated span: the notebook's grace, the top-up and the renewal after it
DEFAULT_SPAN = timedelta(minutes=60)
#: simulated seconds per wall second at most: the default span in about 30 s
DEFAULT_SPEED = 120.0
#: when the simulated user tops the balance up, and by how much
TOP_UP_AT = timedelta(minutes=40)
TOP_UP_USD = Decimal("2000")


@dataclass(frozen=True)
class DemoOptions:
    span: timedelta = DEFAULT_SPAN
    #: simulated seconds per wall second at most; ``math.inf``: as fast as the work allows
    speed: float = DEFAULT_SPEED
    #: keep the database there (it must not exist yet); None: a temporary one
    db: Path | None = None


@dataclass
class Story:
    """What the narrator has told so far (to tell only changes)."""

    ledger: dict[int, str] = field(default_factory=dict)
    told_left_alone: bool = False
    topped_up: bool = False
    next_progress: datetime | None = None


def _usd(value: Decimal | float | None) -> str:
    if value is None:
        return "?"
    value = Decimal(str(value))
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:,.1f} h"


class Demo:
    """One run of the demo: the simulator, the app, the pipeline and the narrator."""

    def __init__(self, options: DemoOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.story = Story()
        self.stop = asyncio.Event()
        # the story ends about now, so `status` or `actions` on a kept database (``--db``)
        # read it as recent history
        start = SystemClock().now().replace(second=0, microsecond=0) - options.span
        self.clock = ManualClock(start)
        self.start = self.clock.now()
        self.began = time.monotonic()  # the summary's wall time counts the start-up too
        self.paced_from = self.began  # the pace's anchor: the first step

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def stamp(self) -> str:
        now = self.clock.now()
        minutes = int((now - self.start).total_seconds() // 60)
        return f"[{now:%H:%M} UTC +{minutes // 60}:{minutes % 60:02d}]"

    # ------------------------------------------------------------------ the run

    async def run(self, app: App, sim_url: str) -> dict[str, Any]:
        """Step the pipeline over the span (or until :attr:`stop`); the summary's figures."""
        pipeline = Pipeline(app, self.clock, keep=False)
        end = self.start + self.options.span
        self.say(
            f"{self.stamp()} demo account on the simulator at {sim_url}; simulated time "
            f"{self.start:%Y-%m-%d %H:%M} -> {end:%H:%M} UTC"
            + (
                ", as fast as it goes"
                if math.isinf(self.options.speed)
                else f", at most {self.options.speed:g}x wall time"
            )
        )
        self.story.next_progress = self.start
        self.paced_from = time.monotonic()
        await self._step(pipeline, sim_url)
        while self.clock.now() < end and not self.stop.is_set():
            self.clock.advance(STEP.total_seconds())
            await self._step(pipeline, sim_url)
            await self._pace()
        return self.summary(app, interrupted=self.stop.is_set())

    async def _pace(self) -> None:
        if math.isinf(self.options.speed):
            return
        simulated = (self.clock.now() - self.start).total_seconds()
        delay = self.paced_from + simulated / self.options.speed - time.monotonic()
        if delay > 0:
            with suppress(TimeoutError):  # the pace's wait, cut short by Ctrl-C
                await asyncio.wait_for(self.stop.wait(), delay)

    async def _step(self, pipeline: Pipeline, sim_url: str) -> None:
        app = pipeline.app
        now = self.clock.now()
        if not self.story.topped_up and now - self.start >= TOP_UP_AT:
            await self._top_up(sim_url)
        await pipeline.step()
        self._tell_ledger(app)
        if self.story.next_progress is not None and now >= self.story.next_progress:
            self._progress(app)
            self.story.next_progress = now + PROGRESS_EVERY

    async def _top_up(self, sim_url: str) -> None:
        import httpx

        self.story.topped_up = True
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(f"{sim_url}/_sim/topup", json={"usd": str(TOP_UP_USD)})
            answer.raise_for_status()
        self.say(
            f"{self.stamp()} story: the user tops the balance up by {_usd(TOP_UP_USD)} "
            "(the simulator's /_sim/topup); the monitor sees it at its next balance collection"
        )

    # ------------------------------------------------------------------ narration

    def _status(self, app: App) -> dict[str, Any]:
        now = self.clock.now()
        return account_status(app.facts_at(now), ACCOUNT, now)

    def _progress(self, app: App) -> None:
        acc = self._status(app)
        firing = app.store.load_alerts(states=["firing"])
        saved = acc["savings"]
        runway = (
            "none (in arrears)"
            if acc["in_arrears"]
            else _hours(acc["runway_hours"])
            if acc["runway_hours"] is not None
            else f"unknown ({acc['runway_reason']})"
        )
        self.say(
            f"{self.stamp()} balance {_usd(acc['balance_usd'])}, burning "
            f"{_usd(acc['burn_rate_usd_per_hour'])}/h, runway {runway}; "
            f"{len(firing)} alert(s) firing; saving {_usd(saved['expected_usd_per_hour'])}/h"
        )

    def _tell_ledger(self, app: App) -> None:
        rows = sorted(app.store.actions(ACCOUNT), key=lambda r: r.id or 0)
        stopped_now = False
        for row in rows:
            assert row.id is not None
            if self.story.ledger.get(row.id) == row.state:
                continue
            self.story.ledger[row.id] = row.state
            self.say(f"{self.stamp()} {self._ledger_line(row)}")
            stopped_now = stopped_now or (row.action == "stop" and row.state == "succeeded")
        if stopped_now and not self.story.told_left_alone:
            self.story.told_left_alone = True
            for line in self._left_alone(app):
                self.say(f"{self.stamp()} {line}")

    def _ledger_line(self, row: ActionRecord) -> str:
        name = f"{row.instance_name} ({row.instance_id})" if row.instance_name else row.instance_id
        head = f"action #{row.id} {row.action} {name}, rule {row.rule}: {row.state}"
        # the why, without the alert's figures the planner appends after " | "
        reason = (row.reason or "").split(" | ")[0]
        if row.state == "succeeded" and row.action == "stop":
            per_hour = row.saving_per_hour_usd
            day = economics.per_day_cost(per_hour)
            return f"{head}: saves {_usd(per_hour)}/h ({_usd(day)} a day) while stopped"
        if row.state in ("announced", "planned") and row.due_at is not None:
            return f"{head} (due {row.due_at:%H:%M} UTC): {reason}"
        return f"{head}: {reason}" if reason else head

    def _left_alone(self, app: App) -> list[str]:
        """Running pay-as-you-go instances no alert fires on and no action touches."""
        acc = self._status(app)
        flagged = {a.resource_id for a in app.store.load_alerts(ACCOUNT, ["firing", "pending"])}
        acted = {r.instance_id for r in app.store.actions(ACCOUNT)}
        lines = []
        for inst in acc["instances"]:
            if (
                inst["status"] != "running"
                or inst["billing_mode"] not in economics.HOURLY_MODES
                or inst["id"] in flagged | acted
            ):
                continue
            util = inst["gpu_util_avg_15m"]
            shown = "?" if util is None else f"{util:.1f} %"
            lines.append(
                f"left alone: {inst['name']} ({inst['id']}) is busy, GPU {shown} over 15 min "
                f"at {_usd(inst['hourly_cost_usd'])}/h: no alert, no action"
            )
        return lines

    # ------------------------------------------------------------------ summary

    def summary(self, app: App, interrupted: bool) -> dict[str, Any]:
        now = self.clock.now()
        alerts: list[AlertRecord] = app.store.load_alerts()
        raised = [a for a in alerts if a.firing_since is not None]
        per_rule: dict[str, int] = {}
        for a in raised:
            per_rule[a.rule] = per_rule.get(a.rule, 0) + 1
        rows = app.store.actions(ACCOUNT)
        by_kind: dict[str, dict[str, int]] = {}
        for row in rows:
            states = by_kind.setdefault(row.action, {})
            states[row.state] = states.get(row.state, 0) + 1
        _, saved = savings_by_rule(rows, now)
        return {
            "interrupted": interrupted,
            "start": self.start,
            "end": now,
            "wall_s": time.monotonic() - self.began,
            "alerts_raised": len(raised),
            "alerts_by_rule": dict(sorted(per_rule.items())),
            "alerts_firing": sum(1 for a in alerts if a.state == "firing"),
            "alerts_resolved": sum(1 for a in alerts if a.state == "resolved"),
            "actions": len(rows),
            "actions_by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())},
            "saving_usd_per_hour": saved.expected_usd_per_hour,
            "saving_usd_per_day": economics.per_day_cost(saved.expected_usd_per_hour),
            "realized_usd": saved.realized_usd,
            "left_alone": self._left_alone(app),
        }

    def tell_summary(self, figures: dict[str, Any], db: str) -> None:
        span = format_duration(figures["end"] - figures["start"])
        how = "interrupted after" if figures["interrupted"] else "over"
        self.say("")
        self.say(
            f"== summary ({how} {span} of simulated time, {figures['start']:%H:%M} -> "
            f"{figures['end']:%H:%M} UTC, {figures['wall_s']:.0f} s of wall time)"
        )
        rules = ", ".join(f"{r} {n}" for r, n in figures["alerts_by_rule"].items()) or "none"
        self.say(
            f"alerts raised: {figures['alerts_raised']} ({rules}); "
            f"{figures['alerts_firing']} firing, {figures['alerts_resolved']} resolved"
        )
        kinds = "; ".join(
            f"{kind}: " + ", ".join(f"{n} {state}" for state, n in states.items())
            for kind, states in figures["actions_by_kind"].items()
        )
        self.say(f"actions: {figures['actions']} ({kinds or 'none'})")
        self.say(
            f"money saved: {_usd(figures['saving_usd_per_hour'])}/h while stopped, "
            f"{_usd(figures['saving_usd_per_day'])} per day; "
            f"{_usd(figures['realized_usd'])} realized so far"
        )
        for line in figures["left_alone"]:
            self.say(line)
        self.say(f"database: {db}")


def _config_text(sim_url: str, db: Path, rules: Path) -> str:
    return (
        "accounts:\n"
        f"  - name: {ACCOUNT}\n"
        "    api_key_env: NOVITA_API_KEY\n"
        f"    base_url: {sim_url}\n"
        f"database: sqlite:///{db}\n"
        f"rules: [shipped, {rules}]\n"
        "log: {format: console, level: warning}\n"
    )


@contextmanager
def _workdir(db: Path | None) -> Iterator[tuple[Path, Path]]:
    """A temporary folder for the configuration and rules, and the database's path."""
    if db is not None:
        db = db.expanduser().absolute()
        if db.exists():
            raise UserError(
                f"--db {db}: the file exists; the demo writes a new database "
                "(remove it or pick another path)"
            )
        if not db.parent.is_dir():
            raise UserError(f"--db {db}: the folder {db.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix="novita-monitor-demo-") as tmp:
        yield Path(tmp), db if db is not None else Path(tmp) / "demo.db"


async def run_demo(options: DemoOptions, out: TextIO | None = None) -> dict[str, Any]:
    """Run the demo (SIGINT/SIGTERM end it early, with the summary); the summary's figures."""
    from monitor.sim import FleetSim, SimServer, create_app

    out = out if out is not None else sys.stdout
    demo = Demo(options, out)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, demo.stop.set)
    try:
        with _workdir(options.db) as (tmp, db):
            sim = FleetSim(demo.clock, scenario="demo", seed=0)
            with SimServer(create_app(sim)) as server:
                rules = tmp / "demo-rules.yaml"
                rules.write_text(DEMO_RULES)
                path = tmp / "demo.yaml"
                path.write_text(_config_text(server.url, db, rules))
                env = {"NOVITA_API_KEY": DEMO_KEY}
                config = Config.load(path, env=env)
                app = App.open(config, demo.clock, env=env)
                try:
                    figures = await demo.run(app, server.url)
                finally:
                    await app.aclose()
            demo.tell_summary(figures, str(db) if options.db is not None else "temporary (deleted)")
            return figures
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
