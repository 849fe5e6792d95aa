"""The store-backed implementation of the rule engine's :class:`~monitor.rules.Facts`.

It sits above both (the engine imports no database code; the store imports no rule code) and
answers each question with few queries per account, not one per instance: windowed aggregates are
computed in SQL by the store, prices are cached per product and cluster.

Where the numbers come from:

* hourly cost of an instance: the product's listed price for its cluster (spot price for spot
  instances) times its GPU count; the instance's latest hourly bill when no price is known;
* monthly price: the product's 1-month subscription price times the GPU count;
* spend: hourly GPU bills (backfilled for 8 days at first start); ``None`` before that history;
* running hours: daily GPU bills' GPU-hours divided by the GPU count (backfilled for 30 days);
* staleness: each collector's last success against ``stale_after`` x its interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import select

from monitor.collect.collectors import BILLS_BACKFILL, HOURLY_BACKFILL
from monitor.novita.models import TRANSITIONAL_STATUSES
from monitor.rules.facts import (
    BalanceFact,
    GpuAgg,
    InstanceFact,
    TaskFact,
    WindowAgg,
)
from monitor.status import stale_collectors
from monitor.store import tables

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

BILLING_STATUSES = frozenset({"running"}) | TRANSITIONAL_STATUSES
#: statuses of an instance that has not run yet
CREATING = frozenset({"toCreate", "creating", "pulling", "pending"})


class StoreFacts:
    """Facts for ``accounts`` read from ``store`` (create one per evaluation: it caches)."""

    def __init__(
        self,
        store: Any,
        accounts: Sequence[str],
        intervals: dict[str, int],
        stale_after: float,
    ) -> None:
        self.store = store
        self._accounts = list(accounts)
        self.intervals = intervals
        self.stale_after = stale_after
        self._instances: dict[str, list[InstanceFact]] = {}
        self.price = cache(self._price)

    # -- helpers -----------------------------------------------------------------------------

    def _price(self, account: str, product_id: str | None, cluster_id: str | None) -> Any:
        if not product_id:
            return None
        return self.store.product_price(account, product_id, cluster_id)

    def _hourly_cost(self, account: str, rec: Any) -> Decimal | None:
        if rec.billing_mode not in ("onDemand", "spot"):
            return None
        price = self.price(account, rec.product_id, rec.cluster_id)
        per_gpu = None if price is None else price.hourly_usd(rec.billing_mode)
        if per_gpu is not None and rec.gpu_count:
            return Decimal(per_gpu) * rec.gpu_count
        return None

    def _monthly_price(self, account: str, rec: Any) -> Decimal | None:
        price = self.price(account, rec.product_id, rec.cluster_id)
        if price is None or not rec.gpu_count:
            return None
        monthly = price.monthly_price_usd(1)
        return None if monthly is None else monthly * rec.gpu_count

    def _status_since(self, account: str, rec: Any, statuses: Sequence[Any] | None) -> Any:
        """When the instance entered its current status (first seen, if never seen changing).

        ``statuses``: its history as ``(ts, status)`` oldest first, when already read."""
        if rec.status not in TRANSITIONAL_STATUSES:
            return None  # only the stuck-instance check asks; spare the query
        if statuses is None:
            history = self.store.instance_history(account, rec.instance_id)
            statuses = [(change.ts, change.status) for change in history]
        since, previous = rec.first_seen, None
        for ts, status in statuses:
            if status != previous:
                since, previous = ts, status
        if previous != rec.status:
            since = rec.first_seen
        # never seen in another status and still being created: so since its creation
        seen = {status for _, status in statuses}
        if seen <= {rec.status} and rec.status in CREATING and rec.created_at is not None:
            since = min(since, rec.created_at) if since else rec.created_at
        return since

    def _status_histories(self, recs: Sequence[Any]) -> dict[int, list[tuple[Any, str]]] | None:
        """``(ts, status)`` histories of the transitional instances among ``recs``, by instance
        key, in one query (not one per instance); None when the store is not SQL-backed."""
        keys = [r.key for r in recs if r.status in TRANSITIONAL_STATUSES]
        engine = getattr(self.store, "engine", None)
        if engine is None:
            return None
        out: dict[int, list[tuple[Any, str]]] = {key: [] for key in keys}
        if not keys:
            return out
        h = tables.instance_history.c
        with engine.connect() as conn:
            for i in range(0, len(keys), 500):
                query = (
                    select(h.instance_key, h.ts, h.status)
                    .where(h.instance_key.in_(keys[i : i + 500]))
                    .order_by(h.instance_key, h.ts, h.id)
                )
                for key, ts, status in conn.execute(query):
                    out[key].append((ts, status))
        return out

    # -- Facts -------------------------------------------------------------------------------

    def accounts(self) -> list[str]:
        return list(self._accounts)

    def instances(self, account: str) -> list[InstanceFact]:
        if account not in self._instances:
            facts = []
            recs = self.store.instances(account)
            histories = self._status_histories(recs)
            for rec in recs:
                facts.append(
                    InstanceFact(
                        id=rec.instance_id,
                        name=rec.name,
                        status=rec.status,
                        billing_mode=rec.billing_mode or None,
                        gpu_count=int(rec.gpu_count or 0),
                        cpu_num=rec.cpu_num,
                        product_id=rec.product_id,
                        product_name=rec.product_name,
                        cluster_id=rec.cluster_id,
                        end_time=rec.end_time,
                        created_at=rec.created_at,
                        last_started_at=rec.last_started_at,
                        first_seen=rec.first_seen,
                        status_since=self._status_since(
                            account, rec, None if histories is None else histories.get(rec.key)
                        ),
                        error_state=rec.error_state,
                        hourly_cost_usd=self._hourly_cost(account, rec),
                        monthly_price_usd=self._monthly_price(account, rec),
                        labels=dict(rec.envs or {}),
                    )
                )
            self._instances[account] = facts
        return list(self._instances[account])

    def metric_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Sequence[str] | None = None,
    ) -> dict[str, WindowAgg]:
        out = {}
        for iid, agg in self.store.metric_window(account, instance_ids, series, start, end).items():
            if agg.count and agg.avg is not None:
                out[iid] = WindowAgg(
                    avg=agg.avg,
                    max=agg.max if agg.max is not None else agg.avg,
                    min=agg.min if agg.min is not None else agg.avg,
                    count=agg.count,
                    covered_s=float(agg.covered_seconds),
                )
        return out

    def per_gpu_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Sequence[str] | None = None,
    ) -> dict[str, list[GpuAgg]]:
        span = (end - start).total_seconds()
        out: dict[str, list[GpuAgg]] = {}
        raw = self.store.per_gpu_window(account, instance_ids, start, end, series=series)
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

    def balance(self, account: str) -> BalanceFact | None:
        sample = self.store.latest_balance(account)
        if sample is None:
            return None
        return BalanceFact(available_usd=sample.available_usd, as_of=sample.ts)

    def burn_rate(self, account: str) -> Decimal | None:
        costs = [
            i.hourly_cost_usd
            for i in self.instances(account)
            if i.status in BILLING_STATUSES and i.billing_mode in ("onDemand", "spot")
        ]
        known = [c for c in costs if c is not None]
        if costs and not known:
            return None
        return sum(known, Decimal(0))

    def _bills_history(self, account: str, backfill: timedelta) -> datetime | None:
        first = self.store.first_success(account, "usage_bills")
        return None if first is None else first - backfill

    def spend(self, account: str, start: datetime, end: datetime) -> Decimal | None:
        history = self._bills_history(account, HOURLY_BACKFILL)
        if history is None or history > start:
            return None
        total = self.store.spend(account, start, end, category="gpu")
        return Decimal(0) if total is None else total

    def running_hours(
        self,
        account: str,
        start: datetime,
        end: datetime,
        instance_ids: Sequence[str] | None = None,
    ) -> dict[str, float] | None:
        history = self._bills_history(account, BILLS_BACKFILL)
        if history is None or history > start:
            return None
        gpus = {i.id: i.gpu_count for i in self.instances(account)}
        hours = self.store.gpu_hours_by_owner(account, start, end, cycle_type="Day")
        wanted = set(instance_ids) if instance_ids is not None else set(gpus)
        return {
            iid: float(gpu_hours) / (gpus.get(iid) or 1)
            for iid, gpu_hours in hours.items()
            if iid in wanted
        }

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

    def stale_collectors(self, account: str, now: datetime) -> list[str]:
        ours = stale_collectors(self.store, account, now, self.intervals, self.stale_after)
        return sorted({RULE_COLLECTOR.get(name, name) for name in ours})

    def metrics_start(self, account: str) -> datetime | None:
        first = self.store.first_metric_time(account)
        # a sample stamped t summarises the minute ending at t
        return None if first is None else first - timedelta(seconds=60)

    def history_start(self, account: str) -> datetime | None:
        candidates = [self._bills_history(account, BILLS_BACKFILL)]
        candidates += [i.first_seen for i in self.instances(account)]
        known = [c for c in candidates if c is not None]
        return min(known) if known else None
