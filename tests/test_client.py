"""NovitaClient against httpx.MockTransport: parsing, pagination, errors, retries, secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

import monitor.novita as novita
from monitor.clock import ManualClock
from monitor.novita import errors as E
from monitor.novita.client import NovitaClient, RetryPolicy, parse_retry_after, split_window

KEY = "sk-test-Zq8r3SECRETkey0123456789"
BASE = "https://api.test"
GPU = "/gpu-instance/openapi/v1"
WIRE = Path(__file__).parent / "fixtures" / "wire"
T0 = datetime(2026, 11, 1, tzinfo=UTC)

Handler = Callable[[httpx.Request], Any]


def wire(name: str) -> Any:
    return json.loads((WIRE / f"{name}.json").read_text())


def envelope(status: int, reason: str, message: str = "nope", **headers: str) -> httpx.Response:
    body = {"code": status, "reason": reason, "message": message, "metadata": {}}
    return httpx.Response(status, json=body, headers=headers)


class Sleeps(list[float]):
    """The injected sleep: records instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make(sleeps: Sleeps) -> Callable[..., NovitaClient]:
    clients: list[NovitaClient] = []

    def factory(handler: Handler, **kw: Any) -> NovitaClient:
        policy_kw = kw.pop("policy", {})
        policy = RetryPolicy(sleep=sleeps, random=lambda: 1.0, **policy_kw)
        client = NovitaClient(KEY, BASE, transport=httpx.MockTransport(handler), retry=policy, **kw)
        clients.append(client)
        return client

    return factory


class Recorder:
    """Routes by path; records every request."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get(request.url.path)
        if route is None:
            return envelope(404, "API_NOT_FOUND", "no such path")
        if callable(route):
            return route(request)
        return httpx.Response(200, json=route)

    def params(self, i: int = -1) -> dict[str, str]:
        return dict(self.requests[i].url.params)

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


# ------------------------------------------------------------------------------ every endpoint


async def test_auth_header_and_balance(make: Any) -> None:
    rec = Recorder({"/openapi/v1/billing/balance/detail": wire("balance_detail")})
    async with make(rec) as client:
        balance = await client.get_balance()
    assert balance.available_usd == Decimal("100") and balance.source == "balance_detail"
    req = rec.requests[0]
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["Content-Type"] == "application/json"
    assert KEY not in str(req.url)


@pytest.mark.parametrize(
    "detail",
    [
        envelope(404, "API_NOT_FOUND"),
        envelope(400, "RESOURCE_NOT_FOUND"),
        httpx.Response(404, text="Not Found"),
        httpx.Response(200, json={"cashBalance": "1"}),
    ],
    ids=["404-envelope", "400-not-found", "404-plain", "no-availableBalance"],
)
async def test_balance_falls_back_to_v3_user(make: Any, detail: httpx.Response) -> None:
    rec = Recorder(
        {"/openapi/v1/billing/balance/detail": lambda r: detail, "/v3/user": wire("user")}
    )
    async with make(rec) as client:
        balance = await client.get_balance()
    assert balance.available_usd == Decimal("49.7975") and balance.source == "v3_user"
    assert [r.url.path for r in rec.requests][-1] == "/v3/user"


async def test_balance_does_not_fall_back_on_auth_error(make: Any) -> None:
    rec = Recorder(
        {
            "/openapi/v1/billing/balance/detail": lambda r: envelope(403, "INVALID_API_KEY"),
            "/v3/user": wire("user"),
        }
    )
    async with make(rec) as client:
        with pytest.raises(E.AuthenticationError):
            await client.get_balance()
    assert len(rec.requests) == 1


async def test_instances_get_one_and_wrapper(make: Any) -> None:
    one = wire("instance_get")
    rec = Recorder(
        {
            f"{GPU}/gpu/instances": wire("instances_list"),
            f"{GPU}/gpu/instance": lambda r: httpx.Response(
                200, json=one if r.url.params["instanceId"] == "bare" else {"instance": one}
            ),
        }
    )
    async with make(rec) as client:
        instances = await client.list_instances()
        assert [i.id for i in instances] == [
            "inst-ondemand",
            "inst-monthly",
            "inst-blank",
            "inst-spot",
        ]
        assert rec.params(0) == {"pageSize": "100", "pageNum": "0"}
        assert (await client.get_instance("bare")).gpu_num == 2
        assert (await client.get_instance("wrapped")).id == "inst-ondemand"
    assert rec.params() == {"instanceId": "wrapped"}


async def test_unknown_status_and_billing_mode_logged_once(make: Any) -> None:
    listing = wire("instances_list")
    listing["instances"][0]["billingMode"] = "weekly"
    rec = Recorder({f"{GPU}/gpu/instances": listing})
    async with make(rec) as client:
        with capture_logs() as logs:
            await client.list_instances()
            await client.list_instances()
    unknown = [e for e in logs if e["event"] == "novita.unknown_value"]
    assert sorted((e["field"], e["value"]) for e in unknown) == [
        ("billing_mode", "weekly"),
        ("status", "someNewStatus"),
    ]


async def test_metrics_sends_explicit_window(make: Any) -> None:
    rec = Recorder({"/openapi/v1/metrics/gpu/instance": wire("metrics")})
    async with make(rec) as client:
        metrics = await client.get_metrics("i1", T0, T0 + timedelta(hours=1), interval_s=60)
    assert metrics.cpu_per_core(16)[0].value == 50
    assert rec.params() == {
        "instanceId": "i1",
        "startTime": str(int(T0.timestamp())),
        "endTime": str(int(T0.timestamp()) + 3600),
        "interval": "60",
    }


@pytest.mark.parametrize(
    ("start", "end", "interval", "match"),
    [
        (T0, T0 + timedelta(seconds=59), 60, "60 s"),
        (T0, T0 - timedelta(hours=1), 60, "60 s"),
        (T0, T0 + timedelta(hours=1), 15, "greater than 15"),
        (T0.replace(tzinfo=None), T0.replace(tzinfo=None) + timedelta(hours=1), 60, "naive"),
        (T0, T0 + timedelta(days=1), 60, "future"),
    ],
)
async def test_metrics_refuses_windows_the_api_would_replace(
    make: Any, start: datetime, end: datetime, interval: int, match: str
) -> None:
    rec = Recorder({})
    clock = ManualClock(T0 + timedelta(hours=2))
    async with make(rec, clock=clock) as client:
        with pytest.raises(ValueError, match=match):
            await client.get_metrics("i1", start, end, interval_s=interval)
    assert rec.requests == []


async def test_usage_bills_split_into_31_day_windows(make: Any) -> None:
    bill = wire("usage_bills")["bills"][0]
    rec = Recorder({"/openapi/v1/billing/bill/list": {"bills": [bill]}})
    end = T0 + timedelta(days=70)
    async with make(rec) as client:
        bills = await client.list_usage_bills("Day", "gpu", T0, end, owner_id="i1")
    assert len(bills) == 1  # the same bill answered by every window: de-duplicated
    windows = [(int(r.url.params["startTime"]), int(r.url.params["endTime"])) for r in rec.requests]
    assert len(windows) == 3
    assert windows[0][0] == int(T0.timestamp()) and windows[-1][1] == int(end.timestamp())
    assert all(b - a <= 31 * 86400 for a, b in windows)
    assert all(windows[i][1] == windows[i + 1][0] for i in range(2))
    params = rec.params(0)
    assert params["cycleType"] == "Day" and params["productCategory"] == "gpu"
    assert params["ownerId"] == "i1" and "productName" not in params


async def test_fixed_term_bills_use_category(make: Any) -> None:
    rec = Recorder({"/openapi/v1/billing/bill/monthly/list": wire("fixed_term_bills")})
    async with make(rec) as client:
        bills = await client.list_fixed_term_bills(T0, T0 + timedelta(days=10))
    assert bills[0].pay_amount == Decimal("100")
    assert rec.params()["category"] == "gpu" and "productCategory" not in rec.params()


async def test_catalogue_endpoints(make: Any) -> None:
    rec = Recorder(
        {
            f"{GPU}/products": wire("products"),
            f"{GPU}/cpu/products": wire("cpu_products"),
            f"{GPU}/clusters": wire("clusters"),
            f"{GPU}/networkstorages/list": lambda r: httpx.Response(
                200,
                json=wire("network_storages")
                if r.url.params["pageNo"] == "0"
                else {"data": [], "total": 2},
            ),
        }
    )
    async with make(rec) as client:
        products = await client.list_products(cluster_id="5", billing_method="monthly")
        assert rec.params() == {"clusterId": "5", "billingMethod": "monthly"}
        assert products[0].price_usd_per_hour == Decimal("0.35")
        assert (await client.list_cpu_products())[0].cpu_num == 4
        assert (await client.list_clusters())[0].name == "US-01 (Dallas)"
        storages = await client.list_network_storages()
    assert [s.storage_id for s in storages] == ["uuid"]
    # total says 2 but the pages hold one: an empty page ends the listing
    assert [r.url.params.get("pageNo") for r in rec.requests[-2:]] == ["0", "1"]


async def test_tasks(make: Any) -> None:
    pages = {
        "c_0": {"tasks": [{"task_id": "t1"}], "pagination": {"next_cursor": "c_1"}},
        "c_1": {"tasks": [{"task_id": "t2"}], "pagination": {"next_cursor": ""}},
    }
    rec = Recorder(
        {
            "/v3/training": lambda r: httpx.Response(
                200, json=pages[r.url.params["pagination.cursor"]]
            ),
            "/v3/async/task-result": wire("async_task"),
        }
    )
    async with make(rec) as client:
        tasks = await client.list_training_tasks(limit=1)
        assert [t.task_id for t in tasks] == ["t1", "t2"]
        assert rec.params(0) == {"pagination.limit": "1", "pagination.cursor": "c_0"}
        task = await client.get_async_task("a1")
    assert task.task_id == "a1" and task.terminal
    assert rec.params() == {"task_id": "a1"}


async def test_training_cursor_that_repeats_ends(make: Any) -> None:
    page = {"tasks": [{"task_id": "t1"}], "pagination": {"next_cursor": "c_0"}}
    rec = Recorder({"/v3/training": page})
    async with make(rec) as client:
        assert [t.task_id for t in await client.list_training_tasks()] == ["t1"]
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [
        (lambda c: c.stop_instance("i1"), "stop", {"instanceId": "i1"}),
        (lambda c: c.start_instance("i1"), "start", {"instanceId": "i1"}),
        (lambda c: c.restart_instance("i1"), "restart", {"instanceId": "i1"}),
        (lambda c: c.delete_instance("i1"), "delete", {"instanceId": "i1"}),
        (lambda c: c.renew_instance("i1", 3), "renewInstance", {"instanceId": "i1", "month": 3}),
        (
            lambda c: c.convert_to_monthly("i1", 1),
            "transToMonthlyInstance",
            {"instanceId": "i1", "month": 1},
        ),
        (
            lambda c: c.set_auto_renew(["i1", "i2"], True, 2),
            "setAutoRenew",
            {"instanceIds": ["i1", "i2"], "autoRenew": True, "autoRenewMonth": 2},
        ),
    ],
)
async def test_actions_post_json(make: Any, call: Any, path: str, body: dict[str, Any]) -> None:
    rec = Recorder({f"{GPU}/gpu/instance/{path}": lambda r: httpx.Response(200, text="")})
    async with make(rec) as client:
        answer = await call(client)
    assert answer == {}
    assert rec.requests[0].method == "POST"
    assert rec.body() == body


async def test_action_answers_kept_raw(make: Any) -> None:
    answers = iter([httpx.Response(200, json={"ok": True}), httpx.Response(200, text="done")])
    rec = Recorder({f"{GPU}/gpu/instance/stop": lambda r: next(answers)})
    async with make(rec) as client:
        assert await client.stop_instance("i1") == {"ok": True}
        assert await client.stop_instance("i1") == {"raw": "done"}


@pytest.mark.parametrize("months", [0, -1, True, 1.5])
async def test_actions_refuse_bad_months(make: Any, months: Any) -> None:
    rec = Recorder({})
    async with make(rec) as client:
        with pytest.raises(ValueError):
            await client.renew_instance("i1", months)
    assert rec.requests == []


# ------------------------------------------------------------------------------ pagination


def paged_server(
    n: int, *, one_based: bool = False, total: bool = True, empty_zero: bool = False
) -> Handler:
    """Serves ``n`` instances by pageNum. 1-based: page 0 is answered like page 1 (or empty)."""
    items = [{"id": f"i{k:03d}", "status": "running"} for k in range(n)]

    def handler(request: httpx.Request) -> httpx.Response:
        size = int(request.url.params["pageSize"])
        num = int(request.url.params["pageNum"])
        if one_based:
            if num == 0 and empty_zero:
                chunk: list[dict[str, Any]] = []
            else:
                index = max(num, 1) - 1
                chunk = items[index * size : (index + 1) * size]
        else:
            chunk = items[num * size : (num + 1) * size]
        body: dict[str, Any] = {"instances": chunk}
        if total:
            body["total"] = str(n)  # a string, for good measure
        return httpx.Response(200, json=body)

    return handler


@pytest.mark.parametrize(
    ("server", "n", "requests"),
    [
        (dict(), 250, 4),  # pages 1..3 fetched at once from total: one more than needed
        (dict(one_based=True), 250, 4),  # page 0 == page 1 costs one request
        (dict(one_based=True, empty_zero=True), 250, 4),  # page 0 empty: try page 1
        (dict(total=False), 250, 3),  # short last page
        (dict(total=False), 200, 3),  # exact multiple: an empty page ends it
        (dict(one_based=True, total=False), 250, 4),
        (dict(), 0, 2),  # empty account, total 0... page 0 empty, total 0: stop
        (dict(), 100, 1),
    ],
)
async def test_list_instances_pagination(
    make: Any, server: dict[str, Any], n: int, requests: int
) -> None:
    rec = Recorder({f"{GPU}/gpu/instances": paged_server(n, **server)})
    async with make(rec) as client:
        instances = await client.list_instances(page_size=100)
    ids = [i.id for i in instances]
    assert len(ids) == n == len(set(ids))
    if n == 0:
        requests = 1
    assert len(rec.requests) == requests
    assert rec.requests[0].url.params["pageNum"] == "0"


async def test_server_ignoring_page_number_ends(make: Any) -> None:
    page = {"instances": [{"id": f"i{k}"} for k in range(10)], "total": 50}
    rec = Recorder({f"{GPU}/gpu/instances": page})
    async with make(rec) as client:
        with capture_logs() as logs, pytest.raises(E.IncompleteListingError, match="10 of 50"):
            await client.list_instances(page_size=10)
    assert len(rec.requests) == 6  # page 0, then pages 1..5 at once: nothing new, so it ends
    assert any(e["event"] == "novita.pages_repeat" for e in logs)


async def test_page_cap(make: Any) -> None:
    counter = iter(range(10_000))

    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"instances": [{"id": f"i{next(counter)}"}], "total": 10**6}
        )

    rec = Recorder({f"{GPU}/gpu/instances": endless})
    async with make(rec, max_pages=5) as client:
        with pytest.raises(E.MalformedResponseError, match="pages"):
            await client.list_instances(page_size=1)
    assert len(rec.requests) == 5


# ------------------------------------------------------------------------------ error mapping

REASON_CASES = [
    *[(r, E.AuthenticationError) for r in sorted(E.AUTH_REASONS)],
    *[(r, E.NotFoundError) for r in sorted(E.NOT_FOUND_REASONS)],
    *[(r, E.InsufficientBalanceError) for r in sorted(E.BALANCE_REASONS)],
    *[(r, E.RateLimitedError) for r in sorted(E.RATE_LIMIT_REASONS)],
    *[(r, E.InvalidRequestError) for r in sorted(E.INVALID_REQUEST_REASONS)],
    *[(r, E.ServerError) for r in sorted(E.SERVER_REASONS)],
    *[(r, E.UnavailableError) for r in sorted(E.UNAVAILABLE_REASONS)],
]


def test_reason_tables_do_not_overlap() -> None:
    tables = [
        E.AUTH_REASONS,
        E.NOT_FOUND_REASONS,
        E.BALANCE_REASONS,
        E.RATE_LIMIT_REASONS,
        E.INVALID_REQUEST_REASONS,
        E.SERVER_REASONS,
        E.UNAVAILABLE_REASONS,
    ]
    assert sum(len(t) for t in tables) == len(E.REASON_TO_ERROR)


@pytest.mark.parametrize(("reason", "cls"), REASON_CASES)
async def test_reason_maps_to_exception_whatever_the_status(
    make: Any, reason: str, cls: type[E.APIError]
) -> None:
    """The GPU API answers most business errors with 400: the reason decides."""
    rec = Recorder({"/v3/user": lambda r: envelope(400, reason, "msg")})
    async with make(rec, policy=dict(max_attempts=1)) as client:
        with pytest.raises(E.APIError) as info:
            await client.get_user_info()
    assert type(info.value) is cls
    assert (info.value.status, info.value.reason, info.value.message) == (400, reason, "msg")
    assert info.value.path == "/v3/user"


@pytest.mark.parametrize(
    "reason", ["MISSING_API_KEY", "INVALID_API_KEY", "FAILED_TO_AUTH", "UNAUTHORIZED"]
)
@pytest.mark.parametrize("status", [400, 401, 403])
async def test_every_auth_reason_is_authentication(make: Any, reason: str, status: int) -> None:
    rec = Recorder({"/v3/user": lambda r: envelope(status, reason)})
    async with make(rec) as client:
        with pytest.raises(E.AuthenticationError):
            await client.get_user_info()
    assert len(rec.requests) == 1  # never retried


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, E.InvalidRequestError),
        (401, E.AuthenticationError),
        (403, E.AuthenticationError),
        (404, E.NotFoundError),
        (409, E.InvalidRequestError),
        (418, E.InvalidRequestError),
        (429, E.RateLimitedError),
        (500, E.ServerError),
        (502, E.ServerError),
        (503, E.UnavailableError),
        (504, E.ServerError),
    ],
)
@pytest.mark.parametrize("shape", ["unknown-reason", "plain-text", "openai", "json-list"])
async def test_unknown_reason_or_other_body_falls_back_on_status(
    make: Any, status: int, cls: type[E.APIError], shape: str
) -> None:
    responses = {
        "unknown-reason": envelope(status, "SOMETHING_NEW", "new thing"),
        "plain-text": httpx.Response(status, text="<html>bad gateway</html>"),
        "openai": httpx.Response(status, json={"error": {"message": "oops", "type": "x"}}),
        "json-list": httpx.Response(status, json=["x"]),
    }
    rec = Recorder({"/v3/user": lambda r: responses[shape]})
    async with make(rec, policy=dict(max_attempts=1)) as client:
        with pytest.raises(E.APIError) as info:
            await client.get_user_info()
    assert type(info.value) is cls
    assert info.value.status == status
    assert info.value.reason == ("SOMETHING_NEW" if shape == "unknown-reason" else None)
    assert info.value.message
    if shape == "openai":
        assert info.value.message == "oops"


async def test_malformed_2xx_bodies(make: Any) -> None:
    rec = Recorder(
        {
            "/v3/user": lambda r: httpx.Response(200, text="<html>"),
            f"{GPU}/gpu/instances": {"instances": "nope"},
            f"{GPU}/gpu/instance": {"name": "no id"},
        }
    )
    async with make(rec) as client:
        with pytest.raises(E.MalformedResponseError, match="not JSON"):
            await client.get_user_info()
        with pytest.raises(E.MalformedResponseError, match="list"):
            await client.list_instances()
        with pytest.raises(E.MalformedResponseError, match="Instance") as info:
            await client.get_instance("x")
    assert info.value.path == f"{GPU}/gpu/instance"
    assert len(rec.requests) == 3  # malformed answers are not retried


# ------------------------------------------------------------------------------ retries


def sequence(*responses: Any) -> Handler:
    """Answers in turn; an exception class is raised (with the request) instead."""
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, type) and issubclass(item, Exception):
            raise item("simulated", request=request)
        return item

    return handler


OK_USER = httpx.Response(200, json={"credit_balance": 10000})


@pytest.mark.parametrize(
    "failure",
    [
        envelope(429, "RATE_LIMIT_EXCEEDED"),
        envelope(429, "LIST_BILL_TOO_FAST"),
        envelope(500, "UNKNOWN"),
        httpx.Response(502, text="bad gateway"),
        envelope(503, "SERVICE_NOT_AVAILABLE"),
        httpx.ReadTimeout,
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.RemoteProtocolError,
    ],
    ids=repr,
)
async def test_get_retries_then_succeeds(make: Any, sleeps: Sleeps, failure: Any) -> None:
    rec = Recorder({"/v3/user": sequence(failure, failure, OK_USER)})
    async with make(rec) as client:
        info = await client.get_user_info()
        assert client.requests_sent == 3
    assert info.credit_balance == Decimal("1")
    assert sleeps == [0.5, 1.0]  # full jitter with random() == 1.0: the caps 0.5 * 2**n


async def test_get_gives_up_after_max_attempts(make: Any, sleeps: Sleeps) -> None:
    rec = Recorder({"/v3/user": sequence(envelope(500, "UNKNOWN"))})
    async with make(rec) as client:
        with pytest.raises(E.ServerError):
            await client.get_user_info()
        assert client.requests_sent == 5
    assert sleeps == [0.5, 1.0, 2.0, 4.0]


async def test_timeouts_end_in_unavailable(make: Any) -> None:
    rec = Recorder({"/v3/user": sequence(httpx.ReadTimeout)})
    async with make(rec, policy=dict(max_attempts=2)) as client:
        with pytest.raises(E.UnavailableError) as info:
            await client.get_user_info()
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert info.value.status is None and info.value.path == "/v3/user"


async def test_jitter_is_full(make: Any, sleeps: Sleeps) -> None:
    rec = Recorder({"/v3/user": sequence(envelope(500, "UNKNOWN"), OK_USER)})
    policy = RetryPolicy(sleep=sleeps, random=lambda: 0.25)
    client = NovitaClient(KEY, BASE, transport=httpx.MockTransport(rec), retry=policy)
    async with client:
        await client.get_user_info()
    assert sleeps == [0.125]


async def test_backoff_capped(make: Any, sleeps: Sleeps) -> None:
    rec = Recorder({"/v3/user": sequence(envelope(500, "UNKNOWN"))})
    policy = dict(max_attempts=8, initial_s=1, max_backoff_s=3, max_total_s=1000)
    async with make(rec, policy=policy) as client:
        with pytest.raises(E.ServerError):
            await client.get_user_info()
    assert sleeps == [1, 2, 3, 3, 3, 3, 3]


async def test_retry_after_seconds_honoured(make: Any, sleeps: Sleeps) -> None:
    limited = envelope(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "7"})
    rec = Recorder({"/v3/user": sequence(limited, OK_USER)})
    async with make(rec) as client:
        await client.get_user_info()
    assert sleeps == [7.0]


async def test_retry_after_http_date_against_date_header(make: Any, sleeps: Sleeps) -> None:
    now = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    headers = {
        "Retry-After": format_datetime(now + timedelta(seconds=12), usegmt=True),
        "Date": format_datetime(now, usegmt=True),
    }
    rec = Recorder({"/v3/user": sequence(envelope(429, "RATE_LIMIT_EXCEEDED", **headers), OK_USER)})
    async with make(rec) as client:
        await client.get_user_info()
    assert sleeps == [12.0]


async def test_retry_after_http_date_against_clock(make: Any, sleeps: Sleeps) -> None:
    now = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    headers = {"Retry-After": format_datetime(now + timedelta(seconds=9), usegmt=True)}
    rec = Recorder({"/v3/user": sequence(envelope(429, "RATE_LIMIT_EXCEEDED", **headers), OK_USER)})
    async with make(rec, clock=ManualClock(now)) as client:
        await client.get_user_info()
    assert sleeps == [9.0]


async def test_retry_after_beyond_budget_gives_up_at_once(make: Any, sleeps: Sleeps) -> None:
    limited = envelope(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "120"})
    rec = Recorder({"/v3/user": sequence(limited)})
    async with make(rec) as client:
        with pytest.raises(E.RateLimitedError) as info:
            await client.get_user_info()
    assert info.value.retry_after == 120
    assert sleeps == [] and len(rec.requests) == 1


async def test_total_time_is_bounded(make: Any, sleeps: Sleeps) -> None:
    rec = Recorder({"/v3/user": sequence(envelope(429, "RATE_LIMIT_EXCEEDED"))})
    policy = dict(max_attempts=100, initial_s=1, max_backoff_s=30, max_total_s=10)
    async with make(rec, policy=policy) as client:
        with pytest.raises(E.RateLimitedError):
            await client.get_user_info()
    assert sum(sleeps) <= 10
    assert sleeps == [1, 2, 4, 3]  # the last wait is cut to what is left of the budget


@pytest.mark.parametrize(
    "answer",
    [
        envelope(400, "VALIDATOR_PARAM"),
        envelope(400, "RESOURCE_NOT_FOUND"),
        envelope(404, "API_NOT_FOUND"),
        envelope(403, "INVALID_API_KEY"),
        envelope(400, "BALANCE_NOT_ENOUGH"),
        httpx.Response(422, text="unprocessable"),
    ],
    ids=lambda r: f"{r.status_code}",
)
async def test_4xx_not_retried(make: Any, sleeps: Sleeps, answer: httpx.Response) -> None:
    rec = Recorder({"/v3/user": lambda r: answer})
    async with make(rec) as client:
        with pytest.raises(E.APIError):
            await client.get_user_info()
        assert client.requests_sent == 1
    assert sleeps == []


# ------------------------------------------------------------------------------ actions (POST)

STOP = f"{GPU}/gpu/instance/renewInstance"


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout,
        httpx.WriteTimeout,
        httpx.RemoteProtocolError,
        envelope(500, "UNKNOWN"),
        httpx.Response(502, text="bad gateway"),
        envelope(503, "SERVICE_NOT_AVAILABLE"),
    ],
    ids=repr,
)
async def test_action_with_unknown_outcome_is_sent_once(
    make: Any, sleeps: Sleeps, failure: Any
) -> None:
    rec = Recorder({STOP: sequence(failure, httpx.Response(200, json={}))})
    async with make(rec) as client:
        with pytest.raises(E.OutcomeUnknownError) as info:
            await client.renew_instance("i1", 1)
        assert client.requests_sent == 1
    assert len(rec.requests) == 1 and sleeps == []
    assert info.value.path == STOP and info.value.method == "POST"
    if isinstance(failure, httpx.Response):
        assert info.value.status == failure.status_code
        assert isinstance(info.value.underlying, E.ServerError | E.UnavailableError)
    else:
        assert isinstance(info.value.__cause__, failure)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        envelope(429, "RATE_LIMIT_EXCEEDED"),
    ],
    ids=repr,
)
async def test_action_not_carried_out_is_retried(make: Any, sleeps: Sleeps, failure: Any) -> None:
    rec = Recorder({STOP: sequence(failure, httpx.Response(200, json={"ok": 1}))})
    async with make(rec) as client:
        assert await client.renew_instance("i1", 1) == {"ok": 1}
        assert client.requests_sent == 2
    assert len(sleeps) == 1


async def test_action_business_error_is_not_retried(make: Any) -> None:
    rec = Recorder({STOP: lambda r: envelope(400, "BALANCE_NOT_ENOUGH")})
    async with make(rec) as client:
        with pytest.raises(E.InsufficientBalanceError):
            await client.renew_instance("i1", 1)
    assert len(rec.requests) == 1


async def test_action_connect_errors_end_in_unavailable(make: Any) -> None:
    rec = Recorder({STOP: sequence(httpx.ConnectError)})
    async with make(rec, policy=dict(max_attempts=3)) as client:
        with pytest.raises(E.UnavailableError) as info:
            await client.renew_instance("i1", 1)
    assert info.value.not_sent and len(rec.requests) == 3


# ------------------------------------------------------------------------------ concurrency


async def test_concurrency_is_bounded_per_client(make: Any) -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)  # yield to the other tasks, no wall-clock wait
        in_flight -= 1
        return httpx.Response(200, json={"credit_balance": 1})

    async with make(handler, max_concurrency=3) as client:
        await asyncio.gather(*(client.get_user_info() for _ in range(20)))
        assert client.requests_sent == 20
    assert peak == 3


# ------------------------------------------------------------------------------ secrecy


async def test_api_key_never_leaks(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rec = Recorder(
        {
            "/v3/user": sequence(
                envelope(429, "RATE_LIMIT_EXCEEDED"),
                envelope(403, "INVALID_API_KEY", f"key {KEY} is invalid"),
            ),
            STOP: sequence(httpx.ReadTimeout),
            f"{GPU}/gpu/instances": {"instances": [{"id": "a", "status": "weird"}]},
        }
    )
    texts: list[str] = []
    with capture_logs() as logs:
        async with make(rec) as client:
            texts.append(repr(client))
            for call in (client.get_user_info(), client.renew_instance("i1", 1)):
                try:
                    await call
                except E.NovitaError as exc:
                    texts += [str(exc), repr(exc), repr(exc.__cause__), str(exc.__cause__)]
            await client.list_instances()
    assert len(texts) == 9
    assert "***" in texts[1]  # the server echoed the key: redacted
    assert logs, "the retry and the unknown status were logged"
    everything = "\n".join([*texts, repr(logs), caplog.text])
    assert KEY not in everything
    assert KEY[-10:] not in everything


def test_client_repr_hides_key() -> None:
    client = NovitaClient(KEY, BASE, transport=httpx.MockTransport(lambda r: OK_USER))
    assert KEY not in repr(client) and "***" in repr(client)
    assert KEY not in str(vars(client).get("_log"))


async def test_empty_key_sends_no_authorization(make: Any) -> None:
    rec = Recorder({"/v3/user": lambda r: envelope(401, "UNAUTHORIZED")})
    client = NovitaClient("", BASE, transport=httpx.MockTransport(rec))
    async with client:
        with pytest.raises(E.AuthenticationError):
            await client.get_user_info()
    assert "Authorization" not in rec.requests[0].headers


async def test_logger_is_injectable(make: Any) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def __getattr__(self, level: str) -> Any:
            return lambda event, **kw: events.append((event, kw))

    rec = Recorder({"/v3/user": sequence(envelope(500, "UNKNOWN"), OK_USER)})
    async with make(rec, logger=Log()) as client:
        await client.get_user_info()
    assert events[0][0] == "novita.retry"
    assert events[0][1]["status"] == 500 and events[0][1]["attempt"] == 1


# ------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("Sat, 28 Nov 2026 03:00:30 GMT", 30.0),
        ("Sat, 28 Nov 2026 02:59:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, datetime(2026, 11, 28, 3, 0, tzinfo=UTC)) == expected


def test_parse_retry_after_date_without_reference() -> None:
    assert parse_retry_after("Sat, 28 Nov 2026 03:00:30 GMT", None) is None


def test_split_window() -> None:
    assert split_window(T0, T0 + timedelta(days=31)) == [(T0, T0 + timedelta(days=31))]
    parts = split_window(T0, T0 + timedelta(days=62, seconds=1))
    assert [b - a for a, b in parts] == [timedelta(days=31)] * 2 + [timedelta(seconds=1)]
    with pytest.raises(ValueError):
        split_window(T0, T0)


def test_public_names() -> None:
    """Pins the public surface: removing a name breaks callers."""
    assert sorted(novita.__all__) == sorted(
        [
            "APIError",
            "AsyncTask",
            "AuthenticationError",
            "Balance",
            "Cluster",
            "CpuProduct",
            "FixedTermBill",
            "IncompleteListingError",
            "InsufficientBalanceError",
            "Instance",
            "InstanceMetrics",
            "InvalidRequestError",
            "MalformedResponseError",
            "MetricPoint",
            "NetworkStorage",
            "NotFoundError",
            "NovitaClient",
            "NovitaError",
            "OutcomeUnknownError",
            "Product",
            "RateLimitedError",
            "ResponseTooLargeError",
            "RetryPolicy",
            "ServerError",
            "TrainingTask",
            "UnavailableError",
            "UsageBill",
            "UserInfo",
            "parse_retry_after",
            "split_window",
        ]
    )
    for name in novita.__all__:
        assert getattr(novita, name) is not None
    for cls in E.REASON_TO_ERROR.values():
        assert issubclass(cls, novita.APIError)
    assert issubclass(novita.OutcomeUnknownError, novita.APIError)
    assert issubclass(novita.APIError, novita.NovitaError)
    with pytest.raises(AttributeError):
        _ = novita.NoSuchThing  # type: ignore[attr-defined]


def test_structlog_logger_is_lazy_and_keyless() -> None:
    logger = structlog.get_logger("monitor.novita")
    assert KEY not in repr(logger)


@pytest.mark.parametrize("total", ["many", -1, None, ""])
async def test_unreadable_total_counts_as_absent(make: Any, total: Any) -> None:
    pages = [[{"id": "a"}, {"id": "b"}], [{"id": "c"}]]

    def handler(request: httpx.Request) -> httpx.Response:
        num = int(request.url.params["pageNum"])
        chunk = pages[num] if num < len(pages) else []
        return httpx.Response(200, json={"instances": chunk, "total": total})

    rec = Recorder({f"{GPU}/gpu/instances": handler})
    async with make(rec) as client:
        instances = await client.list_instances(page_size=2)
    assert [i.id for i in instances] == ["a", "b", "c"]
    assert len(rec.requests) == 2  # the short page ends it
