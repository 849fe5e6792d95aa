"""What the store returns (and a few things it takes).

The records of the store's tables are the SQLModel models of :mod:`monitor.store.models`,
re-exported here; the values below are not rows of a table of their own (events carry the
account's name, aggregates are computed) and stay plain frozen dataclasses. Everything returned
is detached from any session, so callers (collectors, ``status``, the rule engine's query
interface) keep using it after the store call returned. Times are aware UTC datetimes, money is
``Decimal`` USD, metric values are percents (floats).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from monitor.store.models import (
    AlertRecord,
    BalanceSample,
    CollectorRun,
    DataProblem,
    FixedTermBillRecord,
    InstanceRecord,
    NotificationRecord,
    ProductPrice,
    Silence,
    TrainingTaskRecord,
    UsageBillRecord,
    WatchedTask,
)

__all__ = [
    "APPEARED",
    "BILLING_MODE_CHANGED",
    "DISAPPEARED",
    "END_TIME_MOVED",
    "ERROR_ENTERED",
    "SERIES",
    "STATUS_CHANGED",
    "TASK_FINISHED",
    "AlertRecord",
    "BalanceSample",
    "CollectorRun",
    "DataProblem",
    "Event",
    "FixedTermBillRecord",
    "GpuAgg",
    "InstanceChange",
    "InstanceRecord",
    "MetricRow",
    "NotificationRecord",
    "ProductPrice",
    "Silence",
    "TrainingTaskRecord",
    "UsageBillRecord",
    "WatchedTask",
    "WindowAgg",
]

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
