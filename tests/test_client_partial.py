"""The client's side of partial failures (issue 10 §5, issue 8 §2), through httpx's
``MockTransport``: a listing item that does not parse is reported, not fatal; a listing short
of its ``total`` is an error; an answer over the size cap is refused before it is read whole;
a bills window that hits the cap is halved and asked again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from monitor.novita import errors as E
from monitor.novita.client import MIN_BILL_WINDOW, BadItem, NovitaClient, RetryPolicy

KEY = "sk-test-partial-0123456789"
GPU = "/gpu-instance/openapi/v1"
LISTING = f"{GPU}/gpu/instances"
BILLS = "/openapi/v1/billing/bill/list"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def client_for(handler: Callable[[httpx.Request], Any], **kw: Any) -> NovitaClient:
    async def no_sleep(_seconds: float) -> None:
        return None

    policy = RetryPolicy(max_attempts=2, sleep=no_sleep, random=lambda: 0.0)
    return NovitaClient(
        KEY, "https://api.test", transport=httpx.MockTransport(handler), retry=policy, **kw
    )


def listing(items: list[Any], total: Any = None) -> Callable[[httpx.Request], httpx.Response]:
    """All items on page 0 (later pages empty)."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["pageNum"])
        body: dict[str, Any] = {"instances": items if page == 0 else []}
        if total is not None:
            body["total"] = total
        return httpx.Response(200, json=body)

    return handler


# ---------------------------------------------------------------------------------------------
# The instance listing


async def test_an_item_that_does_not_parse_is_reported_and_the_others_kept() -> None:
    items = [{"id": "a"}, {"id": "b", "gpuNum": "lots"}, {"id": "c", "status": "running"}]
    async with client_for(listing(items, total=3)) as client:
        with capture_logs() as logs:
            instances = await client.list_instances()
    assert [i.id for i in instances] == ["a", "c"]
    assert instances.bad == [BadItem("b", "gpuNum", "lots", instances.bad[0].error)]
    assert "lots" in instances.bad[0].error or "integer" in instances.bad[0].error
    assert any(e["event"] == "novita.items_unparsable" for e in logs)


async def test_a_malformed_item_counts_as_received_towards_the_total() -> None:
    items = [{"id": "a"}, {"id": "b", "createdAt": {"not": "a time"}}]
    async with client_for(listing(items, total=2)) as client:
        instances = await client.list_instances()
    assert [i.id for i in instances] == ["a"] and [b.resource_id for b in instances.bad] == ["b"]


async def test_an_item_without_an_id_or_not_an_object_is_reported_without_one() -> None:
    items = [{"id": "a"}, {"name": "anonymous"}, "garbage"]
    async with client_for(listing(items, total=3)) as client:
        instances = await client.list_instances()
    assert [i.id for i in instances] == ["a"]
    assert [(b.resource_id, b.field) for b in instances.bad] == [(None, "id"), (None, "")]


async def test_the_values_of_a_malformed_environment_are_not_kept() -> None:
    secret = "hf_broken_env_0123456789"
    items = [{"id": "a", "envs": [{"key": "HF_TOKEN", "value": {"nested": secret}}]}]
    async with client_for(listing(items, total=1)) as client:
        instances = await client.list_instances()
    (bad,) = instances.bad
    assert bad.field.startswith("envs") and bad.raw is None
    assert secret not in repr(bad)


async def test_a_listing_short_of_its_total_is_an_error() -> None:
    items = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    async with client_for(listing(items, total="5")) as client:
        with pytest.raises(E.IncompleteListingError, match="3 of 5") as caught:
            await client.list_instances(page_size=10)
    assert isinstance(caught.value, E.MalformedResponseError) and caught.value.status == 200


async def test_a_listing_that_shrank_while_paged_is_measured_by_its_smallest_total() -> None:
    """An instance deleted between two pages: the later page's total is the truth."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["pageNum"])
        if page == 0:
            return httpx.Response(200, json={"instances": [{"id": "a"}, {"id": "b"}], "total": 4})
        if page == 1:
            return httpx.Response(200, json={"instances": [{"id": "c"}], "total": 3})
        return httpx.Response(200, json={"instances": [], "total": 3})

    async with client_for(handler) as client:
        instances = await client.list_instances(page_size=2)
    assert [i.id for i in instances] == ["a", "b", "c"]


async def test_other_listings_stay_strict_about_their_items_and_lenient_about_totals() -> None:
    def storages(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"storageId": "s"}], "total": 2})

    async with client_for(storages) as client:
        with capture_logs() as logs:
            found = await client.list_network_storages()
    assert [s.storage_id for s in found] == ["s"] and found.bad == []
    assert any(e["event"] == "novita.pages_short" for e in logs)


# ---------------------------------------------------------------------------------------------
# The answer cap, over httpx (the tests' transport)


def streamed(total: int, read: list[int]) -> Callable[[httpx.Request], httpx.Response]:
    """A 200 answer of ``total`` bytes streamed in 64 kB pieces, no Content-Length; ``read``
    counts the bytes the client pulled."""

    async def body() -> AsyncIterator[bytes]:
        piece = b" " * 65536
        while read[0] < total:
            read[0] += len(piece)
            yield piece

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    return handler


async def test_a_streamed_answer_over_the_cap_is_refused_before_it_is_read_whole() -> None:
    read = [0]
    cap = 1024 * 1024
    async with client_for(streamed(50 * 1024 * 1024, read), max_response_bytes=cap) as client:
        with pytest.raises(
            E.ResponseTooLargeError, match="passed the cap of 1048576 bytes"
        ) as caught:
            await client.list_products()
    assert caught.value.limit == cap and caught.value.status == 200
    assert read[0] <= cap + 65536
    assert client.requests_sent == 1  # not retried


async def test_an_announced_size_over_the_cap_is_refused_unread() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[]", headers={"Content-Length": str(10**9)})

    async with client_for(handler, max_response_bytes=1000) as client:
        with pytest.raises(E.ResponseTooLargeError, match="1000000000 bytes"):
            await client.list_products()


async def test_the_default_cap_is_20_mb_and_none_lifts_it() -> None:
    read = [0]
    async with client_for(streamed(21 * 1024 * 1024, read)) as client:
        assert client.max_response_bytes == 20 * 1024 * 1024
        with pytest.raises(E.ResponseTooLargeError):
            await client.list_products()
    read = [0]
    async with client_for(streamed(3 * 1024 * 1024, read), max_response_bytes=None) as client:
        assert await client.list_products() == []  # read whole: blank, an empty answer
    assert read[0] >= 3 * 1024 * 1024


async def test_an_error_status_over_the_cap_is_mapped_by_its_status_and_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, content=b"x" * 5000)

    async with client_for(handler, max_response_bytes=1000) as client:
        with pytest.raises(E.UnavailableError):
            await client.list_products()
    assert len(calls) == 2  # a 503 is retried, whatever the size of its page


# ---------------------------------------------------------------------------------------------
# Bills: a window over the cap is halved


def bills_by_window(per_day: int, windows: list[tuple[int, int]]) -> Any:
    """Bills every hour of the window (``per_day`` filler bytes each day), so the answer's
    size grows with the window; records each window asked for."""

    def handler(request: httpx.Request) -> httpx.Response:
        start, end = int(request.url.params["startTime"]), int(request.url.params["endTime"])
        windows.append((start, end))
        first = start - start % 3600
        bills = [
            {
                "ownerId": "i-1",
                "productId": "p",
                "startTime": str(t),
                "endTime": str(t + 3599),
                "amount": "1000",
                "pad": "x" * (per_day // 24),
            }
            for t in range(first, end + 1, 3600)
        ]
        return httpx.Response(200, json={"bills": bills})

    return handler


async def test_a_bills_window_over_the_cap_is_halved_until_it_fits() -> None:
    windows: list[tuple[int, int]] = []
    # a day of bills is about 12 kB: a 4-day window is over a 20 kB cap, a 1-day one is not
    handler = bills_by_window(per_day=9600, windows=windows)
    async with client_for(handler, max_response_bytes=20_000) as client:
        with capture_logs() as logs:
            bills = await client.list_usage_bills("Hour", "gpu", T0, T0 + timedelta(days=4))
    starts = sorted(int(b.start_time.timestamp()) for b in bills)
    # every hour once: the halves' shared boundary hour is not counted twice
    assert starts == list(range(int(T0.timestamp()), int(T0.timestamp()) + 4 * 86400 + 1, 3600))
    assert windows[0] == (int(T0.timestamp()), int((T0 + timedelta(days=4)).timestamp()))
    lengths = [b - a for a, b in windows]
    assert max(lengths[1:]) <= 2 * 86400 and len(windows) > 3
    assert sum(1 for e in logs if e["event"] == "novita.bills_window_halved") >= 2


async def test_a_bills_window_too_large_even_at_the_smallest_length_fails() -> None:
    windows: list[tuple[int, int]] = []
    handler = bills_by_window(per_day=10**6, windows=windows)
    async with client_for(handler, max_response_bytes=10_000) as client:
        with pytest.raises(E.ResponseTooLargeError):
            await client.list_fixed_term_bills(T0, T0 + timedelta(hours=1))
    assert min(b - a for a, b in windows) >= MIN_BILL_WINDOW.total_seconds() / 2


@pytest.mark.parametrize(
    ("envelope", "error"),
    [
        ({"code": 500, "reason": "UNKNOWN", "message": "internal"}, E.ServerError),
        ({"code": 401, "reason": "FAILED_TO_AUTH", "message": "bad key"}, E.AuthenticationError),
        ({"code": 400, "reason": "LIST_BILL_ERROR", "message": "x", "metadata": {}}, E.APIError),
    ],
)
async def test_a_read_answered_2xx_with_only_an_error_envelope_is_an_error_not_an_empty_listing(
    envelope: dict[str, Any], error: type[Exception]
) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json=envelope)

    async with client_for(handler) as client:
        with pytest.raises(error):
            await client.list_instances()
    assert calls  # asked (and, for a server error, asked again), never read as "no instances"


async def test_a_2xx_listing_with_code_zero_is_data() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 0, "message": "ok"})

    async with client_for(handler) as client:
        assert list(await client.list_instances()) == []
