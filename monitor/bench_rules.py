"""``novita-monitor bench rules``: time one evaluation of the shipped rules against a big store.

Method (issue "Rules" §7): build a fresh SQLite database holding what the daemon would have after
``days`` days of watching ``instances`` instances -- the instances (a mix: mostly busy, some idle,
multi-GPU machines with idle GPUs, monthly subscriptions about to expire, a few stuck starting or
in error), product prices, a balance, hourly and daily GPU bills, fresh collector runs, one row per
instance and minute of metrics (bulk loaded, not through the collectors) and the hourly rollups of
the completed hours. That is ``setup_s``. Then time one :meth:`Evaluator.judge` (facts read from
the store, the rule engine, alert states and notifications written in one transaction):
``eval_s``, the heap settled first (``monitor.app.settle_heap``, as the daemon settles it after
its first cycle). With ``runs`` > 1 the evaluation is repeated on the same database with the
alert states cleared before each run (so every run does the same work) and the median is
reported. The last line printed is one JSON object.

The fleet is generated from ``seed``; the kind of each instance follows a fixed cycle (:data:`MIX`)
so that even a tiny fleet has idle and busy machines.

``with_stop_rule`` (``--with-stop-rule``): the cost of automatic idle shutdown. Each run times
two evaluations on the same database, interleaved (so both see the same machine load): the
shipped rules alone, then the shipped rules plus the README's canonical stop rule
(:data:`STOP_RULE`) with the action planner wired as the daemon wires it (its ledger rows written
in the evaluation's transaction; the ledger is cleared before each run, as the alert states are).
The report adds ``eval_with_stop_s`` (median), ``eval_with_stop_runs_s``, ``stop_rule_ratio``
(median with / median without; issue 9 asks for at most 1.10) and ``stops_planned`` (the
stops announced by the last run).

Those are first evaluations: every alert is new, so each is written, logged and notified, and
the stop rule's 150 idle instances are planned and their ledger rows written, once. The daemon
evaluates every minute, and from the second evaluation on that work is done: each run then also
times, interleaved again, the evaluation one minute after a first one (untimed) without and with
the stop rule: ``eval_steady_s``, ``eval_with_stop_steady_s`` (medians), their runs, and
``stop_rule_ratio_steady``, the stop rule's cost at every evaluation after the first.
``stop_rule_ratio_cpu`` and ``stop_rule_ratio_steady_cpu`` are the same ratios in the CPU
seconds the process spent (medians): on a shared machine whose host takes time from it, the
wall clock counts that time too.

What the rule's alerts cost apart from its actions: each run also times, interleaved with the
others, the same rule stripped of its ``actions`` (:func:`alerts_only`: the same condition,
alerts, log lines and notices, nothing planned), first and a minute later:
``eval_with_stop_alerts_s`` and ``eval_with_stop_alerts_steady_s`` (medians), their runs,
``stop_rule_alerts_ratio`` and ``stop_rule_alerts_ratio_steady`` (and their CPU twins). The gap
between those ratios and ``stop_rule_ratio`` and ``stop_rule_ratio_steady`` is what planning,
announcing and recording the stops cost.

The variants' order is rotated from run to run (the first run: without, alerts only, with; the
second: alerts only, with, without; ...), the first evaluations' and the steady ones' alike:
whichever is timed last of three consecutive evaluations runs 2 to 4 points slower (measured:
steady, CPU, medians of 10, in that order alerts only 1.057 and with 1.103; with the two swapped
1.086 and 1.085), so a fixed order would charge that to one variant. Use a multiple of 3 runs.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from sqlalchemy import delete, event

from monitor.actions import STOP_IDLE_GPUS
from monitor.actions.plan import plan_actions
from monitor.app import schedule_intervals, settle_heap
from monitor.collect import convert
from monitor.config import CONSOLE_CHANNEL, ActionSettings, Schedules, shipped_rules_dir
from monitor.evaluate import Evaluator, to_silence
from monitor.logs import configure_logging
from monitor.notify import Router
from monitor.novita.models import Balance, Instance, Product, TrainingTask, UsageBill
from monitor.rules import load_rules
from monitor.store import Store, open_store
from monitor.store import tables as t

ACCOUNT = "main"
#: the evaluation instant: a fixed minute, so runs are comparable
NOW = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
#: the kinds of instances, cycled by index (20 = one of each per 20 instances)
MIX = (
    "busy", "busy8", "busy", "idle", "busy", "underused", "busy", "expiring_busy", "busy8",
    "spot", "busy", "idle", "busy", "expiring_idle", "busy", "monthly", "busy8", "pulling",
    "busy", "error",
)  # fmt: skip
GPUS = {"busy8": 8, "underused": 4}
#: profile length in minutes (prime, so hourly aggregates differ from hour to hour)
PROFILE_MINUTES = 97
#: the README's canonical automatic-idle-shutdown rule (``--with-stop-rule``)
STOP_RULE = STOP_IDLE_GPUS
PRODUCTS = {  # id -> (per-GPU $/h, spot $/h, 1-month $ per GPU)
    "p-h100": (2.56, 1.28, 1280.0),
    "p-a100": (1.60, 0.80, 800.0),
    "p-4090": (0.35, 0.18, 170.0),
}


def alerts_only(rules_text: str) -> str:
    """A rule file's text with every rule's ``actions`` removed: the same rules, alerting only."""
    doc = yaml.safe_load(rules_text)
    for rule in doc["rules"]:
        rule.pop("actions", None)
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True)
class Planned:
    """One generated instance: its API record and how its metrics look."""

    instance: Instance
    kind: str
    gpus: int
    has_metrics: bool
    bills: bool  # billed by the hour (pay-as-you-go, running)
    hours_per_day: int


def plan_fleet(n: int, days: int, rng: random.Random) -> list[Planned]:
    """``n`` instances following :data:`MIX`, created ``days`` (+ up to 3) days before now."""
    out = []
    for i in range(n):
        kind = MIX[i % len(MIX)]
        gpus = GPUS.get(kind, 1)
        product = rng.choice(sorted(PRODUCTS))
        created = NOW - timedelta(days=days, hours=rng.randint(1, 72))
        raw: dict[str, Any] = {
            "id": f"bench-{i:05d}-{rng.getrandbits(32):08x}",
            "name": f"{kind}-{i}",
            "clusterId": "c-1",
            "status": "running",
            "cpuNum": 16 * gpus,
            "memory": 64 * gpus,
            "gpuNum": gpus,
            "productId": product,
            "productName": product.removeprefix("p-").upper(),
            "billingMode": "onDemand",
            "createdAt": str(int(created.timestamp())),
            "lastStartedAt": str(int(created.timestamp())),
            "envs": [{"key": "team", "value": rng.choice(["ml", "research", "infra"])}],
        }
        if kind == "spot":
            raw["billingMode"] = "spot"
        if kind.startswith("expiring") or kind == "monthly":
            raw["billingMode"] = "monthly"
            left = timedelta(days=rng.randint(1, 6)) if kind != "monthly" else timedelta(days=20)
            raw["endTime"] = str(int((NOW + left).timestamp()))
        if kind == "pulling":
            raw["status"] = "pulling"
        if kind == "error":
            raw["statusError"] = {"state": "error", "message": "GPU fell off the bus"}
        has_metrics = kind not in ("pulling", "error")
        bills = raw["billingMode"] in ("onDemand", "spot")
        hours = 24 if i % 3 == 0 or kind == "idle" else 10
        out.append(Planned(Instance.model_validate(raw), kind, gpus, has_metrics, bills, hours))
    return out


def _clamp(value: float, high: float = 100.0) -> float:
    return 0.0 if value < 0 else high if value > high else value


def profile(kind: str, gpus: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """:data:`PROFILE_MINUTES` stored-form rows (without key and ts) for an instance of ``kind``:
    tenths of a percent for the scalar series, one byte per GPU for the vectors."""
    rows = []
    for minute in range(PROFILE_MINUTES):
        if kind in ("idle", "expiring_idle"):
            per_gpu = [rng.uniform(0, 3) for _ in range(gpus)]
            mems = [rng.uniform(1, 6) for _ in range(gpus)]
        elif kind == "underused":  # half the GPUs work, the others sit at zero
            half = gpus // 2
            per_gpu = [rng.uniform(75, 98) if g < half else rng.uniform(0, 2) for g in range(gpus)]
            mems = [rng.uniform(60, 80) if g < half else rng.uniform(1, 3) for g in range(gpus)]
        else:  # busy trainers, with a data-loading dip now and then
            dip = minute % 23 == 0
            per_gpu = [_clamp(rng.gauss(12 if dip else 88, 6)) for _ in range(gpus)]
            mems = [_clamp(rng.gauss(70, 5)) for _ in range(gpus)]
        util_b = bytes(int(v + 0.5) for v in per_gpu)
        mem_b = bytes(int(v + 0.5) for v in mems)
        rows.append(
            (
                round(sum(per_gpu) / gpus * 10),
                round(sum(mems) / gpus * 10),
                round(_clamp(rng.gauss(35, 10)) * 10),
                round(_clamp(rng.gauss(55, 3)) * 10),
                round(_clamp(rng.gauss(20, 0.5)) * 10),
                util_b,
                mem_b,
            )
        )
    return rows


def metric_rows(
    fleet: list[tuple[int, Planned]], days: int, rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    """Stored-form minute rows, instance by instance, over ``[NOW - days, NOW)``."""
    end = int(NOW.timestamp())
    start = end - days * 86400
    for key, plan in fleet:
        if not plan.has_metrics:
            continue
        prof = profile(plan.kind, plan.gpus, rng)
        offset = rng.randrange(PROFILE_MINUTES)
        for j, ts in enumerate(range(start, end, 60)):
            yield (key, ts, *prof[(j + offset) % PROFILE_MINUTES])


def _bill(plan: Planned, start: datetime, hours: float, cycle_s: int) -> UsageBill:
    listed = PRODUCTS[plan.instance.product_id or "p-h100"]
    per_gpu = listed[1] if plan.instance.billing_mode == "spot" else listed[0]
    usd = per_gpu * plan.gpus * hours
    units = str(round(usd * 10_000))
    ts = int(start.timestamp())
    return UsageBill.model_validate(
        {
            "startTime": str(ts),
            "endTime": str(ts + cycle_s),
            "category": "gpu",
            "ownerID": plan.instance.id,
            "productId": plan.instance.product_id,
            "productName": plan.instance.product_name,
            # card-seconds, the likelier reading of billNum0 (wire-format §7.1); the unit
            # price per card-hour, from which the economics derives the card-hours
            "billNum0": str(round(plan.gpus * hours * 3600)),
            "discountPrice0": str(round(per_gpu * 10_000)),
            "amount": units,
            "payAmount": units,
        }
    )


def build(store: Store, n: int, days: int, seed: int, echo: Callable[[str], None]) -> dict:
    """Fill ``store`` (fresh) with the fleet's history; returns counts for the report."""
    rng = random.Random(seed)
    fleet = plan_fleet(n, days, rng)
    start = NOW - timedelta(days=days)
    instances = [p.instance for p in fleet]
    listing = convert.instance_rows(instances)
    store.upsert_instances(ACCOUNT, listing, start)  # first seen at the start of history
    store.upsert_instances(ACCOUNT, listing, NOW - timedelta(seconds=30))
    keys: dict[str, int] = {}
    for inst in instances:
        key = store.instance_key(ACCOUNT, inst.id)
        assert key is not None  # just stored
        keys[inst.id] = key
    keyed = sorted(((keys[p.instance.id], p) for p in fleet), key=lambda kp: kp[0])  # b-tree order
    products = [
        Product.model_validate(
            {
                "id": pid,
                "name": pid.removeprefix("p-").upper(),
                "price": str(round(hourly * 100_000)),
                "spotPrice": str(round(spot * 100_000)),
                "monthlyPrice": [{"month": 1, "price": str(round(monthly * 100_000))}],
                "availableDeploy": True,
            }
        )
        for pid, (hourly, spot, monthly) in PRODUCTS.items()
    ]
    store.upsert_products(ACCOUNT, convert.product_rows(products), "c-1", NOW - timedelta(hours=1))
    burn = sum(PRODUCTS[p.instance.product_id or "p-h100"][0] * p.gpus for p in fleet if p.bills)
    balance = Balance(available_usd=round(burn * 36))
    store.add_balance(ACCOUNT, convert.balance_sample(balance, NOW - timedelta(minutes=2)))
    hourly: list[UsageBill] = []
    daily: list[UsageBill] = []
    counts = Counter[str]()

    def flush(force: bool = False) -> None:  # in chunks: bounded memory at 5000 instances
        for cycle, bills in (("Hour", hourly), ("Day", daily)):
            if bills and (force or len(bills) >= 20_000):
                store.upsert_usage_bills(ACCOUNT, cycle, convert.usage_bill_rows(bills))
                counts[cycle] += len(bills)
                bills.clear()

    for p in fleet:
        if not p.bills:
            continue
        for h in range(max(days, 8) * 24):  # 8 days at least: spend-surge's 24 h + 7 d
            hour_start = NOW.replace(minute=0) - timedelta(hours=h + 1)
            if p.hours_per_day == 24 or hour_start.hour < p.hours_per_day:
                hourly.append(_bill(p, hour_start, 1, 3600))
        day0 = NOW.replace(hour=0, minute=0)
        for d in range(1, 31):  # the daily bills of the last 30 days
            daily.append(_bill(p, day0 - timedelta(days=d), p.hours_per_day, 86400))
        flush()
    flush(force=True)
    store.upsert_training_tasks(
        ACCOUNT,
        convert.training_task_rows(
            [
                TrainingTask.model_validate(
                    {
                        "task_id": "bench-task-failed",
                        "task_name": "finetune",
                        "task_status": "FAILED",
                        "created_at": str(int((NOW - timedelta(hours=3)).timestamp())),
                    }
                ),
                TrainingTask.model_validate(
                    {
                        "task_id": "bench-task-ok",
                        "task_name": "finetune-2",
                        "task_status": "SUCCESS",
                        "created_at": str(int((NOW - timedelta(hours=5)).timestamp())),
                    }
                ),
            ]
        ),
        NOW - timedelta(minutes=1),
    )
    for name in schedule_intervals(Schedules()):  # collected since the start of history, fresh now
        store.record_run(ACCOUNT, name, start, start + timedelta(seconds=2), "ok")
        store.record_run(
            ACCOUNT, name, NOW - timedelta(seconds=40), NOW - timedelta(seconds=30), "ok"
        )
    bills = f"{counts['Hour']} hourly + {counts['Day']} daily bills"
    echo(f"setup: {n} instances, {bills}; loading metrics")
    began = time.perf_counter()
    rows = store.bulk_load_samples(metric_rows(keyed, days, rng))
    loaded = time.perf_counter() - began
    echo(f"setup: {rows} metric rows loaded in {loaded:.1f} s; rolling up")
    began = time.perf_counter()
    hours = store.rollup(NOW)
    echo(f"setup: {hours} hourly rollups in {time.perf_counter() - began:.1f} s")
    return {
        "metric_rows": rows,
        "rollup_rows": hours,
        "kinds": dict(Counter(p.kind for p in fleet)),
    }


class QueryCounter:
    """Counts the SQL statements sent while attached (SQLAlchemy ``before_cursor_execute``)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.count = 0

    def _on(self, *_args: Any, **_kwargs: Any) -> None:
        self.count += 1

    def __enter__(self) -> QueryCounter:
        event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


def evaluator(store: Store, stop_rule: Path | None = None) -> Evaluator:
    """The shipped rules' evaluator; with ``stop_rule`` (a rule file) that rule too, and the
    action planner wired as :meth:`monitor.app.App.planner` wires it."""
    paths = [shipped_rules_dir()] + ([stop_rule] if stop_rule is not None else [])
    ruleset = load_rules(paths, known_channels={CONSOLE_CHANNEL})
    planner = None
    if stop_rule is not None:
        planner = partial(
            plan_actions,
            ruleset=ruleset,
            settings=ActionSettings(),
            held=store.held_intents,
            silences=lambda now: [to_silence(x) for x in store.list_silences(now)],
        )
    return Evaluator(
        store,
        ruleset,
        router=Router(),  # judge() delivers nothing
        notifier=None,
        accounts=[ACCOUNT],
        intervals=schedule_intervals(Schedules()),
        stale_after=3.0,
        planner=planner,
    )


class Timed(NamedTuple):
    """One timed evaluation: wall seconds, SQL statements, the engine's result, and the CPU
    seconds the process spent (what the host's other guests cannot inflate)."""

    seconds: float
    queries: int
    result: Any
    cpu_seconds: float


def evaluate_once(store: Store, stop_rule: Path | None = None, steady: bool = False) -> Timed:
    """One timed evaluation from a clean alert table (and ledger). ``steady``: time instead
    the evaluation a minute after that first one (untimed), with its alerts firing and its plans
    recorded: what the daemon does every minute."""
    with store.engine.begin() as conn:
        conn.execute(delete(t.alerts))
        conn.execute(delete(t.actions))
    ev = evaluator(store, stop_rule)
    at = NOW
    if steady:
        ev.judge(at)
        at += timedelta(minutes=1)
    # the long-lived heap (the fleet built for the benchmark, modules, compiled statements)
    # out of the collector's sight, as the daemon puts it after its first cycle: otherwise a
    # full collection re-scans it inside whichever evaluation happens to trigger it
    settle_heap()
    with QueryCounter(store.engine) as counter:
        began, cpu = time.perf_counter(), time.process_time()
        result = ev.judge(at)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return Timed(seconds, counter.count, result, cpu)


def bench_rules(
    instances: int,
    days: int,
    seed: int = 1,
    runs: int = 1,
    echo: Callable[[str], None] = print,
    workdir: Path | None = None,
    logs: str | None = "json",
    with_stop_rule: bool = False,
) -> dict[str, Any]:
    """Run the benchmark; prints progress and, last, the JSON report (also returned).

    ``logs``: the log format set up as the daemon would (the evaluation logs every alert
    transition, to stderr, and that is part of its cost); None leaves logging as it is.
    ``with_stop_rule``: each run also times the evaluation with :data:`STOP_RULE` added,
    interleaved (see the module's docstring)."""
    if instances < 1 or days < 1 or runs < 1:
        raise ValueError("instances, days and runs must be at least 1")
    if logs is not None:
        configure_logging(logs, "info", stream=sys.stderr)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            began = time.perf_counter()
            built = build(store, instances, days, seed, echo)
            setup_s = time.perf_counter() - began
            echo(f"setup: {setup_s:.1f} s")
            stop_rule = alert_rule = None
            if with_stop_rule:
                stop_rule = Path(tmp) / "stop-rule.yaml"
                stop_rule.write_text(STOP_RULE)
                alert_rule = Path(tmp) / "stop-rule-alerts-only.yaml"
                alert_rule.write_text(alerts_only(STOP_RULE))
            # the variants timed in each run: the shipped rules alone ("without"), plus the
            # stop rule stripped of its actions ("alerts"), plus the stop rule ("with")
            variants: list[tuple[str, Path | None]] = [("without", None)]
            if stop_rule is not None and alert_rule is not None:
                variants += [("alerts", alert_rule), ("with", stop_rule)]
            # wall and CPU seconds per variant, of first evaluations and of steady ones
            wall: dict[str, list[float]] = {f"{v}{k}": [] for v, _ in variants for k in _KINDS}
            cpu: dict[str, list[float]] = {key: [] for key in wall}
            queries, result, stops = 0, None, 0
            for run in range(runs):
                # rotated, so that each variant takes each place in the sequence as often: the
                # one evaluated last of three runs a few points slower, whichever it is
                turn = variants[run % len(variants) :] + variants[: run % len(variants)]
                for kind in _KINDS if len(variants) > 1 else ("",):
                    for label, rule in turn:
                        timed = evaluate_once(store, rule, steady=kind == " steady")
                        wall[label + kind].append(timed.seconds)
                        cpu[label + kind].append(timed.cpu_seconds)
                        if label == "without" and not kind:
                            queries, result = timed.queries, timed.result
                        if label == "with" and not kind:
                            stops = len(store.actions(ACCOUNT, ["announced"]))
                    echo(_progress(run, runs, kind, wall, queries, stops))
        finally:
            store.close()
    assert result is not None
    firing = Counter(s.rule for s in result.firing())
    times = wall["without"]
    eval_s = statistics.median(times)
    report = {
        "instances": instances,
        "days": days,
        "eval_s": round(eval_s, 4),
        "per_instance_ms": round(eval_s * 1000 / instances, 4),
        "setup_s": round(setup_s, 1),
        "runs": runs,
        "eval_runs_s": [round(s, 4) for s in times],
        "alerts_firing": sum(firing.values()),
        "firing_by_rule": dict(sorted(firing.items())),
        "queries": queries,
        "metric_rows": built["metric_rows"],
        "rollup_rows": built["rollup_rows"],
    }
    if len(variants) > 1:
        report.update(stops_planned=stops)
        names = {"with": "eval_with_stop", "alerts": "eval_with_stop_alerts"}
        ratios = {"with": "stop_rule_ratio", "alerts": "stop_rule_alerts_ratio"}
        for kind, suffix in (("", ""), (" steady", "_steady")):
            if suffix:
                report[f"eval{suffix}_s"] = round(statistics.median(wall["without" + kind]), 4)
                report[f"eval{suffix}_runs_s"] = [round(x, 4) for x in wall["without" + kind]]
            for label in ("with", "alerts"):
                got = wall[label + kind]
                report[f"{names[label]}{suffix}_s"] = round(statistics.median(got), 4)
                report[f"{names[label]}{suffix}_runs_s"] = [round(x, 4) for x in got]
                report[f"{ratios[label]}{suffix}"] = _ratio(got, wall["without" + kind])
                # the same ratio in CPU seconds (medians), robust to a host that steals time
                report[f"{ratios[label]}{suffix}_cpu"] = _ratio(
                    cpu[label + kind], cpu["without" + kind]
                )
    echo(json.dumps(report))
    return report


#: what each run times per variant: its first evaluation (""), then the one a minute later
_KINDS = ("", " steady")


def _progress(
    run: int, runs: int, kind: str, wall: dict[str, list[float]], queries: int, stops: int
) -> str:
    """The line printed after a run's first (or steady) evaluations."""
    head = f"run {run + 1}/{runs}: "
    if kind:
        return head + (
            f"the minute after, without the stop rule {wall['without' + kind][-1]:.3f} s, "
            f"stripped of its actions {wall['alerts' + kind][-1]:.3f} s, "
            f"with it {wall['with' + kind][-1]:.3f} s"
        )
    line = head + f"eval {wall['without'][-1]:.3f} s, {queries} SQL statements"
    if "alerts" in wall:
        line += (
            f"; the stop rule stripped of its actions {wall['alerts'][-1]:.3f} s; "
            f"with the stop rule {wall['with'][-1]:.3f} s, {stops} stops planned"
        )
    return line


def _ratio(numerators: list[float], denominators: list[float]) -> float | None:
    """The ratio of two medians, rounded (None when the denominator is 0)."""
    bottom = statistics.median(denominators)
    return round(statistics.median(numerators) / bottom, 3) if bottom > 0 else None
