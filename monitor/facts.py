"""The store-backed implementation of the rule engine's :class:`~monitor.rules.Facts`, and the
figures ``status`` shows: both come from here, computed by :mod:`monitor.economics`.

It sits above the store (which it reads through the store's methods only) and below the rules
and the commands; it imports no collector, command or wire code. One object answers for one
evaluation at one ``now`` (it caches): each question costs a few aggregate queries per account,
not one per instance.

Where the numbers come from (the economics module's docstrings give the order of trust):

* hourly cost: the product's listed price for its cluster (spot price for spot instances) x
  GPUs, replaced by the latest complete hourly bill when they differ by more than 10 %;
* monthly price: the product's 1-month price on the same basis, bounded by its ratio to the
  hourly price;
* running hours: the daily bills' card-hours (derived from their money, ``billNum0`` only as a
  cross-check) in proportion to their overlap with the window, over the GPU count;
* spend: the hourly bills' paid amounts, in proportion; unknown before the bills' history;
* idle since: the newest unbroken run of idle minutes in the stored samples;
* runway: balance over burn, auto-renewal charges subtracted at their time;
* staleness: each collector's last success against ``stale_after`` x its interval.

Figures that fail their bounds are unknown and listed by :meth:`StoreFacts.data_problems`;
each is logged once per process with its raw inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from monitor import economics
from monitor.economics import Bill, HourlyCost, Problem, Runway
from monitor.logs import get_logger
from monitor.rules.facts import (
    BalanceFact,
    GpuAgg,
    InstanceFact,
    TaskFact,
    WindowAgg,
    account_runway,
)
from monitor.store.metrics import Partial, merge_partials, reduce_partial
from monitor.store.money import pick_price
from monitor.store.records import GpuAgg as StoreGpuAgg
from monitor.store.types import decode_pct

log = get_logger("monitor.facts")

#: our collector names -> the names rules use for staleness
RULE_COLLECTOR = {
    "instances": "instances",
    "metrics": "metrics",
    "balance": "balance",
    "usage_bills": "bills",
    "fixed_term_bills": "bills",
    "products": "products",
    "training_tasks": "tasks",
    "async_tasks": "tasks",
}

#: how far back the collectors fill the bills at their first run (``monitor.collect``'s
#: ``BILLS_BACKFILL`` and ``HOURLY_BACKFILL``; a test keeps them equal)
DAILY_BILLS_HISTORY = timedelta(days=30)
HOURLY_BILLS_HISTORY = timedelta(days=8)
#: the window ``status`` reports running hours over, and the idle threshold it uses (the
#: shipped idle-gpu rule's)
STATUS_HOURS_WINDOW = timedelta(days=30)
STATUS_IDLE_THRESHOLD = 5.0
#: how far back an idle stretch is traced (the raw minutes' default retention)
IDLE_LOOKBACK = timedelta(days=7)
#: how far back the latest complete hourly bill is looked for
HOURLY_BILL_LOOKBACK = timedelta(hours=3)

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
#: a rolled-up hour with fewer sampled minutes has a gap: it never counts as idle
_FULL_HOUR = 58

_logged: set[tuple[str, str, str, str]] = set()
UNIT_NAMES = {1: "hours", 60: "minutes", 3600: "seconds"}


def log_reading_once(account: str, what: str, reading: str) -> None:
    """Say once per process how an open unit reads in this account's data (wire-format §7)."""
    key = (account, "reading", what, reading)
    if key in _logged:
        return
    _logged.add(key)
    log.info("unit_detected", account=account, what=what, reading=reading)


def log_problem_once(account: str, problem: Problem) -> None:
    """Log a figure that failed its bounds, once per process (not once per evaluation)."""
    key = (account, problem.kind, problem.resource_id, problem.field)
    if key in _logged:
        return
    _logged.add(key)
    log.warning(
        "figure_unknown",
        account=account,
        kind=problem.kind,
        resource=problem.resource_id,
        field=problem.field,
        raw=problem.raw,
    )


@dataclass
class _Book:
    """One account's figures at ``now``, computed once."""

    instances: list[InstanceFact] = field(default_factory=list)
    costs: dict[str, HourlyCost] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


class StoreFacts:
    """Facts for ``accounts`` read from ``store`` at ``now`` (one per evaluation: it caches)."""

    def __init__(
        self,
        store: Any,
        accounts: Sequence[str],
        intervals: dict[str, int],
        stale_after: float,
        *,
        now: datetime,
    ) -> None:
        self.store = store
        self._accounts = list(accounts)
        self.intervals = intervals
        self.stale_after = stale_after
        self.now = now
        self._books: dict[str, _Book] = {}
        self._built: set[str] = set()
        self.price = cache(self._price)
        self._products: dict[str, dict[str, list[Any]]] = {}
        # metric windows' exact sums by (account, series, end, instances), then start
        self._windows: dict[tuple[Any, ...], dict[datetime, dict[str, Partial]]] = {}
        # per-GPU windows by (account, series, end): (start, instances or None = all, answer)
        self._gpu_windows: dict[tuple[Any, ...], list[tuple[datetime, Any, Any]]] = {}
        # windows answered in part (``busy_at``), by the same key, start and level
        self._pruned: dict[tuple[Any, ...], tuple[dict[str, Partial], frozenset[str]]] = {}
        self._running: dict[tuple[str, datetime, datetime], Any] = {}
        self._metrics_start: dict[str, datetime | None] = {}
        self._idle: dict[tuple[str, float, datetime], dict[str, datetime | None]] = {}

    # -- the account's book -------------------------------------------------------------

    def _price(self, account: str, product_id: str | None, cluster_id: str | None) -> Any:
        if not product_id:
            return None
        return pick_price(self._listings(account).get(product_id, ()), cluster_id)

    def _listings(self, account: str) -> dict[str, list[Any]]:
        """The account's product listings by product id, read once per evaluation."""
        if account not in self._products:
            by_product: dict[str, list[Any]] = {}
            for row in self.store.product_prices(account):
                by_product.setdefault(row.product_id, []).append(row)
            self._products[account] = by_product
        return self._products[account]

    def _problem(self, account: str, problem: Problem | None) -> None:
        if problem is None:
            return
        book = self._books.setdefault(account, _Book())
        book.problems.append(problem)
        log_problem_once(account, problem)

    def _billed_hourly(self, account: str, gpus: dict[str, int]) -> dict[str, Decimal]:
        """Per instance, the hourly cost its latest *complete* hourly bill shows (the current
        hour's bill is partial and never used)."""
        now = self.now
        rows = self.store.latest_complete_bills(account, now, HOURLY_BILL_LOOKBACK, list(gpus))
        latest = {b.owner_id: b for b in map(_bill, rows)}
        unit = economics.bill_time_unit([], latest.values())
        out: dict[str, Decimal] = {}
        for owner, b in latest.items():
            card_hours = economics.bill_card_hours(b, unit).hours
            usd = economics.billed_hourly_cost(b.amount, card_hours, gpus.get(owner, 1))
            if usd is not None:
                out[owner] = usd
        return out

    def _book(self, account: str) -> _Book:
        if account in self._built:
            return self._books[account]
        self._built.add(account)
        book = self._books.setdefault(account, _Book())
        recs = self.store.instance_rows(account)
        billed = self._billed_hourly(  # only what may bill by the hour now
            account,
            {
                r.instance_id: int(r.gpu_count or 0)
                for r in recs
                if r.status in economics.BILLABLE_STATUSES
                and r.billing_mode in economics.HOURLY_MODES
            },
        )
        ceiling = self.store.max_listed_price(account)
        # statuses whose start matters: stuck transitions, and stops (when data expires)
        transitional = [r.instance_id for r in recs if r.status in _SINCE_STATUSES]
        histories = self.store.status_histories(account, transitional) if transitional else {}
        for rec in recs:
            price = self.price(account, rec.product_id, rec.cluster_id)
            mode = rec.billing_mode if rec.billing_mode in economics.HOURLY_MODES else "onDemand"
            listed = None if price is None else price.hourly_usd(mode)
            gpus = int(rec.gpu_count or 0)
            cost = economics.hourly_cost(
                status=rec.status,
                billing_mode=rec.billing_mode or None,
                gpu_count=gpus,
                listed_unit_usd=listed,
                billed_usd=billed.get(rec.instance_id),
                max_listed_unit_usd=ceiling,
                resource_id=rec.instance_id,
            )
            self._problem(account, cost.problem)
            if cost.source == "billed":
                log_problem_once(
                    account,
                    Problem(
                        "price_differs_from_bills",
                        rec.instance_id,
                        "hourly_cost_usd",
                        f"listed={cost.listed_usd} billed={cost.usd}",
                    ),
                )
            book.costs[rec.instance_id] = cost
            # the basis of the listed prices (per GPU or per instance), as the bills showed it
            units = economics.price_units(cost.usd, listed, gpus)
            on_demand = None if price is None else price.hourly_usd("onDemand")
            monthly, problem = economics.monthly_price(
                monthly_unit_usd=None if price is None else price.monthly_price_usd(1),
                on_demand_unit_usd=on_demand,
                units=units,
                resource_id=rec.instance_id,
            )
            self._problem(account, problem)
            subscriptions, bad = economics.subscription_prices(
                listed_unit_usd={} if price is None else dict(price.monthly_prices_usd),
                on_demand_unit_usd=on_demand,
                units=units,
                resource_id=rec.instance_id,
            )
            for one in bad:  # the 1-month one repeats ``problem``: listed once (same key)
                self._problem(account, one)
            book.instances.append(
                InstanceFact(
                    id=rec.instance_id,
                    name=rec.name,
                    status=rec.status,
                    billing_mode=rec.billing_mode or None,
                    gpu_count=gpus,
                    cpu_num=rec.cpu_num,
                    product_id=rec.product_id,
                    product_name=rec.product_name,
                    cluster_id=rec.cluster_id,
                    end_time=rec.end_time,
                    created_at=rec.created_at,
                    last_started_at=rec.last_started_at,
                    first_seen=rec.first_seen,
                    status_since=_status_since(rec, histories.get(rec.instance_id)),
                    error_state=rec.error_state,
                    hourly_cost_usd=cost.usd,
                    monthly_price_usd=monthly,
                    labels=dict(rec.envs or {}),
                    auto_renew=rec.auto_renew,
                    auto_renew_months=rec.auto_renew_month,
                    keep_data_day=rec.keep_data_day,
                    subscription_prices_usd=subscriptions,
                )
            )
        return book

    # -- Facts ---------------------------------------------------------------------------

    def accounts(self) -> list[str]:
        return list(self._accounts)

    def instances(self, account: str) -> list[InstanceFact]:
        return list(self._book(account).instances)

    def metric_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
        busy_at: float | None = None,
    ) -> dict[str, WindowAgg]:
        parts, proven = self._partials(account, series, start, end, instance_ids, busy_at)
        span = int((end - start).total_seconds())
        out = {}
        for iid, part in parts.items():
            if part.n:
                agg = reduce_partial(part, span)
                top = agg.max if agg.max is not None else agg.avg
                if economics.bounded_percent(top) is None:
                    # a utilisation above 100 % is missing data (e.g. CPU summed over cores)
                    self._problem(
                        account,
                        Problem(
                            "utilisation_out_of_bounds",
                            iid,
                            series,
                            f"max={top} avg={agg.avg} window={start.isoformat()}/{end.isoformat()}",
                        ),
                    )
                    continue
                out[iid] = WindowAgg(
                    avg=agg.avg,
                    max=agg.max if agg.max is not None else agg.avg,
                    min=agg.min if agg.min is not None else agg.avg,
                    count=agg.samples,
                    covered_s=float(agg.covered_seconds),
                    partial=iid in proven,
                )
        return out

    def _partials(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None,
        busy_at: float | None = None,
    ) -> tuple[dict[str, Partial], frozenset[str]]:
        """The window's exact sums, and the instances answered by a part of it only.

        A window longer than one already read with the same end (the shipped 30-minute idle
        rule, then a 45-minute stop rule) reads only the minutes before it and merges. With
        ``busy_at``, an instance the shorter window already shows at or above it is answered by
        that window alone (it reaches the level in the longer one too), so the minutes before
        are read only for the rest: about a quarter of a fleet that is mostly busy."""
        ids = None if instance_ids is None else tuple(sorted(instance_ids))
        known = self._windows.setdefault((account, series, end, ids), {})
        if start in known:
            return known[start], frozenset()
        inner = min((s for s in known if s > start), default=None)
        if inner is None:
            parts = known[start] = self.store.metric_partials(account, ids, series, start, end)
            return parts, frozenset()
        tail = known[inner]
        proven: frozenset[str] = frozenset()
        if busy_at is not None:
            pruned = self._pruned.get((account, series, end, ids, start, busy_at))
            if pruned is not None:
                return pruned
            proven = frozenset(
                iid for iid, p in tail.items() if (decode_pct(p.max) or 0.0) >= busy_at
            )
        if proven:
            scope = ids if ids is not None else tuple(i.id for i in self.instances(account))
            rest = tuple(iid for iid in scope if iid not in proven)
            head = self.store.metric_partials(account, rest, series, start, inner) if rest else {}
        else:
            head = self.store.metric_partials(account, ids, series, start, inner)
        parts = dict(tail)  # most instances: nothing before the shorter window's minutes
        for iid, early in head.items():
            later = tail.get(iid)
            parts[iid] = early if later is None else merge_partials([early, later])
        if not proven:
            known[start] = parts
        else:
            self._pruned[(account, series, end, ids, start, busy_at)] = (parts, proven)
        return parts, proven

    def per_gpu_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, list[GpuAgg]]:
        span = (end - start).total_seconds()
        out: dict[str, list[GpuAgg]] = {}
        raw = self._gpu_partials(account, series, start, end, instance_ids)
        for iid, gpus in raw.items():
            aggs = [
                GpuAgg(
                    gpu_id=str(g.index),
                    avg=g.avg,
                    max=g.max if g.max is not None else g.avg,
                    min=g.avg,  # the store keeps per-GPU avg and max only
                    count=g.count,
                    covered_s=min(span, g.count * 60.0),
                )
                for g in gpus
                if g.count and g.avg is not None
            ]
            if aggs:
                out[iid] = aggs
        return out

    def _gpu_partials(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None,
    ) -> dict[str, list[StoreGpuAgg]]:
        """The store's per-GPU window; one longer than a window already read with the same end,
        for instances among those it was read for (the stop rule's candidates are among the
        shipped idle rule's), reads only the minutes before it and merges."""
        ids = None if instance_ids is None else frozenset(instance_ids)
        known = self._gpu_windows.setdefault((account, series, end), [])
        inner = min(
            (
                (begun, got)
                for begun, wanted, got in known
                if begun > start and (wanted is None or (ids is not None and ids <= wanted))
            ),
            key=lambda k: k[0],
            default=None,
        )
        if inner is None:
            got = self.store.per_gpu_window(account, instance_ids, start, end, series=series)
        else:
            head = self.store.per_gpu_window(account, instance_ids, start, inner[0], series=series)
            got = {
                iid: _merge_gpus(head.get(iid, []), inner[1].get(iid, []))
                for iid in (head.keys() | inner[1].keys())
                if ids is None or iid in ids
            }
        known.append((start, ids, got))
        return got

    def balance(self, account: str) -> BalanceFact | None:
        sample = self.store.latest_balance(account)
        if sample is None:
            return None
        return BalanceFact(available_usd=sample.available_usd, as_of=sample.ts)

    def burn_rate(self, account: str) -> Decimal | None:
        return economics.burn_rate(self._book(account).costs.values())

    def runway(self, account: str, now: datetime) -> Runway:
        return account_runway(
            self.balance(account), self.burn_rate(account), self.instances(account), now
        )

    def idle_since(
        self,
        account: str,
        threshold: float,
        now: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, datetime]:
        insts = {i.id: i for i in self.instances(account)}
        ids = [
            iid
            for iid in (instance_ids if instance_ids is not None else insts)
            if iid in insts and insts[iid].status == "running"
        ]
        # traced once per instance and threshold in an evaluation: two rules with different
        # windows (the shipped idle rule, a stop rule) ask about overlapping instances
        known = self._idle.setdefault((account, threshold, now), {})
        missing = [iid for iid in ids if iid not in known]
        if missing:
            found = self._trace_idle(account, threshold, now, insts, missing)
            known.update({iid: found.get(iid) for iid in missing})
        return {iid: since for iid in ids if (since := known[iid]) is not None}

    def _trace_idle(
        self,
        account: str,
        threshold: float,
        now: datetime,
        insts: dict[str, InstanceFact],
        ids: list[str],
    ) -> dict[str, datetime]:
        history = self.metrics_start(account)
        lookback = now - IDLE_LOOKBACK
        # the raw minutes since the rollups' end, then the rolled-up hours before them: a
        # stretch idle for days costs a few hundred rows, not ten thousand minutes
        mark = self.store.rollup_watermark()
        recent_from = lookback if mark is None else max(lookback, min(mark, now))
        minutes = self.store.gpu_minutes(account, ids, recent_from, now)
        hours = (
            self.store.idle_hours(account, ids, lookback, recent_from, threshold, _FULL_HOUR)
            if mark
            else {}
        )
        out: dict[str, datetime] = {}
        for iid in ids:
            inst = insts[iid]
            bounds = [t for t in (inst.last_started_at or inst.created_at, history, lookback) if t]
            floor = max(bounds)
            spans = [economics.Span(ts, _MINUTE, peak) for ts, peak in minutes.get(iid, [])]
            run_since, broken_at = hours.get(iid, (None, None))
            if run_since is not None:  # the rolled-up hours idle up to the raw minutes
                spans.append(economics.Span(run_since, recent_from - run_since, 0.0))
            if broken_at is not None:  # the hour that ended it
                spans.append(economics.Span(broken_at, _HOUR, None))
            since = economics.idle_since(spans, threshold, not_before=floor)
            if since is None:
                continue
            # the stretch stopped at a rolled-up hour: that hour's minutes say when within it
            if broken_at is not None and since == broken_at + _HOUR and since > floor:
                inside = self.store.gpu_minutes(account, [iid], broken_at, since).get(iid, [])
                before = economics.idle_since(
                    [economics.Span(ts, _MINUTE, peak) for ts, peak in inside],
                    threshold,
                    not_before=floor,
                )
                if before is not None and inside and inside[0][0] >= since - _MINUTE:
                    since = before
            out[iid] = since
        return out

    def _bills_as_of(self, account: str) -> datetime:
        """How far the stored bills' amounts reach: a period's bill counts up to then."""
        covered = self.usage_covered_until(account)
        return self.now if covered is None else covered

    def usage_covered_until(self, account: str) -> datetime | None:
        last = self.store.last_success(account, "usage_bills")
        if last is None:
            return None
        return min(self.now, last).replace(minute=0, second=0, microsecond=0)

    def _bills_history(self, account: str, backfill: timedelta) -> datetime | None:
        first = self.store.first_success(account, "usage_bills")
        return None if first is None else first - backfill

    def spend(self, account: str, start: datetime, end: datetime) -> Decimal | None:
        history = self._bills_history(account, HOURLY_BILLS_HISTORY)
        if history is None or history > start:
            return None
        as_of = self._bills_as_of(account)
        sums = self.store.usage_bill_sums(account, start, end, as_of, "Hour", by_owner=False)
        return sum((s.paid for s in sums), Decimal(0))

    def spend_groups(
        self, account: str, start: datetime, end: datetime
    ) -> tuple[list[economics.Spent], datetime | None]:
        """The hourly bills' paid amounts in ``[start, end)`` per UTC day, owner and product
        (the report's spend), and from when the stored bills are complete (None: never
        collected): figures for time before it are unknown."""
        history = self._bills_history(account, HOURLY_BILLS_HISTORY)
        if history is None:
            return [], None
        rows = self.store.usage_spend_groups(account, start, end, self._bills_as_of(account))
        return [economics.Spent(*row) for row in rows], history

    def running_hours(
        self,
        account: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, float | None] | None:
        history = self._bills_history(account, DAILY_BILLS_HISTORY)
        if history is None or history > start:
            return None
        key = (account, start, end)
        if key not in self._running:
            as_of = self._bills_as_of(account)
            sums = self.store.usage_bill_sums(account, start, end, as_of, "Day")
            by_owner = economics.card_hours_by_owner(
                [economics.BillTotals(*s) for s in sums], [], start, end, as_of
            )
            for bad in by_owner.problems:
                self._problem(account, bad)
            if by_owner.unit is not None:
                log_reading_once(account, "billNum0_time_unit", UNIT_NAMES[by_owner.unit])
            known = {i.id: i for i in self.instances(account)}
            unlisted = set(by_owner.hours) - set(known)
            strangers = (
                sorted(unlisted - self.store.known_instance_ids(account)) if unlisted else []
            )
            for owner in strangers:
                self._problem(
                    account, Problem("bill_owner_unknown", owner, "ownerID", "not in the listing")
                )
            out: dict[str, float | None] = {}
            for iid, inst in known.items():
                if inst.billing_mode == "monthly":
                    # prepaid time has no usage bills: its hours are not in them (unknown,
                    # never the 0 the bills would suggest)
                    out[iid] = None
                    continue
                hours, outside = economics.running_hours(
                    by_owner.hours.get(iid, 0.0), inst.gpu_count, end - start, iid
                )
                self._problem(account, outside)
                out[iid] = hours
            self._running[key] = out
        wanted = set(instance_ids) if instance_ids is not None else None
        return {k: v for k, v in self._running[key].items() if wanted is None or k in wanted}

    def tasks(self, account: str) -> list[TaskFact]:
        out = [
            TaskFact(
                id=t.task_id,
                kind="training",
                status=t.status,
                name=t.name,
                created_at=t.created_at,
                finished_at=t.status_changed_at if t.terminal else None,
            )
            for t in self.store.training_tasks(account)
        ]
        out += [
            TaskFact(
                id=w.task_id,
                kind="async",
                status=w.status,
                name=w.label or w.task_type or "",
                reason=w.reason,
                created_at=w.added_at,
                finished_at=w.status_changed_at if w.terminal else None,
            )
            for w in self.store.watched_tasks(account, include_terminal=True)
        ]
        return out

    def stale_store_collectors(self, account: str, now: datetime) -> list[str]:
        """Our collectors (store names) whose data is stale at ``now``."""
        watching = bool(self.store.watched_tasks(account))
        last = {
            name: self.store.last_success(account, name)
            for name in self.intervals
            # async tasks are polled only while some task is watched
            if name != "async_tasks" or watching
        }
        return economics.stale(last, self.intervals, self.stale_after, now)

    def stale_collectors(self, account: str, now: datetime) -> list[str]:
        ours = self.stale_store_collectors(account, now)
        return sorted({RULE_COLLECTOR.get(name, name) for name in ours})

    def metrics_start(self, account: str) -> datetime | None:
        if account not in self._metrics_start:  # once per evaluation (a lookup per instance)
            first = self.store.first_metric_time(account)
            # a sample stamped t summarises the minute ending at t
            self._metrics_start[account] = None if first is None else first - timedelta(seconds=60)
        return self._metrics_start[account]

    def history_start(self, account: str) -> datetime | None:
        candidates = [self._bills_history(account, DAILY_BILLS_HISTORY)]
        candidates += [i.first_seen for i in self.instances(account)]
        known = [c for c in candidates if c is not None]
        return min(known) if known else None

    def data_problems(self, account: str) -> list[Problem]:
        """The figures found unbelievable so far in this evaluation (bounds, units)."""
        book = self._book(account)
        seen: dict[tuple[str, str, str], Problem] = {}
        for p in book.problems:
            seen.setdefault((p.kind, p.resource_id, p.field), p)
        return list(seen.values())


def _bill(row: Any) -> Bill:
    return Bill(
        owner_id=row.owner_id,
        start=row.start,
        end=row.end,
        amount=row.amount,
        pay_amount=row.pay_amount,
        unit_price=row.unit_price,
        bill_num0=row.bill_num0,
    )


#: statuses whose start the facts trace (``InstanceFact.status_since``)
_SINCE_STATUSES = economics.TRANSITIONAL_STATUSES | {"exited"}


def _status_since(rec: Any, statuses: list[tuple[datetime, str]] | None) -> datetime | None:
    """When the instance entered its current status (transitional, or ``exited``): the first
    snapshot with it, or its creation when it was never seen in another status while being
    created. An instance stored only in its current status gets its first snapshot (an upper
    bound: ``status_since == first_seen`` means the change itself was not seen)."""
    if rec.status not in _SINCE_STATUSES:
        return None  # only the stuck-instance and stopped-data checks ask
    statuses = statuses or []
    since, previous = rec.first_seen, None
    for ts, status in statuses:
        if status != previous:
            since, previous = ts, status
    if previous != rec.status:
        since = rec.first_seen
    seen = {status for _, status in statuses}
    if seen <= {rec.status} and rec.status in economics.CREATING_STATUSES and rec.created_at:
        since = min(since, rec.created_at) if since else rec.created_at
    return since


def _merge_gpus(a: Sequence[StoreGpuAgg], b: Sequence[StoreGpuAgg]) -> list[StoreGpuAgg]:
    """Per-GPU aggregates of two adjacent ranges of one instance, as one (by GPU position)."""
    by_index: dict[int, list[StoreGpuAgg]] = {}
    for g in (*a, *b):
        by_index.setdefault(g.index, []).append(g)
    out = []
    for index in sorted(by_index):
        parts = [g for g in by_index[index] if g.count and g.avg is not None]
        count = sum(g.count for g in parts)
        maxes = [g.max for g in parts if g.max is not None]
        out.append(
            StoreGpuAgg(
                index=index,
                avg=sum(g.avg * g.count for g in parts if g.avg is not None) / count
                if count
                else None,
                max=max(maxes) if maxes else None,
                count=count,
            )
        )
    return out
