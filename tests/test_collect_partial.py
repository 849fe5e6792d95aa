"""Partial failures make partial progress (issue 10 §5, issue 8 §2): against the in-process
simulator, with faults the simulator lacks added by a transport wrapped around its ASGI app.

* a usage-bills backfill that fails half-way resumes at the window that failed (the simulator's
  own request counts, ``GET /_sim/stats``, show no finished window fetched again), and under a
  25 % error rate it completes;
* after an outage every collector that failed runs within one ``instances`` interval of the API
  answering again, and the "cannot see the account" alert fires once and resolves once;
* an instance listing item that does not parse counts as received: the others are refreshed, it
  is kept as last listed and reported in ``data_problems``; a listing short of its ``total``
  fails the collection and the previous listing stays;
* an answer over the size cap is refused with a clear error; a bills window that hits it is
  halved and asked again.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from monitor.app import App, intervals
from monitor.clock import ManualClock
from monitor.collect.scheduler import Scheduler
from monitor.config import Config
from monitor.novita.client import RetryPolicy
from monitor.status import fleet_status
from monitor.store import tables as t
from tests.helpers import ENV, write_config
from tests.test_numbers import Tamper
from tests.test_rules_e2e import Pipeline

BILLS = "/openapi/v1/billing/bill/list"
LISTING = "/gpu-instance/openapi/v1/gpu/instances"
CANNOT_SEE = "monitor-cannot-see-account"

Edit = Callable[[str, dict[str, Any], Any], None]


class Faulty(httpx.AsyncBaseTransport):
    """The simulator's ASGI app, with faults it lacks: ``fail(request)`` True answers 500
    UNKNOWN without reaching the simulator (so its stats do not count the request); ``edit``
    changes JSON answers (``edit(path, query, body)``, as ``tests.test_numbers.Tamper``)."""

    def __init__(
        self,
        sim_app: Any,
        fail: Callable[[httpx.Request], bool] | None = None,
        edit: Edit | None = None,
    ) -> None:
        self.inner: httpx.AsyncBaseTransport = httpx.ASGITransport(app=sim_app)
        if edit is not None:
            self.inner = Tamper(self.inner, edit)
        self.fail = fail

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.fail is not None and self.fail(request):
            body = {"code": 500, "reason": "UNKNOWN", "message": "injected", "metadata": {}}
            return httpx.Response(500, json=body)
        return await self.inner.handle_async_request(request)


def open_faulty(
    tmp_path: Path, sim_app: Any, clock: ManualClock, extra: str = "", **faults: Any
) -> App:
    """An App on the simulator through :class:`Faulty`; one attempt per request (a failure
    is a failure: the client's retries would hide the injected ones)."""
    config = Config.load(write_config(tmp_path, extra=extra), env=ENV)
    app = App.open(
        config, clock, env=ENV, transport_factory=lambda _name: Faulty(sim_app, **faults)
    )
    for ctx in app.contexts:
        ctx.client.retry = RetryPolicy(max_attempts=1)
    return app


async def sim_requests(sim_app: Any, path: str, *, reset: bool = False) -> int:
    """Requests the simulator answered on ``path`` (``GET /_sim/stats``), then optionally
    ``POST /_sim/stats/reset``."""
    transport = httpx.ASGITransport(app=sim_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as sim:
        counts = (await sim.get("/_sim/stats")).json()["requests"].get(path, {})
        if reset:
            await sim.post("/_sim/stats/reset")
    return sum(counts.values())


def stored_bills(app: App) -> list[tuple[Any, ...]]:
    with app.store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT cycle_type, owner_id, product_id, start_ts, amount FROM usage_bills"
                " ORDER BY cycle_type, owner_id, product_id, start_ts"
            )
        ).all()
    return [tuple(r) for r in rows]


def runs(app: App, collector: str) -> list[Any]:
    """Every recorded run of ``collector`` (outcome, error, started), oldest first."""
    c = t.collector_runs.c
    query = sa.select(c.outcome, c.error, c.started).where(c.collector == collector)
    with app.store.engine.connect() as conn:
        return list(conn.execute(query.order_by(c.id)).all())


async def clean_backfill(tmp_path: Path, sim_app: Any, clock: ManualClock) -> tuple[int, list]:
    """Requests and stored bills of a backfill that meets no fault (a database of its own)."""
    folder = tmp_path / "clean"
    folder.mkdir()
    app = open_faulty(folder, sim_app, clock)
    try:
        await sim_requests(sim_app, BILLS, reset=True)
        (report,) = await app.collect(["usage_bills"])
        assert report.outcome == "ok", report.error
        return await sim_requests(sim_app, BILLS, reset=True), stored_bills(app)
    finally:
        await app.aclose()


# ---------------------------------------------------------------------------------------------
# Backfills keep per-window progress


async def test_a_backfill_failing_half_way_resumes_without_refetching_finished_windows(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    full, expected = await clean_backfill(tmp_path, sim_app, clock)
    assert full > 60  # 30 days of daily bills and 8 days of hourly ones, window by window

    sent = 0

    def thirtieth(request: httpx.Request) -> bool:
        nonlocal sent
        if request.url.path != BILLS:
            return False
        sent += 1
        return sent == 30

    app = open_faulty(tmp_path, sim_app, clock, fail=thirtieth)
    try:
        (first,) = await app.collect(["usage_bills"])
        assert first.outcome == "failed" and "500" in (first.error or "")
        before = await sim_requests(sim_app, BILLS, reset=True)
        assert 0 < before < full
        (second,) = await app.collect(["usage_bills"])  # at the same instant
        assert second.outcome == "ok", second.error
        after = await sim_requests(sim_app, BILLS)
        # every window the first run stored is never asked for again: the second run asks for
        # the window that failed and those after it, plus the tail (the last period, still
        # growing) of the cycle type that had finished
        assert before + after <= full + 1, (before, after, full)
        assert stored_bills(app) == expected
    finally:
        await app.aclose()


async def test_under_a_25_percent_error_rate_the_backfill_catches_up(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    full, expected = await clean_backfill(tmp_path, sim_app, clock)
    rng = random.Random(7)

    def quarter(request: httpx.Request) -> bool:
        return request.url.path == BILLS and rng.random() < 0.25

    app = open_faulty(tmp_path, sim_app, clock, fail=quarter)
    try:
        outcomes = []
        for _ in range(60):  # an hour of one-minute retries
            (report,) = await app.collect(["usage_bills"])
            outcomes.append(report.outcome)
            if report.outcome == "ok":
                break
            clock.advance(60)
        assert outcomes[-1] == "ok", f"still failing after {len(outcomes)} runs"
        # each retry resumes: about the backfill's requests in all, not one backfill per run
        assert await sim_requests(sim_app, BILLS) < 1.5 * full + 2 * len(outcomes)
        assert {r[:4] for r in stored_bills(app)} >= {r[:4] for r in expected}
    finally:
        await app.aclose()


# ---------------------------------------------------------------------------------------------
# After an outage: catch-up, and no flapping alert


class CatchUp(Pipeline):
    """The e2e pipeline, with what the daemon's scheduler does when asked to run collectors
    at once (``AccountContext.wake``): they run right after the collectors of the step, before
    its evaluation."""

    def __init__(self, app: App, clock: ManualClock) -> None:
        super().__init__(app, clock)
        self.woken: list[str] = []
        for ctx in app.contexts:
            ctx.wake = self.woken.extend

    async def step(self) -> Any:
        names = self.due()
        while names:
            await self.app.collect(names)
            for name in names:
                self.last[name] = self.clock.now()
            names, self.woken[:] = sorted(set(self.woken)), []
        cycle = await self.app.evaluate()
        self.cycles.append(cycle)
        return cycle


async def test_after_an_outage_every_collector_catches_up_and_the_alert_does_not_flap(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    # two "daily" collectors every 20 minutes, stale after 1.5 intervals (30 min): an outage
    # of 25 minutes makes them miss their slot at 20 and go stale at 30, after the others
    # recovered at 26, until their slot at 40
    extra = "stale_after: 1.5\nschedules: {fixed_term_bills: 20m, products: 20m}\n"
    app = open_faulty(tmp_path, sim_app, clock, extra=extra)
    faults = sim_app.state.faults
    run = CatchUp(app, clock)
    try:
        cycles = [await run.step()]
        assert app.store.last_runs("main")["fixed_term_bills"].outcome == "ok"
        faults.error_rate = 1.0  # the API down for 25 minutes
        cycles += await run.advance(25)
        assert any(a.rule == CANNOT_SEE for a in cycles[-1].firing)
        assert app.store.last_runs("main")["fixed_term_bills"].outcome == "failed"
        faults.error_rate = 0.0
        back = clock.now()  # the API answers again from here
        cycles += await run.advance(35)
    finally:
        await app.aclose()

    # the alert fired once and resolved once: no resolve-fire-resolve when the 20-minute
    # collectors would have gone stale at 30, before their slot at 40
    moves = [
        (c.now - back, tr.to_state)
        for c in cycles
        for tr in c.result.transitions
        if tr.rule == CANNOT_SEE and tr.to_state in ("firing", "resolved")
    ]
    assert [state for _, state in moves] == ["firing", "resolved"], moves
    # every collector that failed during the outage ran again within one instances interval
    # of the API answering again
    interval = timedelta(seconds=intervals(app.config)["instances"])
    for name in ("fixed_term_bills", "products", "balance", "training_tasks", "metrics"):
        ok = [r.started for r in _runs_since(app, name, back) if r.outcome == "ok"]
        assert ok and ok[0] <= back + interval, (name, ok[:1])


def _runs_since(app: App, collector: str, since: datetime) -> list[Any]:
    return [r for r in runs(app, collector) if r.started >= since]


async def test_the_scheduler_runs_a_woken_job_at_once() -> None:
    """The daemon's side of ``wake``: a job due in a day runs now, and only known jobs move."""
    import asyncio

    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    scheduler = Scheduler()
    scheduler.add("main:fixed_term_bills", 86400, job)
    scheduler.start()
    try:
        assert scheduler.run_soon(["main:fixed_term_bills", "main:nope"]) == [
            "main:fixed_term_bills"
        ]
        await asyncio.wait_for(ran.wait(), timeout=5)
    finally:
        await scheduler.stop()


async def test_the_daemon_runs_a_failed_daily_collector_when_the_listing_recovers(
    tmp_path: Path,
) -> None:
    """The whole chain in the daemon: the listing succeeds after a failure -> the runner asks
    (``ctx.wake``) -> the daemon's scheduler runs the failed daily collector now, not in a day."""
    import asyncio
    from datetime import UTC

    from monitor.collect.runner import run_collector
    from monitor.daemon import Daemon
    from monitor.sim import FleetSim, create_app

    # the scheduler runs on the wall clock: so do the simulated fleet and the monitor here
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    app = open_faulty(tmp_path, create_app(FleetSim(clock, scenario="demo", seed=0)), clock)
    daemon = Daemon(tmp_path / "novita-monitor.yaml", clock, app_factory=lambda _cfg: app)
    now = clock.now()
    for name in [*intervals(app.config), "retention"]:  # every job due in an interval or more
        app.store.record_run("main", name, now, now, "ok")
    app.store.record_run("main", "fixed_term_bills", now, now, "failed", error="outage")
    app.store.record_run("main", "instances", now, now, "failed", error="outage")
    daemon._schedule(app)
    daemon.scheduler.start()
    try:
        (ctx,) = app.contexts
        report = await run_collector(ctx, "instances", clock)
        assert report.outcome == "ok"
        for _ in range(100):  # the scheduler runs it in the background: a few milliseconds
            if app.store.last_runs("main")["fixed_term_bills"].outcome == "ok":
                break
            await asyncio.sleep(0.05)
        assert app.store.last_runs("main")["fixed_term_bills"].outcome == "ok"
        assert app.store.last_runs("main")["products"].outcome == "ok"  # never failed: untouched
        assert [r.outcome for r in runs(app, "products")] == ["ok"]
    finally:
        await daemon.scheduler.stop()
        await app.aclose()


# ---------------------------------------------------------------------------------------------
# The instance listing: one malformed item, and a listing short of its total


def malformed(instance_id: str, **fields: Any) -> Edit:
    def edit(path: str, query: dict[str, Any], body: Any) -> None:
        if path == LISTING and isinstance(body, dict):
            for item in body.get("instances", []):
                if item.get("id") == instance_id:
                    item.update(fields)

    return edit


class Switch:
    """An edit that can be turned on and off between runs."""

    def __init__(self, edit: Edit) -> None:
        self.inner = edit
        self.on = False

    def __call__(self, path: str, query: dict[str, Any], body: Any) -> None:
        if self.on:
            self.inner(path, query, body)


def account_status(app: App, clock: ManualClock) -> dict[str, Any]:
    data = fleet_status(
        app.store, ["main"], clock.now(), intervals(app.config), app.config.stale_after
    )
    (account,) = data["accounts"]
    return account  # type: ignore[no-any-return]


async def test_a_malformed_item_counts_as_received_and_is_reported(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    bad = Switch(malformed("demo-notebook", gpuNum="lots", status="exited"))
    app = open_faulty(tmp_path, sim_app, clock, edit=bad)
    try:
        (first,) = await app.collect(["instances"])
        assert first.outcome == "ok"
        before = {r.instance_id: r for r in app.store.instances("main")}
        bad.on = True
        clock.advance(60)
        (second,) = await app.collect(["instances"])
        clock.advance(60)
        (third,) = await app.collect(["instances"])
        status = account_status(app, clock)
    finally:
        await app.aclose()
    assert (second.outcome, third.outcome) == ("ok", "ok"), (second.error, third.error)
    assert second.counts["unparsable"] == 1
    after = {r.instance_id: r for r in app.store.instances("main")}
    # the bad one is kept as last listed (never marked disappeared), the others refreshed
    assert set(after) == set(before)
    notebook = after["demo-notebook"]
    assert notebook.status == before["demo-notebook"].status == "running"
    assert notebook.last_seen == before["demo-notebook"].last_seen
    assert all(r.last_seen == clock.now() for i, r in after.items() if i != "demo-notebook")
    assert app.store.events("main", kinds=["disappeared"]) == []
    problems = [p for p in status["data_problems"] if p["kind"] == "unparsable_item"]
    assert problems == [
        {
            "kind": "unparsable_item",
            "resource_id": "demo-notebook",
            "field": "gpuNum",
            "raw": "lots",
            "count": 2,
        }
    ]
    assert "demo-notebook" in {i["id"] for i in status["instances"]}


async def test_an_item_without_a_readable_id_marks_no_instance_disappeared(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    bad = Switch(malformed("demo-notebook", id=None))
    app = open_faulty(tmp_path, sim_app, clock, edit=bad)
    try:
        await app.collect(["instances"])
        bad.on = True
        clock.advance(60)
        (report,) = await app.collect(["instances"])
        status = account_status(app, clock)
    finally:
        await app.aclose()
    assert report.outcome == "ok", report.error
    assert "demo-notebook" in {r.instance_id for r in app.store.instances("main")}
    assert app.store.events("main", kinds=["disappeared"]) == []
    (problem,) = [p for p in status["data_problems"] if p["kind"] == "unparsable_item"]
    assert problem["resource_id"] == "" and problem["field"] == "id"


async def test_an_item_whose_environment_is_malformed_is_reported_without_its_values(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    secret = "hf_in_a_broken_env_0123456789"
    bad = Switch(malformed("demo-notebook", envs=[{"key": 5, "value": secret}, "x"]))
    bad.on = True
    app = open_faulty(tmp_path, sim_app, clock, edit=bad)
    try:
        (report,) = await app.collect(["instances"])
        status = account_status(app, clock)
    finally:
        await app.aclose()
    assert report.outcome == "ok", report.error
    (problem,) = [p for p in status["data_problems"] if p["kind"] == "unparsable_item"]
    assert problem["field"].startswith("envs") and problem["raw"] is None
    assert secret not in json.dumps(status)


async def test_a_listing_short_of_its_total_fails_and_the_previous_listing_stays(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    def drop_one(path: str, query: dict[str, Any], body: Any) -> None:
        if path == LISTING and isinstance(body, dict):
            body["instances"] = [i for i in body["instances"] if i["id"] != "demo-notebook"]

    short = Switch(drop_one)
    app = open_faulty(tmp_path, sim_app, clock, edit=short)
    try:
        (first,) = await app.collect(["instances"])
        assert first.outcome == "ok"
        listed = {r.instance_id: r.last_seen for r in app.store.instances("main")}
        short.on = True
        reports = []
        for _ in range(4):  # four minutes of incomplete listings
            clock.advance(60)
            reports += await app.collect(["instances"])
        status = account_status(app, clock)
    finally:
        await app.aclose()
    assert {r.outcome for r in reports} == {"failed"}
    assert "incomplete listing" in (reports[0].error or "")
    # the previous listing stays, whole: nothing disappeared, nothing refreshed
    assert {r.instance_id: r.last_seen for r in app.store.instances("main")} == listed
    assert app.store.events("main", kinds=["disappeared"]) == []
    # and the collector goes stale as usual (3 x 60 s without success)
    assert "instances" in status["stale"]


# ---------------------------------------------------------------------------------------------
# Answers over the size cap


async def test_an_answer_over_the_cap_is_refused_with_a_clear_error(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    app = open_faulty(tmp_path, sim_app, clock)
    try:
        for ctx in app.contexts:
            ctx.client.max_response_bytes = 1000  # the demo's listing is several kB
        (report,) = await app.collect(["instances"])
    finally:
        await app.aclose()
    assert report.outcome == "failed"
    assert "cap of 1000 bytes (max_response_bytes)" in (report.error or "")
    assert app.store.instances("main") == []


async def test_a_bills_window_over_the_cap_is_halved_and_asked_again(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    full, expected = await clean_backfill(tmp_path, sim_app, clock)
    app = open_faulty(tmp_path, sim_app, clock)
    try:
        for ctx in app.contexts:
            # the demo's 3-hour windows of hourly bills run to 7.8 kB (3 or 4 periods of 8
            # instances, 2.6 kB each): those over 6 kB are halved until they hold 2 periods
            ctx.client.max_response_bytes = 6000
        (report,) = await app.collect(["usage_bills"])
        asked = await sim_requests(sim_app, BILLS)
    finally:
        await app.aclose()
    assert report.outcome == "ok", report.error
    assert asked > full  # the windows that hit the cap were asked for again, in halves
    assert stored_bills(app) == expected


@pytest.fixture(autouse=True)
def _fresh_stats(sim_app: Any) -> None:
    sim_app.state.stats.counts.clear()
