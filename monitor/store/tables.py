"""The store's tables as SQLAlchemy Core ``Table`` objects, for the bulk statements.

The definitions live in :mod:`monitor.store.models` (one per record); the names here are the
tables of those models (``instances`` is ``InstanceRecord.__table__``) and the Core-only tables,
so the store's statements read ``t.instances.c.status`` whatever defines the table.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from monitor.store.models import (
    ActionRecord,
    AlertRecord,
    BalanceSample,
    CollectorRun,
    DataProblem,
    FixedTermBillRecord,
    InstanceRecord,
    NotificationRecord,
    ProductPrice,
    ReportRun,
    Silence,
    TrainingTaskRecord,
    UsageBillRecord,
    WatchedTask,
    accounts,
    events,
    instance_history,
    leader_lease,
    metadata,
    metric_hourly,
    metric_samples,
    store_meta,
)


def table_of(model: type) -> Table:
    """The Core table of a SQLModel model (typed: SQLModel leaves ``__table__`` untyped)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


instances = table_of(InstanceRecord)
balance_samples = table_of(BalanceSample)
usage_bills = table_of(UsageBillRecord)
fixed_term_bills = table_of(FixedTermBillRecord)
products = table_of(ProductPrice)
training_tasks = table_of(TrainingTaskRecord)
watched_tasks = table_of(WatchedTask)
collector_runs = table_of(CollectorRun)
alerts = table_of(AlertRecord)
actions = table_of(ActionRecord)
silences = table_of(Silence)
notifications = table_of(NotificationRecord)
data_problems = table_of(DataProblem)
report_runs = table_of(ReportRun)

__all__ = [
    "accounts",
    "alerts",
    "balance_samples",
    "collector_runs",
    "data_problems",
    "events",
    "fixed_term_bills",
    "instance_history",
    "instances",
    "leader_lease",
    "metadata",
    "metric_hourly",
    "metric_samples",
    "notifications",
    "products",
    "report_runs",
    "silences",
    "store_meta",
    "table_of",
    "training_tasks",
    "usage_bills",
    "watched_tasks",
]
