"""Fault injection: rate limit, server errors, malformed bodies, timeouts, latency queueing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from monitor.sim import Faults, FleetSim, create_app
from monitor.sim.faults import TokenBucket

USER = "/v3/user"


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sim",
        headers={"Authorization": "Bearer k"},
    )


@pytest.fixture
async def faulty(demo_sim: FleetSim) -> AsyncIterator[tuple[httpx.AsyncClient, Faults]]:
    faults = Faults(seed=1)
    async with client_for(create_app(demo_sim, faults)) as c:
        yield c, faults


def test_token_bucket_refills_with_time() -> None:
    now = [0.0]
    bucket = TokenBucket(clock=lambda: now[0])
    assert [bucket.allow(2) for _ in range(3)] == [True, True, False]
    now[0] += 0.5
    assert bucket.allow(2) and not bucket.allow(2)
    assert bucket.allow(0)  # 0 = unlimited


async def test_429_storm(faulty) -> None:
    client, faults = faulty
    faults.rate_limit_rps = 2
    statuses = [(await client.get(USER)).status_code for _ in range(20)]
    assert statuses.count(429) >= 15
    assert statuses[0] == 200
    faults.rate_limit_rps = 0
    assert (await client.get(USER)).status_code == 200


async def test_error_rate_gives_500_and_503(faulty) -> None:
    client, faults = faulty
    faults.error_rate = 1.0
    responses = [await client.get(USER) for _ in range(30)]
    reasons = {(r.status_code, r.json()["reason"]) for r in responses}
    assert reasons == {(500, "UNKNOWN"), (503, "SERVICE_NOT_AVAILABLE")}
    faults.error_rate = 0.3
    statuses = [(await client.get(USER)).status_code for _ in range(200)]
    assert 30 < sum(s != 200 for s in statuses) < 90


async def test_error_rate_is_seeded(demo_sim: FleetSim) -> None:
    async def run() -> list[int]:
        async with client_for(create_app(demo_sim, Faults(error_rate=0.5, seed=9))) as c:
            return [(await c.get(USER)).status_code for _ in range(40)]

    assert await run() == await run()


async def test_malformed_body(faulty) -> None:
    client, faults = faulty
    faults.malformed_rate = 1.0
    r = await client.get("/openapi/v1/billing/balance/detail")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    # errors stay well-formed
    r = await client.get("/gpu-instance/openapi/v1/gpu/instance", params={"instanceId": "x"})
    assert r.status_code == 400 and r.json()["reason"] == "RESOURCE_NOT_FOUND"


async def test_timeout_hangs_after_doing_the_work(faulty, demo_sim: FleetSim) -> None:
    client, faults = faulty
    faults.timeout_rate = 1.0
    faults.hang_seconds = 5
    stop = client.post(
        "/gpu-instance/openapi/v1/gpu/instance/stop", json={"instanceId": "demo-notebook"}
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stop, timeout=0.2)
    # the outcome is unknown to the caller, but the stop was carried out
    assert demo_sim.instance("demo-notebook").status == "toStop"


async def test_fail_next_per_path(faulty) -> None:
    client, faults = faulty
    faults.fail_next("/openapi/v1/billing", 429, "LIST_BILL_TOO_FAST", count=2)
    url = "/openapi/v1/billing/balance/detail"
    assert (await client.get(USER)).status_code == 200  # other paths unaffected
    first, second, third = [await client.get(url) for _ in range(3)]
    assert (first.status_code, first.json()["reason"]) == (429, "LIST_BILL_TOO_FAST")
    assert second.status_code == 429
    assert third.status_code == 200


async def test_faults_control_endpoint(faulty) -> None:
    client, faults = faulty
    r = await client.post(
        "/_sim/faults",
        json={
            "latency_ms": 5,
            "error_rate": 0.0,
            "fail_next": {"path_prefix": "/v3/user", "status": 503, "reason": "X", "count": 1},
        },
    )
    assert r.status_code == 200
    assert faults.latency_ms == 5
    assert r.json()["fail_next"][0]["count"] == 1
    assert (await client.get(USER)).status_code == 503
    r = await client.post("/_sim/faults", json={"bogus": 1})
    assert r.status_code == 400


async def test_latency_queues_beyond_max_concurrency(demo_sim: FleetSim) -> None:
    faults = Faults(latency_ms=100, max_concurrency=2)
    app = create_app(demo_sim, faults)
    async with client_for(app) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get(USER) for _ in range(6)))
        elapsed = time.monotonic() - started
        stats = (await client.get("/_sim/stats")).json()
    assert all(r.status_code == 200 for r in responses)
    # 6 requests, 2 at a time, 100 ms each: three waves
    assert 0.29 < elapsed < 1.5
    assert stats["max_in_flight"] == 2
    assert stats["requests"][USER] == {"200": 6}


async def test_latency_without_limit_runs_in_parallel(demo_sim: FleetSim) -> None:
    app = create_app(demo_sim, Faults(latency_ms=100))
    async with client_for(app) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.get(USER) for _ in range(6)))
        elapsed = time.monotonic() - started
    assert elapsed < 0.28


async def test_stats_count_by_path_and_status(faulty) -> None:
    client, _faults = faulty
    await client.get(USER)
    await client.get("/gpu-instance/openapi/v1/gpu/instance", params={"instanceId": "nope"})
    stats = (await client.get("/_sim/stats")).json()
    assert stats["requests"][USER] == {"200": 1}
    assert stats["requests"]["/gpu-instance/openapi/v1/gpu/instance"] == {"400": 1}
    await client.post("/_sim/stats/reset")
    assert (await client.get("/_sim/stats")).json()["total"] == 0
