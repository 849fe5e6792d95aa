"""Each quirk listed in monitor.sim.app's docstring is really emitted (wire-format.md §1.3-1.7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from starlette.applications import Starlette

from monitor.sim import Faults, FleetSim, create_app

GPU = "/gpu-instance/openapi/v1"


@pytest.fixture
async def client(sim_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app),
        base_url="http://sim",
        headers={"Authorization": "Bearer k"},
    ) as c:
        yield c


async def all_instances(client: httpx.AsyncClient) -> dict[str, dict]:
    r = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 100, "pageNum": 1})
    return {i["id"]: i for i in r.json()["instances"]}


async def test_numbers_as_strings(client: httpx.AsyncClient) -> None:
    for inst in (await all_instances(client)).values():
        for key in ("gpuNum", "cpuNum", "memory", "endTime"):
            assert isinstance(inst[key], str), (inst["id"], key)
            int(inst[key])  # and numeric


async def test_empty_string_for_null(client: httpx.AsyncClient) -> None:
    inst = await all_instances(client)
    assert inst["demo-pending"]["billingMode"] == ""
    assert inst["demo-trainer"]["spotStatus"] == ""
    assert inst["demo-multigpu"]["spotStatus"] != ""
    assert inst["demo-stuck"]["lastStartedAt"] == ""


async def test_end_time_minus_one_and_zero(client: httpx.AsyncClient) -> None:
    inst = await all_instances(client)
    assert inst["demo-trainer"]["endTime"] == "-1"
    assert inst["demo-stopped"]["endTime"] == "0"
    assert inst["demo-pending"]["endTime"] == "0"
    assert int(inst["demo-subscription"]["endTime"]) > 1_700_000_000


async def test_pending_status(client: httpx.AsyncClient) -> None:
    assert (await all_instances(client))["demo-pending"]["status"] == "pending"


async def test_unknown_extra_keys(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    inst = (await all_instances(client))["demo-trainer"]
    assert {"autoRenew", "instanceGroupId", "maintainStatus"} <= set(inst)
    product = (await client.get(f"{GPU}/products")).json()["data"][0]
    assert "gpuMemory" in product
    detail = (await client.get("/openapi/v1/billing/balance/detail")).json()
    assert "currency" in detail
    now = demo_sim.now_ts()
    bill = (
        await client.get(
            "/openapi/v1/billing/bill/list",
            params={"cycleType": "Hour", "productCategory": "gpu", "startTime": now - 7200},
        )
    ).json()["bills"][0]
    assert "amountDecimal" in bill
    # the simulator's invention, sent by no known source (issue 8): gone
    assert "billNumUnit" not in bill


async def test_three_money_scales(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    # product price: 1/100000 USD per GPU-hour
    product = (
        await client.get(f"{GPU}/products", params={"clusterId": "1", "productName": "4090"})
    ).json()["data"][0]
    usd_per_gpu_hour = Decimal(product["price"]) / 100000
    assert usd_per_gpu_hour == Decimal("0.35")
    # bill amounts: 1/10000 USD; payAmountDisplay: USD
    now = demo_sim.now_ts()
    rows = (
        await client.get(
            "/openapi/v1/billing/bill/list",
            params={
                "cycleType": "Hour",
                "productCategory": "gpu",
                "ownerId": "demo-notebook",
                "startTime": now - 7200,
            },
        )
    ).json()["bills"]
    bill = rows[0]
    assert Decimal(bill["payAmount"]) / 10000 == usd_per_gpu_hour  # one GPU, one hour
    assert Decimal(str(bill["payAmountDisplay"])) == usd_per_gpu_hour
    # balance: 1/10000 USD, as a string in balance/detail and an int in /v3/user
    detail = (await client.get("/openapi/v1/billing/balance/detail")).json()
    assert Decimal(detail["availableBalance"]) / 10000 == Decimal(demo_sim.balance_10k()) / 10000


async def test_business_errors_are_400(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{GPU}/gpu/instance/stop", json={"instanceId": "ghost"})
    assert (r.status_code, r.json()["reason"]) == (400, "RESOURCE_NOT_FOUND")
    r = await client.post(
        f"{GPU}/gpu/instance/renewInstance", json={"instanceId": "demo-trainer", "month": 1}
    )
    assert (r.status_code, r.json()["reason"]) == (400, "UNSUPPORTED_BILLING_MODE")


async def test_429_has_no_retry_after(demo_sim: FleetSim) -> None:
    app = create_app(demo_sim, Faults(rate_limit_rps=1))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sim",
        headers={"Authorization": "Bearer k"},
    ) as c:
        responses = [await c.get("/v3/user") for _ in range(5)]
    limited = [r for r in responses if r.status_code == 429]
    assert limited
    for r in limited:
        assert r.json()["reason"] == "RATE_LIMIT_EXCEEDED"
        assert "retry-after" not in r.headers
        assert not any(h.lower().startswith("x-ratelimit") for h in r.headers)
