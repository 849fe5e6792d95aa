"""Actions change the simulated account as the platform does, over simulated time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from monitor.clock import ManualClock
from monitor.sim import FleetSim
from monitor.sim.fleet import add_months

GPU = "/gpu-instance/openapi/v1"
ACT = f"{GPU}/gpu/instance"


@pytest.fixture
async def client(sim_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app),
        base_url="http://sim",
        headers={"Authorization": "Bearer k"},
    ) as c:
        yield c


async def status(client: httpx.AsyncClient, iid: str) -> str:
    r = await client.get(f"{GPU}/gpu/instance", params={"instanceId": iid})
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


async def balance(client: httpx.AsyncClient) -> int:
    r = await client.get("/openapi/v1/billing/balance/detail")
    return int(r.json()["availableBalance"])


async def test_stop_goes_through_to_stop_and_stopping(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    r = await client.post(f"{ACT}/stop", json={"instanceId": "demo-notebook"})
    assert r.status_code == 200 and r.json() == {}
    assert await status(client, "demo-notebook") == "toStop"
    clock.advance(30)
    assert await status(client, "demo-notebook") == "stopping"
    clock.advance(30)
    assert await status(client, "demo-notebook") == "exited"


async def test_stop_ends_billing_and_metrics(
    client: httpx.AsyncClient, clock: ManualClock, demo_sim: FleetSim
) -> None:
    burn_before = demo_sim.burn_10k_per_hour()
    await client.post(f"{ACT}/stop", json={"instanceId": "demo-notebook"})
    clock.advance(3600)  # a jump applies the transitions at their own times
    assert await status(client, "demo-notebook") == "exited"
    # 1 GPU x $0.35/h stopped: burn is 3500 lower
    assert burn_before - demo_sim.burn_10k_per_hour() == 3500
    now = demo_sim.now_ts()
    r = await client.get(
        "/openapi/v1/metrics/gpu/instance",
        params={"instanceId": "demo-notebook", "startTime": now - 600, "endTime": now},
    )
    assert r.json()["gpuUtilization"]["avg"] == []
    inst = demo_sim.instance("demo-notebook")
    assert inst.runs[-1][1] == now - 3600 + 60  # billed until it reached exited


async def test_start_and_restart(client: httpx.AsyncClient, clock: ManualClock) -> None:
    r = await client.post(f"{ACT}/start", json={"instanceId": "demo-stopped"})
    assert r.status_code == 200
    assert await status(client, "demo-stopped") == "toStart"
    clock.advance(30)
    assert await status(client, "demo-stopped") == "running"
    r = await client.post(f"{ACT}/restart", json={"instanceId": "demo-stopped"})
    assert r.status_code == 200
    assert await status(client, "demo-stopped") == "toRestart"
    clock.advance(10)
    assert await status(client, "demo-stopped") == "restarting"
    clock.advance(20)
    assert await status(client, "demo-stopped") == "running"


async def test_wrong_state_is_rejected(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{ACT}/start", json={"instanceId": "demo-trainer"})
    assert (r.status_code, r.json()["reason"]) == (400, "DEPENDENT_RESOURCE_STATE")
    r = await client.post(f"{ACT}/stop", json={"instanceId": "demo-stopped"})
    assert r.status_code == 400


async def test_unknown_instance_and_missing_id(client: httpx.AsyncClient) -> None:
    for action in ("stop", "start", "restart", "delete", "renewInstance"):
        r = await client.post(f"{ACT}/{action}", json={"instanceId": "nope", "month": 1})
        assert (r.status_code, r.json()["reason"]) == (400, "RESOURCE_NOT_FOUND"), action
    r = await client.post(f"{ACT}/stop", json={})
    assert (r.status_code, r.json()["reason"]) == (400, "VALIDATOR_PARAM")
    r = await client.post(f"{ACT}/stop", content=b"{not json")
    assert (r.status_code, r.json()["reason"]) == (400, "INVALID_REQUEST_BODY")


async def test_delete(client: httpx.AsyncClient, clock: ManualClock) -> None:
    r = await client.post(f"{ACT}/delete", json={"instanceId": "demo-subscription"})
    assert (r.status_code, r.json()["reason"]) == (400, "PREPAID_INSTANCE_NOT_SUPPORT_RELEASE")
    r = await client.post(f"{ACT}/delete", json={"instanceId": "demo-stuck"})
    assert r.status_code == 200
    assert await status(client, "demo-stuck") == "toRemove"
    clock.advance(30)
    r = await client.get(f"{GPU}/gpu/instance", params={"instanceId": "demo-stuck"})
    assert r.json()["reason"] == "RESOURCE_NOT_FOUND"
    listed = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 50})
    assert listed.json()["total"] == 10


async def test_renew_extends_end_time_and_charges(
    client: httpx.AsyncClient, demo_sim: FleetSim
) -> None:
    end_before = demo_sim.instance("demo-lapsing").end_time
    assert end_before is not None
    before = await balance(client)
    r = await client.post(f"{ACT}/renewInstance", json={"instanceId": "demo-lapsing", "month": 1})
    assert r.status_code == 200 and r.json() == {}
    after = await balance(client)
    # 4090 in AS-01: 36800 x 730 h x 0.70 = 18804800 (1/100000 USD) = 1880480 (1/10000 USD)
    assert before - after == 1880480
    inst = (await client.get(f"{GPU}/gpu/instance", params={"instanceId": "demo-lapsing"})).json()
    assert int(inst["endTime"]) == add_months(end_before, 1)
    fixed = (
        await client.get(
            "/openapi/v1/billing/bill/monthly/list", params={"ownerId": "demo-lapsing"}
        )
    ).json()["bills"]
    assert [b["tradeType"] for b in fixed] == ["monthly_new_buy", "monthly_re_buy"]
    assert fixed[1]["amount"] == "1880480"


async def test_renew_errors(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{ACT}/renewInstance", json={"instanceId": "demo-trainer", "month": 1})
    assert (r.status_code, r.json()["reason"]) == (400, "UNSUPPORTED_BILLING_MODE")
    r = await client.post(
        f"{ACT}/renewInstance", json={"instanceId": "demo-subscription", "month": 0}
    )
    assert (r.status_code, r.json()["reason"]) == (400, "VALIDATOR_PARAM")
    # an H100 for 12 months costs far more than the demo balance
    before = await balance(client)
    r = await client.post(
        f"{ACT}/renewInstance", json={"instanceId": "demo-subscription", "month": 12}
    )
    assert (r.status_code, r.json()["reason"]) == (400, "BALANCE_NOT_ENOUGH")
    assert await balance(client) == before  # nothing charged


async def test_convert_to_monthly(client: httpx.AsyncClient, demo_sim: FleetSim, clock) -> None:
    burn = demo_sim.burn_10k_per_hour()
    r = await client.post(
        f"{ACT}/transToMonthlyInstance", json={"instanceId": "demo-allmonth", "month": 1}
    )
    assert r.status_code == 200
    inst = (await client.get(f"{GPU}/gpu/instance", params={"instanceId": "demo-allmonth"})).json()
    assert inst["billingMode"] == "monthly"
    assert int(inst["endTime"]) == add_months(demo_sim.now_ts(), 1)
    assert demo_sim.burn_10k_per_hour() == burn - 3500  # no more usage billing
    before = await balance(client)
    clock.advance(3600)
    assert await balance(client) == before - round(burn - 3500)
    r = await client.post(
        f"{ACT}/transToMonthlyInstance", json={"instanceId": "demo-allmonth", "month": 1}
    )
    assert (r.status_code, r.json()["reason"]) == (400, "UNSUPPORTED_BILLING_MODE")
    r = await client.post(
        f"{ACT}/transToMonthlyInstance", json={"instanceId": "demo-multigpu", "month": 12}
    )
    assert r.json()["reason"] in ("UNSUPPORTED_BILLING_MODE", "BALANCE_NOT_ENOUGH")
    r = await client.post(
        f"{ACT}/transToMonthlyInstance", json={"instanceId": "demo-inference", "month": 12}
    )
    assert (r.status_code, r.json()["reason"]) == (400, "BALANCE_NOT_ENOUGH")


async def test_subscription_expires_unless_auto_renewed(
    client: httpx.AsyncClient, clock: ManualClock, demo_sim: FleetSim
) -> None:
    lapsing_end = demo_sim.instance("demo-lapsing").end_time
    r = await client.post(
        f"{ACT}/setAutoRenew",
        json={"instanceIds": ["demo-lapsing"], "autoRenew": True, "autoRenewMonth": 1},
    )
    assert r.status_code == 200
    # charged 3 days before endTime (wire-format §7.4): 2 days before, that is at once
    assert demo_sim.instance("demo-lapsing").end_time == add_months(lapsing_end or 0, 1)
    r = await client.post(
        f"{ACT}/setAutoRenew",
        json={"instanceIds": ["demo-trainer"], "autoRenew": True, "autoRenewMonth": 1},
    )
    assert r.json()["reason"] == "UNSUPPORTED_BILLING_MODE"
    r = await client.post("/_sim/topup", json={"usd": 2000})
    assert r.status_code == 200
    clock.advance(days=3, hours=1)
    assert await status(client, "demo-lapsing") == "running"
    assert demo_sim.instance("demo-lapsing").end_time == add_months(lapsing_end or 0, 1)
    # demo-subscription (no auto-renew) expired after 3 days
    assert await status(client, "demo-subscription") == "exited"
    fixed = (
        await client.get("/openapi/v1/billing/bill/monthly/list", params={"category": "gpu"})
    ).json()["bills"]
    # the default window is the last 31 days: the first purchase has dropped out of it
    assert [b["tradeType"] for b in fixed if b["ownerID"] == "demo-lapsing"] == ["monthly_re_buy"]


async def test_action_log(client: httpx.AsyncClient) -> None:
    await client.post(f"{ACT}/stop", json={"instanceId": "demo-notebook"})
    await client.post(f"{ACT}/renewInstance", json={"instanceId": "demo-trainer", "month": 1})
    log = (await client.get("/_sim/actions")).json()["actions"]
    assert [(a["path"], a["status"], a["result"]) for a in log] == [
        ("stop", 200, "ok"),
        ("renewInstance", 400, "UNSUPPORTED_BILLING_MODE"),
    ]
    assert log[0]["body"] == {"instanceId": "demo-notebook"}
    assert log[0]["time"].startswith("2026-11-20T12:00:00")


async def test_control_clock_and_profile(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    r = await client.post("/_sim/clock/advance", json={"seconds": 120})
    assert r.json()["now"].startswith("2026-11-20T12:02:00")
    r = await client.post("/_sim/clock/set", json={"time": "2026-11-20T13:00:00Z"})
    assert r.json()["now"].startswith("2026-11-20T13:00:00")
    r = await client.post("/_sim/profile", json={"instance_id": "demo-notebook", "profile": "x"})
    assert r.status_code == 400
    r = await client.post(
        "/_sim/profile", json={"instance_id": "demo-notebook", "profile": "trainer"}
    )
    assert r.status_code == 200
    await client.post("/_sim/clock/advance", json={"seconds": 1800})
    now = demo_sim.now_ts()
    body = (
        await client.get(
            "/openapi/v1/metrics/gpu/instance",
            params={"instanceId": "demo-notebook", "startTime": now - 3600, "endTime": now},
        )
    ).json()
    values = [p["value"] for p in body["gpuUtilization"]["avg"]]
    assert max(values[:100]) <= 2  # before the change: still idle
    assert sum(values[-60:]) / 60 > 50  # after: busy


async def test_notification_sink(client: httpx.AsyncClient) -> None:
    payload = {"version": "1.0", "title": "t", "message": "m", "attachments": [], "type": "info"}
    r = await client.post("/_sim/notify", json=payload)
    assert r.status_code == 200
    got = (await client.get("/_sim/notifications")).json()["notifications"]
    assert [n["body"] for n in got] == [payload]
