"""Collect end to end against the in-process simulator: once, then status; idempotence;
incremental metrics; fault injection leaves healthy parts complete and errors recorded."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from monitor.app import intervals
from monitor.clock import ManualClock
from monitor.collect.collectors import CollectSettings, metrics_window
from monitor.collect.convert import minute_rows
from monitor.novita.client import RetryPolicy
from monitor.novita.models import InstanceMetrics
from monitor.sim import catalog
from monitor.status import fleet_status
from tests.helpers import open_app


def _status(app: Any) -> dict[str, Any]:
    data = fleet_status(
        app.store, ["main"], app.clock.now(), intervals(app.config), app.config.stale_after
    )
    return data["accounts"][0]


def _count(app: Any, table: str) -> int:
    with app.store.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


async def test_once_then_status_matches_the_simulator(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    try:
        result = await app.once()
    finally:
        await app.aclose()
    outcomes = {r.collector: r.outcome for r in result.reports}
    assert set(outcomes.values()) == {"ok"}, result.reports

    app = open_app(tmp_path, sim_app, clock)
    try:
        acc = _status(app)
    finally:
        await app.aclose()
    # balance: 1/10000 USD on the wire
    assert acc["balance_usd"] == pytest.approx(demo_sim.balance_10k() / 10_000, abs=1e-4)
    assert acc["stale"] == []
    by_id = {i["id"]: i for i in acc["instances"]}
    assert set(by_id) == {i.id for i in demo_sim.instances()}

    trainer = by_id["demo-trainer"]
    sim_trainer = next(i for i in demo_sim.instances() if i.id == "demo-trainer")
    # products: 1/100000 USD per GPU-hour, per cluster, times the GPU count
    per_gpu = Decimal(catalog.hourly_price(sim_trainer.product_id, sim_trainer.cluster_id))
    assert trainer["hourly_cost_usd"] == pytest.approx(float(per_gpu / 100_000 * 2), abs=1e-4)
    assert trainer["gpu_count"] == 2 and trainer["billing_mode"] == "onDemand"
    assert trainer["gpu_util_avg_15m"] is not None and trainer["gpu_util_avg_15m"] > 40
    assert trainer["expires_at"] is None  # endTime "-1"

    notebook = by_id["demo-notebook"]
    assert notebook["gpu_util_avg_15m"] is not None and notebook["gpu_util_avg_15m"] < 5

    sub = by_id["demo-subscription"]
    assert sub["billing_mode"] == "monthly"
    assert sub["hourly_cost_usd"] is None  # prepaid
    assert sub["expires_at"] == (clock.now() + timedelta(days=3)).isoformat().replace("+00:00", "Z")
    pending = by_id["demo-pending"]
    assert pending["status"] == "pending" and pending["billing_mode"] is None
    assert pending["expires_at"] is None  # endTime "0"
    assert by_id["demo-stopped"]["hourly_cost_usd"] is None

    # burn rate and runway from the same numbers
    burn = sum(i["hourly_cost_usd"] or 0 for i in acc["instances"])
    assert acc["burn_rate_usd_per_hour"] == pytest.approx(burn, abs=1e-3)
    assert acc["runway_hours"] == pytest.approx(acc["balance_usd"] / burn, rel=1e-3)
    # the simulator's own burn rate agrees with the monitor's (prices x GPUs)
    assert burn == pytest.approx(demo_sim.burn_10k_per_hour() / 10_000, rel=0.02)


async def test_cpu_is_stored_per_core(tmp_path: Path, sim_app: Any, clock: ManualClock) -> None:
    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect(["instances", "metrics"])
        samples = app.store.samples(
            "main", "demo-trainer", clock.now() - timedelta(hours=1), clock.now()
        )
    finally:
        await app.aclose()
    cpus = [s.cpu for s in samples if s.cpu is not None]
    # the wire sums over cores (up to 100 x cpuNum); stored per core, a busy trainer's cores
    # are well used but never above 100 %
    assert len(cpus) >= 50
    assert 10 < max(cpus) <= 100.0


async def test_collecting_twice_never_duplicates(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect()
        counts = {t: _count(app, t) for t in ("metric_samples", "usage_bills", "instances")}
        second = await app.collect()
        again = {t: _count(app, t) for t in counts}
    finally:
        await app.aclose()
    assert counts == again
    metrics = next(r for r in second if r.collector == "metrics")
    assert metrics.counts["rows"] == 0  # nothing new at the same instant


async def test_steady_state_fetches_only_new_minutes(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect(["instances", "metrics"])
        before = _count(app, "metric_samples")
        clock.advance(60)
        steady = await app.collect(["instances", "metrics"])
        after = _count(app, "metric_samples")
    finally:
        await app.aclose()
    running = sum(1 for i in demo_sim.instances() if i.status == "running")
    metrics = next(r for r in steady if r.collector == "metrics")
    assert metrics.outcome == "ok"
    # one new minute per running instance (the overlap re-reads stored minutes without writing)
    assert after - before == running
    assert metrics.counts["rows"] == running


def test_metrics_window_backfill_and_overlap() -> None:
    now = ManualClock().now()
    settings = CollectSettings(rules_window_s=7200)
    start, end = metrics_window(None, now, settings)
    assert end - start == timedelta(seconds=7200 + 60)  # longest rule window + lag
    start, _ = metrics_window(now - timedelta(minutes=1), now, settings)
    assert now - start == timedelta(minutes=2)  # last sample - lag
    start, _ = metrics_window(now - timedelta(days=3), now, settings)
    assert now - start == timedelta(seconds=7260)  # a long gap: backfill again, not 3 days
    start, end = metrics_window(now, now, settings)
    assert end - start >= timedelta(seconds=60)  # never shorter than the API's minimum
    big = CollectSettings(rules_window_s=3 * 86400)
    start, _ = metrics_window(None, now, big)
    assert now - start == timedelta(hours=24)  # at most 24 h


async def test_one_failing_instance_does_not_stop_the_others(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock
) -> None:
    faults = sim_app.state.faults
    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect(["instances"])
        faults.fail_next("/openapi/v1/metrics/gpu/instance", 400, "RESOURCE_NOT_FOUND", count=1)
        (report,) = await app.collect(["metrics"])
        keys = app.store.latest_metric_times("main")
        runs = app.store.last_runs("main")
    finally:
        await app.aclose()
    running = {i.id for i in demo_sim.instances() if i.status == "running"}
    assert report.outcome == "partial"
    assert "RESOURCE_NOT_FOUND" in (report.error or "")
    assert report.counts["fetched"] == len(running) - 1
    assert len(keys) == len(running) - 1
    assert runs["metrics"].outcome == "partial" and "RESOURCE_NOT_FOUND" in runs["metrics"].error


async def test_server_errors_and_malformed_bodies_are_recorded_not_stored(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    faults = sim_app.state.faults
    app = open_app(tmp_path, sim_app, clock)
    app.contexts[0].client.retry = RetryPolicy(sleep=_no_sleep)  # retries without waiting
    try:
        await app.collect(["balance"])
        balances = len(app.store.balance_samples("main"))
        # the balance endpoint keeps failing past the retry budget: recorded, nothing stored
        faults.fail_next("/openapi/v1/billing/balance/detail", 500, "UNKNOWN", count=50)
        faults.fail_next("/v3/user", 500, "UNKNOWN", count=50)
        (failed,) = await app.collect(["balance"])
        # 429 storm on instances: retried until it passes
        faults.fail_next("/gpu-instance/openapi/v1/gpu/instances", 429, "RATE_LIMIT_EXCEEDED", 3)
        (ok,) = await app.collect(["instances"])
        faults.malformed_rate = 1.0
        (bad,) = await app.collect(["training_tasks"])
        faults.malformed_rate = 0.0
        after = len(app.store.balance_samples("main"))
        runs = app.store.last_runs("main")
    finally:
        await app.aclose()
    assert failed.outcome == "failed" and "UNKNOWN" in (failed.error or "")
    assert after == balances
    assert ok.outcome == "ok"
    assert bad.outcome == "failed"
    assert runs["balance"].outcome == "failed"


async def _no_sleep(_seconds: float) -> None:
    return None


async def test_unreachable_api_makes_data_stale_not_wrong(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect()
        fresh = _status(app)
        before = {i["id"]: i["status"] for i in fresh["instances"]}
        faults = sim_app.state.faults
        app.contexts[0].client.retry = RetryPolicy(sleep=_no_sleep)
        faults.error_rate = 1.0  # every request fails for a long while
        clock.advance(3600)
        reports = await app.collect()
        faults.error_rate = 0.0
        stale = _status(app)
    finally:
        await app.aclose()
    assert fresh["stale"] == []
    assert all(r.outcome == "failed" for r in reports if r.collector != "async_tasks")
    assert {"instances", "metrics", "balance"} <= set(stale["stale"])
    # the last known facts are kept as they were, never blanked or guessed
    assert {i["id"]: i["status"] for i in stale["instances"]} == before
    assert stale["balance_usd"] == fresh["balance_usd"]


async def test_bills_of_a_period_that_just_ended_are_stored_final(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock
) -> None:
    """The day's running total is read at 23:59; the next collection, after midnight, must
    replace it with the final amount (a later cycle re-reads one period plus a margin)."""
    import httpx

    from monitor.novita.client import NovitaClient

    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect(["instances", "usage_bills"])
        clock.advance(11 * 3600 + 59 * 60)  # 2026-11-20 23:59
        await app.collect(["usage_bills"])
        day = clock.now().replace(hour=0, minute=0)
        partial = {b.owner_id: b.amount for b in app.store.bills("main", "Day", day)}
        clock.advance(60 * 60)  # 2026-11-21 00:59
        await app.collect(["usage_bills"])
        stored = {
            b.owner_id: b.amount
            for b in app.store.bills("main", "Day", day, day + timedelta(days=1))
        }
        last_hour = app.store.bills("main", "Hour", day.replace(hour=23), day + timedelta(days=1))
    finally:
        await app.aclose()
    async with NovitaClient("k", "http://sim", transport=httpx.ASGITransport(app=sim_app)) as c:
        final = {
            b.owner_id: b.amount
            for b in await c.list_usage_bills("Day", "gpu", day, day + timedelta(hours=23))
        }
    assert final and set(stored) == set(final)
    assert stored == final
    assert any(partial[k] < final[k] for k in partial)  # the day did grow after 23:59
    running = {i.id for i in demo_sim.instances() if i.status == "running"}
    paygo = {b.owner_id for b in last_hour}
    assert paygo and paygo <= running


async def test_metrics_start_before_the_listing_and_add_the_instances_it_finds_running(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock
) -> None:
    """Within a full cycle the metrics fan-out starts over the last listing's running
    instances without waiting for this cycle's listing, then adds those that started since;
    one that stopped since still has its last minutes fetched."""
    import asyncio
    from dataclasses import replace

    from monitor.collect.collectors import collect_instances, collect_metrics

    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect()
        assert "demo-stopped" not in app.store.latest_metric_times("main")
        demo_sim.perform("start", {"instanceId": "demo-stopped"})
        demo_sim.perform("stop", {"instanceId": "demo-inference"})
        clock.advance(300)
        ctx = app.contexts[0]
        listing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        metrics = asyncio.create_task(collect_metrics(replace(ctx, listing=listing), clock.now()))
        await asyncio.sleep(0)  # the fan-out over the last listing is under way
        await collect_instances(ctx, clock.now())  # this cycle's listing, stored
        listing.set_result(None)
        counts = await metrics
        latest = app.store.latest_metric_times("main")
        listed = {i.instance_id: i.status for i in app.store.instances("main")}
    finally:
        await app.aclose()
    running_now = {i.id for i in demo_sim.instances() if i.status == "running"}
    assert listed["demo-stopped"] == "running" and listed["demo-inference"] == "exited"
    assert counts["instances"] == len(running_now | {"demo-inference"})
    assert counts["fetched"] == counts["instances"]
    assert "demo-stopped" in latest  # started 5 min ago: its first minutes are stored
    stopped_at = clock.now() - timedelta(seconds=240)  # exited 60 s after the stop request
    assert latest["demo-inference"] >= stopped_at - timedelta(minutes=2)


async def test_an_unexpected_error_for_one_instance_is_recorded_not_hung_on(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    client = app.contexts[0].client
    real = client.get_metrics

    async def flaky(instance_id: str, *args: Any, **kwargs: Any) -> Any:
        if instance_id == "demo-trainer":
            raise RuntimeError("a bug, not an API error")
        return await real(instance_id, *args, **kwargs)

    client.get_metrics = flaky
    try:
        await app.collect(["instances"])
        (report,) = await app.collect(["metrics"])
    finally:
        await app.aclose()
    running = sum(1 for i in demo_sim.instances() if i.status == "running")
    assert report.outcome == "partial"
    assert report.error is not None and "demo-trainer: RuntimeError" in report.error
    assert report.counts["fetched"] == running - 1


async def test_a_backfill_beyond_the_pending_samples_limit_completes_and_writes_everything(
    tmp_path: Path, sim_app: Any, demo_sim: Any, clock: ManualClock, monkeypatch: Any
) -> None:
    """With the memory bound far below one answer, every answer is written before the next
    request starts: slower, never stuck, nothing lost."""
    import asyncio

    from monitor.collect import collectors

    monkeypatch.setattr(collectors, "MAX_PENDING_SAMPLES", 10)
    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect(["instances"])
        (report,) = await asyncio.wait_for(app.collect(["metrics"]), timeout=60)
        samples = _count(app, "metric_samples")
    finally:
        await app.aclose()
    running = sum(1 for i in demo_sim.instances() if i.status == "running")
    assert report.outcome == "ok", report.error
    assert report.counts["fetched"] == running
    assert samples == report.counts["rows"] >= running * 60  # an hour of minutes each


# -- wire -> store (monitor.collect.convert) -----------------------------------------------------


def test_minute_rows_average_a_minute_divide_cpu_by_cores_and_order_gpus_numerically() -> None:
    t = 1_764_547_200  # a whole minute
    body = {
        "cpuUtilization": [
            {"timestamp": str(t), "value": 300},
            {"timestamp": str(t + 30), "value": 500},  # same minute: averaged (400)
            {"timestamp": str(t + 60), "value": "200"},
        ],
        "memUtilization": [{"timestamp": str(t + 60), "value": 12.34}],
        "gpuUtilization": {
            "avg": [{"timestamp": str(t), "value": 50}],
            "gpuIds": [
                {"gpuId": "10", "items": [{"timestamp": str(t), "value": 90}]},
                {"gpuId": "2", "items": [{"timestamp": str(t), "value": 10}]},
                {"gpuId": "1", "items": [{"timestamp": str(t + 60), "value": 33.6}]},
            ],
        },
    }
    rows = minute_rows(InstanceMetrics.model_validate(body), cpu_num=8)
    assert sorted(rows) == [t, t + 60]
    first, second = rows[t], rows[t + 60]
    assert first["cpu"] == 500 and second["cpu"] == 250  # tenths of a percent per core
    assert first["mem"] is None and second["mem"] == 123
    assert first["gpu_util"] == 500 and second["gpu_util"] is None
    assert first["disk"] is None and first["gpu_mem"] is None
    # GPUs in numeric id order (1, 2, 10); 255 where a GPU has no sample in that minute
    assert list(first["gpu_utils"]) == [255, 10, 90]
    assert list(second["gpu_utils"]) == [34, 255, 255]
    assert first["gpu_mems"] is None


async def test_collectors_store_renewal_fields_and_bill_unit_prices_as_the_api_sent_them(
    tmp_path: Path, sim_app: Any, clock: ManualClock
) -> None:
    """The collectors convert each payload into the store's records: what the API sent for
    ``autoRenew``, ``discountPrice0`` (over ``pricePrecision``) and ``basePrice`` is what the
    store returns."""
    import httpx

    from monitor.novita.client import NovitaClient

    app = open_app(tmp_path, sim_app, clock)
    try:
        await app.collect(["instances", "usage_bills", "fixed_term_bills"])
        stored = {r.instance_id: r for r in app.store.instances("main")}
        hourly = app.store.bills("main", "Hour")
        fixed = app.store.fixed_term_bills("main")
    finally:
        await app.aclose()
    now = clock.now()
    async with NovitaClient("k", "http://sim", transport=httpx.ASGITransport(app=sim_app)) as c:
        listed = await c.list_instances()
        wire_bills = await c.list_usage_bills("Hour", "gpu", now - timedelta(hours=3), now)
        wire_fixed = await c.list_fixed_term_bills(now - timedelta(days=30), now, category="gpu")
    assert {i.id: i.auto_renew for i in listed} == {k: r.auto_renew for k, r in stored.items()}
    assert any(r.auto_renew is not None for r in stored.values())  # the sim sends it
    by_key = {(b.owner_id, b.start_ts): b.unit_price for b in hourly}
    sent = {
        (b.owner_id, int(b.start_time.timestamp())): b.unit_price_usd
        for b in wire_bills
        if b.start_time is not None
    }
    assert sent and all(v is not None for v in sent.values())
    assert {k: by_key[k] for k in sent} == sent
    assert {(b.owner_id, b.base_price) for b in fixed} == {
        (b.owner_id, b.base_price_usd) for b in wire_fixed
    }


def test_converters_divide_by_price_precision_and_drop_bills_without_a_start() -> None:
    from monitor.collect import convert
    from monitor.novita.models import FixedTermBill, Instance, UsageBill

    fixed = FixedTermBill.model_validate(
        {"startTime": "1764547200", "endTime": "1767225600", "ownerID": "i-9",
         "basePrice": "30000000000", "pricePrecision": 10000, "amount": "3000000",
         "payAmountDisplay": "300"}
    )  # fmt: skip
    (row,) = convert.fixed_term_bill_rows([fixed, FixedTermBill(owner_id="i-x")])
    assert row["base_price"] == Decimal(300)  # basePrice / pricePrecision, at 1/10000 USD
    assert row["pay_amount"] == Decimal(300)  # the display figure when payAmount is absent
    assert (row["category"], row["product_id"], row["start_ts"]) == ("", "", 1764547200)
    assert convert.usage_bill_rows([UsageBill(owner_id="i-1")]) == []
    inst = convert.instance_row(
        Instance.model_validate(
            {"id": "i-1", "envs": [{"key": "A", "value": "1"}, {"key": "B", "value": "2"}],
             "autoRenew": "true", "autoRenewMonth": "2", "keepDataDay": 7}
        ),
        env_keys=frozenset({"A"}),  # of the environment, only what the monitor reads
    )  # fmt: skip
    assert (inst["envs"], inst["auto_renew"], inst["auto_renew_month"]) == ({"A": "1"}, True, 2)
    assert (inst["name"], inst["status"], inst["gpu_count"], inst["keep_data_day"]) == (
        "",
        "",
        0,
        7,
    )
