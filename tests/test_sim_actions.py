"""Actions change the simulated account as the platform does, over simulated time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

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


# ------------------------------------------------------------------------------ issue 9 §7

LAPSING_RATE_10K = 3680  # 4090 in AS-01: $0.368 per hour
LAPSING_MONTH_10K = 1880480  # its 1-month subscription


async def get_inst(client: httpx.AsyncClient, iid: str) -> dict:
    r = await client.get(f"{GPU}/gpu/instance", params={"instanceId": iid})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def truth_of(client: httpx.AsyncClient, iid: str) -> dict:
    truth = (await client.get("/_sim/truth")).json()
    return dict(next(i for i in truth["instances"] if i["id"] == iid))


async def fixed_bills(client: httpx.AsyncClient, iid: str, **params: int) -> list[dict]:
    r = await client.get("/openapi/v1/billing/bill/monthly/list", params={"ownerId": iid, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["bills"])


def kratos(status: int, reason: str) -> dict:
    """The error body's shape (wire-format §1.6), the message left free."""
    return {"code": status, "reason": reason, "metadata": {}}


def shape(body: dict) -> dict:
    assert isinstance(body.get("message"), str) and body["message"]
    return {k: v for k, v in body.items() if k != "message"}


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("renewInstance", {"instanceId": "demo-lapsing", "month": 2}),
        ("renewInstance", {"instanceId": "demo-lapsing", "month": 24}),
        ("renewInstance", {"instanceId": "demo-lapsing", "month": "1"}),
        ("transToMonthlyInstance", {"instanceId": "demo-allmonth", "month": 5}),
        (
            "setAutoRenew",
            {"instanceIds": ["demo-lapsing"], "autoRenew": True, "autoRenewMonth": 2},
        ),
    ],
)
async def test_month_counts_must_be_ones_the_product_lists(
    client: httpx.AsyncClient, demo_sim: FleetSim, action: str, body: dict
) -> None:
    offered = [
        m["month"]
        for m in (await client.get(f"{GPU}/products", params={"productName": "4090"})).json()[
            "data"
        ][0]["monthlyPrice"]
    ]
    assert offered == [1, 3, 6, 12]
    before = await balance(client)
    r = await client.post(f"{ACT}/{action}", json=body)
    assert r.status_code == 400
    assert shape(r.json()) == kratos(400, "VALIDATOR_PARAM")
    assert "1, 3, 6, 12" in r.json()["message"]
    assert await balance(client) == before
    assert demo_sim.instance("demo-lapsing").auto_renew is False


async def test_renew_for_three_months_moves_end_time_and_bills_the_period(
    client: httpx.AsyncClient, demo_sim: FleetSim
) -> None:
    await client.post("/_sim/topup", json={"usd": 1000})
    end = int((await get_inst(client, "demo-lapsing"))["endTime"])
    before = await balance(client)
    r = await client.post(f"{ACT}/renewInstance", json={"instanceId": "demo-lapsing", "month": 3})
    assert (r.status_code, r.json()) == (200, {})
    assert int((await get_inst(client, "demo-lapsing"))["endTime"]) == add_months(end, 3)
    # 3 months at the 3-month discount: 36800 x 730 x 0.67 = 17998900 a month (1/100000 USD)
    assert before - await balance(client) == 3 * 17998900 // 10
    bills = await fixed_bills(client, "demo-lapsing")
    renewal = [b for b in bills if b["tradeType"] == "monthly_re_buy"]
    assert len(renewal) == 1
    assert (renewal[0]["startTime"], renewal[0]["endTime"]) == (
        str(end),
        str(add_months(end, 3) - 1),
    )
    assert (renewal[0]["billNum"], renewal[0]["amount"]) == ("3", str(3 * 17998900 // 10))
    assert renewal[0]["createTime"] == str(demo_sim.now_ts())


async def test_renew_and_convert_short_of_balance_charge_nothing(
    client: httpx.AsyncClient, demo_sim: FleetSim
) -> None:
    await client.post("/_sim/topup", json={"usd": -(await balance(client)) / 10000 + 1})
    before = await balance(client)
    end = (await get_inst(client, "demo-lapsing"))["endTime"]
    for action, iid in (
        ("renewInstance", "demo-lapsing"),
        ("transToMonthlyInstance", "demo-trainer"),
    ):
        r = await client.post(f"{ACT}/{action}", json={"instanceId": iid, "month": 1})
        assert r.status_code == 400
        assert shape(r.json()) == kratos(400, "BALANCE_NOT_ENOUGH")
    assert await balance(client) == before
    assert (await get_inst(client, "demo-lapsing"))["endTime"] == end
    assert (await get_inst(client, "demo-trainer"))["billingMode"] == "onDemand"
    assert [b["tradeType"] for b in await fixed_bills(client, "demo-lapsing")] == [
        "monthly_new_buy"
    ]
    assert await fixed_bills(client, "demo-trainer") == []
    log = (await client.get("/_sim/actions")).json()["actions"]
    assert [(a["path"], a["status"], a["performed"]) for a in log] == [
        ("renewInstance", 400, False),
        ("transToMonthlyInstance", 400, False),
    ]
    assert log[0]["answer"]["reason"] == "BALANCE_NOT_ENOUGH"


async def test_set_auto_renew_is_on_the_wire(client: httpx.AsyncClient) -> None:
    await client.post("/_sim/topup", json={"usd": 1000})
    r = await client.post(
        f"{ACT}/setAutoRenew",
        json={"instanceIds": ["demo-lapsing"], "autoRenew": True, "autoRenewMonth": 3},
    )
    assert (r.status_code, r.json()) == (200, {})
    one = await get_inst(client, "demo-lapsing")
    listed = (await client.get(f"{GPU}/gpu/instances", params={"pageSize": 50})).json()
    item = next(i for i in listed["instances"] if i["id"] == "demo-lapsing")
    for inst in (one, item):
        assert (inst["autoRenew"], inst["autoRenewMonth"]) == (True, 3)
    r = await client.post(
        f"{ACT}/setAutoRenew", json={"instanceIds": ["demo-lapsing"], "autoRenew": False}
    )
    assert r.status_code == 200
    assert (await get_inst(client, "demo-lapsing"))["autoRenew"] is False


async def test_auto_renew_that_cannot_be_paid_falls_back_to_pay_as_you_go(
    client: httpx.AsyncClient, clock: ManualClock, demo_sim: FleetSim
) -> None:
    """The console: "auto-charge 3 days before expiry ... switch to pay-as-you-go if payment
    fails" (wire-format §7.4); the instance keeps running, billed by the hour."""
    end = int((await get_inst(client, "demo-lapsing"))["endTime"])
    await client.post("/_sim/topup", json={"usd": -(await balance(client)) / 10000 + 100})
    r = await client.post(
        f"{ACT}/setAutoRenew",
        json={"instanceIds": ["demo-lapsing"], "autoRenew": True, "autoRenewMonth": 1},
    )
    assert r.status_code == 200
    # tried at once (2 days before endTime): $100 cannot pay $188.05; tried again at endTime
    inst = await get_inst(client, "demo-lapsing")
    assert (inst["billingMode"], int(inst["endTime"]), inst["autoRenew"]) == ("monthly", end, True)
    assert demo_sim.renewal_due(demo_sim.instance("demo-lapsing")) == end
    assert (await truth_of(client, "demo-lapsing"))["billing_now"] is False

    clock.set(datetime.fromtimestamp(end + 3600, UTC))
    inst = await get_inst(client, "demo-lapsing")
    assert inst["status"] == "running"
    assert (inst["billingMode"], inst["endTime"], inst["autoRenew"]) == ("onDemand", "-1", False)
    bills = await fixed_bills(client, "demo-lapsing", startTime=end - 31 * DAY_S, endTime=end)
    assert [b["tradeType"] for b in bills] == ["monthly_new_buy"]  # no renewal was paid
    truth = await truth_of(client, "demo-lapsing")
    assert truth["billing_mode"] == "onDemand" and truth["end_time"] is None
    assert truth["billing_now"] is True
    assert truth["hourly_cost_usd"] == LAPSING_RATE_10K / 10000
    # billed by usage from endTime on: the hour after it has a usage bill at the on-demand rate
    bills = (
        await client.get(
            "/openapi/v1/billing/bill/list",
            params={
                "cycleType": "Hour",
                "productCategory": "gpu",
                "ownerId": "demo-lapsing",
                "startTime": end - 7200,
                "endTime": end + 3600,
            },
        )
    ).json()["bills"]
    assert [(b["startTime"], b["amount"]) for b in bills] == [(str(end), str(LAPSING_RATE_10K))]
    truth_since = (await client.get("/_sim/truth", params={"since": end - 7200})).json()
    lapsing = next(i for i in truth_since["instances"] if i["id"] == "demo-lapsing")
    assert lapsing["usage_hours_since"] == 1.0 and lapsing["running_hours_since"] == 3.0


async def test_stop_of_a_subscription_keeps_its_term(
    client: httpx.AsyncClient, clock: ManualClock, demo_sim: FleetSim
) -> None:
    """The reading documented in monitor.sim.fleet: accepted, exited, nothing saved; startable
    until endTime; lapses at endTime."""
    end = (await get_inst(client, "demo-subscription"))["endTime"]
    r = await client.post(f"{ACT}/stop", json={"instanceId": "demo-subscription"})
    assert (r.status_code, r.json()) == (200, {})
    clock.advance(60)
    inst = await get_inst(client, "demo-subscription")
    assert (inst["status"], inst["billingMode"], inst["endTime"]) == ("exited", "monthly", end)
    before = await balance(client)
    burn = demo_sim.burn_10k_per_hour()
    clock.advance(3600)
    assert before - await balance(client) == round(burn)  # the others' usage only
    r = await client.post(f"{ACT}/start", json={"instanceId": "demo-subscription"})
    assert r.status_code == 200
    clock.advance(30)
    assert (await get_inst(client, "demo-subscription"))["status"] == "running"
    await client.post(f"{ACT}/stop", json={"instanceId": "demo-subscription"})
    clock.set(datetime.fromtimestamp(int(end) + 60, UTC))
    inst = await get_inst(client, "demo-subscription")
    assert (inst["status"], inst["endTime"]) == ("exited", end)
    r = await client.post(f"{ACT}/start", json={"instanceId": "demo-subscription"})
    assert shape(r.json()) == kratos(400, "EXPIRED_OR_BALANCE_NOT_ENOUGH")


async def test_a_stopped_subscription_is_still_auto_renewed(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await client.post("/_sim/topup", json={"usd": 1000})
    end = int((await get_inst(client, "demo-lapsing"))["endTime"])
    await client.post(f"{ACT}/stop", json={"instanceId": "demo-lapsing"})
    clock.advance(60)
    r = await client.post(
        f"{ACT}/setAutoRenew",
        json={"instanceIds": ["demo-lapsing"], "autoRenew": True, "autoRenewMonth": 1},
    )
    assert r.status_code == 200
    inst = await get_inst(client, "demo-lapsing")
    assert (inst["status"], int(inst["endTime"])) == ("exited", add_months(end, 1))
    renewals = [
        b for b in await fixed_bills(client, "demo-lapsing") if b["tradeType"] == "monthly_re_buy"
    ]
    assert [b["amount"] for b in renewals] == [str(LAPSING_MONTH_10K)]


async def test_a_lapsed_subscription_renewed_starts_again(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await client.post("/_sim/topup", json={"usd": 1000})
    end = int((await get_inst(client, "demo-lapsing"))["endTime"])
    clock.set(datetime.fromtimestamp(end + DAY_S, UTC))
    assert (await get_inst(client, "demo-lapsing"))["status"] == "exited"
    r = await client.post(f"{ACT}/renewInstance", json={"instanceId": "demo-lapsing", "month": 1})
    assert r.status_code == 200
    now = end + DAY_S
    assert int((await get_inst(client, "demo-lapsing"))["endTime"]) == add_months(now, 1)
    assert (
        await client.post(f"{ACT}/start", json={"instanceId": "demo-lapsing"})
    ).status_code == 200
    clock.advance(30)
    assert (await get_inst(client, "demo-lapsing"))["status"] == "running"


DAY_S = 86400


# ------------------------------------------------------------------------------ fault switches

RENEW = f"{ACT}/renewInstance"
STOP = f"{ACT}/stop"


async def test_action_5xx_after_carries_the_action_out(
    client: httpx.AsyncClient, demo_sim: FleetSim
) -> None:
    await client.post("/_sim/topup", json={"usd": 1000})
    end = int((await get_inst(client, "demo-lapsing"))["endTime"])
    r = await client.post(
        "/_sim/faults", json={"action_5xx_after": {"path_prefix": RENEW, "count": 1}}
    )
    assert r.json()["action_5xx_after"] == [
        {"path_prefix": RENEW, "count": 1, "status": 500, "reason": "UNKNOWN"}
    ]
    r = await client.post(RENEW, json={"instanceId": "demo-lapsing", "month": 1})
    assert r.status_code == 500
    assert shape(r.json()) == kratos(500, "UNKNOWN")
    # carried out all the same
    assert int((await get_inst(client, "demo-lapsing"))["endTime"]) == add_months(end, 1)
    assert (await client.get("/_sim/faults")).json()["action_5xx_after"] == []
    r = await client.post(RENEW, json={"instanceId": "demo-lapsing", "month": 1})
    assert r.status_code == 200  # used up
    log = (await client.get("/_sim/actions")).json()["actions"]
    assert [(a["status"], a["performed"], a["fault"]) for a in log] == [
        (500, True, "action_5xx_after"),
        (200, True, None),
    ]
    assert log[0]["answer"]["reason"] == "UNKNOWN"


async def test_action_5xx_after_waits_for_an_action_carried_out(
    client: httpx.AsyncClient, sim_app: Starlette
) -> None:
    sim_app.state.faults.fail_after(RENEW, status=503, reason="SERVICE_NOT_AVAILABLE")
    r = await client.post(RENEW, json={"instanceId": "demo-trainer", "month": 1})
    assert r.json()["reason"] == "UNSUPPORTED_BILLING_MODE"  # refused: not carried out
    await client.post("/_sim/topup", json={"usd": 1000})
    r = await client.post(RENEW, json={"instanceId": "demo-lapsing", "month": 1})
    assert (r.status_code, r.json()["reason"]) == (503, "SERVICE_NOT_AVAILABLE")


@pytest.mark.parametrize(
    ("switch", "answer"),
    [
        ({"path_prefix": STOP}, {"code": 1, "reason": "OPERATION_LIMIT"}),
        ({"path_prefix": STOP, "body": {"error": "stop failed"}}, {"error": "stop failed"}),
        (
            {"path_prefix": STOP, "body": {"code": 7, "message": "busy"}, "status": 202},
            {"code": 7, "message": "busy"},
        ),
    ],
)
async def test_action_error_body_is_a_2xx_that_did_nothing(
    client: httpx.AsyncClient, clock: ManualClock, switch: dict, answer: dict
) -> None:
    r = await client.post("/_sim/faults", json={"action_error_body": switch})
    assert r.status_code == 200, r.text
    r = await client.post(STOP, json={"instanceId": "demo-notebook"})
    assert r.status_code == switch.get("status", 200)
    assert {k: v for k, v in r.json().items() if k in answer} == answer
    clock.advance(120)
    assert await status(client, "demo-notebook") == "running"
    log = (await client.get("/_sim/actions")).json()["actions"]
    assert [(a["performed"], a["fault"]) for a in log] == [(False, "action_error_body")]
    assert log[0]["answer"] == r.json()


async def test_action_error_body_after_carrying_it_out(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await client.post(
        "/_sim/faults",
        json={
            "action_error_body": {"path_prefix": STOP, "performed": True, "body": {"error": "x"}}
        },
    )
    r = await client.post(STOP, json={"instanceId": "demo-notebook"})
    assert (r.status_code, r.json()) == (200, {"error": "x"})
    clock.advance(120)
    assert await status(client, "demo-notebook") == "exited"


async def test_stuck_stop_stays_stopping_and_keeps_billing(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await client.post("/_sim/faults", json={"stuck_stop": {"instance_id": "demo-notebook"}})
    r = await client.post(STOP, json={"instanceId": "demo-stopped"})  # refused: not used up
    assert r.status_code == 400
    r = await client.post(STOP, json={"instanceId": "demo-trainer"})  # another instance
    assert r.status_code == 200
    r = await client.post(STOP, json={"instanceId": "demo-notebook"})
    assert (r.status_code, r.json()) == (200, {})
    assert (await client.get("/_sim/faults")).json()["stuck_stop"] == []
    clock.advance(3600)
    assert await status(client, "demo-notebook") == "stopping"
    assert await status(client, "demo-trainer") == "exited"
    truth = await truth_of(client, "demo-notebook")
    assert truth["status"] == "stopping" and truth["billing_now"] is True
    r = await client.post(STOP, json={"instanceId": "demo-notebook"})
    assert r.json()["reason"] == "DEPENDENT_RESOURCE_STATE"
    log = (await client.get("/_sim/actions")).json()["actions"]
    assert [a["fault"] for a in log] == [None, None, "stuck_stop", None]


@pytest.mark.parametrize(
    "bad",
    [
        {"action_5xx_after": {"path_prefix": RENEW, "status": 200}},
        {"action_5xx_after": {"path_prefix": RENEW, "count": 0}},
        {"action_error_body": {"path_prefix": STOP, "status": 500}},
        {"action_error_body": {"path_prefix": STOP, "body": [1]}},
        {"action_error_body": {"path_prefix": STOP, "performed": "yes"}},
        {"stuck_stop": ["demo-notebook"]},
        {"action_delay": {"path_prefix": STOP, "seconds": 0}},
        {"action_delay": {"path_prefix": STOP}},
        {"stuck_stops": {}},
        {"action_5xx_after": {"count": 1}},
    ],
)
async def test_fault_switches_reject_bad_settings(client: httpx.AsyncClient, bad: dict) -> None:
    r = await client.post("/_sim/faults", json=bad)
    assert (r.status_code, r.json()["reason"]) == (400, "VALIDATOR_PARAM")


async def test_every_action_request_is_logged_with_its_answer(
    client: httpx.AsyncClient, sim_app: Starlette
) -> None:
    sim_app.state.faults.fail_next(STOP, 429, "RATE_LIMIT_EXCEEDED")
    await client.post(STOP, json={"instanceId": "demo-notebook"})
    await client.post(STOP, json={"instanceId": "demo-notebook"}, headers={"Authorization": ""})
    await client.post(STOP, content=b"{oops")
    await client.post(STOP, json={"instanceId": "demo-notebook"})
    log = (await client.get("/_sim/actions")).json()["actions"]
    assert [(a["status"], a["result"], a["performed"], a["fault"]) for a in log] == [
        (429, "RATE_LIMIT_EXCEEDED", False, "fail_next"),
        (401, "UNAUTHORIZED", False, None),
        (400, "INVALID_REQUEST_BODY", False, None),
        (200, "ok", True, None),
    ]
    assert log[2]["body"] == "{oops"
    assert all(a["path"] == "stop" and a["time"].startswith("2026-11-20T12:00:00") for a in log)
    assert log[3]["answer"] == {} and log[3]["body"] == {"instanceId": "demo-notebook"}
