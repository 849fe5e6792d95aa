"""Plain frozen records the store returns (and a few it takes).

They are detached from any session, so callers (collectors, ``status``, the rule engine's query
interface) keep using them after the store call returned. Times are aware UTC datetimes, money is
``Decimal`` USD, metric values are percents (floats).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

#: event kinds derived by :meth:`Store.upsert_instances` / task upserts
APPEARED = "appeared"
DISAPPEARED = "disappeared"
STATUS_CHANGED = "status_changed"
ERROR_ENTERED = "error_entered"
BILLING_MODE_CHANGED = "billing_mode_changed"
END_TIME_MOVED = "end_time_moved"
TASK_FINISHED = "task_finished"

#: metric series names accepted by the window queries
SERIES = ("gpu_util", "gpu_mem", "cpu", "mem", "disk")


@dataclass(frozen=True)
class Event:
    account: str
    ts: datetime
    kind: str
    resource_kind: str  # instance | training_task | async_task
    resource_id: str
    old: str | None = None
    new: str | None = None


@dataclass(frozen=True)
class InstanceRecord:
    account: str
    instance_id: str
    key: int
    name: str
    status: str
    billing_mode: str | None
    end_time: datetime | None
    gpu_count: int
    cpu_num: int | None
    memory: int | None
    product_id: str | None
    product_name: str | None
    cluster_id: str | None
    cluster_name: str | None
    kind: str | None
    error_state: str | None
    spot_status: str | None
    created_at: datetime | None
    last_started_at: datetime | None
    last_stopped_at: datetime | None
    first_seen: datetime | None
    last_seen: datetime | None
    disappeared_at: datetime | None
    envs: dict[str, str] = field(default_factory=dict)
    auto_renew: bool | None = None
    auto_renew_month: int | None = None
    keep_data_day: int | None = None


@dataclass(frozen=True)
class InstanceChange:
    """One row of ``instance_history``: the tracked state from ``ts`` on."""

    ts: datetime
    status: str
    billing_mode: str | None
    end_time: datetime | None
    gpu_count: int
    product_id: str | None
    cluster_id: str | None
    error_state: str | None


@dataclass(frozen=True)
class BalanceSample:
    account: str
    ts: datetime
    available_usd: Decimal
    cash_usd: Decimal | None = None
    credit_limit_usd: Decimal | None = None
    pending_charges_usd: Decimal | None = None
    outstanding_invoices_usd: Decimal | None = None
    source: str = ""


@dataclass(frozen=True)
class ProductPrice:
    product_id: str
    cluster_id: str
    name: str
    price_usd_per_hour: Decimal | None
    spot_price_usd_per_hour: Decimal | None
    monthly_prices_usd: dict[int, Decimal]
    available_deploy: bool | None
    updated_at: datetime | None

    def monthly_price_usd(self, months: int = 1) -> Decimal | None:
        return self.monthly_prices_usd.get(months)

    def hourly_usd(self, billing_mode: str | None) -> Decimal | None:
        """Listed per-GPU hourly price for a billing mode: the spot price for ``spot`` (the
        on-demand price when no spot price is listed), the on-demand price otherwise; None for
        ``monthly`` (prepaid)."""
        if billing_mode == "monthly":
            return None
        if billing_mode == "spot" and self.spot_price_usd_per_hour:
            return self.spot_price_usd_per_hour
        return self.price_usd_per_hour


@dataclass(frozen=True)
class TrainingTaskRecord:
    account: str
    task_id: str
    name: str
    task_type: str | None
    status: str
    terminal: bool
    created_at: datetime | None
    first_seen: datetime | None
    last_seen: datetime | None
    status_changed_at: datetime | None


@dataclass(frozen=True)
class WatchedTask:
    account: str
    task_id: str
    label: str
    status: str
    terminal: bool
    reason: str | None
    task_type: str | None
    progress_percent: float | None
    added_at: datetime
    last_checked: datetime | None
    status_changed_at: datetime | None


@dataclass(frozen=True)
class CollectorRun:
    account: str
    collector: str
    started: datetime
    finished: datetime
    outcome: str
    counts: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class WindowAgg:
    """Aggregate of one series over a window. ``covered_seconds`` = samples x 60 s, capped."""

    avg: float | None
    max: float | None
    min: float | None
    count: int
    covered_seconds: int
    first_ts: datetime | None
    last_ts: datetime | None


@dataclass(frozen=True)
class GpuAgg:
    """One GPU (by position in the instance's sorted GPU ids) over a window."""

    index: int
    avg: float | None
    max: float | None
    count: int


@dataclass(frozen=True)
class MetricRow:
    """One minute of one instance, as :meth:`Store.bulk_insert_metrics` takes it (percents)."""

    instance_key: int
    ts: int  # epoch seconds; floored to the minute on insert
    gpu_util: float | None = None
    gpu_mem: float | None = None
    cpu: float | None = None  # per core
    mem: float | None = None
    disk: float | None = None
    gpu_utils: tuple[float | None, ...] = ()
    gpu_mems: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class AlertRecord:
    fingerprint: str
    rule: str
    account: str | None
    resource_kind: str
    resource_id: str
    state: str  # pending | firing | resolved
    active_since: datetime | None = None
    firing_since: datetime | None = None
    resolved_at: datetime | None = None
    last_eval_at: datetime | None = None
    last_notified_at: datetime | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    resource_name: str | None = None
    severity: str | None = None
    last_match_at: datetime | None = None
    notified_severity: str | None = None


@dataclass(frozen=True)
class Silence:
    id: int
    rule: str | None
    account: str | None
    resource_id: str | None
    matchers: dict[str, Any]
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at


@dataclass(frozen=True)
class NotificationRecord:
    id: int
    channel: str
    kind: str  # firing | resolved | test
    fingerprints: list[str]
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    status: str  # pending | sent | failed
    error: str | None
    body: str | None
