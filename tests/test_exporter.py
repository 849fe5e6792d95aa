"""The metrics and health endpoint in process (issue 11 §3): the figures are ``status``' own
(same store, same now: equal to the last digit ``status`` prints), an unknown figure is absent,
a scrape storm reads the database once per cache period, ``/readyz`` says why it is not ready,
and two daemons' registries live side by side in one process."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from monitor.app import intervals
from monitor.clock import ManualClock
from monitor.collect.runner import RunReport
from monitor.exporter import (
    AccountFigures,
    FleetCollector,
    FleetFigures,
    new_registry,
    read_figures,
)
from monitor.health import Readiness, collections_fresh
from monitor.status import fleet_status
from monitor.web import build_app
from tests.helpers import open_app

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def exposition(figures: FleetFigures | None) -> Samples:
    registry, _fleet, _runs = new_registry(lambda: figures)
    return parse(generate_latest(registry).decode())


MAIN = (("account", "main"),)


async def test_the_figures_are_those_of_status_json(
    tmp_path: Path, sim_app: Starlette, clock: ManualClock
) -> None:
    app = open_app(tmp_path, sim_app, clock)
    try:
        for _ in range(3):  # a few cycles: metrics, balance and bills stored
            await app.once()
            clock.advance(minutes=5)
        now = clock.now()
        status = fleet_status(app.store, ["main"], now, intervals(app.config), 3.0)
        rules = [(r.name, r.severity) for r in app.ruleset or []]
        samples = exposition(read_figures(app.facts_at(now), app.store, now, rules))
    finally:
        await app.aclose()
    (acc,) = status["accounts"]
    assert round(samples["novita_monitor_balance_usd"][MAIN], 4) == acc["balance_usd"]
    burn = samples["novita_monitor_burn_rate_usd_per_hour"][MAIN]
    assert round(burn, 4) == acc["burn_rate_usd_per_hour"]
    assert round(samples["novita_monitor_runway_hours"][MAIN], 2) == acc["runway_hours"]
    counts = Counter((i["status"], i["billing_mode"] or "") for i in acc["instances"])
    exported = {
        (dict(k)["status"], dict(k)["billing_mode"]): v
        for k, v in samples["novita_monitor_instances"].items()
    }
    assert exported == {k: float(n) for k, n in counts.items()}
    util = {
        dict(k)["instance"]: v for k, v in samples["novita_monitor_gpu_utilization_percent"].items()
    }
    shown = {i["id"]: i["gpu_util_avg_15m"] for i in acc["instances"]}
    assert util and set(util) == {k for k, v in shown.items() if v is not None}
    assert all(round(v, 2) == shown[k] for k, v in util.items())
    assert samples["novita_monitor_savings_usd_total"][MAIN] == acc["savings"]["realized_usd"]
    # every loaded rule is listed, at 0 when it does not fire
    firing = samples["novita_monitor_alerts_firing"]
    assert {dict(k)["rule"] for k in firing} >= {r for r, _ in rules}
    last = samples["novita_monitor_collector_last_success_timestamp_seconds"]
    instances = last[(("account", "main"), ("collector", "instances"))]
    assert now - timedelta(minutes=6) < datetime.fromtimestamp(instances, now.tzinfo) <= now
    assert samples["novita_monitor_figures_read_timestamp_seconds"][()] == now.timestamp()


def test_an_unknown_figure_is_absent_never_zero() -> None:
    unknown = AccountFigures(account="main")  # balance, burn, runway, savings: unknown
    samples = exposition(FleetFigures(read_at=0.0, accounts=(unknown,)))
    for name in (
        "novita_monitor_balance_usd",
        "novita_monitor_burn_rate_usd_per_hour",
        "novita_monitor_runway_hours",
        "novita_monitor_savings_usd_total",
    ):
        assert name not in samples
    # an account where nothing bills: the runway is unlimited, not unknown
    idle = AccountFigures(account="main", balance_usd=0.0, burn_usd_per_hour=0.0)
    samples = exposition(
        FleetFigures(read_at=0.0, accounts=(AccountFigures("main", runway_hours=math.inf), idle))
    )
    assert samples["novita_monitor_runway_hours"][MAIN] == math.inf
    assert samples["novita_monitor_balance_usd"][MAIN] == 0.0  # a known 0 is 0


def test_no_fleet_figure_before_the_app_is_open_or_when_the_reading_fails() -> None:
    assert not [n for n in exposition(None) if n.startswith("novita_monitor_balance")]

    def broken() -> FleetFigures:
        raise RuntimeError("database is locked")

    registry, _fleet, runs = new_registry(broken)
    runs.observe(_report("failed"))
    samples = parse(generate_latest(registry).decode())  # answers, with the run metrics
    assert "novita_monitor_balance_usd" not in samples
    assert samples["novita_monitor_collector_errors_total"][_LABELS] == 1.0


def test_a_scrape_storm_reads_the_figures_once_per_cache_period() -> None:
    reads: list[int] = []
    now = [100.0]

    def source() -> FleetFigures:
        reads.append(1)
        return FleetFigures(read_at=now[0], accounts=(AccountFigures("main", balance_usd=1.0),))

    collector = FleetCollector(source, ttl_s=2.0, monotonic=lambda: now[0])
    for _ in range(50):
        assert list(collector.collect())
    assert len(reads) == 1
    now[0] += 1.9
    list(collector.collect())
    assert len(reads) == 1
    now[0] += 0.2
    list(collector.collect())
    assert len(reads) == 2


_LABELS = (("account", "main"), ("collector", "instances"))


def _report(outcome: str, duration: float = 0.3) -> RunReport:
    at = datetime(2026, 1, 1).astimezone()
    return RunReport("main", "instances", at, at, outcome, duration_s=duration)


def test_collector_runs_feed_counters_and_a_histogram() -> None:
    registry, _fleet, runs = new_registry(lambda: None)
    runs.observe(_report("ok", 0.3))
    runs.observe(_report("partial", 1.5))
    runs.observe(_report("failed", 12.0))
    samples = parse(generate_latest(registry).decode())
    assert samples["novita_monitor_collector_duration_seconds_count"][_LABELS] == 3
    assert samples["novita_monitor_collector_duration_seconds_sum"][_LABELS] == 13.8
    assert samples["novita_monitor_collector_duration_seconds_bucket"][(*_LABELS, ("le", "0.5"))]
    assert samples["novita_monitor_collector_errors_total"][_LABELS] == 2
    outcomes = samples["novita_monitor_collector_runs_total"]
    assert outcomes[(*_LABELS[:1], ("collector", "instances"), ("outcome", "ok"))] == 1


def test_two_registries_live_side_by_side() -> None:
    one, _, runs_one = new_registry(lambda: None)
    two, _, _runs_two = new_registry(lambda: None)
    runs_one.observe(_report("failed"))
    assert parse(generate_latest(one).decode())["novita_monitor_collector_errors_total"]
    assert "novita_monitor_collector_errors_total" not in parse(generate_latest(two).decode())


class _Facts:
    def __init__(self, stale: dict[str, list[str]]) -> None:
        self.stale = stale

    def stale_store_collectors(self, account: str, now: datetime) -> list[str]:
        return self.stale.get(account, [])


def test_ready_only_when_no_collector_is_stale() -> None:
    now = datetime(2026, 1, 1).astimezone()
    fresh: Any = _Facts({})
    assert collections_fresh(fresh, ["main", "other"], now) == Readiness(True, "collections fresh")
    stale: Any = _Facts({"other": ["balance", "instances"]})
    answer = collections_fresh(stale, ["main", "other"], now)
    assert not answer.ready
    assert answer.reason == "stale collections (other: balance, instances)"
    assert answer.to_json()["stale"] == {"other": ["balance", "instances"]}


async def test_the_endpoints_answer_what_the_readiness_check_says() -> None:
    registry, _, _ = new_registry(lambda: None)
    state = [Readiness(False, "starting")]

    def check() -> Readiness:
        if isinstance(state[0], Exception):
            raise state[0]
        return state[0]

    web = build_app(registry, check)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://m") as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        first = await c.get("/readyz")
        assert (first.status_code, first.json()) == (503, {"ready": False, "reason": "starting"})
        # a follower replica's check (leader election, later) plugs in the same way
        state[0] = Readiness(True, "follower, sees a live leader")
        assert (await c.get("/readyz")).status_code == 200
        state[0] = RuntimeError("sk-secret-in-an-error")  # type: ignore[list-item]
        failed = await c.get("/readyz")
        assert failed.status_code == 503 and "sk-secret" not in failed.text
        metrics = await c.get("/metrics")
        assert metrics.status_code == 200 and "novita_monitor_collector" in metrics.text
        assert (await c.get("/metrics", headers={"Accept-Encoding": "gzip"})).status_code == 200
        assert (await c.get("/elsewhere")).status_code == 404


def test_savings_per_account_and_ended_actions_come_from_the_ledger(tmp_path: Path) -> None:
    from decimal import Decimal

    from monitor.config import Schedules
    from monitor.facts import StoreFacts
    from monitor.store import open_store
    from monitor.store.models import ActionRecord
    from tests.conftest import T0

    def stop(account: str, state: str, key: str, **kw: Any) -> ActionRecord:
        fields: dict[str, Any] = dict(
            account=account,
            rule="idle",
            action="stop",
            instance_id=f"i-{key}",
            instance_name="nb",
            intent_key=key,
            idempotency_key=key,
            state=state,
            reason="idle 45 min",
            planned_at=T0 - timedelta(hours=3),
        )
        return ActionRecord(**{**fields, **kw})

    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        stopped = dict(saving_per_hour_usd=Decimal("0.35"), saving_since=T0 - timedelta(hours=2))
        store.insert_actions(
            [
                stop("main", "succeeded", "a", **stopped),
                stop("other", "failed", "b"),
                stop("other", "announced", "c"),  # no outcome yet: not counted
            ]
        )
        intervals = {k: int(v) for k, v in Schedules().collectors().items()}
        facts = StoreFacts(store, ["main", "other"], intervals, 3.0, now=T0)
        samples = exposition(read_figures(facts, store, T0))
        status = fleet_status(store, ["main", "other"], T0, intervals, 3.0)
    finally:
        store.close()
    saved = samples["novita_monitor_savings_usd_total"]
    assert saved[MAIN] == 0.7 == status["accounts"][0]["savings"]["realized_usd"]
    assert saved[(("account", "other"),)] == 0.0
    assert samples["novita_monitor_actions_total"] == {
        (("kind", "stop"), ("outcome", "failed")): 1.0,
        (("kind", "stop"), ("outcome", "succeeded")): 1.0,
    }
    assert "novita_monitor_balance_usd" not in samples  # never collected: unknown, absent


async def test_the_figures_are_read_off_the_event_loop() -> None:
    import threading

    readers: list[str] = []

    def source() -> FleetFigures:
        readers.append(threading.current_thread().name)
        return FleetFigures(read_at=1.0, accounts=(AccountFigures("main", balance_usd=2.5),))

    exporter = new_registry(source)
    web = build_app(exporter.registry, lambda: Readiness(True, "ok"), exporter.fleet.refresh)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://m") as c:
        body = (await c.get("/metrics")).text
    assert 'novita_monitor_balance_usd{account="main"} 2.5' in body
    assert readers and readers[0] != threading.current_thread().name  # a worker thread's
    assert len(readers) == 1  # the exposition found it cached
