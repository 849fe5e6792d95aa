"""``novita-monitor bench store``: how big the database grows, per instance, at the defaults.

Method (issue 12 §2): a fresh database (a temporary SQLite file, or ``--database URL``, which must
hold no account yet) receives D days of history for one account of N instances, all running all
the time (the most a fleet of N can write), day by day on a clock that jumps a day at a time,
through the store's own write paths, in bulk:

* the instance listing (``upsert_instances``, once a day: an unchanged listing only moves
  ``last_seen``, whatever its cadence);
* one raw metric row per instance and minute (``bulk_load_samples``; values noisy, per-GPU
  vectors as wide as each instance's GPU count, drawn as the simulator's fleet: 1, 2, 4 or 8);
* the usage bills the collector keeps: one hourly and one daily GPU bill per instance
  (``upsert_usage_bills``, the rows ``convert.usage_bill_rows`` makes of the API's bills);
* a balance sample every ``schedules.balance`` (the store's upsert, one statement a day) and
  one ``collector_runs`` row per run of every collector at its default interval (instances,
  metrics every minute, async tasks every 30 s ...), as ``record_run`` writes them;

then, at the end of each day, retention and rollups as the daemon runs them (and, on PostgreSQL,
a plain ``VACUUM``: the clock jumps a day in seconds, faster than autovacuum would reclaim the
deleted rows, which it does many times over a real day)
(``enforce_retention`` at the default windows: raw minutes 7 days, hourly rollups, daily bills,
balance and events 365 days, hourly bills 45 days, collector runs 7 days). Not written: alerts,
notifications and actions (they depend on the rules), subscriptions' fixed-term bills and
instance churn (events and history rows on changes): small per instance next to the metrics.

Sizes: SQLite, the file (pages in use after a WAL checkpoint, and the file after ``VACUUM``) and
per table with its indexes (``dbstat``); PostgreSQL, ``pg_total_relation_size`` per table
(table, indexes and TOAST) after a plain ``VACUUM``, and after ``VACUUM FULL`` (live data only).
The size is also read after every day, so that the growth per day once every shorter window is
full (raw minutes, hourly bills) is fitted and a year is extrapolated when D < 365. The last line
printed is one JSON object.
"""

from __future__ import annotations

import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text

from monitor.collect import convert
from monitor.collect.collectors import TASKS
from monitor.config import Retention, Schedules
from monitor.errors import UserError
from monitor.novita.models import Instance, UsageBill
from monitor.store import Store, open_store
from monitor.store import tables as t
from monitor.store.metrics import DAY, HOUR, MINUTE
from monitor.store.sql import upsert

ACCOUNT = "bench"
#: where the history starts (any fixed time: the figures do not depend on it)
START = datetime(2026, 1, 1, tzinfo=UTC)
#: the simulator's fleet mix of GPU counts (``monitor.sim.fleet``)
GPU_MIX = (1, 1, 1, 2, 2, 4, 8)
#: the longest retention window shorter than the rollups' (hourly bills): past it, the
#: database grows by the same amount every day
HOURLY_BILL_DAYS = 45
#: tables that grow with the number of instances
INSTANCE_TABLES = frozenset(
    {"metric_samples", "metric_hourly", "usage_bills", "fixed_term_bills", "instances",
     "instance_history", "events"}
)  # fmt: skip
#: tables that grow with the number of accounts (one row per run, per balance sample)
ACCOUNT_TABLES = frozenset({"collector_runs", "balance_samples"})
#: the fewest days the growth per day is fitted over
FIT_DAYS = 10


def _noisy(rng: random.Random, base: float, spread: float) -> float:
    return min(100.0, max(0.0, rng.gauss(base, spread)))


def _tenths(value: float) -> int:
    return round(value * 10)


def day_pool(rng: random.Random, gpus: int) -> list[tuple[Any, ...]]:
    """One day of one instance's minutes in the stored form, without key and time: ``(gpu_util,
    gpu_mem, cpu, mem, disk, gpu_utils, gpu_mems)`` (tenths of a percent, packed vectors).
    Each day reuses it from another offset (the sizes depend on the values' magnitudes only)."""
    base = rng.choice((3.0, 45.0, 85.0))
    pool = []
    for _ in range(DAY // MINUTE):
        utils = [_noisy(rng, base, 12) for _ in range(gpus)]
        mems = [_noisy(rng, 60, 5) for _ in range(gpus)]
        pool.append(
            (
                _tenths(sum(utils) / gpus),
                _tenths(sum(mems) / gpus),
                _tenths(_noisy(rng, 30, 10)),
                _tenths(_noisy(rng, 55, 3)),
                _tenths(_noisy(rng, 20, 0.5)),
                bytes(int(v + 0.5) for v in utils),
                bytes(int(v + 0.5) for v in mems),
            )
        )
    return pool


def _instances(n: int, rng: random.Random) -> list[Instance]:
    return [
        Instance(id=f"bench-{i:05d}-{rng.getrandbits(40):010x}", name=f"bench-{i}",
                 status="running", gpu_num=rng.choice(GPU_MIX), cpu_num=16,
                 product_id="p-h100", cluster_id="c-1", billing_mode="onDemand")
        for i in range(n)
    ]  # fmt: skip


def _bill_template(inst: Instance, rng: random.Random, cycle: str) -> dict[str, Any]:
    """One GPU bill of the instance as the collector stores it (period starting at 0)."""
    period = HOUR if cycle == "Hour" else DAY
    amount = rng.randint(30_000, 300_000) * (1 if cycle == "Hour" else 24)
    bill = UsageBill.model_validate(
        {"startTime": str(period), "endTime": str(2 * period), "category": "gpu",
         "ownerID": inst.id, "productId": "p-h100", "productName": "H100 SXM 80GB",
         "billNum0": str((inst.gpu_num or 1) * period), "amount": str(amount),
         "payAmount": str(amount)}
    )  # fmt: skip
    row = convert.usage_bill_rows([bill], product_category="gpu")[0]
    row["start_ts"] -= period
    row["end_ts"] -= period
    return row


def _shifted(template: dict[str, Any], start: int, period: int) -> dict[str, Any]:
    return {**template, "start_ts": start, "end_ts": start + period}


def _run_counts(n: int) -> dict[str, dict[str, int]]:
    """What each collector's run records in its ``counts`` at a steady state of ``n`` running
    instances (the collectors' own keys)."""
    retention = {k: 0 for k in ("rolled_up", "metric_samples", "metric_hourly", "balance_samples",
                                "usage_bills", "fixed_term_bills", "events", "collector_runs",
                                "alerts", "silences", "notifications")}  # fmt: skip
    retention.update(rolled_up=n, metric_samples=60 * n)
    return {
        "instances": {"instances": n, "events": 0},
        "metrics": {"instances": n, "fetched": n, "rows": n},
        "balance": {"samples": 1},
        "usage_bills": {"bills": 4 * n, "rows": 2 * n},
        "fixed_term_bills": {"bills": 0, "rows": 0},
        "products": {"clusters": 2, "products": 24},
        "training_tasks": {"tasks": 20, "events": 0},
        "async_tasks": {"watched": 0},
        "retention": retention,
    }


def _runs(account_id: int, n: int, day_start: int, schedules: Schedules) -> list[dict[str, Any]]:
    """The ``collector_runs`` rows of one day: each collector (and retention) at its interval."""
    every = {**schedules.collectors(), "retention": schedules.retention}
    counts = _run_counts(n)
    rows = []
    for name, interval in every.items():
        if name not in TASKS:
            continue
        for ts in range(day_start, day_start + DAY, int(interval)):
            started = datetime.fromtimestamp(ts, UTC)
            rows.append(
                {
                    "account_id": account_id,
                    "collector": name,
                    "started": started,
                    "finished": started + timedelta(seconds=1),
                    "outcome": "ok",
                    "counts": counts.get(name, {}),
                    "error": None,
                }
            )
    return rows


class Sizer:
    """Reads the database's size: SQLite pages or PostgreSQL relation sizes."""

    def __init__(self, store: Store, path: Path | None) -> None:
        self.store = store
        self.path = path

    def live_bytes(self) -> int:
        """Bytes in use now (SQLite: pages not on the free list; PostgreSQL: the tables)."""
        if self.path is not None:
            return self.store.database_bytes()
        return sum(self.pg_tables().values())

    def pg_tables(self) -> dict[str, int]:
        names = [tbl.name for tbl in t.metadata.sorted_tables] + ["alembic_version"]
        with self.store.engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.pg_total_relation_size(name))).scalar_one() or 0)
                for name in names
                if conn.execute(select(func.to_regclass(name))).scalar_one() is not None
            }

    def pg_vacuum(self, full: bool) -> None:
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("VACUUM FULL ANALYZE" if full else "VACUUM ANALYZE"))

    def sqlite_tables(self) -> dict[str, int]:
        """Bytes per table, its indexes included (``dbstat``; {} without it)."""
        assert self.path is not None
        con = sqlite3.connect(self.path)
        try:
            rows = con.execute(
                "SELECT coalesce(m.tbl_name, s.name), sum(s.pgsize) FROM dbstat s "
                "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY 1"
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
        finally:
            con.close()
        return {str(name): int(size) for name, size in rows}

    def sqlite_file(self, vacuum: bool) -> int:
        assert self.path is not None
        con = sqlite3.connect(self.path)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if vacuum:
                con.execute("VACUUM")
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        return self.path.stat().st_size


def growth_per_day(series: list[tuple[int, int]], days: int) -> float | None:
    """Bytes a day once every window shorter than a year is full: the least-squares slope of
    the size over the later half of the days past the hourly bills' window (at least
    :data:`FIT_DAYS` of them), else None."""
    first = HOURLY_BILL_DAYS + 2
    tail = [(d, b) for d, b in series if d >= max(first, days // 2)]
    if len(tail) < FIT_DAYS:
        return None
    slope, _ = statistics.linear_regression([d for d, _ in tail], [b for _, b in tail])
    return float(slope)


def _rows_for_day(
    keys: list[int], pools: list[list[tuple[Any, ...]]], day: int, day_start: int
) -> Iterator[tuple[Any, ...]]:
    minutes = DAY // MINUTE
    for key, pool in zip(keys, pools, strict=True):
        offset = (day * 137 + key * 31) % minutes
        for i in range(minutes):
            yield (key, day_start + i * MINUTE, *pool[(i + offset) % minutes])


def bench_store(
    instances: int,
    days: int,
    database: str | None = None,
    seed: int = 1,
    echo: Callable[[str], None] = print,
    progress_every: int = 30,
) -> dict[str, Any]:
    """Write ``days`` of history for ``instances`` instances, apply retention and rollups as
    the daemon does, and report the sizes (module docstring). Returns the JSON summary."""
    if instances < 1 or days < 1:
        raise UserError("bench store needs --instances >= 1 and --days >= 1")
    with tempfile.TemporaryDirectory(prefix="nm-bench-store-") as tmp:
        path = None if database else Path(tmp) / "store.db"
        url = database or f"sqlite:///{path}"
        store = open_store(url)
        try:
            if store.accounts():
                raise UserError(
                    f"bench store writes into an empty database; {store.dialect} database at "
                    f"{store.engine.url.render_as_string(hide_password=True)} already holds "
                    f"accounts {store.accounts()}"
                )
            return _run(store, path, instances, days, seed, echo, progress_every)
        finally:
            store.close()


def _run(
    store: Store,
    path: Path | None,
    n: int,
    days: int,
    seed: int,
    echo: Callable[[str], None],
    progress_every: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    schedules, retention = Schedules(), Retention()
    sizer = Sizer(store, path)
    empty = sizer.live_bytes()
    fleet = _instances(n, rng)
    listing = convert.instance_rows(fleet)
    store.upsert_instances(ACCOUNT, listing, START)
    account_id = store.ensure_account(ACCOUNT)
    keys = [store.instance_key(ACCOUNT, inst.id) for inst in fleet]
    assert all(k is not None for k in keys)
    ikeys = [int(k) for k in keys if k is not None]
    pools = [day_pool(rng, inst.gpu_num or 1) for inst in fleet]
    hour_bills = [_bill_template(inst, rng, "Hour") for inst in fleet]
    day_bills = [_bill_template(inst, rng, "Day") for inst in fleet]
    balance_every = int(schedules.balance)
    sizes: list[tuple[int, int]] = []
    timings = {"write_s": 0.0, "retention_s": 0.0}
    raw_rows = 0
    started = time.perf_counter()
    for day in range(days):
        day_start = int(START.timestamp()) + day * DAY
        now = datetime.fromtimestamp(day_start + DAY, UTC)
        t0 = time.perf_counter()
        store.upsert_instances(ACCOUNT, listing, datetime.fromtimestamp(day_start, UTC))
        raw_rows += store.bulk_load_samples(_rows_for_day(ikeys, pools, day, day_start))
        store.upsert_usage_bills(
            ACCOUNT,
            "Hour",
            [
                _shifted(b, day_start + h * HOUR, HOUR)
                for b in hour_bills
                for h in range(DAY // HOUR)
            ],
        )
        store.upsert_usage_bills(ACCOUNT, "Day", [_shifted(b, day_start, DAY) for b in day_bills])
        balance = [
            {"account_id": account_id, "ts": ts, "available": Decimal("1234.5678") - day,
             "cash": Decimal("1234.5678") - day, "credit_limit": Decimal(0),
             "pending_charges": None, "outstanding_invoices": None, "source": "balance/detail"}
            for ts in range(day_start, day_start + DAY, balance_every)
        ]  # fmt: skip
        with store.engine.begin() as conn:
            upsert(conn, t.balance_samples, balance, keys=["account_id", "ts"])
            conn.execute(insert(t.collector_runs), _runs(account_id, n, day_start, schedules))
        t1 = time.perf_counter()
        store.enforce_retention(now, raw_days=retention.raw_days, rollup_days=retention.rollup_days)
        t2 = time.perf_counter()
        timings["write_s"] += t1 - t0
        timings["retention_s"] += t2 - t1
        if path is None:  # what autovacuum does over a day of real time: space made reusable
            sizer.pg_vacuum(full=False)
        sizes.append((day + 1, sizer.live_bytes()))
        if progress_every and (day + 1) % progress_every == 0:
            echo(f"day {day + 1}/{days}: {sizes[-1][1] / 1e6:.1f} MB in use, "
                 f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    return _report(store, sizer, n, days, empty, sizes, raw_rows, timings, echo)


def _report(
    store: Store,
    sizer: Sizer,
    n: int,
    days: int,
    empty: int,
    sizes: list[tuple[int, int]],
    raw_rows: int,
    timings: dict[str, float],
    echo: Callable[[str], None],
) -> dict[str, Any]:
    retention = Retention()
    with store.engine.connect() as conn:
        counts = {
            name: int(conn.execute(select(func.count()).select_from(tbl)).scalar_one())
            for name, tbl in (
                ("metric_samples", t.metric_samples),
                ("metric_hourly", t.metric_hourly),
                ("usage_bills", t.usage_bills),
                ("balance_samples", t.balance_samples),
                ("collector_runs", t.collector_runs),
            )
        }
    report: dict[str, Any] = {
        "database": store.dialect,
        "instances": n,
        "days": days,
        "raw_rows_written": raw_rows,
        "rows": counts,
    }
    if sizer.path is not None:
        in_use = sizes[-1][1]
        file_bytes = sizer.sqlite_file(vacuum=False)
        steady = sizer.sqlite_file(vacuum=True)
        tables = sizer.sqlite_tables()
        report.update(
            file_bytes=file_bytes, in_use_bytes=in_use, vacuumed_bytes=steady, tables=tables
        )
    else:
        sizer.pg_vacuum(full=False)
        tables = sizer.pg_tables()
        steady = sum(tables.values())
        sizer.pg_vacuum(full=True)
        compact = sizer.pg_tables()
        report.update(
            total_relation_bytes=steady,
            vacuum_full_bytes=sum(compact.values()),
            tables=tables,
            tables_vacuum_full=compact,
        )
    raw_days = min(days, retention.raw_days)
    rollup_days_held = min(days, retention.rollup_days)
    raw_table = tables.get("metric_samples")
    hourly_table = tables.get("metric_hourly")
    report["raw_bytes_per_instance_day"] = (
        None if raw_table is None else round(raw_table / (n * raw_days))
    )
    report["rollup_bytes_per_instance_day"] = (
        None if hourly_table is None else round(hourly_table / (n * rollup_days_held))
    )
    report["steady_bytes"] = steady
    per_instance = sum(size for name, size in tables.items() if name in INSTANCE_TABLES)
    report["instance_tables_mb_per_instance"] = round(per_instance / n / 1e6, 3)
    report["account_tables_mb"] = round(
        sum(size for name, size in tables.items() if name in ACCOUNT_TABLES) / 1e6, 2
    )
    report["mb_per_instance"] = round((steady - empty) / n / 1e6, 3)
    slope = growth_per_day(sizes, days)
    report["growth_bytes_per_instance_day"] = None if slope is None else round(slope / n)
    if days >= retention.rollup_days:
        report["mb_per_instance_year"] = report["mb_per_instance"]
        report["year_method"] = "measured"
    elif slope is not None:
        extra = slope * (retention.rollup_days - days)
        report["mb_per_instance_year"] = round((steady - empty + extra) / n / 1e6, 3)
        report["year_method"] = (
            f"extrapolated: steady size at day {days} + the growth per day fitted over days "
            f"{max(HOURLY_BILL_DAYS + 2, days // 2)}..{days} times {retention.rollup_days - days}"
        )
    else:
        report["mb_per_instance_year"] = None
        report["year_method"] = (
            f"not extrapolated: needs --days >= {HOURLY_BILL_DAYS + 2 + FIT_DAYS - 1} (the "
            f"growth is fitted over at least {FIT_DAYS} days once the hourly bills' window is full)"
        )
    report.update({k: round(v, 1) for k, v in timings.items()})
    echo(json.dumps(report))
    return report
