"""``novita-monitor bench collect``: one steady-state collection cycle against a simulated fleet.

Method (issue "Collect" §6, issue 12 §2): start the simulator in a separate process serving N
generated instances spread over K accounts (``--accounts``; one fleet and one API key each, behind
one gateway, :mod:`monitor.sim.gateway`) with L ms of latency per request and at most C requests
served at once over all accounts; configure the monitor with K accounts, each client at
concurrency C (as a real multi-account configuration would); run a warm-up cycle on a fresh
database (first-sight backfill at its default, no rules); advance the simulated clock by 60 s;
time one steady-state cycle (every collector of every account once). Then, unless
``--no-baseline``, the same two steps from the same starting state (fresh simulator, same seed,
fresh database) with every client's concurrency at 1, as the naive baseline.

``ratio`` is the steady cycle's wall time over the floor ``(1 + ceil((R - 1) / C)) * L`` for R
requests. ``peak_rss_mb`` is the peak resident set of this process, which runs the monitor (the
simulator's memory is its own process's): Linux's ``VmHWM``, reset before each run through
``/proc/self/clear_refs`` so that each run's peak is its own (warm-up cycle included); where that
cannot be reset, ``getrusage``'s ``ru_maxrss`` (the peak since the process started). The last
line printed is one JSON object.
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
from monitor.errors import UserError
from monitor.sim.accounts import account_keys

BENCH_KEY = "bench-not-a-secret-key"


def rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux /proc)."""
    return _status_mb("VmRSS") or 0.0


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux >= 4.0: ``5`` to ``clear_refs``); False
    when it cannot be (then :func:`peak_rss_mb` is the peak since the process started)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident set of this process in MB: ``VmHWM`` (since the last
    :func:`reset_peak_rss`), else ``ru_maxrss`` (since start)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    """The simulator gateway in its own process (its memory is not the monitor's): ``instances``
    spread over ``accounts`` accounts keyed ``BENCH_KEY-1`` .. ``BENCH_KEY-K``. Its clock stands
    still (speed 0) and moves only when :meth:`advance` moves it, so a steady cycle always reads
    the same simulated minute whatever the warm-up cost in real time."""

    def __init__(
        self, instances: int, seed: int, latency_ms: float, concurrency: int, accounts: int = 1
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.keys = account_keys(BENCH_KEY, accounts)
        cmd = [
            sys.executable, "-m", "monitor.sim", "--port", str(self.port),
            "--scenario", "fleet", "--instances", str(instances), "--seed", str(seed),
            "--latency-ms", str(latency_ms), "--max-concurrency", str(concurrency),
            "--accounts", str(accounts), "--api-key", BENCH_KEY, "--speed", "0",
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

    def cpu_s(self) -> float | None:
        """CPU time the simulator process has used so far (user + system), Linux /proc."""
        return process_cpu_s(self.proc.pid)

    def gateway(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/_sim/gateway", timeout=10).json()
        return data

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


def bench_config(
    path: Path, url: str, keys: list[str], concurrency: int, db: Path
) -> dict[str, str]:
    """Write the monitor's configuration for one account per key (each client at
    ``concurrency``, all at the same gateway); returns the environment holding the keys."""
    lines = ["accounts:"]
    env = {}
    for i, key in enumerate(keys, start=1):
        var = f"NOVITA_BENCH_KEY_{i}"
        env[var] = key
        lines += [
            f"  - name: bench-{i}",
            f"    api_key_env: {var}",
            f"    base_url: {url}",
            f"    max_concurrency: {concurrency}",
        ]
    lines += [f"database: sqlite:///{db}", "rules: []", ""]
    path.write_text("\n".join(lines))
    return env


async def _one(
    instances: int,
    latency_ms: float,
    sim_concurrency: int,
    client_concurrency: int,
    seed: int,
    accounts: int = 1,
) -> dict[str, Any]:
    from monitor.app import App, settle_heap
    from monitor.config import Config

    sim = SimProcess(instances, seed, latency_ms, sim_concurrency, accounts)
    tmp = Path(tempfile.mkdtemp(prefix="nm-bench-"))
    try:
        db = tmp / "bench.db"
        cfg = tmp / "config.yaml"
        env = bench_config(cfg, sim.url, sim.keys, client_concurrency, db)
        clock = ManualClock(sim.now())
        app = App.open(Config.load(cfg), clock, env=env)
        clients = [c.client for c in app.contexts]
        try:
            warm = await app.collect()
            failed = [r for r in warm if r.outcome != "ok"]
            settle_heap()  # as the daemon does after its first cycle
            sim.advance(60)
            clock.set(sim.now())
            sent0 = sum(c.requests_sent for c in clients)
            sim_cpu0, cpu0 = sim.cpu_s(), time.process_time()
            t0 = time.perf_counter()
            steady = await app.collect()
            wall = time.perf_counter() - t0
            cpu, sim_cpu1 = time.process_time() - cpu0, sim.cpu_s()
            requests = sum(c.requests_sent for c in clients) - sent0
        finally:
            await app.aclose()
        gateway = sim.gateway()
        rows = sum(int(r.counts.get("rows", 0)) for r in steady)
        metric_rows = sum(int(r.counts.get("rows", 0)) for r in steady if r.collector == "metrics")
        per_row = _metric_bytes_per_row(db)
        return {
            "wall_s": wall,
            "requests": requests,
            "rows_written": rows,
            "metric_rows": metric_rows,
            "bytes_per_instance_day": None if per_row is None else per_row * 1440,
            "gateway_max_in_flight": int(gateway["max_in_flight"]),
            "cpu_s": cpu,
            "accounts_ok": len(
                {r.account for r in steady} - {r.account for r in steady if r.outcome != "ok"}
            ),
            "sim_cpu_s": None if sim_cpu0 is None or sim_cpu1 is None else sim_cpu1 - sim_cpu0,
            "failed": [
                f"{r.account}/{r.collector}: {r.error}"
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
    accounts: int = 1,
    baseline: bool = True,
) -> dict[str, Any]:
    """Run the benchmark ``runs`` times; print each run and the summary (medians) as JSON."""
    from monitor.app import run_async  # imports are part of the base, as in the daemon
    from monitor.logs import configure_logging

    if accounts < 1:
        raise UserError("--accounts must be at least 1")
    if accounts > max(1, instances):
        raise UserError(
            f"{accounts} accounts need at least as many instances (--instances {instances})"
        )
    configure_logging("json", "error", stream=open(os.devnull, "w"))  # noqa: SIM115
    base_rss = rss_mb()
    peak_method = "VmHWM per run" if reset_peak_rss() else "ru_maxrss since start"
    results = []
    for i in range(runs):
        reset_peak_rss()
        fast = run_async(_one(instances, latency_ms, concurrency, concurrency, seed, accounts))
        run_peak = peak_rss_mb()
        echo(f"run {i + 1}: {accounts} account(s), concurrency {concurrency}: "
             f"{fast['wall_s']:.3f} s, {fast['requests']} requests, {fast['rows_written']} rows, "
             f"peak RSS {run_peak:.1f} MB, CPU {fast['cpu_s']:.2f} s "
             f"(simulator {fast['sim_cpu_s'] or 0:.2f} s)")  # fmt: skip
        slow: dict[str, Any] | None = None
        if baseline:
            slow = run_async(_one(instances, latency_ms, concurrency, 1, seed, accounts))
            echo(f"run {i + 1}: concurrency 1 (baseline): {slow['wall_s']:.3f} s, "
                 f"{slow['requests']} requests")  # fmt: skip
        for f in fast["failed"] + (slow["failed"] if slow else []):
            echo(f"  not ok: {f}")
        floor = (1 + math.ceil((fast["requests"] - 1) / concurrency)) * latency_ms / 1000
        results.append(
            {
                "wall_s": fast["wall_s"],
                "requests": fast["requests"],
                "floor_s": floor,
                "ratio": fast["wall_s"] / floor if floor > 0 else None,
                "baseline_wall_s": slow["wall_s"] if slow else None,
                "speedup": slow["wall_s"] / fast["wall_s"] if slow else None,
                "rows_written": fast["rows_written"],
                "metric_rows": fast["metric_rows"],
                "bytes_per_instance_day": fast["bytes_per_instance_day"],
                "peak_rss_mb": run_peak,
                "gateway_max_in_flight": fast["gateway_max_in_flight"],
                "cpu_s": fast["cpu_s"],
                "accounts_ok": fast["accounts_ok"],
                "sim_cpu_s": fast["sim_cpu_s"],
                "failed": len(fast["failed"]),
            }
        )

    def med(key: str) -> Any:
        values = [r[key] for r in results if r[key] is not None]
        return round(statistics.median(values), 4) if values else None

    summary = {
        "instances": instances,
        "accounts": accounts,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "runs": runs,
        "requests": int(med("requests")),
        "wall_s": med("wall_s"),
        "floor_s": med("floor_s"),
        "ratio": med("ratio"),
        "ratios": [None if r["ratio"] is None else round(r["ratio"], 3) for r in results],
        "baseline_wall_s": med("baseline_wall_s"),
        "speedup": med("speedup"),
        "rows_written": int(med("rows_written")),
        "metric_rows": int(med("metric_rows")),
        "bytes_per_instance_day": med("bytes_per_instance_day"),
        "base_rss_mb": round(base_rss, 1),
        "peak_rss_mb": round(med("peak_rss_mb"), 1),
        "peak_rss_max_mb": round(max(r["peak_rss_mb"] for r in results), 1),
        "peak_rss_method": peak_method,
        "cpu_s": med("cpu_s"),
        "sim_cpu_s": med("sim_cpu_s"),
        "gateway_max_in_flight": max(r["gateway_max_in_flight"] for r in results),
        "accounts_ok": min(r["accounts_ok"] for r in results),
        "failed_runs": sum(1 for r in results if r["failed"]),
    }
    echo(json.dumps(summary))
    return summary
