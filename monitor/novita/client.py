"""Typed async client of the Novita API (wire format: ``shared/novita-api/wire-format.md``).

One :class:`NovitaClient` per account. It owns:

* the network seam (:mod:`monitor.novita.transport`): aiohttp in production, an injectable
  ``httpx.AsyncBaseTransport`` in tests (``MockTransport``, ``ASGITransport(sim_app)``); the
  seam's httpx exceptions are translated here, with ``raise ... from exc``;
* the concurrency limit: one ``asyncio.Semaphore`` shared by every call, held only while a
  request is on the wire (not during backoff);
* retries (tenacity): exponential backoff with full jitter, ``Retry-After`` honoured, bounded by
  :class:`RetryPolicy` in attempts and in total time. A read (GET) is retried on 429, 5xx,
  timeouts and connection errors. An action (POST) is retried only when it was certainly not
  carried out (connect error, 429); a 5xx or a read timeout raises
  :class:`~monitor.novita.errors.OutcomeUnknownError`, because a repeated renew costs money;
  an action answered 2xx with an error in its body (``reason``, ``error``, a non-zero
  ``code``) raises that error, never reads as success (:meth:`NovitaClient._action`);
* error mapping by the body's ``reason``, then by HTTP status (:mod:`monitor.novita.errors`);
* pagination: ``pageNum``/``pageNo`` pages (robust to 0- vs 1-based numbering, de-duplicated by
  id, with a page cap) and ``pagination.cursor`` cursors; the instance listing must add up to its
  ``total`` (:class:`~monitor.novita.errors.IncompleteListingError` otherwise), an item of it
  that does not parse is reported (:class:`BadItem`) rather than failing the whole listing;
* an answer size cap (``max_response_bytes``, 20 MB by default): a larger answer is refused
  before it is read whole (:class:`~monitor.novita.errors.ResponseTooLargeError`); a bills
  window whose answer hits it is halved and asked again (bills have no pagination);
* readings of what the docs leave open, detected from the answers and logged once per process
  (``novita.reading``; :data:`READINGS`): the page base, the metric timestamp form, whether
  ``cpuUtilization`` is summed over cores (its values are withheld until that is shown), the
  metric lag.

The API key is sent only as ``Authorization: Bearer``; it is kept out of reprs, logs and errors.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import orjson
import pydantic
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from monitor.clock import Clock
from monitor.novita.errors import (
    REASON_TO_ERROR,
    APIError,
    IncompleteListingError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    NovitaError,
    OutcomeUnknownError,
    RateLimitedError,
    ResponseTooLargeError,
    ServerError,
    UnavailableError,
    error_class_for,
    error_class_for_status,
    redact,
    redact_json,
)
from monitor.novita.models import (
    BILLING_MODES,
    KNOWN_STATUSES,
    AsyncTask,
    AsyncTaskResult,
    Balance,
    BalanceDetail,
    Cluster,
    CpuProduct,
    FixedTermBill,
    Instance,
    InstanceMetrics,
    NetworkStorage,
    Product,
    TrainingTask,
    UsageBill,
    UserInfo,
    parse_int,
)
from monitor.novita.transport import (
    DEFAULT_MAX_BYTES,
    AiohttpWire,
    HttpxWire,
    Reply,
    TooLarge,
    Wire,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_BYTES",
    "MAX_BILL_WINDOW",
    "BadItem",
    "Listing",
    "NovitaClient",
    "RetryPolicy",
    "parse_retry_after",
    "renewal_bills_for",
    "split_window",
]

DEFAULT_BASE_URL = "https://api.novita.ai"
USER_AGENT = "novita-monitor"
GPU = "/gpu-instance/openapi/v1"
INSTANCE_ACTION = f"{GPU}/gpu/instance"
#: a fixed-term bill's ``tradeType`` for a renewal (manual or automatic; wire-format §2.7)
RENEWAL_TRADE_TYPE = "monthly_re_buy"
#: Bills are not paginated; the docs ask for windows of at most 31 days (wire-format §2.6).
MAX_BILL_WINDOW = timedelta(days=31)
#: A bills window whose answer is over the size cap is halved, down to this length.
MIN_BILL_WINDOW = timedelta(minutes=1)
#: Page size of the instance listing (tests make it small to exercise the page base).
INSTANCE_PAGE_SIZE = 100
#: The metrics endpoint silently replaces a window shorter than this by its default (§2.5).
MIN_METRIC_WINDOW = timedelta(seconds=60)
MIN_METRIC_INTERVAL_EXCLUSIVE = 15

M = TypeVar("M", bound=pydantic.BaseModel)

#: ``(what, value)`` readings already logged by this process: a reading detected from the data
#: is logged once per process, not once per answer (or per client: the daemon makes a new
#: client per account and on every reload)
READINGS: set[tuple[str, str]] = set()
#: a ``cpuUtilization`` value above this is not a per-core percentage: the series is summed
CPU_PER_CORE_MAX = 100.0


async def _asyncio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry. ``sleep`` and ``random`` are injectable so tests neither wait nor guess.

    Backoff before retry n (n = 1, 2, ...) is ``uniform(0, min(max_backoff_s, initial_s * 2**(n-1)))``
    (full jitter) unless the server sent ``Retry-After``, which is then waited exactly. The whole
    call, sleeps included, stays within ``max_total_s``: a wait that would exceed it ends the
    retries instead (a ``Retry-After`` longer than the remaining budget is not shortened).
    """

    max_attempts: int = 5
    initial_s: float = 0.5
    max_backoff_s: float = 30.0
    max_total_s: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=_asyncio_sleep, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int) -> float:
        cap = min(self.max_backoff_s, self.initial_s * (2 ** max(0, attempt - 1)))
        return cap * self.random()


def parse_retry_after(value: str | None, now: datetime | None) -> float | None:
    """``Retry-After`` as seconds (``"5"``) or an HTTP date (needs ``now``). Invalid -> None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if now is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class BadItem:
    """An item of a listing that arrived but does not parse into its model.

    ``resource_id`` is its id when one can be read (None otherwise), ``field`` the first field
    that failed, as the API names it (``""`` for the item itself), ``raw`` the offending value
    (at most 200 characters; None when it is not to be kept: anything under ``envs``, where
    users keep tokens), ``error`` what was wrong with it (there, only the kind of error).
    """

    resource_id: str | None
    field: str
    raw: str | None
    error: str


class Listing(list[M]):
    """The parsed items of a listing (a plain list of models), and ``bad``: the items that
    arrived but did not parse (:class:`BadItem`)."""

    def __init__(self, items: Iterable[M] = (), bad: Iterable[BadItem] = ()) -> None:
        super().__init__(items)
        self.bad: list[BadItem] = list(bad)


#: fields whose values are never copied into a :class:`BadItem` (instance environments)
_SECRET_FIELDS = frozenset({"envs", "env"})


def _bad_item(item: Any, exc: pydantic.ValidationError, id_attr: str) -> BadItem:
    """What to say of an item that does not parse: its id if readable, its first bad field."""
    errors = exc.errors(include_url=False)
    first: dict[str, Any] = dict(errors[0]) if errors else {}
    loc = tuple(first.get("loc", ()))
    field_name = ".".join(str(p) for p in loc)
    raw: str | None
    error = str(first.get("msg", "does not parse"))
    if loc and str(loc[0]) in _SECRET_FIELDS:
        raw, error = None, str(first.get("type", "invalid"))  # a message may quote the value
    else:
        value = first.get("input", item)
        raw = (value if isinstance(value, str) else json.dumps(value, default=str))[:200]
    resource_id = None
    if isinstance(item, dict):
        ident = item.get(id_attr)
        if isinstance(ident, str | int) and not isinstance(ident, bool) and str(ident).strip():
            resource_id = str(ident).strip()
    return BadItem(resource_id, field_name, raw, error)


def split_window(
    start: datetime, end: datetime, max_len: timedelta = MAX_BILL_WINDOW
) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` cut into consecutive windows no longer than ``max_len``."""
    if end <= start:
        raise ValueError(f"empty window: start {start.isoformat()} >= end {end.isoformat()}")
    windows = []
    cursor = start
    while cursor < end:
        stop = min(cursor + max_len, end)
        windows.append((cursor, stop))
        cursor = stop
    return windows


def _unix(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when.isoformat()}: pass an aware UTC datetime")
    return int(when.timestamp())


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class _Budget:
    """Per-call retry state: plans each wait once and keeps the total within the policy.

    Works whatever order tenacity calls ``stop`` and ``wait`` in (it changed in tenacity 8.3).
    """

    def __init__(self, policy: RetryPolicy, now: Callable[[], datetime | None]) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.slept = 0.0
        self._now = now
        self._plans: dict[int, float | None] = {}

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, self.slept)

    def plan(self, state: RetryCallState) -> float | None:
        """The wait before the next attempt, or None to stop."""
        n = state.attempt_number
        if n not in self._plans:
            self._plans[n] = self._compute(state)
        return self._plans[n]

    def _compute(self, state: RetryCallState) -> float | None:
        if state.attempt_number >= self.policy.max_attempts:
            return None
        exc = state.outcome.exception() if state.outcome else None
        remaining = self.policy.max_total_s - self.elapsed()
        hint = exc.retry_after if isinstance(exc, RateLimitedError) else None
        if hint is not None:
            return hint if hint <= remaining else None
        if remaining <= 0:
            return None
        return min(self.policy.backoff(state.attempt_number), remaining)

    def stop(self, state: RetryCallState) -> bool:
        return self.plan(state) is None

    def wait(self, state: RetryCallState) -> float:
        return self.plan(state) or 0.0

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds
        await self.policy.sleep(seconds)


class NovitaClient:
    """Async client of one Novita account. Use as ``async with NovitaClient(key) as client``.

    ``requests_sent`` counts every HTTP attempt, retries included (for the benchmark).
    ``clock`` (optional) resolves ``Retry-After`` dates when the response has no ``Date`` header
    and lets :meth:`get_metrics` refuse a window that ends in the future.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_concurrency: int = 8,
        timeout: float = 15.0,
        retry: RetryPolicy | None = None,
        logger: Any = None,
        clock: Clock | None = None,
        max_pages: int = 200,
        max_response_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        #: the largest answer body read (bytes, decoded; None: no cap), see ``transport``
        self.max_response_bytes = max_response_bytes
        self._api_key = api_key or ""
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"

        self._headers = headers
        # the network seam (monitor.novita.transport): aiohttp in production, any httpx
        # transport in tests
        self._wire: Wire = (
            AiohttpWire(max_connections=max_concurrency, timeout=timeout, user_agent=USER_AGENT)
            if transport is None
            else HttpxWire(transport)
        )
        self.max_concurrency = max_concurrency
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self.base_url = base_url
        self._root = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.max_pages = max_pages
        self.requests_sent = 0
        self._log = logger if logger is not None else structlog.get_logger("monitor.novita")
        self._clock = clock
        self._noted: set[tuple[str, str]] = set()
        #: what this client has read from the answers (see :meth:`_reading`): ``page_base``
        #: ("0"/"1"), ``metric_timestamp`` ("s"/"ms"/"iso"), ``cpu`` ("summed" once shown)
        self.readings: dict[str, str] = {}
        #: the smallest gap seen between a metrics window's end and its newest point (s)
        self.metric_lag_s: int | None = None

    def __repr__(self) -> str:
        return f"NovitaClient(base_url={self.base_url!r}, api_key='***')"

    async def __aenter__(self) -> NovitaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._wire.aclose()

    def _concurrency(self) -> asyncio.Semaphore:
        # made on first use, inside the event loop that uses it (a semaphore is bound to one)
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(self.max_concurrency)
            self._slots_loop = loop
        return self._slots

    # -----------------------------------------------------------------------------------------
    # Account

    async def get_balance(self) -> Balance:
        """Balance in USD from ``billing/balance/detail``; ``/v3/user`` if that is missing."""
        path = "/openapi/v1/billing/balance/detail"
        try:
            body = await self._get(path)
        except APIError as exc:
            if not (isinstance(exc, NotFoundError) or exc.status == 404):
                raise
            self._log.info("novita.balance_fallback", path=path, status=exc.status)
        else:
            if isinstance(body, dict) and isinstance(body.get("data"), dict):
                body = body["data"]
            detail = self._parse(BalanceDetail, body, path)
            if detail.available_balance is not None:
                return detail.to_balance()
            self._log.warning("novita.balance_fallback", path=path, why="no availableBalance")
        info = await self.get_user_info()
        if info.credit_balance is None:
            raise MalformedResponseError(
                "/v3/user has no credit_balance", status=200, path="/v3/user", method="GET"
            )
        return info.to_balance()

    async def get_user_info(self) -> UserInfo:
        path = "/v3/user"
        return self._parse(UserInfo, await self._get(path), path)

    # -----------------------------------------------------------------------------------------
    # Instances and metrics

    async def list_instances(self, page_size: int | None = None) -> Listing[Instance]:
        """Every instance, all pages (``pageNum`` from 0; see :meth:`_pages`).

        The listing must add up: when its pages hold fewer items than ``total``,
        :class:`~monitor.novita.errors.IncompleteListingError` (whatever is missing would
        silently drop out of burn rate and expiry checks). An item that arrived but does not
        parse counts as received: it is left out of the list and described in ``.bad``.
        """
        instances = await self._pages(
            f"{GPU}/gpu/instances",
            Instance,
            "instances",
            "pageNum",
            page_size or INSTANCE_PAGE_SIZE,
            "id",
            complete=True,
        )
        for inst in instances:
            self._note_instance(inst)
        return instances

    async def get_instance(self, instance_id: str) -> Instance:
        """One instance (bare object; a ``{"instance": {...}}`` wrapper is tolerated)."""
        path = f"{GPU}/gpu/instance"
        body = await self._get(path, {"instanceId": instance_id})
        if isinstance(body, dict) and "id" not in body and isinstance(body.get("instance"), dict):
            body = body["instance"]
        inst = self._parse(Instance, body, path)
        self._note_instance(inst)
        return inst

    async def get_metrics(
        self, instance_id: str, start: datetime, end: datetime, interval_s: int = 60
    ) -> InstanceMetrics:
        """Metrics over ``[start, end]``. Refuses windows the API would silently replace.

        The API substitutes its default (the last 60 s at 15 s) for a window shorter than 60 s, an
        interval not greater than 15 s or an end in the future (wire-format §2.5); that would look
        like valid data for the wrong period, so this raises ``ValueError`` instead.
        """
        start_s, end_s = _unix(start), _unix(end)
        if end - start < MIN_METRIC_WINDOW:
            raise ValueError(f"metric window must be at least 60 s, got {end - start}")
        if start_s <= 0:
            raise ValueError("metric window must start after 1970")
        if interval_s <= MIN_METRIC_INTERVAL_EXCLUSIVE:
            raise ValueError(f"metric interval must be greater than 15 s, got {interval_s}")
        if self._clock is not None and end > self._clock.now():
            raise ValueError(f"metric window ends in the future: {end.isoformat()}")
        path = "/openapi/v1/metrics/gpu/instance"
        params = {
            "instanceId": instance_id,
            "startTime": start_s,
            "endTime": end_s,
            "interval": interval_s,
        }
        body = await self._get(path, params)
        form = _timestamp_form(body)
        if form is not None:
            self._reading("metric_timestamp", form, path=path)
        metrics = self._parse(InstanceMetrics, body, path)
        self._note_lag(metrics, end_s, interval_s)
        return self._cpu_as_known(metrics, instance_id)

    def _cpu_as_known(self, metrics: InstanceMetrics, instance_id: str) -> InstanceMetrics:
        """``cpuUtilization`` only once it is known to be summed over cores.

        The docs do not say whether it is summed over cores (up to 100 x cpuNum) or a per-core
        average (0-100); the console divides it by ``cpuNum`` (wire-format §2.5). A value above
        100 shows it is summed; no value can show the opposite (a summed series of a quiet
        instance stays below 100 too). Until some answer of this account shows a value above
        100, the series is withheld (an unknown CPU figure, not one ``cpuNum`` times too
        small); from then on it is passed on as received, for the store to divide by
        ``cpuNum``.
        """
        cpu = metrics.cpu_utilization
        if not cpu or self.readings.get("cpu") == "summed":
            return metrics
        if max(p.value for p in cpu) > CPU_PER_CORE_MAX:
            self._reading("cpu", "summed", instance_id=instance_id)
            return metrics
        self._reading(
            "cpu",
            "unknown",
            instance_id=instance_id,
            note="cpuUtilization withheld until a value above 100 shows it is summed over cores",
        )
        return metrics.model_copy(update={"cpu_utilization": []})

    def _note_lag(self, metrics: InstanceMetrics, end_s: int, interval_s: int) -> None:
        """Track how far the newest point trails the window's end (the docs: "about 1 min")."""
        newest = max((p.ts for series in _all_series(metrics) for p in series[-1:]), default=None)
        if newest is None or end_s - newest > 10 * 60:  # a stopped instance says nothing
            return
        lag = max(0, end_s - newest)
        if self.metric_lag_s is None or lag < self.metric_lag_s:
            self.metric_lag_s = lag
        # the newest point may be up to one interval older than the lag itself
        self._reading("metric_lag", f"{lag // interval_s * interval_s}s+")

    # -----------------------------------------------------------------------------------------
    # Bills

    async def list_usage_bills(
        self,
        cycle_type: str,
        product_category: str,
        start: datetime,
        end: datetime,
        owner_id: str | None = None,
        product_name: str | None = None,
    ) -> list[UsageBill]:
        """Pay-as-you-go bills; windows longer than 31 days are queried in consecutive parts."""
        path = "/openapi/v1/billing/bill/list"
        base = {
            "cycleType": cycle_type,
            "productCategory": product_category,
            "ownerId": owner_id,
            "productName": product_name,
        }
        return await self._windowed_bills(path, base, start, end, UsageBill)

    async def list_fixed_term_bills(
        self,
        start: datetime,
        end: datetime,
        category: str = "gpu",
        owner_id: str | None = None,
    ) -> list[FixedTermBill]:
        """Subscription bills (``category``, not ``productCategory``), 31-day windows."""
        path = "/openapi/v1/billing/bill/monthly/list"
        base = {"category": category, "ownerId": owner_id}
        return await self._windowed_bills(path, base, start, end, FixedTermBill)

    async def list_instance_fixed_term_bills(
        self, instance_id: str, start: datetime, end: datetime
    ) -> list[FixedTermBill]:
        """One instance's subscription bills (``ownerId``) created in ``[start, end]`` (GPU
        category; 31-day windows). Bills of another ``ownerID`` are dropped (a server that
        ignored the filter); bills without one are kept (asked by ``ownerId``, they are
        presumably this instance's, and a "renewal already paid" check errs on that side)."""
        if not instance_id:
            raise ValueError("instance_id is required")
        bills = await self.list_fixed_term_bills(start, end, "gpu", owner_id=instance_id)
        mine = [b for b in bills if b.owner_id in (None, instance_id)]
        if len(mine) < len(bills):
            self._log.warning(
                "novita.owner_filter_ignored",
                instance_id=instance_id,
                dropped=len(bills) - len(mine),
            )
        return mine

    async def find_renewal_bills(
        self, instance_id: str, end_time: datetime, start: datetime, end: datetime
    ) -> list[FixedTermBill]:
        """Bills that renewed ``instance_id``'s subscription for the period starting at
        ``end_time`` (the ``endTime`` being renewed), among its fixed-term bills created in
        ``[start, end]`` (see :func:`renewal_bills_for`). Whether the bill list's
        ``startTime``/``endTime`` filter the bills' creation or their period is undocumented:
        a window from before the renewal could have been bought (an auto-renewal is charged 3
        days before ``end_time``) to after both now and ``end_time`` covers both readings."""
        bills = await self.list_instance_fixed_term_bills(instance_id, start, end)
        return renewal_bills_for(bills, end_time)

    async def _windowed_bills(
        self, path: str, base: dict[str, Any], start: datetime, end: datetime, model: type[M]
    ) -> list[M]:
        """Bills over ``[start, end]``, in windows of at most 31 days; a window whose answer
        is over the size cap is halved and each half asked for (down to
        :data:`MIN_BILL_WINDOW`): the API does not paginate bills, so a shorter window is the
        only way to ask for less."""
        out: list[M] = []
        seen: set[str] = set()
        todo = list(reversed(split_window(start, end)))
        while todo:
            lo, hi = todo.pop()
            params = {**base, "startTime": _unix(lo), "endTime": _unix(hi)}
            try:
                body = await self._get(path, params)
            except ResponseTooLargeError:
                half = timedelta(seconds=(_unix(hi) - _unix(lo)) // 2)
                if half < MIN_BILL_WINDOW:
                    raise
                self._log.warning(
                    "novita.bills_window_halved",
                    path=path,
                    start=lo.isoformat(),
                    end=hi.isoformat(),
                    limit=self.max_response_bytes,
                )
                todo += [(lo + half, hi), (lo, lo + half)]  # the earlier half first
                continue
            # a window of a thousand instances' bills takes tens of milliseconds to validate:
            # done on a worker thread, the event loop keeps serving the requests in flight
            parsed = await asyncio.to_thread(self._parse_items, model, body, "bills", path)
            for bill in parsed:
                # a bill straddling a window boundary comes back twice
                key = bill.model_dump_json()
                if key not in seen:
                    seen.add(key)
                    out.append(bill)
        return out

    # -----------------------------------------------------------------------------------------
    # Catalogue and storage

    async def list_products(
        self,
        cluster_id: str | None = None,
        product_name: str | None = None,
        billing_method: str | None = None,
    ) -> list[Product]:
        path = f"{GPU}/products"
        params = {
            "clusterId": cluster_id,
            "productName": product_name,
            "billingMethod": billing_method,
        }
        return self._parse_items(Product, await self._get(path, params), "data", path)

    async def list_cpu_products(
        self, cluster_id: str | None = None, product_name: str | None = None
    ) -> list[CpuProduct]:
        path = f"{GPU}/cpu/products"
        params = {"clusterId": cluster_id, "productName": product_name}
        return self._parse_items(CpuProduct, await self._get(path, params), "data", path)

    async def list_clusters(self) -> list[Cluster]:
        path = f"{GPU}/clusters"
        return self._parse_items(Cluster, await self._get(path), "data", path)

    async def list_network_storages(self, page_size: int = 100) -> list[NetworkStorage]:
        return await self._pages(
            f"{GPU}/networkstorages/list", NetworkStorage, "data", "pageNo", page_size, "storage_id"
        )

    # -----------------------------------------------------------------------------------------
    # Tasks

    async def list_training_tasks(self, limit: int = 50) -> list[TrainingTask]:
        """All training tasks, following ``pagination.next_cursor`` from ``c_0``."""
        path = "/v3/training"
        cursor = "c_0"
        seen_cursors = {cursor}
        tasks: dict[str, TrainingTask] = {}
        for _ in range(self.max_pages):
            params = {"pagination.limit": limit, "pagination.cursor": cursor}
            body = await self._get(path, params)
            page = self._parse_items(TrainingTask, body, "tasks", path)
            for task in page:
                tasks.setdefault(task.task_id, task)
            pagination = body.get("pagination") if isinstance(body, dict) else None
            nxt = pagination.get("next_cursor") if isinstance(pagination, dict) else None
            if not page or not nxt:
                return list(tasks.values())
            nxt = str(nxt)
            if nxt in seen_cursors:
                self._log.warning("novita.cursor_repeats", path=path, cursor=nxt)
                return list(tasks.values())
            seen_cursors.add(nxt)
            cursor = nxt
        raise MalformedResponseError(
            f"more than {self.max_pages} pages; cursor never ended", path=path, method="GET"
        )

    async def get_async_task(self, task_id: str) -> AsyncTask:
        path = "/v3/async/task-result"
        body = await self._get(path, {"task_id": task_id})
        return self._parse(AsyncTaskResult, body, path).task

    # -----------------------------------------------------------------------------------------
    # Actions (POST). Each returns the raw answer for the caller's audit log.

    async def stop_instance(self, instance_id: str) -> dict[str, Any]:
        return await self._action("stop", {"instanceId": instance_id})

    async def start_instance(self, instance_id: str) -> dict[str, Any]:
        return await self._action("start", {"instanceId": instance_id})

    async def restart_instance(self, instance_id: str) -> dict[str, Any]:
        return await self._action("restart", {"instanceId": instance_id})

    async def delete_instance(self, instance_id: str) -> dict[str, Any]:
        return await self._action("delete", {"instanceId": instance_id})

    async def renew_instance(self, instance_id: str, months: int) -> dict[str, Any]:
        _check_months(months)
        return await self._action("renewInstance", {"instanceId": instance_id, "month": months})

    async def convert_to_monthly(self, instance_id: str, months: int) -> dict[str, Any]:
        _check_months(months)
        body = {"instanceId": instance_id, "month": months}
        return await self._action("transToMonthlyInstance", body)

    async def set_auto_renew(
        self, instance_ids: Iterable[str], enabled: bool, months: int = 1
    ) -> dict[str, Any]:
        ids = list(instance_ids)
        if not ids:
            raise ValueError("set_auto_renew needs at least one instance id")
        _check_months(months)
        body = {"instanceIds": ids, "autoRenew": bool(enabled), "autoRenewMonth": months}
        return await self._action("setAutoRenew", body)

    async def _action(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one action; the answer as a dict for the audit log (``{}`` as documented; a
        body that is not JSON as ``{"raw": text}``, another JSON value as ``{"result": v}``).

        Success is a 2xx whose body carries no error. Raised instead:

        * the mapped business error for an error answer, a 4xx or a 2xx with ``reason``,
          ``error`` or a non-zero ``code`` in its body
          (:class:`~monitor.novita.errors.InsufficientBalanceError` for
          ``BALANCE_NOT_ENOUGH``, :class:`~monitor.novita.errors.InvalidRequestError` for a
          refused parameter or state, ...): the platform said no, nothing was done;
        * :class:`~monitor.novita.errors.OutcomeUnknownError` after exactly one send for a
          5xx, a timeout or a disconnect once the request was sent (or a 2xx naming a server
          error): the caller reads the instance to learn what happened;
        * :class:`~monitor.novita.errors.UnavailableError` (``not_sent``) when it could not be
          sent at all, after the retries (a connect error or a 429 is retried: certainly not
          carried out).

        Each error built from an answer keeps its body in ``answer``.
        """
        path = f"{INSTANCE_ACTION}/{name}"
        answer = await self._request("POST", path, json_body=body)
        if isinstance(answer, dict):
            return answer
        return {"result": answer}

    # -----------------------------------------------------------------------------------------
    # Pagination and parsing

    async def _pages(
        self,
        path: str,
        model: type[M],
        items_key: str,
        page_param: str,
        page_size: int,
        id_attr: str,
        *,
        complete: bool = False,
    ) -> Listing[M]:
        """Collect all pages, whether the server counts pages from 0 or from 1.

        Starts at page 0. When the first page gives ``total``, the pages it implies are fetched
        at once (pages 1..k cover a 0-based server, whose last page is k-1, and a 1-based one,
        whose page 0 was page 1: at most one request more than needed, and a fleet of 1000
        costs two round trips instead of ten). Then, page by page while the count falls short:
        stops when the number collected reaches ``total``, or a page is empty, or (``total``
        absent) a page is short. Items are de-duplicated by ``id_attr``. A page 0 that is empty
        while ``total`` is absent or positive is followed by page 1 (a 1-based server that
        answers page 0 with nothing). Two pages in a row with nothing new end the listing (a
        server that ignores the page number); ``max_pages`` caps the requests.

        ``complete``: the listing stands for the whole account, so an item that does not parse
        counts as received (it goes to ``Listing.bad``, the others are kept), and fewer items
        received than the smallest ``total`` any page announced raise
        :class:`~monitor.novita.errors.IncompleteListingError`. Otherwise an item that does not
        parse fails the listing and a short one is only logged.
        """
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        collected: dict[str, M] = {}
        bad: dict[str, BadItem] = {}
        totals: list[int] = []
        sent = 0

        async def fetch(n: int) -> tuple[list[M], list[tuple[str, BadItem]], int | None]:
            body = await self._get(path, {"pageSize": page_size, page_param: n})
            total = _total(body)
            if total is not None:
                totals.append(total)
            if not complete:
                return self._parse_items(model, body, items_key, path), [], total
            items, failed = self._parse_items_lenient(model, body, items_key, path, id_attr)
            return items, failed, total

        first_ids: set[str] = set()

        def base_from(second: list[M]) -> None:
            """Page 1 repeating page 0 means 1-based pages (page 0 read as page 1); new items
            on page 1 mean 0-based ones (wire-format §1.5, open question 1)."""
            ids = {str(getattr(item, id_attr)) for item in second}
            if first_ids and ids:
                self._reading("page_base", "1" if ids <= first_ids else "0", path=path)

        def add(items: list[M], failed: Sequence[tuple[str, BadItem]] = ()) -> int:
            new = 0
            for item in items:
                key = str(getattr(item, id_attr))
                if key not in collected:
                    collected[key] = item
                    bad.pop(key, None)
                    new += 1
            for key, found in failed:
                if key not in collected and key not in bad:
                    bad[key] = found
                    new += 1
            return new

        def received() -> int:
            return len(collected) + len(bad)

        items, failed, total = await fetch(0)
        sent = 1
        page = 0
        if not items and not failed and (total is None or total > 0):
            items, failed, total = await fetch(1)
            sent, page = 2, 1
            if items:  # an empty page 0, then items: pages start at 1
                self._reading("page_base", "1", path=path)
        add(items, failed)
        if page == 0:
            first_ids.update(str(getattr(item, id_attr)) for item in items)
        count = len(items) + len(failed)
        done = not count or (total is not None and received() >= total)
        done = done or (total is None and count < page_size)
        if not done and total is not None and page == 0:
            last = min(-(-total // page_size), self.max_pages - 1)
            pages = await asyncio.gather(*(fetch(n) for n in range(1, last + 1)))
            sent += len(pages)
            if pages:
                base_from(pages[0][0])
            fresh = [add(p_items, p_failed) for p_items, p_failed, _ in pages]
            page = last
            done = received() >= total or not pages or not (pages[-1][0] or pages[-1][1])
            if not done and sum(fresh[-2:]) == 0 and len(fresh) >= 2:
                self._log.warning("novita.pages_repeat", path=path, page=page)
                done = True
        stale = 0
        while not done:
            if sent >= self.max_pages:
                raise MalformedResponseError(
                    f"more than {self.max_pages} pages; listing never ended",
                    path=path,
                    method="GET",
                )
            page += 1
            items, failed, total = await fetch(page)
            sent += 1
            if page == 1:
                base_from(items)
            new = add(items, failed)
            count = len(items) + len(failed)
            if not count:
                break
            if total is not None and received() >= total:
                break
            if total is None and count < page_size:
                break
            stale = 0 if new else stale + 1
            if stale >= 2:
                self._log.warning("novita.pages_repeat", path=path, page=page)
                break
        expected = min(totals, default=None)
        if expected is not None and received() < expected:
            if complete:
                raise IncompleteListingError(
                    f"incomplete listing: {received()} of {expected} items arrived",
                    status=200,
                    path=path,
                    method="GET",
                )
            self._log.warning("novita.pages_short", path=path, total=expected, collected=received())
        if bad:
            self._log.warning(
                "novita.items_unparsable",
                path=path,
                count=len(bad),
                first=next(iter(bad.values())).error,
            )
        return Listing(collected.values(), bad.values())

    def _parse(self, model: type[M], body: Any, path: str) -> M:
        try:
            return model.model_validate(body)
        except pydantic.ValidationError as exc:
            raise MalformedResponseError(
                f"response does not parse as {model.__name__}: "
                f"{exc.error_count()} error(s), first: {_first_error(exc)}",
                status=200,
                path=path,
                method="GET",
            ) from exc

    def _raw_items(self, body: Any, key: str, path: str) -> list[Any]:
        raw: Any
        if isinstance(body, list):
            raw = body
        elif isinstance(body, dict):
            raw = body.get(key)
            if raw is None or raw == "":
                raw = []
        else:
            raw = None
        if not isinstance(raw, list):
            raise MalformedResponseError(
                f"expected a list under {key!r}", status=200, path=path, method="GET"
            )
        return raw

    def _parse_items(self, model: type[M], body: Any, key: str, path: str) -> list[M]:
        raw = self._raw_items(body, key, path)
        try:  # the whole list in one call into pydantic-core: a fifth less CPU per item
            return _list_of(model).validate_python(raw)
        except pydantic.ValidationError:  # item by item, for the error that names the item
            return [self._parse(model, item, path) for item in raw]

    def _parse_items_lenient(
        self, model: type[M], body: Any, key: str, path: str, id_attr: str
    ) -> tuple[list[M], list[tuple[str, BadItem]]]:
        """Like :meth:`_parse_items`, but an item that does not parse is described (with a
        key: its id, else its JSON text) instead of failing the page."""
        raw = self._raw_items(body, key, path)
        try:  # the usual case: every item parses, in one call into pydantic-core
            return _list_of(model).validate_python(raw), []
        except pydantic.ValidationError:
            pass
        items: list[M] = []
        failed: list[tuple[str, BadItem]] = []
        for item in raw:
            try:
                items.append(model.model_validate(item))
            except pydantic.ValidationError as exc:
                found = _bad_item(item, exc, id_attr)
                key_of = found.resource_id or "#" + json.dumps(item, sort_keys=True, default=str)
                failed.append((key_of, found))
        return items, failed

    def _note_instance(self, inst: Instance) -> None:
        """Log unknown statuses and billing modes once per value: tolerated, but worth knowing."""
        if inst.status and inst.status not in KNOWN_STATUSES:
            self._note("status", inst.status, inst.id)
        if inst.billing_mode and inst.billing_mode not in BILLING_MODES:
            self._note("billing_mode", inst.billing_mode, inst.id)

    def _reading(self, what: str, value: str, **context: Any) -> None:
        """Record a reading of the API detected from its answers; log it once per process."""
        if self.readings.get(what) == value:
            return
        self.readings[what] = value
        if (what, value) in READINGS:
            return
        READINGS.add((what, value))
        self._log.info("novita.reading", what=what, value=value, **context)

    def _note(self, what: str, value: str, instance_id: str) -> None:
        if (what, value) in self._noted:
            return
        self._noted.add((what, value))
        self._log.warning("novita.unknown_value", field=what, value=value, instance_id=instance_id)

    # -----------------------------------------------------------------------------------------
    # The request core: retries, concurrency, error mapping

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._request("GET", path, params=_clean(params or {}))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> Any:
        is_read = method == "GET"

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, RateLimitedError):
                return True
            if is_read:
                return isinstance(exc, ServerError | UnavailableError)
            # an action: only when it certainly did not reach the platform
            return isinstance(exc, UnavailableError) and exc.not_sent

        budget = _Budget(self.retry, self._now)
        # The first attempt runs outside tenacity, whose per-call machinery costs about a third
        # of a request's CPU; a retryable failure is handed to it as the outcome of attempt 1.
        try:
            return await self._attempt(method, path, params, json_body)
        except NovitaError as exc:
            if not retryable(exc):
                raise
            first_failure: NovitaError | None = exc

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self._log.warning(
                "novita.retry",
                method=method,
                path=path,
                attempt=state.attempt_number,
                delay_s=round(budget.plan(state) or 0.0, 3),
                error=type(exc).__name__,
                status=getattr(exc, "status", None),
                reason=getattr(exc, "reason", None),
            )

        retrying = AsyncRetrying(
            stop=budget.stop,
            wait=budget.wait,
            retry=retry_if_exception(retryable),
            sleep=budget.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first_failure is not None:
                    failed, first_failure = first_failure, None
                    raise failed
                return await self._attempt(method, path, params, json_body)
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json_body: dict[str, Any] | None,
    ) -> Any:
        is_read = method == "GET"
        url = f"{self._root}{path}?{urlencode(params)}" if params else self._root + path
        body = None if json_body is None else json.dumps(json_body).encode()
        async with self._concurrency():
            self.requests_sent += 1
            try:
                response = await self._wire.send(
                    method, url, self._headers, body, self.max_response_bytes
                )
            except TooLarge as exc:
                return self._too_large(exc, method, path)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise UnavailableError(
                    f"could not connect: {type(exc).__name__}",
                    path=path,
                    method=method,
                    not_sent=True,
                ) from exc
            except httpx.HTTPError as exc:
                what = f"{type(exc).__name__} after the request was sent"
                if is_read:
                    raise UnavailableError(what, path=path, method=method) from exc
                raise OutcomeUnknownError(
                    f"{what}; the action may or may not have been carried out",
                    path=path,
                    method=method,
                ) from exc
        return self._handle(response, method, path)

    def _too_large(self, exc: TooLarge, method: str, path: str) -> Any:
        """An answer over the cap, not read. Its status still speaks: an error status is mapped
        as usual (a 5xx is retried); a read's 2xx raises
        :class:`~monitor.novita.errors.ResponseTooLargeError`; an action's 2xx means the
        platform accepted it, so it is returned as such, its unread words noted."""
        status = exc.status_code
        self._log.warning(
            "novita.answer_too_large",
            method=method,
            path=path,
            status=status,
            limit=exc.limit,
            announced=exc.declared,
        )
        if not 200 <= status < 300:
            return self._handle(Reply(status, exc.headers, b""), method, path)
        if method != "GET":
            return {"raw": f"(an answer of more than {exc.limit} bytes, not read)"}
        what = (
            "its body passed the cap"
            if exc.declared is None
            else f"{exc.declared} bytes announced, over the cap"
        )
        raise ResponseTooLargeError(
            f"answer refused: {what} of {exc.limit} bytes (max_response_bytes)",
            limit=exc.limit,
            status=status,
            path=path,
            method=method,
        ) from None

    def _handle(self, response: Reply, method: str, path: str) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            answer = self._decode_ok(response, method, path)
            if method == "GET" and not _is_envelope(answer):
                return answer  # data (a listing or a record), whatever fields it carries
            # an action's answer, or a read answered 2xx with nothing but an error envelope
            # (``{"code": 500, "reason": ..., "message": ...}``): that is an error, never an
            # empty listing (instances would silently drop out of burn and expiry checks)
            err = self._error_in_body(answer, status, method, path)
            if err is None:
                return answer
            event = "novita.read_error_body" if method == "GET" else "novita.action_error_body"
            self._log.warning(event, path=path, status=status, reason=err.reason)
        else:
            err = self._error_from(response, method, path)
        unknown = status >= 500 or isinstance(err, ServerError | UnavailableError)
        if method != "GET" and unknown and not isinstance(err, RateLimitedError):
            raise OutcomeUnknownError(
                f"{err.message} (HTTP {status}); the action may or may not have been carried out",
                status=status,
                reason=err.reason,
                path=path,
                method=method,
                underlying=err,
                answer=err.answer,
            )
        raise err

    def _error_in_body(self, answer: Any, status: int, method: str, path: str) -> APIError | None:
        """The error a 2xx action answer carries, or None: a non-empty ``reason``, a non-empty
        ``error`` or a non-zero ``code`` (wire-format §7.7). Mapped by ``reason``; else by
        ``code`` when it is an HTTP error status (the kratos envelope's ``code``); else
        :class:`InvalidRequestError` (the platform said it failed, without saying how)."""
        if not isinstance(answer, dict):
            return None
        raw_reason = answer.get("reason")
        reason = str(raw_reason).strip() if _present(raw_reason) else None
        reason = reason or None
        error = answer.get("error")
        code = answer.get("code")
        try:
            code_n = parse_int(code)
        except ValueError:
            code_n = None  # a non-numeric code ("FAILED"): not zero
            bad_code = True
        else:
            bad_code = code_n is not None and code_n != 0
        if reason is None and not _present(error) and not bad_code:
            return None
        cls: type[APIError] = InvalidRequestError
        if reason is not None and reason.upper() in REASON_TO_ERROR:
            cls = error_class_for(reason, status)
        elif code_n is not None and 400 <= code_n <= 599:
            cls = error_class_for_status(code_n)
        if reason is not None and reason.upper() not in REASON_TO_ERROR:
            self._log.warning("novita.unknown_reason", path=path, status=status, reason=reason)
        message = answer.get("message")
        if not message and isinstance(error, dict):
            message = error.get("message")
        if not message and _present(error) and not isinstance(error, dict):
            message = error
        what = str(message)[:500] if message else f"code {code!r}"
        kw: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "path": path,
            "method": method,
            "answer": redact_json(answer, self._api_key),
        }
        text = redact(f"HTTP {status} with an error in its body: {what}", self._api_key)
        if issubclass(cls, RateLimitedError):
            return RateLimitedError(text, retry_after=None, **kw)
        return cls(text, **kw)

    def _decode_ok(self, response: Reply, method: str, path: str) -> Any:
        content = response.content
        if not content.strip():
            return {}
        try:
            # bytes straight to the parser: no charset sniffing of a decoded str first, which
            # costs more than the parse on small bodies; orjson: a third of json's time on a
            # metrics answer (its errors are ValueErrors too)
            return orjson.loads(content)
        except ValueError as exc:
            text = response.text
            if method != "GET":
                # the platform accepted the action; keep its words for the audit log
                self._log.warning(
                    "novita.action_body_not_json", path=path, status=response.status_code
                )
                return {"raw": redact(text[:2000], self._api_key)}
            raise MalformedResponseError(
                f"response body is not JSON: {redact(text[:200], self._api_key)!r}",
                status=response.status_code,
                path=path,
                method=method,
            ) from exc

    def _error_from(self, response: Reply, method: str, path: str) -> APIError:
        status = response.status_code
        reason, message = _envelope(response)
        message = redact(message or response.reason_phrase or f"HTTP {status}", self._api_key)
        cls = error_class_for(reason, status)
        if reason and reason.upper() not in REASON_TO_ERROR:
            self._log.warning("novita.unknown_reason", path=path, status=status, reason=reason)
        kw: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "path": path,
            "method": method,
            "answer": _answer_of(response, self._api_key),
        }
        if issubclass(cls, RateLimitedError):
            ref = _date_header(response) or self._now()
            retry_after = parse_retry_after(response.headers.get("Retry-After"), ref)
            return RateLimitedError(message, retry_after=retry_after, **kw)
        return cls(message, **kw)

    def _now(self) -> datetime | None:
        return self._clock.now() if self._clock is not None else None


@cache
def _list_of(model: type[M]) -> pydantic.TypeAdapter[list[M]]:
    return pydantic.TypeAdapter(list[model])  # type: ignore[valid-type]


def _all_series(metrics: InstanceMetrics) -> list[list[Any]]:
    gpus = (metrics.gpu_utilization, metrics.gpu_mem_utilization)
    return [
        metrics.cpu_utilization,
        metrics.mem_utilization,
        metrics.root_disk_utilization,
        *(g.avg for g in gpus),
        *(s.items for g in gpus for s in g.gpu_ids),
    ]


def _timestamp_form(body: Any) -> str | None:
    """How a metrics answer writes its points' ``timestamp``: ``s`` (Unix seconds), ``ms``
    (milliseconds) or ``iso`` (ISO 8601), from its first point; None without points. The
    parser accepts all three (:func:`monitor.novita.models.parse_timestamp`); the docs show
    only ``"<string>"`` (wire-format §2.5, §6 question 5)."""
    if not isinstance(body, dict):
        return None
    for key in ("gpuUtilization", "cpuUtilization", "memUtilization"):
        series = body.get(key)
        if isinstance(series, dict):
            series = series.get("avg")
        if isinstance(series, list) and series and isinstance(series[0], dict):
            stamp = series[0].get("timestamp")
            try:
                seconds = float(stamp)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return "iso" if isinstance(stamp, str) and stamp.strip() else None
            return "ms" if seconds > 1e11 else "s"
    return None


def _total(body: Any) -> int | None:
    """The listing's ``total`` (a string or a number); unreadable counts as absent."""
    if not isinstance(body, dict):
        return None
    try:
        total = parse_int(body.get("total"))
    except ValueError:
        return None
    return total if total is not None and total >= 0 else None


def renewal_bills_for(
    bills: Iterable[FixedTermBill], end_time: datetime, tolerance: timedelta = timedelta(days=1)
) -> list[FixedTermBill]:
    """The bills among ``bills`` that renew a subscription for the period starting at
    ``end_time`` (the ``endTime`` being renewed): ``tradeType`` ``monthly_re_buy`` (a renewal,
    manual or automatic; wire-format §2.7) or absent, whose ``startTime`` lies within
    ``tolerance`` of ``end_time`` or is absent. Unknown fields count as a match: this answers
    "is this period already paid for?", where a wrong "no" pays twice."""
    out = []
    for bill in bills:
        if bill.trade_type not in (None, RENEWAL_TRADE_TYPE):
            continue
        if bill.start_time is not None and abs(bill.start_time - end_time) > tolerance:
            continue
        out.append(bill)
    return out


#: the keys of the platform's error envelopes (wire-format §1.6): a body with only these
#: carries no data
_ENVELOPE_KEYS = frozenset({"code", "reason", "message", "metadata", "error", "details"})


def _is_envelope(answer: Any) -> bool:
    return isinstance(answer, dict) and bool(answer) and set(answer) <= _ENVELOPE_KEYS


def _present(value: Any) -> bool:
    """An ``error`` field that says something (not null, empty, false or zero)."""
    return value not in (None, "", {}, [], False, 0)


def _answer_of(response: Reply, secret: str | None) -> dict[str, Any] | None:
    """An error answer's body for the ledger: the JSON object, else ``{"raw": text}``."""
    try:
        body = orjson.loads(response.content)
    except ValueError:
        text = response.text.strip()
        return {"raw": redact(text[:2000], secret)} if text else None
    if isinstance(body, dict):
        return dict(redact_json(body, secret))
    return {"result": redact_json(body, secret)}


def _check_months(months: int) -> None:
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise ValueError(f"months must be a positive integer, got {months!r}")


def _envelope(response: Reply) -> tuple[str | None, str | None]:
    """``(reason, message)`` from the kratos envelope, the OpenAI shape or plain text."""
    try:
        body = orjson.loads(response.content)
    except ValueError:
        text = response.text.strip()
        return None, (text[:300] or None)
    if not isinstance(body, dict):
        return None, str(body)[:300]
    reason = body.get("reason")
    reason = reason.strip() if isinstance(reason, str) and reason.strip() else None
    message = body.get("message")
    error = body.get("error")
    if isinstance(error, dict):
        message = message or error.get("message")
    elif isinstance(error, str) and not message:
        message = error
    return reason, (str(message)[:500] if message else None)


def _date_header(response: Reply) -> datetime | None:
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _first_error(exc: pydantic.ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    if not errors:
        return "?"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return f"{loc}: {first.get('msg', '')}"
