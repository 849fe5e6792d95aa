"""Numbers you can trust, end to end: ``status --json`` and the alerts read the same figures,
and a figure that fails its bounds reaches neither a notification nor ``status`` as a number.

The violations are made at the wire: a transport between the client and the in-process
simulator edits the simulator's answers (bills whose ``billNum0`` disagrees with their money,
a monthly price at a tenth of its scale, an hourly bill a hundred times the listed price), and
the whole pipeline runs: collect -> store -> facts -> rules -> messages -> status.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor import economics
from monitor.app import App, intervals
from monitor.clock import ManualClock
from monitor.config import Config
from monitor.facts import StoreFacts
from monitor.sim import FleetSim, create_app
from monitor.sim.truth import truth_json
from monitor.status import fleet_status
from tests.helpers import ENV, write_config
from tests.receivers import JsonSink
from tests.test_rules_e2e import Pipeline, channels

Edit = Callable[[str, dict[str, Any], Any], None]


class Tamper(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` and lets ``edit(path, query, body)`` change JSON answers."""

    def __init__(self, inner: httpx.AsyncBaseTransport, edit: Edit) -> None:
        self.inner = inner
        self.edit = edit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.startswith("/_sim"):
            return response
        raw = await response.aread()
        try:
            body = json.loads(raw)
        except ValueError:
            return httpx.Response(response.status_code, content=raw)
        self.edit(request.url.path, dict(request.url.params), body)
        return httpx.Response(response.status_code, json=body)


@pytest.fixture
def sink() -> Iterator[JsonSink]:
    with JsonSink() as s:
        yield s


def open_tampered(tmp_path: Path, sim_app: Any, clock: ManualClock, edit: Edit, extra: str) -> App:
    config = Config.load(write_config(tmp_path, extra=extra), env=ENV)
    return App.open(
        config,
        clock,
        env=ENV,
        transport_factory=lambda _name: Tamper(httpx.ASGITransport(app=sim_app), edit),
    )


def untouched(path: str, query: dict[str, Any], body: Any) -> None:
    return None


def status_of(app: App, clock: ManualClock) -> dict[str, Any]:
    data = fleet_status(
        app.store, ["main"], clock.now(), intervals(app.config), app.config.stale_after
    )
    (account,) = data["accounts"]
    return account


def lines(sink: JsonSink) -> str:
    return "\n".join(body["message"] for body in sink.bodies)


def firing_values(cycle: Any, rule: str) -> dict[str, dict[str, Any]]:
    return {a.resource_id: dict(a.values) for a in cycle.firing if a.rule == rule}


async def test_status_and_the_rules_read_the_same_figures(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_tampered(tmp_path, sim_app, clock, untouched, channels(sink))
    try:
        cycle = await Pipeline(app, clock).step()
        now = clock.now()
        status = status_of(app, clock)
        facts = StoreFacts(
            app.store, ["main"], intervals(app.config), app.config.stale_after, now=now
        )
        by_id = {i.id: i for i in facts.instances("main")}
        hours = facts.running_hours("main", now - economics.ADVICE_LOOKBACKS[-1], now)
        assert hours is not None
        for inst in status["instances"]:
            fact = by_id[inst["id"]]
            assert inst["hourly_cost_usd"] == (
                None if fact.hourly_cost_usd is None else round(float(fact.hourly_cost_usd), 4)
            )
            assert inst["running_hours_30d"] == (
                None if hours.get(inst["id"]) is None else round(hours[inst["id"]], 2)
            )
        burn = facts.burn_rate("main")
        runway = facts.runway("main", now)
        assert status["burn_rate_usd_per_hour"] == round(float(burn or 0), 4)
        assert status["runway_hours"] == round(runway.hours or 0, 2)
        # the alerts quote the same figures as status
        (low,) = firing_values(cycle, "balance-runway").values()
        assert low["runway_hours"] == round(status["runway_hours"], 1)
        assert low["burn_rate_usd_per_hour"] == status["burn_rate_usd_per_hour"]
        idle = firing_values(cycle, "idle-gpu")
        notebook = next(i for i in status["instances"] if i["id"] == "demo-notebook")
        assert idle["demo-notebook"]["cost_so_far_usd"] == notebook["idle_cost_usd"]
        assert notebook["idle_since"] is not None
        advice = firing_values(cycle, "subscription-candidate")
        assert set(advice) == {"demo-allmonth"}
        allmonth = next(i for i in status["instances"] if i["id"] == "demo-allmonth")
        assert advice["demo-allmonth"]["monthly_saving_usd"] == allmonth["monthly_saving_usd"]
        assert advice["demo-allmonth"]["break_even_hours"] == allmonth["break_even_hours"]
        # and status shows no figure outside its bounds
        for inst in status["instances"]:
            if inst["running_hours_30d"] is not None:
                assert 0 <= inst["running_hours_30d"] <= 720
        assert status["data_problems"] == []
    finally:
        await app.aclose()


def double_daily_billnum0(path: str, query: dict[str, Any], body: Any) -> None:
    if path.endswith("/billing/bill/list") and query.get("cycleType") == "Day":
        for bill in body.get("bills") or []:
            if bill.get("ownerID") == "demo-allmonth":
                bill["billNum0"] = str(float(bill["billNum0"]) * 2)


def tenth_monthly_price(path: str, query: dict[str, Any], body: Any) -> None:
    if path.endswith("/products"):
        for product in body.get("data") or []:
            for monthly in product.get("monthlyPrice") or []:
                monthly["price"] = str(int(monthly["price"]) // 10)


def hundredfold_hourly_bill(path: str, query: dict[str, Any], body: Any) -> None:
    if path.endswith("/billing/bill/list") and query.get("cycleType") == "Hour":
        for bill in body.get("bills") or []:
            if bill.get("ownerID") == "demo-notebook":
                for key in ("amount", "payAmount", "discountPrice0"):
                    bill[key] = str(int(bill[key]) * 100)


async def test_bills_whose_quantity_disagrees_with_their_money_make_no_advice(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_tampered(tmp_path, sim_app, clock, double_daily_billnum0, channels(sink))
    try:
        cycle = await Pipeline(app, clock).step()
        assert "demo-allmonth" not in firing_values(cycle, "subscription-candidate")
        assert "allmonth" not in lines(sink)
        status = status_of(app, clock)
        allmonth = next(i for i in status["instances"] if i["id"] == "demo-allmonth")
        assert allmonth["running_hours_30d"] is None
        assert allmonth["monthly_saving_usd"] is None
        kinds = {(p["kind"], p["resource_id"]) for p in status["data_problems"]}
        assert ("bill_unit_mismatch", "demo-allmonth") in kinds
    finally:
        await app.aclose()


async def test_a_monthly_price_at_the_wrong_scale_is_unknown_everywhere(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_tampered(tmp_path, sim_app, clock, tenth_monthly_price, channels(sink))
    try:
        cycle = await Pipeline(app, clock).step()
        assert firing_values(cycle, "subscription-candidate") == {}
        text = lines(sink)
        assert "/month" not in text and "cheaper as a subscription" not in text
        status = status_of(app, clock)
        assert all(i["monthly_price_usd"] is None for i in status["instances"])
        assert all(i["break_even_hours"] is None for i in status["instances"])
        assert {p["kind"] for p in status["data_problems"]} == {"monthly_price_implausible"}
    finally:
        await app.aclose()


async def test_an_hourly_cost_beyond_bounds_never_reaches_a_message(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_tampered(tmp_path, sim_app, clock, hundredfold_hourly_bill, channels(sink))
    try:
        cycle = await Pipeline(app, clock).step()
        notebook = firing_values(cycle, "idle-gpu")["demo-notebook"]
        assert notebook["cost_per_hour_usd"] is None
        assert "cost_so_far_usd" not in notebook or notebook["cost_so_far_usd"] is None
        line = next(x for x in lines(sink).splitlines() if "(demo-notebook)" in x)
        assert "$" not in line
        status = status_of(app, clock)
        # the burn is unknown (one billing cost is), so is the runway: never a made-up one
        assert status["burn_rate_usd_per_hour"] is None
        assert (status["runway_hours"], status["runway_reason"]) == (None, "unknown_burn")
        kinds = {(p["kind"], p["resource_id"]) for p in status["data_problems"]}
        assert ("hourly_cost_out_of_bounds", "demo-notebook") in kinds
    finally:
        await app.aclose()


def gpu_above_100(path: str, query: dict[str, Any], body: Any) -> None:
    if path.endswith("/metrics/gpu/instance") and query.get("instanceId") == "demo-trainer":
        gpu = body.get("gpuUtilization") or {}
        for point in gpu.get("avg") or []:
            point["value"] = 150.0
        for series in gpu.get("gpuIds") or []:
            for point in series.get("items") or []:
                point["value"] = 150.0


async def test_a_utilisation_above_100_percent_is_missing_data(
    tmp_path: Path, sim_app: Any, clock: ManualClock, sink: JsonSink
) -> None:
    app = open_tampered(tmp_path, sim_app, clock, gpu_above_100, channels(sink))
    try:
        await Pipeline(app, clock).step()
        status = status_of(app, clock)
        trainer = next(i for i in status["instances"] if i["id"] == "demo-trainer")
        assert trainer["gpu_util_avg_15m"] is None
        kinds = {(p["kind"], p["resource_id"]) for p in status["data_problems"]}
        assert ("utilisation_out_of_bounds", "demo-trainer") in kinds
    finally:
        await app.aclose()


@pytest.mark.parametrize("hour", [(0, 30), (5, 0), (23, 30)], ids=["00:30", "05:00", "23:30"])
async def test_the_advice_does_not_flip_with_the_time_of_day(
    tmp_path: Path, sink: JsonSink, hour: tuple[int, int]
) -> None:
    """The 24/7 instance is named, with its true saving, at any hour of the day (a daily bill
    straddling the window's start counts in proportion; today's partial bill counts to now)."""
    clock = ManualClock(datetime(2026, 11, 20, *hour, tzinfo=UTC))
    sim = FleetSim(clock, scenario="demo", seed=0)  # billNum0 in card-seconds (the default)
    app = open_tampered(tmp_path, create_app(sim), clock, untouched, channels(sink))
    try:
        cycle = await Pipeline(app, clock).step()
        advice = firing_values(cycle, "subscription-candidate")
        assert set(advice) == {"demo-allmonth"}
        want = {i["id"]: i for i in truth_json(sim)["instances"]}["demo-allmonth"]
        assert advice["demo-allmonth"]["monthly_saving_usd"] == pytest.approx(
            want["monthly_saving_usd"], abs=0.01
        )
        status = status_of(app, clock)
        allmonth = next(i for i in status["instances"] if i["id"] == "demo-allmonth")
        assert allmonth["running_hours_30d"] == pytest.approx(want["usage_hours_30d"], abs=1.0)
    finally:
        await app.aclose()


def test_the_facts_bills_history_matches_the_collectors_backfill() -> None:
    from monitor import facts
    from monitor.collect import collectors

    assert facts.DAILY_BILLS_HISTORY == collectors.BILLS_BACKFILL
    assert facts.HOURLY_BILLS_HISTORY == collectors.HOURLY_BACKFILL


def test_money_is_decimal_in_the_economics() -> None:
    assert isinstance(economics.monthly_saving(Decimal("0.35"), 730.0, Decimal(179)), Decimal)
