"""The simulator answers every read endpoint in the raw Novita wire format (wire-format.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from monitor.clock import ManualClock
from monitor.sim import FleetSim, create_app

GPU = "/gpu-instance/openapi/v1"
DEMO_IDS = {
    "demo-trainer",
    "demo-inference",
    "demo-notebook",
    "demo-multigpu",
    "demo-subscription",
    "demo-lapsing",
    "demo-allmonth",
    "demo-stuck",
    "demo-error",
    "demo-stopped",
    "demo-pending",
}


@pytest.fixture
async def client(sim_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app),
        base_url="http://sim",
        headers={"Authorization": "Bearer test-key"},
    ) as c:
        yield c


async def instances(client: httpx.AsyncClient) -> dict[str, dict]:
    r = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 100, "pageNum": 1})
    assert r.status_code == 200
    return {i["id"]: i for i in r.json()["instances"]}


# ---------------------------------------------------------------------------- auth


async def test_missing_key_is_401_unauthorized(sim_app: Starlette) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app), base_url="http://s"
    ) as c:
        r = await c.get(f"{GPU}/gpu/instances", params={"pageSize": 10, "pageNum": 0})
    assert r.status_code == 401
    assert r.json() == {
        "code": 401,
        "reason": "UNAUTHORIZED",
        "message": r.json()["message"],
        "metadata": {},
    }


async def test_empty_bearer_is_401(sim_app: Starlette) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app),
        base_url="http://s",
        headers={"Authorization": "Bearer "},
    ) as c:
        r = await c.get("/v3/user")
    assert r.status_code == 401
    assert r.json()["reason"] == "UNAUTHORIZED"


async def test_wrong_key_is_403_invalid_api_key(demo_sim: FleetSim) -> None:
    app = create_app(demo_sim, api_key="right-key")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
        wrong = await c.get("/v3/user", headers={"Authorization": "Bearer wrong-key"})
        right = await c.get("/v3/user", headers={"Authorization": "Bearer right-key"})
    assert wrong.status_code == 403
    assert wrong.json()["reason"] == "INVALID_API_KEY"
    assert wrong.json()["code"] == 403
    assert "right-key" not in wrong.text and "wrong-key" not in wrong.text
    assert right.status_code == 200


async def test_control_endpoints_need_no_key(sim_app: Starlette) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app), base_url="http://s"
    ) as c:
        r = await c.get("/_sim/clock")
    assert r.status_code == 200
    assert r.json()["now"].startswith("2026-11-20T12:00:00")


async def test_unknown_path_is_enveloped_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/gpu-instance/openapi/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["reason"] == "API_NOT_FOUND"


# ---------------------------------------------------------------------------- instances


async def test_list_instances_wire_format(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 100, "pageNum": 0})
    body = r.json()
    assert r.status_code == 200
    assert body["total"] == len(DEMO_IDS)
    assert {i["id"] for i in body["instances"]} == DEMO_IDS
    trainer = next(i for i in body["instances"] if i["id"] == "demo-trainer")
    for key in ("cpuNum", "memory", "gpuNum", "endTime", "createdAt", "lastStartedAt"):
        assert isinstance(trainer[key], str), key
    assert trainer["gpuNum"] == "2"
    assert trainer["cpuNum"] == "32"
    assert trainer["status"] == "running"
    assert trainer["billingMode"] == "onDemand"
    assert trainer["productId"] == "4090.16c62g"
    assert isinstance(trainer["rootfsSize"], int)
    assert trainer["statusError"] == {"state": "", "message": ""}
    assert trainer["portMappings"][0] == {"port": 8888, "type": "http"}


async def test_pagination_total_and_empty_page_past_the_end(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    for page in (1, 2, 3):
        r = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 4, "pageNum": page})
        body = r.json()
        assert body["total"] == 11
        seen += [i["id"] for i in body["instances"]]
    assert len(seen) == 11 and set(seen) == DEMO_IDS
    r = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 4, "pageNum": 4})
    assert r.json() == {"instances": [], "total": 11}


async def test_page_zero_is_page_one(client: httpx.AsyncClient) -> None:
    p0 = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 3, "pageNum": 0})
    p1 = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 3, "pageNum": 1})
    p2 = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 3, "pageNum": 2})
    assert p0.json() == p1.json()
    assert p1.json()["instances"] != p2.json()["instances"]


async def test_list_filters(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 50, "status": "exited"})
    assert [i["id"] for i in r.json()["instances"]] == ["demo-stopped"]
    r = await client.get(f"{GPU}/gpu/instances", params={"pageSize": 50, "name": "NOTEBOOK"})
    assert [i["id"] for i in r.json()["instances"]] == ["demo-notebook"]


async def test_bad_page_param_is_400(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{GPU}/gpu/instances", params={"pageSize": "ten"})
    assert r.status_code == 400
    assert r.json()["reason"] == "VALIDATOR_PARAM"


async def test_get_instance_and_unknown_instance(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{GPU}/gpu/instance", params={"instanceId": "demo-multigpu"})
    body = r.json()
    assert body["id"] == "demo-multigpu"
    assert body["gpuNum"] == "8"
    assert body["billingMode"] == "spot"
    assert isinstance(body["node"], list)
    assert isinstance(body["volumeMounts"][0]["size"], int)  # int here, string in the list
    r = await client.get(f"{GPU}/gpu/instance", params={"instanceId": "nope"})
    assert r.status_code == 400
    assert r.json()["reason"] == "RESOURCE_NOT_FOUND"


async def test_demo_cases(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    inst = await instances(client)
    now = demo_sim.now_ts()
    assert inst["demo-stuck"]["status"] == "pulling"
    assert now - int(inst["demo-stuck"]["createdAt"]) == 45 * 60
    assert inst["demo-error"]["status"] == "running"
    assert inst["demo-error"]["statusError"]["state"] == "error"
    assert inst["demo-error"]["statusError"]["message"]
    assert inst["demo-stopped"]["status"] == "exited"
    assert inst["demo-subscription"]["billingMode"] == "monthly"
    assert 2.9 * 86400 < int(inst["demo-subscription"]["endTime"]) - now <= 3 * 86400
    assert 1.9 * 86400 < int(inst["demo-lapsing"]["endTime"]) - now <= 2 * 86400
    assert now - int(inst["demo-allmonth"]["lastStartedAt"]) == 40 * 86400
    assert now - int(inst["demo-notebook"]["lastStartedAt"]) == 5 * 3600
    assert now - int(inst["demo-trainer"]["lastStartedAt"]) > 3 * 3600


# ---------------------------------------------------------------------------- metrics


async def metrics(client: httpx.AsyncClient, iid: str, start: int, end: int, interval: int) -> dict:
    r = await client.get(
        "/openapi/v1/metrics/gpu/instance",
        params={"instanceId": iid, "startTime": start, "endTime": end, "interval": interval},
    )
    assert r.status_code == 200
    return r.json()


async def test_metrics_shape_and_per_gpu_series(client: httpx.AsyncClient, demo_sim) -> None:
    now = demo_sim.now_ts()
    body = await metrics(client, "demo-multigpu", now - 3600, now, 60)
    assert set(body) == {
        "cpuUtilization",
        "memUtilization",
        "rootDiskUtilization",
        "gpuUtilization",
        "gpuMemUtilization",
    }
    point = body["gpuUtilization"]["avg"][0]
    assert isinstance(point["timestamp"], str) and isinstance(point["value"], float | int)
    gpu_ids = body["gpuUtilization"]["gpuIds"]
    assert [g["gpuId"] for g in gpu_ids] == [str(i) for i in range(8)]
    busy = [sum(p["value"] for p in g["items"]) / len(g["items"]) for g in gpu_ids]
    assert all(b > 60 for b in busy[:6])
    assert all(b < 2 for b in busy[6:])
    assert len(body["gpuMemUtilization"]["gpuIds"]) == 8


async def test_metric_lag_one_minute(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    now = demo_sim.now_ts()
    body = await metrics(client, "demo-trainer", now - 600, now, 15)
    stamps = [int(p["timestamp"]) for p in body["gpuUtilization"]["avg"]]
    assert max(stamps) <= now - 60
    assert max(stamps) >= now - 75
    assert stamps == sorted(stamps) and stamps[1] - stamps[0] == 15


async def test_cpu_summed_over_cores(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    now = demo_sim.now_ts()
    body = await metrics(client, "demo-trainer", now - 3600, now, 60)
    values = [p["value"] for p in body["cpuUtilization"]]
    assert max(values) > 100  # 32 cores: the sum exceeds any single percentage
    assert max(values) <= 100 * 32


async def test_invalid_window_replaced_by_default(client: httpx.AsyncClient, demo_sim) -> None:
    now = demo_sim.now_ts()
    expected_default = await metrics(client, "demo-trainer", now - 60, now, 15)
    for start, end, interval in [(now - 30, now, 15), (0, now, 15), (now, now - 3600, 60)]:
        body = await metrics(client, "demo-trainer", start, end, interval)
        assert body == expected_default
    r = await client.get(
        "/openapi/v1/metrics/gpu/instance",
        params={"instanceId": "demo-trainer", "startTime": "yesterday", "interval": "5m"},
    )
    assert r.status_code == 200 and r.json() == expected_default
    # the default window lies entirely inside the lag: at most one point
    assert len(expected_default["gpuUtilization"]["avg"]) <= 1
    # an interval under 15 s becomes 15 s
    body = await metrics(client, "demo-trainer", now - 600, now, 5)
    stamps = [int(p["timestamp"]) for p in body["cpuUtilization"]]
    assert stamps[1] - stamps[0] == 15


async def test_metrics_empty_for_non_running(client: httpx.AsyncClient, demo_sim) -> None:
    now = demo_sim.now_ts()
    for iid in ("demo-stopped", "demo-stuck", "demo-pending"):
        body = await metrics(client, iid, now - 4 * 86400, now - 86400, 60)
        assert body["cpuUtilization"] == []
        assert body["gpuUtilization"]["avg"] == []


async def test_profiles_in_metrics(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    now = demo_sim.now_ts()

    async def gpu(iid: str, hours: float = 1) -> list[float]:
        body = await metrics(client, iid, now - int(hours * 3600), now, 15)
        return [p["value"] for p in body["gpuUtilization"]["avg"]]

    notebook = await gpu("demo-notebook", 4)
    assert max(notebook) <= 2 and 0.5 < sum(notebook) / len(notebook) < 1.5
    trainer = await gpu("demo-trainer", 3)
    assert sum(trainer) / len(trainer) > 75
    assert min(trainer) < 15  # data-loading dips
    # never 30 minutes low: every 30-minute window has a busy average
    per_30 = 120
    for i in range(0, len(trainer) - per_30, 20):
        window = trainer[i : i + per_30]
        assert sum(window) / len(window) > 50
    inference = await gpu("demo-inference", 6)
    assert min(inference) < 15 and max(inference) > 55
    for i in range(0, len(inference) - 60, 10):  # a burst within every 15 minutes
        assert max(inference[i : i + 60]) > 50


# ---------------------------------------------------------------------------- balance


async def test_balance_detail_strings_and_runway(client: httpx.AsyncClient, demo_sim) -> None:
    body = (await client.get("/openapi/v1/billing/balance/detail")).json()
    for key in ("availableBalance", "cashBalance", "creditLimit", "pendingCharges"):
        assert isinstance(body[key], str)
    available = int(body["availableBalance"])
    runway_hours = available / demo_sim.burn_10k_per_hour()
    assert 39.5 < runway_hours < 40.5


async def test_v3_user_credit_balance_is_int(client: httpx.AsyncClient) -> None:
    user = (await client.get("/v3/user")).json()
    detail = (await client.get("/openapi/v1/billing/balance/detail")).json()
    assert isinstance(user["credit_balance"], int)
    assert user["credit_balance"] == int(detail["availableBalance"])
    assert isinstance(user["allow_features"], list)


async def test_balance_debits_as_instances_run(
    client: httpx.AsyncClient, demo_sim: FleetSim, clock: ManualClock
) -> None:
    before = int(
        (await client.get("/openapi/v1/billing/balance/detail")).json()["availableBalance"]
    )
    burn = demo_sim.burn_10k_per_hour()
    clock.advance(hours=1)
    after = int((await client.get("/openapi/v1/billing/balance/detail")).json()["availableBalance"])
    assert abs((before - after) - burn) <= 1


# ---------------------------------------------------------------------------- bills


async def bills(client: httpx.AsyncClient, **params) -> list[dict]:
    r = await client.get("/openapi/v1/billing/bill/list", params=params)
    assert r.status_code == 200, r.text
    return r.json()["bills"]


async def test_hourly_bills_per_instance(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    now = demo_sim.now_ts()
    rows = await bills(
        client,
        cycleType="Hour",
        productCategory="gpu",
        ownerId="demo-trainer",
        startTime=now - 86400,
        endTime=now,
    )
    assert {b["ownerID"] for b in rows} == {"demo-trainer"}
    assert "ownerId" not in rows[0]
    # billNum0 in card-seconds (the default reading, quirk bill-time): 2 GPUs x 3600 s
    full = [b for b in rows if float(b["billNum0"]) == 7200]
    assert len(full) == 3  # 3.5 h running: three full hours, one half hour
    bill = full[0]
    for key in ("amount", "payAmount", "voucherAmount", "startTime", "endTime", "discountPrice0"):
        assert isinstance(bill[key], str), key
    assert int(bill["endTime"]) - int(bill["startTime"]) == 3599
    # 2 GPUs x 35000/100000 USD = $0.70/h = 7000 in 1/10000 USD
    assert bill["amount"] == "7000" and bill["payAmountDisplay"] == 0.7
    assert bill["discountPrice0"] == "3500"
    assert bill["productId"] == "4090.16c62g"


async def test_hourly_bills_cover_24h_for_the_fleet(client: httpx.AsyncClient, demo_sim) -> None:
    now = demo_sim.now_ts()
    rows = await bills(
        client, cycleType="Hour", productCategory="gpu", startTime=now - 86400, endTime=now
    )
    per_hour: dict[str, set[str]] = {}
    for b in rows:
        per_hour.setdefault(b["startTime"], set()).add(b["ownerID"])
    assert len(per_hour) == 24
    assert all("demo-inference" in owners for owners in per_hour.values())
    assert not any(b["ownerID"] in ("demo-subscription", "demo-pending") for b in rows)


async def test_daily_bills_30_days_for_allmonth(client: httpx.AsyncClient, demo_sim) -> None:
    now = demo_sim.now_ts()
    rows = await bills(
        client,
        cycleType="Day",
        productCategory="gpu",
        ownerId="demo-allmonth",
        startTime=now - 31 * 86400,
        endTime=now,
    )
    assert len(rows) >= 30
    assert all(b["amount"] == "84000" for b in rows[:-1])  # $0.35 x 24 h


async def test_summary_bills(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    now = demo_sim.now_ts()
    gpu = await bills(client, cycleType="Day", productCategory="gpu", startTime=now - 86400 * 2)
    summary = await bills(
        client, cycleType="Day", productCategory="summary", startTime=now - 86400 * 2
    )
    assert {b["category"] for b in summary} == {"summary"}
    for s in summary:
        same_day = [int(b["amount"]) for b in gpu if b["startTime"] == s["startTime"]]
        assert abs(int(s["amount"]) - sum(same_day)) <= len(same_day)


async def test_bill_parameter_errors(client: httpx.AsyncClient, demo_sim: FleetSim) -> None:
    url = "/openapi/v1/billing/bill/list"
    r = await client.get(url, params={"productCategory": "gpu"})
    assert (r.status_code, r.json()["reason"]) == (400, "INVALID_BILL_CYCLE")
    r = await client.get(url, params={"cycleType": "Fortnight", "productCategory": "gpu"})
    assert (r.status_code, r.json()["reason"]) == (400, "INVALID_BILL_CYCLE")
    r = await client.get(url, params={"cycleType": "Day"})
    assert (r.status_code, r.json()["reason"]) == (400, "INVALID_PRODUCT_CATEGORY")
    now = demo_sim.now_ts()
    r = await client.get(
        url,
        params={
            "cycleType": "Day",
            "productCategory": "gpu",
            "startTime": now - 32 * 86400,
            "endTime": now,
        },
    )
    assert r.status_code == 400
    assert "31" in r.json()["message"]
    assert await bills(client, cycleType="Day", productCategory="llm") == []


async def test_fixed_term_bills(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi/v1/billing/bill/monthly/list", params={"category": "gpu"})
    rows = r.json()["bills"]
    assert {b["ownerID"] for b in rows} == {"demo-subscription", "demo-lapsing"}
    b = rows[0]
    assert b["tradeMode"] == "monthly" and b["tradeType"] == "monthly_new_buy"
    for key in ("amount", "payAmount", "basePrice", "billNum", "createTime", "startTime"):
        assert isinstance(b[key], str), key
    assert b["payAmountDisplay"] == int(b["payAmount"]) / 10000
    r = await client.get("/openapi/v1/billing/bill/monthly/list", params={"category": "nope"})
    assert r.json()["reason"] == "INVALID_PRODUCT_CATEGORY"


# ---------------------------------------------------------------------------- catalog


async def test_products_prices_per_cluster(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{GPU}/products", params={"clusterId": "1", "productName": "4090"})
    us = r.json()["data"][0]
    r = await client.get(f"{GPU}/products", params={"clusterId": "2", "productName": "4090"})
    eu = r.json()["data"][0]
    assert us["id"] == eu["id"] == "4090.16c62g"
    assert us["price"] == 35000 and isinstance(us["price"], int)
    assert eu["price"] > us["price"]
    assert us["regions"] == ["US-01 (Dallas)"]
    assert isinstance(us["spotPrice"], str)
    assert us["monthlyPrice"][0]["month"] == 1 and isinstance(us["monthlyPrice"][0]["price"], int)
    everything = (await client.get(f"{GPU}/products")).json()["data"]
    assert len(everything) == 5 and len(everything[0]["regions"]) == 3


async def test_cpu_products_clusters_storages(client: httpx.AsyncClient) -> None:
    cpu = (await client.get(f"{GPU}/cpu/products")).json()["data"]
    assert cpu and {"id", "name", "cpuNum", "memorySize", "price"} <= set(cpu[0])
    clusters = (await client.get(f"{GPU}/clusters")).json()["data"]
    assert {c["id"] for c in clusters} == {"1", "2", "3"}
    assert isinstance(clusters[0]["supportNetworkStorage"], bool)
    page1 = await client.get(f"{GPU}/networkstorages/list", params={"pageNo": 1, "pageSize": 2})
    page2 = await client.get(f"{GPU}/networkstorages/list", params={"pageNo": 2, "pageSize": 2})
    assert page1.json()["total"] == 3
    assert len(page1.json()["data"]) == 2 and len(page2.json()["data"]) == 1
    item = page1.json()["data"][0]
    assert isinstance(item["storageSize"], int) and isinstance(item["price"], str)
    assert "storageId" in item


# ---------------------------------------------------------------------------- tasks


async def test_training_cursor_pagination(client: httpx.AsyncClient) -> None:
    cursor, tasks, pages = "c_0", [], 0
    while True:
        r = await client.get(
            "/v3/training", params={"pagination.limit": 10, "pagination.cursor": cursor}
        )
        body = r.json()
        tasks += body["tasks"]
        pages += 1
        cursor = body["pagination"]["next_cursor"]
        if cursor == "":
            break
        assert cursor == f"c_{pages * 10}"
    assert pages == 3 and len(tasks) == 23
    statuses = {t["task_status"] for t in tasks}
    assert {"FAILED", "CANCELED", "SUCCESS"} <= statuses
    assert isinstance(tasks[0]["created_at"], int)
    assert len({t["task_id"] for t in tasks}) == 23


async def test_async_task_results(client: httpx.AsyncClient, clock: ManualClock) -> None:
    ok = (await client.get("/v3/async/task-result", params={"task_id": "async-ok"})).json()
    assert ok["task"]["status"] == "TASK_STATUS_SUCCEED" and ok["task"]["reason"] == ""
    assert ok["images"]
    fail = (await client.get("/v3/async/task-result", params={"task_id": "async-fail"})).json()
    assert fail["task"]["status"] == "TASK_STATUS_FAILED" and fail["task"]["reason"]
    slow = (await client.get("/v3/async/task-result", params={"task_id": "async-slow"})).json()
    assert slow["task"]["status"] == "TASK_STATUS_PROCESSING"
    clock.advance(601)
    slow = (await client.get("/v3/async/task-result", params={"task_id": "async-slow"})).json()
    assert slow["task"]["status"] == "TASK_STATUS_SUCCEED"
    r = await client.get("/v3/async/task-result", params={"task_id": "nope"})
    assert r.status_code == 404 and r.json()["reason"] == "TASK_NOT_FOUND"
