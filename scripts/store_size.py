"""Measure the store's size on SQLite: bytes per instance-year and per instance-day of raw data.

Builds a fresh database for N instances (a mix of 8-GPU and 1-GPU machines) holding what the
defaults keep: 7 days of raw samples (one row per instance and minute) and hourly rollups for a
year, plus (optionally) 45 days of hourly GPU bills per instance. Values are realistic: noisy
floats with decimals, per-GPU values that differ. Prints a JSON line with the figures (after
VACUUM). Usage::

    .venv/bin/python scripts/store_size.py --instances 20
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from monitor.collect import convert
from monitor.novita.models import Balance, Instance, UsageBill
from monitor.store import MetricRow, open_store
from monitor.store import tables as t
from monitor.store.sql import upsert
from monitor.store.types import encode_pct

NOW = datetime(2026, 6, 1, tzinfo=UTC)
RAW_DAYS = 7
YEAR_DAYS = 365


def noisy(rng: random.Random, base: float, spread: float) -> float:
    return round(min(100.0, max(0.0, rng.gauss(base, spread))), 2)


def raw_rows(rng: random.Random, key: int, gpus: int, start: int, minutes: int):
    base = rng.choice([3.0, 45.0, 85.0])
    for i in range(minutes):
        per_gpu = tuple(noisy(rng, base, 12) for _ in range(gpus))
        mems = tuple(noisy(rng, 60, 5) for _ in range(gpus))
        yield MetricRow(
            instance_key=key,
            ts=start + i * 60,
            gpu_util=round(sum(per_gpu) / gpus, 2),
            gpu_mem=round(sum(mems) / gpus, 2),
            cpu=noisy(rng, 30, 10),
            mem=noisy(rng, 55, 3),
            disk=noisy(rng, 20, 0.5),
            gpu_utils=per_gpu,
            gpu_mems=mems,
        )


def hourly_rows(rng: random.Random, key: int, gpus: int, start: int, hours: int):
    base = rng.choice([3.0, 45.0, 85.0])

    def pct(v: float) -> int:
        return encode_pct(v)  # type: ignore[return-value]

    for h in range(hours):
        avg = noisy(rng, base, 8)
        per_gpu = [round(noisy(rng, base, 10)) for _ in range(gpus)]
        yield {
            "instance_key": key,
            "ts": start + h * 3600,
            "n": 60,
            "gpu_util_avg": pct(avg),
            "gpu_util_max": pct(min(100.0, avg + rng.uniform(0, 30))),
            "gpu_util_min": pct(max(0.0, avg - rng.uniform(0, 30))),
            "gpu_util_n": 60,
            "gpu_mem_avg": pct(noisy(rng, 60, 5)),
            "gpu_mem_max": pct(noisy(rng, 70, 5)),
            "gpu_mem_min": pct(noisy(rng, 50, 5)),
            "gpu_mem_n": 60,
            "cpu_avg": pct(noisy(rng, 30, 8)),
            "mem_avg": pct(noisy(rng, 55, 3)),
            "disk_avg": pct(noisy(rng, 20, 0.5)),
            "gpu_utils_avg": bytes(per_gpu),
            "gpu_utils_max": bytes(min(100, v + rng.randint(0, 20)) for v in per_gpu),
            "gpu_mems_avg": bytes(round(noisy(rng, 60, 5)) for _ in range(gpus)),
        }


def vacuum_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
    finally:
        conn.close()
    return path.stat().st_size


def table_sizes(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {name: size for name, size in rows if size > 8192}


def build(path: Path, n: int, raw_days: int, year: bool, bills: bool, seed: int) -> float:
    rng = random.Random(seed)
    store = open_store(f"sqlite:///{path}")
    started = time.perf_counter()
    now_ts = int(NOW.timestamp())
    raw_start = now_ts - raw_days * 86400
    instances = [
        Instance(id=f"inst-{i:04d}-{rng.getrandbits(48):012x}", status="running",
                 gpu_num=8 if i % 2 == 0 else 1, cpu_num=16, product_id="p-h100", cluster_id="c-1")
        for i in range(n)
    ]  # fmt: skip
    store.upsert_instances("main", convert.instance_rows(instances), NOW)
    for inst in instances:
        key = store.instance_key("main", inst.id)
        assert key is not None
        store.bulk_insert_metrics(raw_rows(rng, key, inst.gpu_num, raw_start, raw_days * 1440))
        if year:
            hours = (YEAR_DAYS - raw_days) * 24
            rows = list(hourly_rows(rng, key, inst.gpu_num, raw_start - hours * 3600, hours))
            with store.engine.begin() as conn:
                upsert(conn, t.metric_hourly, rows, keys=["instance_key", "ts"])
        if bills:
            hour_bills = []
            for h in range(45 * 24):
                start = now_ts - (h + 1) * 3600
                amount = str(rng.randint(30000, 300000))
                hour_bills.append(
                    UsageBill.model_validate(
                        {"startTime": str(start), "endTime": str(start + 3600), "category": "gpu",
                         "ownerID": inst.id, "productId": "p-h100", "productName": "H100 SXM",
                         "billNum0": str(inst.gpu_num), "amount": amount, "payAmount": amount}
                    )
                )  # fmt: skip
            store.upsert_usage_bills("main", "Hour", convert.usage_bill_rows(hour_bills))
    if year:
        store.rollup(NOW)  # the last week's hours too, as the daemon would have
    balance = Balance(available_usd=Decimal(100))
    store.add_balance("main", convert.balance_sample(balance, NOW - timedelta(minutes=1)))
    store.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bills", action="store_true", help="add 45 days of hourly bills")
    parser.add_argument("--keep", type=Path, help="build here instead of a temporary directory")
    args = parser.parse_args()
    n = args.instances
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        empty = base / "empty.db"
        open_store(f"sqlite:///{empty}").close()
        empty_size = vacuum_size(empty)

        day = base / "raw-day.db"
        build(day, n, 1, year=False, bills=False, seed=args.seed)
        day_size = vacuum_size(day)

        full = base / "year.db"
        seconds = build(full, n, RAW_DAYS, year=True, bills=args.bills, seed=args.seed)
        full_size = vacuum_size(full)
        report = {
            "instances": n,
            "bytes_per_instance_year": round((full_size - empty_size) / n),
            "mb_per_instance_year": round((full_size - empty_size) / n / 1e6, 3),
            "bytes_per_instance_day_raw": round((day_size - empty_size) / n),
            "with_hourly_bills_45d": args.bills,
            "db_bytes": full_size,
            "tables": table_sizes(full),
            "build_s": round(seconds, 1),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
