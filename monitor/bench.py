"""``novita-monitor bench collect``: one steady-state collection cycle against a simulated fleet.

Method (issue "Collect" §6): start the simulator in a separate process serving a generated fleet of
N instances with L ms of latency per request and at most C requests served at once; run a warm-up
cycle on a fresh database (first-sight backfill at its default, no rules); advance the simulated
clock by 60 s; time one steady-state cycle (every collector once). Then the same two steps from the
same starting state (fresh simulator, same seed, fresh database) with the client's concurrency at 1,
as the naive baseline. The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from monitor.clock import ManualClock

BENCH_KEY = "bench-not-a-secret-key"


def rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    """The simulator in its own process (its memory is not the monitor's)."""

    def __init__(self, instances: int, seed: int, latency_ms: float, concurrency: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "monitor.sim", "--port", str(self.port),
            "--scenario", "fleet", "--instances", str(instances), "--seed", str(seed),
            "--latency-ms", str(latency_ms), "--max-concurrency", str(concurrency),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"simulator exited with {self.proc.returncode}")
                continue
            if "listening on" in line:
                return
        raise RuntimeError("simulator did not start within 120 s")

    def now(self) -> datetime:
        data = httpx.get(f"{self.url}/_sim/clock", timeout=10).json()
        return datetime.fromisoformat(str(data["now"]).replace("Z", "+00:00"))

    def advance(self, seconds: float) -> None:
        r = httpx.post(f"{self.url}/_sim/clock/advance", json={"seconds": seconds}, timeout=10)
        r.raise_for_status()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _metric_bytes_per_row(db_path: Path) -> float | None:
    """Bytes per metric row on disk (table + its indexes), from SQLite's dbstat if available."""
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        rows = con.execute("SELECT count(*) FROM metric_samples").fetchone()[0]
        try:
            size = con.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name = 'metric_samples' "
                "OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'metric_samples')"
            ).fetchone()[0]
        except sqlite3.OperationalError:
            return None
        return size / rows if rows else None
    finally:
        con.close()


async def _one(
    instances: int, latency_ms: float, sim_concurrency: int, client_concurrency: int, seed: int
) -> dict[str, Any]:
    from monitor.app import App, settle_heap
    from monitor.config import Config

    sim = SimProcess(instances, seed, latency_ms, sim_concurrency)
    tmp = Path(tempfile.mkdtemp(prefix="nm-bench-"))
    try:
        db = tmp / "bench.db"
        cfg = tmp / "config.yaml"
        cfg.write_text(
            "accounts:\n"
            "  - name: bench\n"
            "    api_key_env: NOVITA_BENCH_KEY\n"
            f"    base_url: {sim.url}\n"
            f"    max_concurrency: {client_concurrency}\n"
            f"database: sqlite:///{db}\n"
            "rules: []\n"
        )
        clock = ManualClock(sim.now())
        app = App.open(Config.load(cfg), clock, env={"NOVITA_BENCH_KEY": BENCH_KEY})
        client = app.contexts[0].client
        try:
            warm = await app.collect()
            failed = [r for r in warm if r.outcome != "ok"]
            settle_heap()  # as the daemon does after its first cycle
            sim.advance(60)
            clock.set(sim.now())
            sent0 = client.requests_sent
            t0 = time.perf_counter()
            steady = await app.collect()
            wall = time.perf_counter() - t0
            requests = client.requests_sent - sent0
        finally:
            await app.aclose()
        rows = sum(int(r.counts.get("rows", 0)) for r in steady)
        metric_rows = sum(int(r.counts.get("rows", 0)) for r in steady if r.collector == "metrics")
        per_row = _metric_bytes_per_row(db)
        return {
            "wall_s": wall,
            "requests": requests,
            "rows_written": rows,
            "metric_rows": metric_rows,
            "bytes_per_instance_day": None if per_row is None else per_row * 1440,
            "failed": [
                f"{r.collector}: {r.error}"
                for r in failed + [s for s in steady if s.outcome != "ok"]
            ],
        }
    finally:
        sim.close()
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


def bench_collect(
    instances: int,
    latency_ms: float,
    concurrency: int,
    seed: int,
    runs: int = 1,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    from monitor.app import run_async  # imports are part of the base, as in the daemon
    from monitor.logs import configure_logging

    configure_logging("json", "error", stream=open(os.devnull, "w"))  # noqa: SIM115
    base_rss = rss_mb()
    results = []
    for i in range(runs):
        fast = run_async(_one(instances, latency_ms, concurrency, concurrency, seed))
        echo(f"run {i + 1}: concurrency {concurrency}: {fast['wall_s']:.3f} s, "
             f"{fast['requests']} requests, {fast['rows_written']} rows")  # fmt: skip
        slow = run_async(_one(instances, latency_ms, concurrency, 1, seed))
        echo(f"run {i + 1}: concurrency 1 (baseline): {slow['wall_s']:.3f} s, "
             f"{slow['requests']} requests")  # fmt: skip
        for f in fast["failed"] + slow["failed"]:
            echo(f"  not ok: {f}")
        floor = (1 + math.ceil((fast["requests"] - 1) / concurrency)) * latency_ms / 1000
        results.append(
            {
                "wall_s": fast["wall_s"],
                "requests": fast["requests"],
                "floor_s": floor,
                "ratio": fast["wall_s"] / floor,
                "baseline_wall_s": slow["wall_s"],
                "speedup": slow["wall_s"] / fast["wall_s"],
                "rows_written": fast["rows_written"],
                "metric_rows": fast["metric_rows"],
                "bytes_per_instance_day": fast["bytes_per_instance_day"],
            }
        )

    def med(key: str) -> Any:
        values = [r[key] for r in results if r[key] is not None]
        return round(statistics.median(values), 4) if values else None

    summary = {
        "instances": instances,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "runs": runs,
        "requests": int(med("requests")),
        "wall_s": med("wall_s"),
        "floor_s": med("floor_s"),
        "ratio": med("ratio"),
        "baseline_wall_s": med("baseline_wall_s"),
        "speedup": med("speedup"),
        "rows_written": int(med("rows_written")),
        "metric_rows": int(med("metric_rows")),
        "bytes_per_instance_day": med("bytes_per_instance_day"),
        "base_rss_mb": round(base_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    echo(json.dumps(summary))
    return summary
