"""The simulator gateway: several accounts behind one port, the bearer key picks the fleet, the
gateway's latency and concurrency cap apply to all accounts together."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from monitor.clock import ManualClock
from monitor.sim.accounts import SimAccount, plan_accounts, split_instances
from monitor.sim.gateway import Gateway, build_gateway

LIST = "/gpu-instance/openapi/v1/gpu/instances?pageSize=100&pageNum=1"
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def client(gateway: Gateway, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://sim", headers=headers
    )


def test_instances_are_spread_evenly_and_keys_seeds_follow_the_index() -> None:
    assert split_instances(10, 3) == [4, 3, 3]
    assert split_instances(2, 2) == [1, 1]
    plan = plan_accounts("k", 5, 2, seed=7)
    assert plan == [SimAccount("k-1", 3, 7), SimAccount("k-2", 2, 8)]
    with pytest.raises(ValueError, match="accounts"):
        split_instances(5, 0)


async def test_each_key_sees_its_own_fleet() -> None:
    gateway = build_gateway(plan_accounts("key", 7, 2, seed=3), clock=ManualClock(T0))
    seen = {}
    for key, expected in (("key-1", 4), ("key-2", 3)):
        async with client(gateway, key) as c:
            r = await c.get(LIST)
        assert r.status_code == 200
        body = r.json()
        assert int(body["total"]) == expected
        seen[key] = {(i["id"], i["gpuNum"], i["productName"]) for i in body["instances"]}
    # the same ids (fleet-00000 ...), seeded differently: different machines
    assert seen["key-1"] != seen["key-2"]


@pytest.mark.parametrize("key", ["wrong-key", "", None])
async def test_a_wrong_or_missing_key_is_401_and_reaches_no_fleet(key: str | None) -> None:
    gateway = build_gateway(plan_accounts("key", 4, 2, seed=1), clock=ManualClock(T0))
    async with client(gateway, key) as c:
        r = await c.get(LIST)
        counts = (await c.get("/_sim/gateway")).json()
    assert r.status_code == 401
    assert r.json()["reason"] == "UNAUTHORIZED"
    assert counts["requests"] == 0
    for _, app in gateway.apps:
        assert app.state.stats.as_dict()["total"] == 0


async def test_one_clock_moves_every_fleet() -> None:
    clock = ManualClock(T0)
    gateway = build_gateway(plan_accounts("key", 4, 2, seed=1), clock=clock)
    async with client(gateway, None) as c:
        r = await c.post("/_sim/clock/advance", json={"seconds": 3600})
    assert r.status_code == 200
    assert clock.now() == datetime(2026, 5, 1, 13, tzinfo=UTC)
    for _, app in gateway.apps:
        assert app.state.sim.clock.now() == clock.now()


async def test_the_concurrency_cap_holds_across_accounts() -> None:
    gateway = build_gateway(
        plan_accounts("key", 4, 2, seed=1), clock=ManualClock(T0), latency_ms=20, max_concurrency=3
    )
    c1, c2 = client(gateway, "key-1"), client(gateway, "key-2")
    async with c1, c2:
        answers = await asyncio.gather(*(c.get(LIST) for c in (c1, c2) for _ in range(6)))
        counts = (await c1.get("/_sim/gateway")).json()
    assert [a.status_code for a in answers] == [200] * 12
    assert counts["requests"] == 12
    assert counts["max_in_flight"] == 3  # 12 at once asked, 3 served at once
    assert counts["in_flight"] == 0


def test_keys_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        build_gateway([SimAccount("a", 1, 0), SimAccount("a", 1, 1)], clock=ManualClock(T0))
