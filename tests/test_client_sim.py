"""NovitaClient against the simulator, in-process (ASGITransport) and over a real socket.

Both sides were written from wire-format.md by different hands; the simulator answers the open
questions adversarially (1-based pages where page 0 == page 1, business errors as HTTP 400,
numbers as strings), so these tests check the client copes with the awkward answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from monitor.clock import ManualClock
from monitor.novita import errors as E
from monitor.novita.client import NovitaClient, RetryPolicy
from monitor.sim import FleetSim, SimServer, create_app

KEY = "sk-sim-Vb7YSECRETkey99887766"

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


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture(params=["asgi", "socket"])
async def client(
    request: pytest.FixtureRequest, sim_app: Any, clock: ManualClock, sleeps: Sleeps
) -> AsyncIterator[NovitaClient]:
    retry = RetryPolicy(sleep=sleeps, random=lambda: 1.0)
    if request.param == "asgi":
        transport: httpx.AsyncBaseTransport | None = httpx.ASGITransport(app=sim_app)
        base = "http://sim.test"
    else:
        server: SimServer = request.getfixturevalue("sim_server")
        transport, base = None, server.url
    async with NovitaClient(
        KEY, base, transport=transport, retry=retry, clock=clock, timeout=5.0
    ) as c:
        yield c


# ------------------------------------------------------------------------------ every endpoint


async def test_balance_and_user(client: NovitaClient, demo_sim: FleetSim) -> None:
    balance = await client.get_balance()
    assert balance.source == "balance_detail"
    assert balance.available_usd == Decimal(demo_sim.balance_10k()) / 10000
    assert balance.available_usd > 0
    info = await client.get_user_info()
    assert info.credit_balance == balance.available_usd


async def test_instances_all_pages_with_one_based_server(client: NovitaClient) -> None:
    instances = await client.list_instances(page_size=3)
    ids = [i.id for i in instances]
    assert set(ids) == DEMO_IDS and len(ids) == len(DEMO_IDS)
    # 11 instances in pages of 3; page 0 repeats page 1: 0, 1, 2, 3, 4
    assert client.requests_sent == 5


async def test_instance_quirks(client: NovitaClient, clock: ManualClock) -> None:
    by_id = {i.id: i for i in await client.list_instances()}
    pending = by_id["demo-pending"]
    assert pending.status == "pending" and pending.billing_mode is None
    assert pending.end_time is None  # "0"
    assert by_id["demo-stopped"].status == "exited" and by_id["demo-stopped"].end_time is None
    assert by_id["demo-trainer"].end_time is None  # "-1"
    assert by_id["demo-trainer"].gpu_num == 2 and by_id["demo-multigpu"].gpu_num == 8
    sub = by_id["demo-subscription"]
    assert sub.billing_mode == "monthly" and sub.end_time == clock.now() + timedelta(days=3)
    assert by_id["demo-multigpu"].billing_mode == "spot"
    assert by_id["demo-error"].error_state
    one = await client.get_instance("demo-trainer")
    assert one.id == "demo-trainer" and one.cpu_num == by_id["demo-trainer"].cpu_num


async def test_metrics(client: NovitaClient, clock: ManualClock) -> None:
    now = clock.now()
    metrics = await client.get_metrics("demo-multigpu", now - timedelta(hours=1), now, 60)
    points = metrics.gpu_utilization.avg
    assert 50 <= len(points) <= 61  # one an interval, minus the ~1 minute lag
    assert all(p.timestamp.tzinfo is not None for p in points)
    assert all(p.timestamp <= now - timedelta(seconds=60) for p in points)
    per_gpu = {s.gpu_id: s.items for s in metrics.gpu_utilization.gpu_ids}
    assert len(per_gpu) == 8
    cpu_num = (await client.get_instance("demo-multigpu")).cpu_num
    assert cpu_num and cpu_num > 1
    assert all(0 <= p.value <= 100 for p in metrics.cpu_per_core(cpu_num))


async def test_bills(client: NovitaClient, clock: ManualClock) -> None:
    now = clock.now()
    start = now - timedelta(days=40)  # longer than 31 days: two windows
    bills = await client.list_usage_bills("Day", "gpu", start, now)
    assert bills and all(b.pay_amount is not None and b.pay_amount >= 0 for b in bills)
    assert all(b.start_time is not None and b.start_time.tzinfo is not None for b in bills)
    assert "demo-allmonth" in {b.owner_id for b in bills}
    hourly = await client.list_usage_bills(
        "Hour", "gpu", now - timedelta(hours=3), now, owner_id="demo-trainer"
    )
    assert hourly and {b.owner_id for b in hourly} == {"demo-trainer"}
    fixed = await client.list_fixed_term_bills(now - timedelta(days=60), now)
    assert fixed and {b.owner_id for b in fixed} >= {"demo-subscription", "demo-lapsing"}
    assert all(b.pay_amount and b.pay_amount > 0 for b in fixed)


async def test_catalogue(client: NovitaClient) -> None:
    products = await client.list_products()
    assert products and all(p.price_usd_per_hour and p.price_usd_per_hour > 0 for p in products)
    clusters = await client.list_clusters()
    assert clusters
    in_cluster = await client.list_products(cluster_id=clusters[0].id)
    assert in_cluster
    assert await client.list_cpu_products()
    storages = await client.list_network_storages(page_size=1)
    assert storages and len({s.storage_id for s in storages}) == len(storages)


async def test_tasks(client: NovitaClient) -> None:
    tasks = await client.list_training_tasks(limit=5)
    assert len(tasks) == 23 == len({t.task_id for t in tasks})
    assert {"FAILED", "CANCELED"} <= {t.task_status for t in tasks}
    ok = await client.get_async_task("async-ok")
    failed = await client.get_async_task("async-fail")
    slow = await client.get_async_task("async-slow")
    assert ok.status == "TASK_STATUS_SUCCEED" and ok.terminal
    assert failed.status == "TASK_STATUS_FAILED" and failed.terminal
    assert not slow.terminal


async def test_actions_change_state(
    client: NovitaClient, demo_sim: FleetSim, clock: ManualClock
) -> None:
    assert await client.stop_instance("demo-notebook") == {}
    assert (await client.get_instance("demo-notebook")).status == "toStop"
    clock.advance(61)
    assert (await client.get_instance("demo-notebook")).status == "exited"

    assert await client.start_instance("demo-notebook") == {}
    clock.advance(31)
    assert (await client.get_instance("demo-notebook")).status == "running"
    assert await client.restart_instance("demo-trainer") == {}
    assert await client.set_auto_renew(["demo-subscription"], True, 1) == {}
    # the demo account's balance (a 40-hour runway) cannot pay a month of H100
    with pytest.raises(E.InsufficientBalanceError):
        await client.renew_instance("demo-subscription", 1)
    assert [(a["path"], a["status"]) for a in demo_sim.actions] == [
        ("stop", 200),
        ("start", 200),
        ("restart", 200),
        ("setAutoRenew", 200),
        ("renewInstance", 400),
    ]
    assert demo_sim.actions[-1]["body"] == {"instanceId": "demo-subscription", "month": 1}


# ------------------------------------------------------------------------------ errors


async def test_business_errors_are_400_with_reasons(client: NovitaClient) -> None:
    with pytest.raises(E.NotFoundError) as info:
        await client.get_instance("no-such-instance")
    assert (info.value.status, info.value.reason) == (400, "RESOURCE_NOT_FOUND")
    with pytest.raises(E.InvalidRequestError) as bad:
        await client.renew_instance("demo-trainer", 1)  # pay-as-you-go cannot be renewed
    assert bad.value.reason == "UNSUPPORTED_BILLING_MODE"
    with pytest.raises(E.InvalidRequestError) as prepaid:
        await client.delete_instance("demo-subscription")
    assert prepaid.value.reason == "PREPAID_INSTANCE_NOT_SUPPORT_RELEASE"
    with pytest.raises(E.InvalidRequestError) as cycle:
        await client.list_usage_bills(
            "Fortnight", "gpu", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
        )
    assert cycle.value.reason == "INVALID_BILL_CYCLE"
    assert client.requests_sent == 4  # none retried


async def test_insufficient_balance(client: NovitaClient) -> None:
    with pytest.raises(E.InsufficientBalanceError) as info:
        await client.renew_instance("demo-subscription", 12)
    assert info.value.reason == "BALANCE_NOT_ENOUGH"


@pytest.mark.parametrize("transport", ["asgi", "socket"])
@pytest.mark.parametrize(
    ("key", "status", "reason"), [("", 401, "UNAUTHORIZED"), ("wrong", 403, "INVALID_API_KEY")]
)
async def test_auth_errors(
    demo_sim: FleetSim, transport: str, key: str, status: int, reason: str
) -> None:
    app = create_app(demo_sim, api_key=KEY)

    async def check(base: str, tr: httpx.AsyncBaseTransport | None) -> None:
        async with NovitaClient(key, base, transport=tr) as c:
            with pytest.raises(E.AuthenticationError) as info:
                await c.list_instances()
            assert (info.value.status, info.value.reason) == (status, reason)
            assert c.requests_sent == 1
        async with NovitaClient(KEY, base, transport=tr) as good:
            assert len(await good.list_instances()) == len(DEMO_IDS)

    if transport == "asgi":
        await check("http://sim.test", httpx.ASGITransport(app=app))
    else:
        with SimServer(app) as server:
            await check(server.url, None)


# ------------------------------------------------------------------------------ faults


def faults_of(sim_app: Any) -> Any:
    return sim_app.state.faults


async def test_retries_through_injected_429_and_5xx(
    client: NovitaClient, sim_app: Any, sleeps: Sleeps
) -> None:
    faults = faults_of(sim_app)
    faults.fail_next("/openapi/v1/billing/balance/detail", 429, "RATE_LIMIT_EXCEEDED", count=2)
    faults.fail_next("/v3/user", 500, "UNKNOWN", count=1)
    faults.fail_next("/gpu-instance/openapi/v1/clusters", 503, "SERVICE_NOT_AVAILABLE", count=1)
    await client.get_balance()
    await client.get_user_info()
    await client.list_clusters()
    assert client.requests_sent == 3 + 4
    assert sleeps == [0.5, 1.0, 0.5, 0.5]  # no Retry-After from the simulator: backoff


async def test_action_after_injected_500_is_not_repeated(
    client: NovitaClient, sim_app: Any, demo_sim: FleetSim
) -> None:
    faults_of(sim_app).fail_next(
        "/gpu-instance/openapi/v1/gpu/instance/renewInstance", 500, "UNKNOWN"
    )
    with pytest.raises(E.OutcomeUnknownError) as info:
        await client.renew_instance("demo-subscription", 1)
    assert info.value.status == 500 and isinstance(info.value.underlying, E.ServerError)
    assert client.requests_sent == 1
    stats = sim_app.state.stats.as_dict()["requests"]
    assert stats["/gpu-instance/openapi/v1/gpu/instance/renewInstance"] == {"500": 1}


async def test_action_after_injected_429_is_retried(
    client: NovitaClient, sim_app: Any, demo_sim: FleetSim
) -> None:
    faults_of(sim_app).fail_next(
        "/gpu-instance/openapi/v1/gpu/instance/stop", 429, "RATE_LIMIT_EXCEEDED"
    )
    assert await client.stop_instance("demo-notebook") == {}
    assert client.requests_sent == 2
    # both requests were received; only the second reached the model
    log = [(a["path"], a["status"], a["performed"], a["fault"]) for a in demo_sim.actions]
    assert log == [("stop", 429, False, "fail_next"), ("stop", 200, True, None)]


async def test_malformed_body(client: NovitaClient, sim_app: Any) -> None:
    faults_of(sim_app).malformed_rate = 1.0
    with pytest.raises(E.MalformedResponseError) as info:
        await client.list_instances()
    assert info.value.status == 200 and client.requests_sent == 1


async def test_action_read_timeout_is_outcome_unknown_and_sent_once(
    demo_sim: FleetSim, sim_app: Any, sim_server: SimServer, sleeps: Sleeps
) -> None:
    """Over the socket: the simulator carries out the stop, then answers too late."""
    faults = faults_of(sim_app)
    faults.timeout_rate = 1.0
    faults.hang_seconds = 1.0
    retry = RetryPolicy(sleep=sleeps)
    async with NovitaClient(KEY, sim_server.url, retry=retry, timeout=0.3) as c:
        with pytest.raises(E.OutcomeUnknownError) as info:
            await c.stop_instance("demo-notebook")
        assert c.requests_sent == 1
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert [(a["path"], a["status"]) for a in demo_sim.actions] == [("stop", 200)]  # once
    assert sleeps == []
    faults.timeout_rate = 0.0


async def test_key_not_in_logs_or_errors_against_simulator(
    client: NovitaClient, sim_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    faults_of(sim_app).fail_next("/v3/user", 429, "RATE_LIMIT_EXCEEDED")
    texts = []
    with capture_logs() as logs:
        await client.get_user_info()
        try:
            await client.get_instance("nope")
        except E.NovitaError as exc:
            texts += [str(exc), repr(exc)]
    assert any(e["event"] == "novita.retry" for e in logs)
    assert KEY not in "\n".join([*texts, repr(logs), caplog.text, repr(client)])
