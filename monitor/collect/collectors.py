"""The collectors: plain async functions ``(ctx, now) -> counts``.

APScheduler only decides *when* they run (``monitor.collect.scheduler``); tests, the benchmark and
later the demo and a backtest call them directly on an injected clock. Each collector reads the API
through ``ctx.client`` and writes through ``ctx.store``, converting the API's payloads into the
store's records on the way (``monitor.collect.convert``: the store never sees the wire; the bulk
conversions run on the store's writer thread with their write, where the store did them before).
A collector that fails part-way raises :class:`PartialFailure` carrying the counts of what it did
and the per-item errors, so one bad instance never hides the others.

Partial failures make partial progress:

* an instance listing item that arrived but does not parse counts as received: the others are
  stored, it is kept as last listed (never marked disappeared) and reported in the account's
  data problems; a listing with fewer items than its ``total`` fails the run (the client raises)
  and the previous listing stays;
* the usage bills are fetched window by window and each stored window moves a per-cycle mark
  (:func:`bills_resume_point`), so a run that fails half-way is resumed where it stopped, not
  restarted from the 30-day backfill;
* after an outage, the collectors that failed meanwhile are run again as soon as the instance
  listing answers again (``AccountContext.wake``, see ``monitor.collect.runner``), not at their
  next (daily) slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from monitor.collect import convert
from monitor.collect.envs import DEFAULT_ENV_KEYS
from monitor.novita.errors import NovitaError
from monitor.novita.models import InstanceMetrics

#: usage bills: how far back a first collection looks (the API caps one request at 31 days)
BILLS_BACKFILL = timedelta(days=30)
#: hourly bills: how far back a first collection looks (a spend baseline compares the last day
#: with the 7 before it)
HOURLY_BACKFILL = timedelta(days=8)
#: A period's amount grows until the period ends (and may settle shortly after): a later
#: collection re-reads every period that ended less than this margin before the last
#: successful one (those that started less than a period plus the margin before it), so the
#: final amount of each period is read at least once, whatever time zone its days start in.
SETTLE_MARGIN = timedelta(hours=1)
HOURLY_OVERLAP = timedelta(hours=1) + SETTLE_MARGIN
DAILY_OVERLAP = timedelta(days=1) + SETTLE_MARGIN
#: instances whose metrics are written in one transaction (on the store's writer thread)
WRITE_BATCH = 32
#: samples fetched and not yet written beyond which no new metrics request starts: a first
#: backfill of thousands of instances never holds much of their history in memory (about
#: 15 MB), while a steady cycle (a few samples per instance) never waits for the writer
MAX_PENDING_SAMPLES = 200_000

#: windows a bills backfill is fetched and stored in (bounded memory)
HOUR_CHUNK = timedelta(hours=3)
DAY_CHUNK = timedelta(days=5)


@dataclass
class CollectSettings:
    metrics_interval_s: int = 60
    metrics_lag_s: int = 60
    backfill_min_s: int = 3600
    backfill_max_s: int = 86400
    #: the longest window any loaded rule needs (seconds); the backfill covers it within the bounds
    rules_window_s: int = 0
    retention_raw_days: int = 7
    retention_rollup_days: int = 365
    #: the keys of an instance's environment that are stored (``monitor.collect.envs``)
    env_keys: frozenset[str] = DEFAULT_ENV_KEYS

    @property
    def backfill(self) -> timedelta:
        wanted = max(self.backfill_min_s, self.rules_window_s + self.metrics_lag_s)
        return timedelta(seconds=min(wanted, self.backfill_max_s))


@dataclass
class AccountContext:
    """What a collector needs for one account: its client, the store, the settings."""

    account: str
    client: Any  # monitor.novita.client.NovitaClient (typed loosely: tests hand in fakes)
    store: Any  # monitor.store.db.Store
    settings: CollectSettings = field(default_factory=CollectSettings)
    #: within a full cycle, the instance listing under way (see :func:`collect_metrics`)
    listing: asyncio.Future[Any] | None = None
    #: asks for these collectors of the account to run now (the daemon's scheduler fills it
    #: in; see ``monitor.collect.runner.run_collector``): a catch-up after an outage
    wake: Callable[[Sequence[str]], object] | None = None


class PartialFailure(Exception):
    """Some items failed; ``counts`` says what was done, ``errors`` what went wrong."""

    def __init__(self, counts: dict[str, int], errors: list[str]) -> None:
        self.counts = counts
        self.errors = errors
        super().__init__(f"{len(errors)} item(s) failed: " + "; ".join(errors[:5]))


class AllFailed(Exception):
    """Every item of a fan-out failed: the run failed (not partial)."""


def _finish(counts: dict[str, int], errors: list[str], items: int) -> dict[str, int]:
    """Counts when nothing failed; PartialFailure when some items did; AllFailed when all did."""
    if not errors:
        return counts
    if len(errors) >= items:
        raise AllFailed(f"all {items} failed: " + "; ".join(errors[:5]))
    raise PartialFailure(counts, errors)


Counts = dict[str, int]
Collector = Callable[[AccountContext, datetime], Awaitable[Counts]]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NovitaError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


async def collect_instances(ctx: AccountContext, now: datetime) -> Counts:
    """The account's instances. A listing that does not add up to its ``total`` raises (the
    client's :class:`~monitor.novita.errors.IncompleteListingError`): nothing is written, the
    previous listing stays and the run is failed. An item that arrived but does not parse is
    kept as stored (never marked disappeared; when its id cannot be read, no instance is marked
    disappeared this time) and counted in the account's data problems."""
    instances = await ctx.client.list_instances()
    events = await ctx.store.in_writer(_write_instances, ctx, instances, now)
    counts = {"instances": len(instances), "events": len(events)}
    if getattr(instances, "bad", None):
        counts["unparsable"] = len(instances.bad)
    return counts


def _write_instances(ctx: AccountContext, instances: list[Any], now: datetime) -> list[Any]:
    """Convert a listing to the store's rows and record it (on the store's writer thread).

    Of each environment only ``ctx.settings.env_keys`` is kept. An item that arrived but did
    not parse (the listing's ``bad``) is kept as stored: never marked disappeared (when its id
    cannot be read, no instance is marked disappeared this time), and counted in the account's
    data problems."""
    bad = list(getattr(instances, "bad", ()))
    kept = [b.resource_id for b in bad if b.resource_id]
    rows = convert.instance_rows(instances, ctx.settings.env_keys)
    events = ctx.store.upsert_instances(
        ctx.account, rows, now, complete=len(kept) == len(bad), keep=kept
    )
    if bad:
        ctx.store.record_data_problems(ctx.account, convert.listing_problems(bad), now)
    return list(events)


def metrics_window(
    latest: datetime | None, now: datetime, settings: CollectSettings
) -> tuple[datetime, datetime]:
    """The window to fetch for one instance.

    Incremental: from the last stored sample minus the API's lag (~1 minute: a series whose
    newest minute was not there yet last time is completed), upserted so the overlap never
    duplicates. The newest stored minute is the newest the API had, lag included, so a
    longer overlap only re-reads minutes already complete (a quarter of a steady cycle's
    parsing at the defaults, measured).
    First sight, or after a gap longer than the backfill: the backfill window. Never shorter than
    60 s (the API silently replaces shorter windows with its defaults).
    """
    backfill_start = now - settings.backfill
    overlap = timedelta(seconds=settings.metrics_lag_s)
    start = backfill_start if latest is None else max(latest - overlap, backfill_start)
    start = min(start, now - timedelta(seconds=max(60, settings.metrics_interval_s)))
    return start.replace(microsecond=0), now.replace(microsecond=0)


async def collect_metrics(ctx: AccountContext, now: datetime) -> Counts:
    """Metrics of every running instance, fetched concurrently, written in batches.

    Within a full cycle (``ctx.listing`` is this cycle's instance listing, still under way) the
    fan-out does not wait for the listing: it starts at once over the instances running at the
    last stored listing and, once this cycle's listing is stored, goes on with those that
    started since. An instance that stopped since still has its last minutes fetched. The
    listing (two round trips and a thousand rows to store) is then off the critical path.
    """
    latest = ctx.store.latest_metric_times(ctx.account)
    errors: list[str] = []
    # an answer with its sample count, None for a failed instance, or (an int) the number of
    # instances the listing added
    done: asyncio.Queue[tuple[tuple[str, InstanceMetrics, int | None], int] | int | None]
    done = asyncio.Queue()
    pending = 0  # samples fetched, not yet written
    room = asyncio.Event()  # set while ``pending`` is within MAX_PENDING_SAMPLES
    room.set()
    asked: set[str] = set()
    todo: deque[tuple[str, int | None]] = deque()
    # As many workers as the client has connections: the other collectors' requests (balance,
    # bills, products, task pages) then wait at most one round trip for a connection, not
    # behind a thousand metric requests, and their sequential steps overlap this fan-out.
    width = getattr(ctx.client, "max_concurrency", 8)
    workers: list[asyncio.Future[None]] = []

    async def fetch(instance_id: str, cpu_num: int | None) -> None:
        nonlocal pending
        start, end = metrics_window(latest.get(instance_id), now, ctx.settings)
        try:
            metrics = await ctx.client.get_metrics(
                instance_id, start, end, interval_s=ctx.settings.metrics_interval_s
            )
        except Exception as exc:  # NovitaError, ValueError, or a bug: never a lost answer
            errors.append(f"{instance_id}: {_describe(exc)}")
            done.put_nowait(None)
            return
        samples = metrics.sample_count()
        pending += samples
        if pending > MAX_PENDING_SAMPLES:
            room.clear()
        done.put_nowait(((instance_id, metrics, cpu_num), samples))

    async def work() -> None:
        while todo:
            await room.wait()
            if todo:
                await fetch(*todo.popleft())

    def launch(instances: list[tuple[str, int | None]]) -> int:
        fresh = [(iid, cpu) for iid, cpu in instances if iid not in asked]
        asked.update(iid for iid, _ in fresh)
        todo.extend(fresh)
        idle = width - sum(1 for w in workers if not w.done())
        workers.extend(asyncio.ensure_future(work()) for _ in range(min(idle, len(todo))))
        return len(fresh)

    async def after_listing(listing: asyncio.Future[Any]) -> None:
        await asyncio.wait([listing])  # whatever its outcome: the store has the best list
        done.put_nowait(launch(ctx.store.running_instances(ctx.account)))

    outstanding = launch(ctx.store.running_instances(ctx.account))
    top_up = None if ctx.listing is None else asyncio.ensure_future(after_listing(ctx.listing))
    outstanding += top_up is not None
    # written in batches as answers arrive, while the fetching goes on
    fetched = written = 0
    batch: list[tuple[str, InstanceMetrics, int | None]] = []
    batch_samples = 0
    try:
        while outstanding:
            item = await done.get()
            outstanding -= 1
            if isinstance(item, int):  # the listing is in: that many more fetches
                outstanding += item
                continue
            if item is None:
                continue
            answer, samples = item
            batch.append(answer)
            batch_samples += samples
            fetched += 1
            if len(batch) >= WRITE_BATCH or not room.is_set():  # full, or memory is
                written += await ctx.store.in_writer(_write_metrics, ctx, batch)
                pending -= batch_samples
                if pending <= MAX_PENDING_SAMPLES:
                    room.set()
                batch, batch_samples = [], 0
        if batch:
            written += await ctx.store.in_writer(_write_metrics, ctx, batch)
    finally:
        for task in [*workers, *([top_up] if top_up else [])]:
            task.cancel()
    counts = {"instances": len(asked), "fetched": fetched, "rows": written}
    return _finish(counts, errors, len(asked))


def _write_metrics(
    ctx: AccountContext, batch: list[tuple[str, InstanceMetrics, int | None]]
) -> int:
    """Convert a batch of metrics answers to stored minute rows and write them (on the
    store's writer thread)."""
    rows = [(iid, convert.minute_rows(metrics, cpu)) for iid, metrics, cpu in batch]
    return int(ctx.store.upsert_metrics_batch(ctx.account, rows))


async def collect_balance(ctx: AccountContext, now: datetime) -> Counts:
    balance = await ctx.client.get_balance()
    await ctx.store.in_writer(
        ctx.store.add_balance, ctx.account, convert.balance_sample(balance, now)
    )
    return {"samples": 1}


def _bill_start(ctx: AccountContext, collector: str, now: datetime, first: timedelta,
                overlap: timedelta) -> datetime:  # fmt: skip
    """Where a bills request starts: whole hours of history on a first collection, reaching one
    period further back (``overlap``) so that the bill whose period straddles the start of the
    history is stored too (a window counts it in proportion: without it a 30-day window read
    12 h short at noon); later, the last success minus one period and the settling margin (not
    rounded to the hour, which would add a period every time)."""
    last = ctx.store.last_success(ctx.account, collector)
    if last is None:
        return (now - first - overlap).replace(minute=0, second=0, microsecond=0)
    return max(last - overlap, now - first).replace(second=0, microsecond=0)


def _windows(start: datetime, end: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    out = []
    while start < end:
        out.append((start, min(start + step, end)))
        start += step
    return out


def _write_usage_bills(
    ctx: AccountContext, cycle: str, bills: list[Any], mark: datetime | None = None
) -> int:
    """Store GPU bills fetched with ``productCategory=gpu`` (their category is the request's),
    then move the cycle's progress mark to ``mark`` (when given)."""
    rows = convert.usage_bill_rows(bills, product_category="gpu")
    written = int(ctx.store.upsert_usage_bills(ctx.account, cycle, rows))
    if mark is not None:
        ctx.store.set_collect_mark(ctx.account, bills_mark(cycle), mark)
    return written


def bills_mark(cycle: str) -> str:
    """The name of the usage bills' progress mark of one cycle type (``Store.collect_mark``)."""
    return f"usage_bills:{cycle}"


def bills_resume_point(
    ctx: AccountContext, cycle: str, now: datetime, first: timedelta, overlap: timedelta
) -> datetime:
    """Where the usage bills of ``cycle`` resume: at the cycle's mark, which each stored window
    moved (see :func:`bills_mark_after`); without a mark (a database written before marks),
    as before: the last success minus one period and the settling margin, else the whole
    backfill. Never further back than the backfill."""
    mark = ctx.store.collect_mark(ctx.account, bills_mark(cycle))
    if mark is None:
        return _bill_start(ctx, "usage_bills", now, first, overlap)
    if mark <= now - first:
        return (now - first).replace(minute=0, second=0, microsecond=0)
    return mark.replace(second=0, microsecond=0)


def bills_mark_after(hi: datetime, now: datetime, overlap: timedelta) -> datetime:
    """The mark once the window ending at ``hi`` is stored, fetched at ``now``: every period
    that started before it was final when fetched (a period plus the settling margin before
    ``now``), so it is never fetched again; a later one is (its amount may still grow)."""
    return min(hi, now - overlap)


async def collect_usage_bills(ctx: AccountContext, now: datetime) -> Counts:
    """Pay-as-you-go GPU bills: daily for 30 days (spend baselines, running hours), hourly for
    the recent past (current spend, per-instance hourly cost). The current period's amount grows
    between fetches; the store's upsert on the natural key updates it.

    The API does not paginate bills, so a first backfill is fetched and stored window by window
    (3 h of hourly bills, 5 days of daily ones, the two cycle types side by side): a fleet of
    thousands of instances never holds more than one window of each in memory. Each stored
    window moves its cycle's progress mark, so a run that fails half-way (and fails: the bills
    are incomplete) is resumed at the window that failed, never refetching those stored; the
    other cycle type goes on to its end meanwhile."""
    plan = [
        ("Day", BILLS_BACKFILL, DAILY_OVERLAP, DAY_CHUNK),
        ("Hour", HOURLY_BACKFILL, HOURLY_OVERLAP, HOUR_CHUNK),
    ]

    async def one_cycle(
        cycle: str, first: timedelta, overlap: timedelta, step: timedelta
    ) -> tuple[int, int]:
        bills = rows = 0
        start = bills_resume_point(ctx, cycle, now, first, overlap)
        for lo, hi in _windows(start, now, step):
            got = await ctx.client.list_usage_bills(cycle, "gpu", lo, hi)
            mark = bills_mark_after(hi, now, overlap)
            rows += await ctx.store.in_writer(_write_usage_bills, ctx, cycle, got, mark)
            bills += len(got)
        return bills, rows

    # the two cycle types side by side: both are done while the instance listing is still
    # on the wire, not in the middle of the metrics fan-out; one failing does not stop the
    # other half-way (it would lose that progress)
    done = await asyncio.gather(*(one_cycle(*step) for step in plan), return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    counts = [c for c in done if not isinstance(c, BaseException)]
    return {"bills": sum(b for b, _ in counts), "rows": sum(r for _, r in counts)}


async def collect_fixed_term_bills(ctx: AccountContext, now: datetime) -> Counts:
    start = _bill_start(ctx, "fixed_term_bills", now, BILLS_BACKFILL, DAILY_OVERLAP)
    bills = await ctx.client.list_fixed_term_bills(start, now, category="gpu")
    rows = await ctx.store.in_writer(
        ctx.store.upsert_fixed_term_bills, ctx.account, convert.fixed_term_bill_rows(bills)
    )
    return {"bills": len(bills), "rows": rows}


async def collect_products(ctx: AccountContext, now: datetime) -> Counts:
    """Prices differ by cluster: ask per cluster the account has instances in."""
    clusters = ["", *ctx.store.cluster_ids(ctx.account)]
    errors: list[str] = []
    total = 0
    for cluster in clusters:
        try:
            products = await ctx.client.list_products(cluster_id=cluster or None)
        except NovitaError as exc:
            errors.append(f"cluster {cluster or '(all)'}: {_describe(exc)}")
            continue
        await ctx.store.in_writer(
            ctx.store.upsert_products,
            ctx.account,
            convert.product_rows(products),
            cluster or None,
            now,
        )
        total += len(products)
    return _finish({"clusters": len(clusters), "products": total}, errors, len(clusters))


async def collect_training_tasks(ctx: AccountContext, now: datetime) -> Counts:
    tasks = await ctx.client.list_training_tasks()
    events = await ctx.store.in_writer(
        ctx.store.upsert_training_tasks, ctx.account, convert.training_task_rows(tasks), now
    )
    return {"tasks": len(tasks), "events": len(events)}


async def collect_async_tasks(ctx: AccountContext, now: datetime) -> Counts:
    """Watched async task ids (the API cannot list them), until each is terminal."""
    watched = ctx.store.watched_tasks(ctx.account)
    errors: list[str] = []

    async def one(task_id: str) -> None:
        try:
            task = await ctx.client.get_async_task(task_id)
        except NovitaError as exc:
            errors.append(f"{task_id}: {_describe(exc)}")
            return
        await ctx.store.in_writer(
            ctx.store.update_async_task, ctx.account, convert.async_task_row(task), now
        )

    await asyncio.gather(*(one(w.task_id) for w in watched))
    return _finish({"watched": len(watched)}, errors, len(watched))


async def enforce_retention(ctx: AccountContext, now: datetime) -> Counts:
    result = await ctx.store.in_writer(
        ctx.store.enforce_retention,
        now,
        raw_days=ctx.settings.retention_raw_days,
        rollup_days=ctx.settings.retention_rollup_days,
    )
    return {k: int(v) for k, v in dict(result).items()}


#: every collector by name (a full cycle starts them all at once: see ``run_cycle``)
COLLECTORS: dict[str, Collector] = {
    "instances": collect_instances,
    "metrics": collect_metrics,
    "balance": collect_balance,
    "usage_bills": collect_usage_bills,
    "fixed_term_bills": collect_fixed_term_bills,
    "products": collect_products,
    "training_tasks": collect_training_tasks,
    "async_tasks": collect_async_tasks,
}

#: what the runner can run by name: the collectors, plus retention (scheduled on its own)
TASKS: dict[str, Collector] = {**COLLECTORS, "retention": enforce_retention}
