"""The simulator on a real socket, as a separate process, the fleet scenario and determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from monitor.clock import ManualClock
from monitor.sim import FleetSim, SimServer, create_app
from monitor.sim.server import build

ROOT = Path(__file__).resolve().parent.parent
LIST = "/gpu-instance/openapi/v1/gpu/instances"


def test_real_socket_server(sim_server: SimServer) -> None:
    assert sim_server.url.startswith("http://127.0.0.1:")
    assert sim_server.port > 0
    with httpx.Client(base_url=sim_server.url, timeout=5) as client:
        r = client.get(
            LIST, params={"pageSize": 10, "pageNum": 0}, headers={"Authorization": "Bearer k"}
        )
        assert r.status_code == 200
        assert r.json()["total"] == 11
        assert isinstance(r.json()["instances"][0]["gpuNum"], str)
        r = client.get(LIST, params={"pageSize": 10, "pageNum": 0})
        assert r.status_code == 401 and r.json()["reason"] == "UNAUTHORIZED"
    assert sim_server.sim.scenario == "demo"


def test_server_stops_and_frees_the_port(demo_sim: FleetSim) -> None:
    with SimServer(create_app(demo_sim)) as server:
        url = server.url
        assert httpx.get(f"{url}/_sim/clock", timeout=5).status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/_sim/clock", timeout=1)


def test_clock_shared_between_test_and_server(sim_server: SimServer, clock: ManualClock) -> None:
    clock.advance(3600)
    r = httpx.get(f"{sim_server.url}/_sim/clock", timeout=5)
    assert r.json()["now"].startswith("2026-11-20T13:00:00")


def test_apprise_json_sink_over_socket(sim_server: SimServer) -> None:
    import apprise

    notifier = apprise.Apprise()
    host = sim_server.url.removeprefix("http://")
    assert notifier.add(f"json://{host}/_sim/notify")
    assert notifier.notify(title="low balance", body="runway 12 h")
    got = httpx.get(f"{sim_server.url}/_sim/notifications", timeout=5).json()["notifications"]
    assert got[0]["body"]["title"] == "low balance"
    assert got[0]["body"]["message"] == "runway 12 h"


def test_same_seed_same_fleet() -> None:
    start = datetime(2026, 11, 20, 12, tzinfo=UTC)

    def snapshot(seed: int) -> list[tuple]:
        sim = FleetSim(ManualClock(start), scenario="fleet", instances=300, seed=seed)
        return [
            (i.id, i.product_id, i.cluster_id, i.gpu_num, i.billing_mode, i.status, i.runs)
            for i in sim.instances()
        ] + [sim.balance_10k()]

    assert snapshot(3) == snapshot(3)
    assert snapshot(3) != snapshot(4)


async def test_same_seed_same_metrics() -> None:
    start = datetime(2026, 11, 20, 12, tzinfo=UTC)

    async def fetch(seed: int) -> dict:
        sim = FleetSim(ManualClock(start), scenario="fleet", instances=50, seed=seed)
        now = sim.now_ts()
        transport = httpx.ASGITransport(app=create_app(sim))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://s", headers={"Authorization": "Bearer k"}
        ) as c:
            r = await c.get(
                "/openapi/v1/metrics/gpu/instance",
                params={"instanceId": "fleet-00001", "startTime": now - 3600, "endTime": now},
            )
        return r.json()

    assert await fetch(5) == await fetch(5)


def test_fleet_scenario_mix() -> None:
    sim = FleetSim(
        ManualClock(datetime(2026, 11, 20, tzinfo=UTC)), scenario="fleet", instances=2000
    )
    items = sim.instances()
    assert len(items) == 2000
    statuses = [i.status for i in items]
    assert statuses.count("running") > 1600
    assert {"exited", "pulling", "pending"} <= set(statuses)
    modes = {i.billing_mode for i in items}
    assert modes == {"onDemand", "monthly", "spot", ""}
    profiles = {i.profiles[0][1] for i in items}
    assert profiles == {"trainer", "inference", "idle", "partial"}
    assert any(i.status_error[0] for i in items)
    runway = sim.balance_10k() / sim.burn_10k_per_hour()
    assert 99 < runway < 101
    assert all(i.created_at <= sim.now_ts() for i in items)


async def test_fleet_5000_pages_fast() -> None:
    sim = FleetSim(
        ManualClock(datetime(2026, 11, 20, tzinfo=UTC)), scenario="fleet", instances=5000
    )
    transport = httpx.ASGITransport(app=create_app(sim))
    started = time.monotonic()
    seen: set[str] = set()
    async with httpx.AsyncClient(
        transport=transport, base_url="http://s", headers={"Authorization": "Bearer k"}
    ) as c:
        for page in range(1, 11):
            body = (await c.get(LIST, params={"pageSize": 500, "pageNum": page})).json()
            seen |= {i["id"] for i in body["instances"]}
    assert len(seen) == 5000 == body["total"]
    assert time.monotonic() - started < 10


def test_standalone_app_has_24h_history() -> None:
    app = build(scenario="fleet", instances=30, seed=1, speed=60.0)
    sim: FleetSim = app.state.sim
    oldest = min(i.created_at for i in sim.instances())
    assert sim.now_ts() - oldest >= 24 * 3600
    first = sim.now_ts()
    time.sleep(0.05)  # wall clock at 60x: 50 ms real is 3 s simulated
    assert sim.now_ts() - first >= 2


def test_python_dash_m_entry_point() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor.sim",
            "--port",
            "0",
            "--scenario",
            "fleet",
            "--instances",
            "40",
            "--seed",
            "2",
            "--latency-ms",
            "1",
            "--max-concurrency",
            "4",
            "--api-key",
            "secret-key",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.removeprefix("listening on ")
        ok = httpx.get(
            f"{url}{LIST}",
            params={"pageSize": 100, "pageNum": 1},
            headers={"Authorization": "Bearer secret-key"},
            timeout=5,
        )
        assert ok.json()["total"] == 40
        bad = httpx.get(f"{url}/v3/user", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert bad.status_code == 403
        faults = httpx.get(f"{url}/_sim/faults", timeout=5).json()
        assert faults["max_concurrency"] == 4 and faults["latency_ms"] == 1
        assert json.loads(httpx.get(f"{url}/_sim/summary", timeout=5).text)["instances"] == 40
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode is not None
