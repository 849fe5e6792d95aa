"""What the rule engine may know about the world: a narrow, aggregate-oriented query interface.

The engine never touches the database. It is handed an object implementing :class:`Facts`;
the store implements it with SQL (windowed aggregates computed in the database, using
rollups), and :class:`InMemoryFacts` implements it over plain Python data for rule tests and
unit tests. Every method is a question the conditions actually ask, so the store can answer
each with one query for a whole account (``instance_ids=None``) rather than one per instance.

Conventions shared by every method:

* Times are aware UTC datetimes. Windows are half-open on the left: ``start < t <= end``
  (a sample stamped ``t`` summarises the minute ending at ``t``).
* Money is ``Decimal`` USD; utilisation is a percentage 0-100 (CPU normalised per core).
* ``None`` always means "no data", never zero. Conditions turn it into "missing", which
  neither fires nor resolves an alert.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol, runtime_checkable

from monitor import economics
from monitor.economics import Runway

#: Metric series names a rule may ask about.
SERIES = ("gpu_util", "gpu_mem", "cpu", "mem", "disk")

#: The nominal metric sampling step. Coverage is counted in whole steps.
SAMPLE_STEP_S = 60

#: Collector names (what :meth:`Facts.stale_collectors` returns). A stale name outside this set
#: is taken to affect every rule.
COLLECTORS = ("instances", "metrics", "balance", "bills", "tasks", "products")


@dataclass(frozen=True)
class InstanceFact:
    """One instance as last collected (latest snapshot), with what the store knows about it."""

    id: str
    name: str = ""
    status: str = ""
    billing_mode: str | None = None  # onDemand | monthly | spot | None
    gpu_count: int = 0
    cpu_num: int | None = None
    product_id: str | None = None
    product_name: str | None = None
    cluster_id: str | None = None
    end_time: datetime | None = None  # subscription expiry; None = no expiry
    created_at: datetime | None = None
    last_started_at: datetime | None = None
    first_seen: datetime | None = None  # first snapshot the store holds of this instance
    status_since: datetime | None = None  # first snapshot with the current status
    error_state: str | None = None  # platform-reported error state/message, if any
    hourly_cost_usd: Decimal | None = None  # current price per hour of the whole instance
    monthly_price_usd: Decimal | None = None  # 1-month subscription price of the whole instance
    labels: Mapping[str, str] = field(default_factory=dict)  # the instance's env vars
    auto_renew: bool | None = None  # subscription renews itself (charged ~3 days early)
    auto_renew_months: int | None = None
    keep_data_day: int | None = None  # days a stopped instance's local data is kept
    # price of the whole instance for each month count its product lists (renew/convert take
    # only these; a count whose price failed its bounds maps to None)
    subscription_prices_usd: Mapping[int, Decimal | None] = field(default_factory=dict)

    def field_map(self) -> dict[str, object]:
        """Fields a generic comparison may name (``labels.KEY`` reaches into labels)."""
        out: dict[str, object] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["gpu_num"] = self.gpu_count
        return out


@dataclass(frozen=True)
class WindowAgg:
    """Aggregate of one series over a window, for one instance.

    ``covered_s`` is the number of distinct sample steps (minutes, ``SAMPLE_STEP_S``) in the
    window holding at least one sample, times the step, capped at the window length. A store
    with minute rollups computes it as ``count(distinct minute) * 60``.

    ``partial``: only the end of the window was read, because a shorter window with the same
    end already reached the ``busy_at`` level asked for (:meth:`Facts.metric_window`): ``max``
    is then a lower bound of the window's (at or above ``busy_at``), and ``avg``, ``min``,
    ``count`` and ``covered_s`` are those of the part read.
    """

    avg: float
    max: float
    min: float
    count: int
    covered_s: float
    partial: bool = False


@dataclass(frozen=True)
class GpuAgg:
    """:class:`WindowAgg` of one GPU of a multi-GPU instance."""

    gpu_id: str
    avg: float
    max: float
    min: float
    count: int
    covered_s: float


@dataclass(frozen=True)
class BalanceFact:
    """The latest collected balance. ``available_usd`` is what can still be spent."""

    available_usd: Decimal
    as_of: datetime


@dataclass(frozen=True)
class TaskFact:
    """A training task or a watched async task, as last collected."""

    id: str
    kind: str  # "training" | "async"
    status: str  # the API's status string, e.g. FAILED, TASK_STATUS_FAILED
    name: str = ""
    reason: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None  # when the store first saw a terminal status

    def field_map(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def account_runway(
    balance: BalanceFact | None,
    burn: Decimal | None,
    instances: Iterable[InstanceFact],
    now: datetime,
) -> Runway:
    """The account's runway (:func:`monitor.economics.runway`), the auto-renewals its
    subscriptions will be charged subtracted at their time: what every :class:`Facts`
    answers for :meth:`Facts.runway`."""
    charges = [
        charge
        for inst in instances
        if (
            charge := economics.renewal_charge(
                instance_id=inst.id,
                billing_mode=inst.billing_mode,
                end_time=inst.end_time,
                auto_renew=inst.auto_renew,
                auto_renew_months=inst.auto_renew_months,
                monthly_usd=inst.monthly_price_usd,
                now=now,
            )
        )
        is not None
    ]
    return economics.runway(None if balance is None else balance.available_usd, burn, charges, now)


@runtime_checkable
class Facts(Protocol):
    """The questions the rule engine asks. Implementations must be read-only and cheap to call
    repeatedly with the same arguments within one evaluation (the engine caches anyway)."""

    def accounts(self) -> list[str]:
        """Names of the accounts to evaluate, in a stable order."""
        ...

    def instances(self, account: str) -> list[InstanceFact]:
        """Every instance of the latest successful instance listing (removed ones excluded)."""
        ...

    def metric_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
        busy_at: float | None = None,
    ) -> dict[str, WindowAgg]:
        """Aggregates of ``series`` (one of :data:`SERIES`; for GPUs the across-GPU average
        series) over ``start < t <= end``, per instance (``None`` = every instance of the
        account). Instances without a sample in the window are absent from the result.

        ``busy_at``: the caller only needs to know, of an instance that reaches this level
        somewhere in the window, that it does. An implementation may then answer such an
        instance from a shorter window with the same end that it already read, marked
        ``partial`` (its max reached ``busy_at``, so the whole window's does too), instead of
        reading the rest of the window for it."""
        ...

    def per_gpu_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, list[GpuAgg]]:
        """Like :meth:`metric_window` but per GPU (``gpu_util`` or ``gpu_mem``), GPUs sorted by
        id. Instances without per-GPU samples are absent."""
        ...

    def balance(self, account: str) -> BalanceFact | None:
        """The latest balance, or ``None`` if none was ever collected."""
        ...

    def burn_rate(self, account: str) -> Decimal | None:
        """Current spend rate in USD per hour: the hourly cost of every billing (``running``,
        on-demand or spot) instance (:func:`monitor.economics.burn_rate`). ``None`` if some
        billing instance's cost is unknown."""
        ...

    def runway(self, account: str, now: datetime) -> Runway:
        """How long the balance lasts at the burn rate, auto-renewal charges subtracted at
        their time (:func:`monitor.economics.runway`)."""
        ...

    def idle_since(
        self,
        account: str,
        threshold: float,
        now: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, datetime]:
        """When each instance's current idle stretch began: the first sample of the unbroken
        run of samples with every GPU under ``threshold`` % that reaches the newest sample
        (:func:`monitor.economics.idle_since`; bounded by the last start and by the stored
        history). Instances not idle now, or without samples, are absent."""
        ...

    def spend(self, account: str, start: datetime, end: datetime) -> Decimal | None:
        """Usage-based spend (USD) charged in ``start < t <= end``, from bills (and, for the
        most recent hours not yet billed, the store's estimate from prices and running time).
        ``None`` when the store's cost history does not reach back to ``start`` (too little
        history is missing data, not zero)."""
        ...

    def running_hours(
        self,
        account: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, float | None] | None:
        """Hours each instance was billing in ``start < t <= end``, from its bills' card-hours
        (:func:`monitor.economics.card_hours_by_owner`, each bill counted in proportion to its
        overlap with the window) over its GPU count, bounded by the window's length; an
        instance whose figure is unknown maps to ``None``; instances never billed in the
        window map to 0 or are absent. ``None`` if the store's history does not reach back to
        ``start``."""
        ...

    def usage_covered_until(self, account: str) -> datetime | None:
        """How far the stored usage bills reach: bills are issued for completed hours, so the
        last complete hour before they were read. Windows over running hours end there (an
        hour not billed yet is not an hour not run). ``None``: up to now."""
        ...

    def tasks(self, account: str) -> list[TaskFact]:
        """Training tasks and watched async tasks, as last collected."""
        ...

    def stale_collectors(self, account: str, now: datetime) -> list[str]:
        """Names (see :data:`COLLECTORS`) of collectors whose data for this account is stale at
        ``now`` (last success older than their allowed age, or never succeeded). Empty = fresh."""
        ...

    def history_start(self, account: str) -> datetime | None:
        """The time of the oldest stored snapshot of this account (the start of what the
        monitor can know), or ``None`` if nothing is stored."""
        ...

    def metrics_start(self, account: str) -> datetime | None:
        """The time from which metric samples are stored for this account (the start of what
        the monitor can know about utilisation; bills may reach further back), or ``None``.
        Before it, a missing sample means "not watched", not "not used"."""
        ...


# --------------------------------------------------------------------------------------------
# In-memory implementation


Samples = list[tuple[datetime, float]]


def _window(samples: Samples, start: datetime, end: datetime) -> Samples:
    times = [t for t, _ in samples]
    lo = bisect.bisect_right(times, start)
    hi = bisect.bisect_right(times, end)
    return samples[lo:hi]


def aggregate(samples: Samples, start: datetime, end: datetime) -> WindowAgg | None:
    """The :class:`WindowAgg` of already-sorted ``samples`` over ``start < t <= end``."""
    inside = _window(samples, start, end)
    if not inside:
        return None
    values = [v for _, v in inside]
    steps = {int(t.timestamp()) // SAMPLE_STEP_S for t, _ in inside}
    span = (end - start).total_seconds()
    return WindowAgg(
        avg=sum(values) / len(values),
        max=max(values),
        min=min(values),
        count=len(values),
        covered_s=min(span, len(steps) * SAMPLE_STEP_S),
    )


@dataclass
class InMemoryFacts:
    """:class:`Facts` over plain data, for one or more accounts.

    ``metrics[(instance_id, series)]`` and ``gpu_metrics[(instance_id, gpu_id, series)]`` hold
    ``(time, value)`` samples; ``spend_rate`` holds ``(time, usd_per_hour)`` samples, each
    standing for the minute ending at its time; ``running[instance_id]`` holds ``(time, 0|1)``
    minute samples. ``spend``/``running_hours`` answer ``None`` for a window starting before
    ``history_start`` (or before the first sample when ``history_start`` is not given).
    """

    instance_list: dict[str, list[InstanceFact]] = field(default_factory=dict)
    metrics: dict[tuple[str, str], Samples] = field(default_factory=dict)
    gpu_metrics: dict[tuple[str, str, str], Samples] = field(default_factory=dict)
    balances: dict[str, BalanceFact] = field(default_factory=dict)
    burn_rates: dict[str, Decimal] = field(default_factory=dict)
    spend_rate: dict[str, Samples] = field(default_factory=dict)
    running: dict[str, Samples] = field(default_factory=dict)
    task_list: dict[str, list[TaskFact]] = field(default_factory=dict)
    stale: dict[str, list[str]] = field(default_factory=dict)
    history_starts: dict[str, datetime] = field(default_factory=dict)
    account_names: list[str] | None = None

    def __post_init__(self) -> None:
        for store in (self.metrics, self.gpu_metrics, self.spend_rate, self.running):
            for key, samples in store.items():
                store[key] = sorted(samples)  # type: ignore[index]

    # -- Facts ---------------------------------------------------------------------------
    def accounts(self) -> list[str]:
        if self.account_names is not None:
            return list(self.account_names)
        names: set[str] = set()
        for mapping in (self.instance_list, self.balances, self.task_list, self.stale):
            names.update(mapping)
        return sorted(names) or ["default"]

    def instances(self, account: str) -> list[InstanceFact]:
        return list(self.instance_list.get(account, []))

    def _ids(self, account: str, instance_ids: Iterable[str] | None) -> list[str]:
        if instance_ids is not None:
            return list(instance_ids)
        return [i.id for i in self.instance_list.get(account, [])]

    def metric_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
        busy_at: float | None = None,
    ) -> dict[str, WindowAgg]:
        out: dict[str, WindowAgg] = {}  # every window read whole: ``busy_at`` changes nothing
        for iid in self._ids(account, instance_ids):
            agg = aggregate(self.metrics.get((iid, series), []), start, end)
            if agg is not None:
                out[iid] = agg
        return out

    def per_gpu_window(
        self,
        account: str,
        series: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, list[GpuAgg]]:
        wanted = set(self._ids(account, instance_ids))
        out: dict[str, list[GpuAgg]] = {}
        for (iid, gpu_id, name), samples in sorted(self.gpu_metrics.items()):
            if iid not in wanted or name != series:
                continue
            agg = aggregate(samples, start, end)
            if agg is not None:
                out.setdefault(iid, []).append(
                    GpuAgg(gpu_id, agg.avg, agg.max, agg.min, agg.count, agg.covered_s)
                )
        return out

    def balance(self, account: str) -> BalanceFact | None:
        return self.balances.get(account)

    def burn_rate(self, account: str) -> Decimal | None:
        return self.burn_rates.get(account)

    def runway(self, account: str, now: datetime) -> Runway:
        return account_runway(
            self.balances.get(account),
            self.burn_rate(account),
            self.instance_list.get(account, []),
            now,
        )

    def idle_since(
        self,
        account: str,
        threshold: float,
        now: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        by_id = {i.id: i for i in self.instance_list.get(account, [])}
        for iid in self._ids(account, instance_ids):
            per_gpu = [
                samples
                for (i, _gpu, name), samples in self.gpu_metrics.items()
                if i == iid and name == "gpu_util"
            ]
            minutes: dict[datetime, float] = {}
            for samples in per_gpu or [self.metrics.get((iid, "gpu_util"), [])]:
                for ts, value in samples:
                    if ts <= now:  # stamped at its minute's end; economics wants the start
                        start = ts - timedelta(seconds=SAMPLE_STEP_S)
                        minutes[start] = max(minutes.get(start, value), value)
            inst = by_id.get(iid)
            since = economics.idle_since(
                sorted(minutes.items(), reverse=True),
                threshold,
                not_before=self._not_before(account, inst),
            )
            if since is not None:
                out[iid] = since
        return out

    def _not_before(self, account: str, inst: InstanceFact | None) -> datetime | None:
        started = None if inst is None else (inst.last_started_at or inst.created_at)
        history = self.metrics_start(account)
        known = [t for t in (started, history) if t is not None]
        return max(known) if known else None

    def _covers(self, account: str, samples: Samples, start: datetime) -> bool:
        first = self.history_starts.get(account)
        if first is None:
            if not samples:
                return False
            first = samples[0][0] - timedelta(seconds=SAMPLE_STEP_S)
        return first <= start

    def spend(self, account: str, start: datetime, end: datetime) -> Decimal | None:
        samples = self.spend_rate.get(account, [])
        if not self._covers(account, samples, start):
            return None
        total = sum((Decimal(str(v)) for _, v in _window(samples, start, end)), Decimal(0))
        return total * SAMPLE_STEP_S / 3600

    def running_hours(
        self,
        account: str,
        start: datetime,
        end: datetime,
        instance_ids: Collection[str] | None = None,
    ) -> dict[str, float | None] | None:
        ids = self._ids(account, instance_ids)
        everything = [s for iid in ids for s in self.running.get(iid, [])]
        if not self._covers(account, sorted(everything), start):
            return None
        out: dict[str, float | None] = {}
        for iid in ids:
            minutes = sum(1 for _, v in _window(self.running.get(iid, []), start, end) if v)
            out[iid] = minutes * SAMPLE_STEP_S / 3600
        return out

    def usage_covered_until(self, account: str) -> datetime | None:
        return None

    def tasks(self, account: str) -> list[TaskFact]:
        return list(self.task_list.get(account, []))

    def stale_collectors(self, account: str, now: datetime) -> list[str]:
        return list(self.stale.get(account, []))

    def metrics_start(self, account: str) -> datetime | None:
        if account in self.history_starts:
            return self.history_starts[account]
        series = [*self.metrics.values(), *self.gpu_metrics.values()]
        firsts = [s[0][0] - timedelta(seconds=SAMPLE_STEP_S) for s in series if s]
        return min(firsts) if firsts else None

    def history_start(self, account: str) -> datetime | None:
        if account in self.history_starts:
            return self.history_starts[account]
        everything = [
            *self.metrics.values(),
            *self.gpu_metrics.values(),
            *self.running.values(),
            self.spend_rate.get(account, []),
        ]
        firsts = [s[0][0] - timedelta(seconds=SAMPLE_STEP_S) for s in everything if s]
        return min(firsts) if firsts else None
