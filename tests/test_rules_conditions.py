"""Built-in conditions and comparisons: semantics, coverage and gaps, missing data, values."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from monitor.rules.context import CachedFacts, EvalContext, Resource, Result
from monitor.rules.facts import (
    BalanceFact,
    Facts,
    InMemoryFacts,
    InstanceFact,
    Samples,
    TaskFact,
    aggregate,
)
from monitor.rules.lifecycle import AlertState
from monitor.rules.registry import conditions
from monitor.rules.tree import AllNode, AnyNode, CompareNode, NotNode, _prepare_value

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def series(*segments: tuple[float | None, int], end: datetime = NOW) -> Samples:
    """(value, minutes) segments in order, ending at ``end``; None = a gap."""
    total = sum(n for _, n in segments)
    t = end - total * M
    out: Samples = []
    for value, n in segments:
        for _ in range(n):
            t += M
            if value is not None:
                out.append((t, value))
    return out


def inst(**kw: Any) -> InstanceFact:
    base: dict[str, Any] = {
        "id": "i-1",
        "name": "nb",
        "status": "running",
        "billing_mode": "onDemand",
        "gpu_count": 1,
        "last_started_at": NOW - timedelta(hours=3),
    }
    base.update(kw)
    return InstanceFact(**base)


def res(obj: InstanceFact | TaskFact | None = None, kind: str = "instance") -> Resource:
    if obj is None:
        return Resource(kind, "default", "default", "default", {})
    return Resource(kind, obj.id, "default", obj.name, obj.field_map(), obj)


def run(
    name: str,
    params: dict[str, Any],
    facts: Facts,
    resource: Resource,
    prior: AlertState | None = None,
    now: datetime = NOW,
) -> Result:
    spec = conditions.get(name)
    assert spec is not None
    ctx = EvalContext(CachedFacts(facts), "default", now, "warning", prior)
    return spec.fn(spec.params.model_validate(params), ctx, resource)


def facts_for(i: InstanceFact, **kw: Any) -> InMemoryFacts:
    return InMemoryFacts(instance_list={"default": [i]}, **kw)


def firing(rule: str = "r", severity: str = "warning") -> AlertState:
    return AlertState(
        "fp", "default", rule, "account", "default", state="firing", severity=severity,
        active_since=NOW - timedelta(hours=1),
    )  # fmt: skip


# -- aggregates --------------------------------------------------------------------------------


def test_window_aggregate_counts_covered_minutes() -> None:
    samples = series((1, 20), (None, 5), (3, 5))
    agg = aggregate(samples, NOW - 30 * M, NOW)
    assert agg is not None
    assert (agg.count, agg.covered_s, agg.max, agg.min) == (25, 1500, 3, 1)
    assert aggregate(samples, NOW - 100 * M, NOW - 90 * M) is None


# -- idle_gpu ---------------------------------------------------------------------------------


def test_idle_gpu_fires_on_a_covered_idle_window_with_money_values() -> None:
    i = inst(hourly_cost_usd=Decimal("0.80"))
    r = run("idle_gpu", {}, facts_for(i, metrics={("i-1", "gpu_util"): series((1, 60))}), res(i))
    assert r.match is True
    assert r.values["value"] == 1 and r.values["threshold"] == 5
    assert r.values["cost_per_hour_usd"] == 0.8
    # idle for the whole hour of samples, not just the 30 min window: counted from the first
    # idle sample, at $0.80/h
    assert r.values["idle_minutes"] == 60
    assert r.values["cost_so_far_usd"] == pytest.approx(0.8)


@pytest.mark.parametrize(("covered", "expected"), [(30, True), (27, True), (26, None), (10, None)])
def test_idle_gpu_needs_90_percent_coverage_up_to_the_metric_lag(
    covered: int, expected: bool | None
) -> None:
    # 30 min window, 60 s lag: 90 % of 29 minutes = 26.1 minutes of samples are needed
    i = inst()
    samples = series((None, 30 - covered), (0, covered))
    r = run("idle_gpu", {}, facts_for(i, metrics={("i-1", "gpu_util"): samples}), res(i))
    assert r.match is expected


def test_idle_gpu_one_busy_sample_means_not_idle_even_with_gaps() -> None:
    i = inst()
    samples = series((0, 10), (None, 10), (50, 1), (0, 9))
    r = run("idle_gpu", {}, facts_for(i, metrics={("i-1", "gpu_util"): samples}), res(i))
    assert r.match is False


def test_idle_gpu_no_samples_is_missing_not_idle() -> None:
    i = inst()
    assert run("idle_gpu", {}, facts_for(i), res(i)).match is None


def test_idle_gpu_min_uptime_from_last_start_created_or_history() -> None:
    idle = {("i-1", "gpu_util"): series((0, 60))}
    young = inst(last_started_at=NOW - timedelta(minutes=10))
    assert (
        run("idle_gpu", {"min_uptime": "15m"}, facts_for(young, metrics=idle), res(young)).match
        is False
    )
    created = inst(last_started_at=None, created_at=NOW - timedelta(hours=2))
    assert run(
        "idle_gpu", {"min_uptime": "15m"}, facts_for(created, metrics=idle), res(created)
    ).match
    unknown = inst(last_started_at=None)
    recent = facts_for(unknown, metrics=idle, history_starts={"default": NOW - 10 * M})
    assert run("idle_gpu", {"min_uptime": "15m"}, recent, res(unknown)).match is False
    older = facts_for(unknown, metrics=idle, history_starts={"default": NOW - 60 * M})
    assert run("idle_gpu", {"min_uptime": "15m"}, older, res(unknown)).match is True


def test_idle_gpu_only_running_gpu_instances() -> None:
    idle = {("i-1", "gpu_util"): series((0, 60))}
    for i in (inst(status="exited"), inst(gpu_count=0), inst(status="starting")):
        assert run("idle_gpu", {}, facts_for(i, metrics=idle), res(i)).match is False


def test_idle_gpu_per_gpu_all_or_any() -> None:
    i = inst(gpu_count=2)
    gpus = {
        ("i-1", "0", "gpu_util"): series((0, 60)),
        ("i-1", "1", "gpu_util"): series((70, 60)),
    }
    avg = {("i-1", "gpu_util"): series((35, 60))}
    f = facts_for(i, metrics=avg, gpu_metrics=gpus)
    assert run("idle_gpu", {"mode": "all"}, f, res(i)).match is False
    r = run("idle_gpu", {"mode": "any"}, f, res(i))
    assert r.match is True and r.values["idle_gpus"] == 1


def test_idle_gpu_one_gpu_is_judged_by_its_finer_series_unless_that_has_gaps() -> None:
    """A one-GPU instance's across-GPU series is its GPU's, stored in tenths of a percent (the
    per-GPU figures are whole percents): 4.7 % is under 5 % even where its per-GPU figure
    reads 5 %. Where the across-GPU series does not cover the window, the per-GPU one
    decides."""
    i = inst()
    per_gpu = {("i-1", "0", "gpu_util"): series((5.0, 60))}
    finer = facts_for(i, metrics={("i-1", "gpu_util"): series((4.7, 60))}, gpu_metrics=per_gpu)
    r = run("idle_gpu", {"threshold": 5}, finer, res(i))
    assert r.match is True and r.values["value"] == 4.7 and r.values["idle_gpus"] == 1
    idle_gpu = {("i-1", "0", "gpu_util"): series((1.0, 60))}
    gappy = facts_for(
        i, metrics={("i-1", "gpu_util"): series((1.0, 10), (None, 50))}, gpu_metrics=idle_gpu
    )
    assert run("idle_gpu", {"threshold": 5}, gappy, res(i)).match is True
    busy_gpu = {("i-1", "0", "gpu_util"): series((1.0, 50), (60.0, 10))}
    gappy = facts_for(
        i, metrics={("i-1", "gpu_util"): series((1.0, 10), (None, 50))}, gpu_metrics=busy_gpu
    )
    assert run("idle_gpu", {"threshold": 5}, gappy, res(i)).match is False


def test_per_gpu_windows_are_read_for_the_instances_that_need_them_only() -> None:
    """Per-GPU rows are many: idle_gpu reads them for multi-GPU instances (and one-GPU ones
    whose across-GPU series has gaps), underused_gpus for multi-GPU ones only."""
    one, eight = inst(id="i-1"), inst(id="i-8", gpu_count=8)
    asked: list[tuple[str, tuple[str, ...] | None]] = []

    class Spy(InMemoryFacts):
        def per_gpu_window(self, account: str, series: str, *args: Any) -> Any:
            asked.append((series, None if args[2] is None else tuple(sorted(args[2]))))
            return super().per_gpu_window(account, series, *args)

    quiet = {(i, "gpu_util"): series((1.0, 60)) for i in ("i-1", "i-8")}
    facts = Spy(instance_list={"default": [one, eight]}, metrics=quiet)
    for condition in ("idle_gpu", "underused_gpus"):
        for i in (one, eight):
            run(condition, {"window": "30m"}, facts, res(i))
    assert asked and all(ids == ("i-8",) for _, ids in asked)


def test_idle_gpu_memory_in_use_vetoes_and_absent_memory_does_not_block() -> None:
    i = inst()
    util = series((0, 60))
    busy_mem = facts_for(
        i, metrics={("i-1", "gpu_util"): util, ("i-1", "gpu_mem"): series((40, 60))}
    )
    assert run("idle_gpu", {"gpu_memory_threshold": 10}, busy_mem, res(i)).match is False
    no_mem = facts_for(i, metrics={("i-1", "gpu_util"): util})
    assert run("idle_gpu", {"gpu_memory_threshold": 10}, no_mem, res(i)).match is True


def test_idle_gpu_cpu_threshold_keeps_data_loading_and_uploads_busy() -> None:
    """Idle = GPU *and* CPU idle: a trainer loading data (GPU ~0, CPU busy) is not idle; CPU
    samples missing or too few make the verdict unknown, never idle."""
    i = inst()
    gpu = series((1, 60))
    params = {"cpu_threshold": 10}

    def cpu(samples: Samples | None) -> InMemoryFacts:
        metrics = {("i-1", "gpu_util"): gpu}
        if samples is not None:
            metrics[("i-1", "cpu")] = samples
        return facts_for(i, metrics=metrics)

    assert run("idle_gpu", params, cpu(series((2, 60))), res(i)).match is True
    loading = run("idle_gpu", params, cpu(series((2, 40), (80, 20))), res(i))
    assert loading.match is False and loading.values["cpu_max"] == 80
    # one upload minute at 25 % per core is enough to keep it
    assert run("idle_gpu", params, cpu(series((2, 50), (25, 1), (2, 9))), res(i)).match is False
    assert run("idle_gpu", params, cpu(None), res(i)).match is None
    assert run("idle_gpu", params, cpu(series((None, 20), (2, 10))), res(i)).match is None
    # without the parameter the CPU is not read (the GPU alone decides)
    assert run("idle_gpu", {}, cpu(series((80, 60))), res(i)).match is True
    # a busy GPU stays busy whatever the CPU says
    busy = facts_for(i, metrics={("i-1", "gpu_util"): series((90, 60)), ("i-1", "cpu"): []})
    assert run("idle_gpu", params, busy, res(i)).match is False


# -- underused_gpus ---------------------------------------------------------------------------


def test_underused_gpus_reports_idle_count_and_cost() -> None:
    i = inst(gpu_count=4, hourly_cost_usd=Decimal("8"))
    gpus = {("i-1", str(g), "gpu_util"): series((0 if g < 2 else 90, 60)) for g in range(4)}
    r = run("underused_gpus", {"window": "30m"}, facts_for(i, gpu_metrics=gpus), res(i))
    assert r.match is True
    assert r.values["idle_gpus"] == 2 and r.values["cost_per_hour_usd"] == 4.0
    all_idle = {k: series((0, 60)) for k in gpus}
    assert (
        run("underused_gpus", {"window": "30m"}, facts_for(i, gpu_metrics=all_idle), res(i)).match
        is False
    )
    assert run(
        "underused_gpus",
        {"window": "30m", "include_all_idle": True},
        facts_for(i, gpu_metrics=all_idle),
        res(i),
    ).match
    assert run("underused_gpus", {}, facts_for(i), res(i)).match is None  # no per-GPU data


# -- low_balance ------------------------------------------------------------------------------


def bal(usd: str, burn: str | None = "1") -> InMemoryFacts:
    return InMemoryFacts(
        balances={"default": BalanceFact(Decimal(usd), NOW)},
        burn_rates={"default": Decimal(burn)} if burn is not None else {},
    )


def test_low_balance_dollars_and_runway() -> None:
    r = run("low_balance", {"usd": 20}, bal("19.5"), res(kind="account"))
    assert r.match is True and r.values["unit"] == "$" and r.values["threshold"] == 20
    r = run("low_balance", {"runway_hours": 72}, bal("50", "2"), res(kind="account"))
    assert r.match is True and r.values["runway_hours"] == 25 and r.values["unit"] == "h"
    assert (
        run("low_balance", {"runway_hours": 72}, bal("500", "2"), res(kind="account")).match
        is False
    )
    assert (
        run("low_balance", {"runway_hours": 72}, bal("500", "0"), res(kind="account")).match
        is False
    )
    assert (
        run("low_balance", {"runway_hours": 72}, bal("5", None), res(kind="account")).match is None
    )
    assert run("low_balance", {"usd": 5}, InMemoryFacts(), res(kind="account")).match is None


def test_low_balance_levels_pick_the_worst_and_clear_above_the_band() -> None:
    params = {
        "levels": [
            {"runway_hours": 72, "severity": "warning"},
            {"runway_hours": 24, "severity": "critical"},
        ]
    }
    assert run("low_balance", params, bal("20"), res(kind="account")).severity == "critical"
    assert run("low_balance", params, bal("50"), res(kind="account")).severity == "warning"
    # at 75 h a fresh alert does not fire, a firing one holds (clears above 79.2 h)
    assert run("low_balance", params, bal("75"), res(kind="account")).match is False
    assert run("low_balance", params, bal("75"), res(kind="account"), firing()).match is True
    assert run("low_balance", params, bal("80"), res(kind="account"), firing()).match is False
    # a critical alert at 25 h stays critical (clears above 26.4 h), then drops to warning
    held = run("low_balance", params, bal("25"), res(kind="account"), firing(severity="critical"))
    assert held.severity == "critical"
    lower = run("low_balance", params, bal("30"), res(kind="account"), firing(severity="critical"))
    assert lower.severity == "warning"


# -- expiring_subscription --------------------------------------------------------------------


def test_expiring_subscription_used_or_idle() -> None:
    sub = inst(billing_mode="monthly", end_time=NOW + timedelta(days=3))
    used = facts_for(sub, metrics={("i-1", "gpu_util"): series((60, 7 * 1440))})
    r = run("expiring_subscription", {"min_util": 20}, used, res(sub))
    assert r.match is True and r.values["days_left"] == 3 and r.values["util_avg"] == 60
    assert run("expiring_subscription", {"max_util": 20}, used, res(sub)).match is False
    half = facts_for(sub, metrics={("i-1", "gpu_util"): series((60, int(3.5 * 1440)))},
                     history_starts={"default": NOW - timedelta(days=30)})  # fmt: skip
    assert run("expiring_subscription", {}, half, res(sub)).match is True
    r = run("expiring_subscription", {"max_util": 40}, half, res(sub))
    assert r.match is True and r.values["util_avg"] == 30  # unsampled time counts as unused


def test_expiring_subscription_window_and_billing_mode() -> None:
    far = inst(billing_mode="monthly", end_time=NOW + timedelta(days=10))
    assert run("expiring_subscription", {}, facts_for(far), res(far)).match is False
    assert run("expiring_subscription", {"within": "14d"}, facts_for(far), res(far)).match is True
    gone = inst(billing_mode="monthly", end_time=NOW - timedelta(hours=1))
    assert run("expiring_subscription", {}, facts_for(gone), res(gone)).match is False
    payg = inst(end_time=None)
    assert run("expiring_subscription", {}, facts_for(payg), res(payg)).match is False
    blind = inst(billing_mode="monthly", end_time=NOW + timedelta(days=1))
    assert (
        run("expiring_subscription", {"min_util": 10}, facts_for(blind), res(blind)).match is None
    )


# -- failed_task ------------------------------------------------------------------------------


def test_failed_task_statuses_and_age() -> None:
    def task(status: str, kind: str = "training", ago: float = 1) -> Result:
        t = TaskFact("t", kind, status, finished_at=NOW - timedelta(hours=ago))
        return run("failed_task", {}, InMemoryFacts(), res(t, "task"))

    assert task("FAILED").match and task("CANCELED").match
    assert task("TASK_STATUS_FAILED", "async").match
    assert not task("SUCCESS").match and not task("TASK_STATUS_SUCCEED", "async").match
    assert not task("FAILED", "async").match  # async tasks use their own statuses
    assert not task("FAILED", ago=30).match  # older than `within` (24 h)


def test_failed_task_error_state_and_stuck_instances() -> None:
    broken = inst(error_state="OOM")
    r = run("failed_task", {}, facts_for(broken), res(broken))
    assert r.match is True and r.values["error"] == "OOM"
    stuck = inst(
        status="pulling", status_since=NOW - timedelta(minutes=45), hourly_cost_usd=Decimal(2)
    )
    r = run("failed_task", {}, facts_for(stuck), res(stuck))
    assert r.match is True and r.values["stuck_minutes"] == 45 and r.values["stuck_cost_usd"] == 1.5
    assert run("failed_task", {"stuck_after": "1h"}, facts_for(stuck), res(stuck)).match is False
    unknown = inst(status="starting", status_since=None)
    assert run("failed_task", {}, facts_for(unknown), res(unknown)).match is None
    assert run("failed_task", {}, facts_for(inst()), res(inst())).match is False


# -- spend ------------------------------------------------------------------------------------


def spending(*segments: tuple[float | None, int]) -> InMemoryFacts:
    return InMemoryFacts(spend_rate={"default": series(*segments)})


def test_spend_threshold_and_baseline() -> None:
    day = 1440
    r = run("spend", {"above_usd": 100}, spending((5, day)), res(kind="account"))
    assert r.match is True and r.values["spend_usd"] == pytest.approx(120)
    surge = spending((2, 7 * day), (6, day))
    r = run("spend", {"baseline": "7d", "ratio": 1.5}, surge, res(kind="account"))
    assert (
        r.match is True and r.values["baseline_usd"] == pytest.approx(48) and r.values["ratio"] == 3
    )
    steady = spending((2, 8 * day))
    assert run("spend", {"baseline": "7d"}, steady, res(kind="account")).match is False


def test_spend_with_too_little_history_is_missing_not_zero() -> None:
    short = spending((6, 3 * 1440))
    assert run("spend", {"baseline": "7d"}, short, res(kind="account")).match is None
    assert run("spend", {"above_usd": 10}, InMemoryFacts(), res(kind="account")).match is None
    # the threshold alone still decides when only the baseline is missing
    assert (
        run("spend", {"above_usd": 10, "baseline": "7d"}, short, res(kind="account")).match is True
    )


# -- subscription_candidate -------------------------------------------------------------------


def test_subscription_candidate_break_even_margin_and_saving() -> None:
    always = inst(hourly_cost_usd=Decimal("1"), monthly_price_usd=Decimal("500"))
    f = facts_for(always, running={"i-1": series((1, 30 * 1440))})
    r = run("subscription_candidate", {}, f, res(always))
    assert r.match is True
    assert r.values["break_even_hours"] == 500 and r.values["monthly_saving_usd"] == 230
    # 730 h/month is 46 % above the 500 h break-even: enough for a 25 % margin, not for 50 %
    assert run("subscription_candidate", {"margin": 0.25}, f, res(always)).match is True
    assert run("subscription_candidate", {"margin": 0.5}, f, res(always)).match is False
    pricey = inst(hourly_cost_usd=Decimal("1"), monthly_price_usd=Decimal("680"))
    assert (
        run(
            "subscription_candidate",
            {},
            facts_for(pricey, running={"i-1": series((1, 30 * 1440))}),
            res(pricey),
        ).match
        is False
    )


def test_subscription_candidate_needs_history_prices_and_on_demand() -> None:
    always = inst(hourly_cost_usd=Decimal("1"), monthly_price_usd=Decimal("500"))
    short = facts_for(always, running={"i-1": series((1, 5 * 1440))})
    assert run("subscription_candidate", {}, short, res(always)).match is None
    noprice = inst()
    assert run("subscription_candidate", {}, facts_for(noprice), res(noprice)).match is None
    sub = inst(
        billing_mode="monthly", hourly_cost_usd=Decimal("1"), monthly_price_usd=Decimal("500")
    )
    assert run("subscription_candidate", {}, facts_for(sub), res(sub)).match is False


# -- collector_stale --------------------------------------------------------------------------


def test_collector_stale() -> None:
    f = InMemoryFacts(stale={"default": ["metrics", "bills"]})
    r = run("collector_stale", {}, f, res(kind="monitor"))
    assert r.match is True and r.values["collectors"] == "bills, metrics"
    assert (
        run("collector_stale", {"collectors": ["balance"]}, f, res(kind="monitor")).match is False
    )
    assert run("collector_stale", {}, InMemoryFacts(), res(kind="monitor")).match is False


# -- comparisons and logic --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("billing_mode", "eq", "onDemand", True),
        ("billing_mode", "ne", "onDemand", False),
        ("gpu_count", "lt", 2, True),
        ("gpu_count", "le", 1, True),
        ("gpu_count", "gt", 1, False),
        ("gpu_count", "ge", 1, True),
        ("hourly_cost_usd", "gt", 1.5, True),
        ("billing_mode", "in", ["onDemand", "spot"], True),
        ("billing_mode", "not_in", ["onDemand", "spot"], False),
        ("name", "regex", "^note", True),
        ("name", "glob", "note*", True),
        ("name", "glob", "train*", False),
        ("labels.team", "eq", "ml", True),
        ("labels.missing", "eq", "ml", False),
        ("end_time", "days_until", 7, True),
        ("end_time", "days_until", "2d", False),
        ("created_at", "age", "30d", True),
        ("created_at", "age", 60, False),
        ("cpu_num", "gt", 3, False),  # None never compares
    ],
)
def test_comparison_ops(field: str, op: str, value: Any, expected: bool) -> None:
    i = inst(
        name="notebook",
        hourly_cost_usd=Decimal("2"),
        labels={"team": "ml"},
        end_time=NOW + timedelta(days=3),
        created_at=NOW - timedelta(days=40),
    )
    node = CompareNode(field, op, _prepare_value(op, value))
    ctx = EvalContext(CachedFacts(InMemoryFacts()), "default", NOW)
    assert node.evaluate(ctx, res(i)).match is expected


def test_regex_value_is_compiled_once() -> None:
    assert isinstance(_prepare_value("regex", "a+"), re.Pattern)


class Fixed:
    needs: frozenset[str] = frozenset()

    def __init__(self, match: bool | None, **values: Any) -> None:
        self.result = Result(match, values)
        self.calls = 0

    def evaluate(self, ctx: EvalContext, resource: Resource) -> Result:
        self.calls += 1
        return self.result


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (AllNode((Fixed(True), Fixed(None))), None),
        (AllNode((Fixed(None), Fixed(False))), False),
        (AllNode((Fixed(True), Fixed(True))), True),
        (AnyNode((Fixed(None), Fixed(True))), True),
        (AnyNode((Fixed(None), Fixed(False))), None),
        (AnyNode((Fixed(False), Fixed(False))), False),
        (NotNode(Fixed(None)), None),
        (NotNode(Fixed(False)), True),
    ],
)
def test_three_valued_logic(node: Any, expected: bool | None) -> None:
    ctx = EvalContext(CachedFacts(InMemoryFacts()), "default", NOW)
    assert node.evaluate(ctx, res(kind="account")).match is expected


def test_all_stops_at_the_first_false_and_merges_values() -> None:
    later = Fixed(True, b=2)
    ctx = EvalContext(CachedFacts(InMemoryFacts()), "default", NOW)
    assert AllNode((Fixed(False), later)).evaluate(ctx, res(kind="account")).match is False
    assert later.calls == 0
    both = AllNode((Fixed(True, a=1), later)).evaluate(ctx, res(kind="account"))
    assert both.values == {"a": 1, "b": 2}
