"""The database layer: SQLModel/SQLAlchemy Core tables, alembic migrations, repository functions.

Usage::

    from monitor.store import open_store

    store = open_store("sqlite:///monitor.db")   # or postgresql+psycopg://user:pw@host/db
    events = store.upsert_instances("main", instances, now)
    store.upsert_metrics("main", instance.id, metrics, instance.cpu_num)
    agg = store.metric_window("main", None, "gpu_util", now - timedelta(minutes=30), now)
    store.close()

Modules: ``db`` (engine, pragmas, migrations), ``tables`` (schema), ``types`` (UTC datetimes,
money as micro-dollars, metric encodings), ``sql`` (the dialect-chosen upsert), ``repo`` (accounts,
instances, events, balance, bills, products, tasks, runs), ``metrics`` (samples, rollups, windows,
retention), ``alerting`` (alerts, silences, notifications), ``records`` (returned dataclasses).
"""

from monitor.store.db import create_store_engine, migrate, open_store
from monitor.store.facade import Store
from monitor.store.records import (
    AlertRecord,
    BalanceSample,
    CollectorRun,
    Event,
    GpuAgg,
    InstanceChange,
    InstanceRecord,
    MetricRow,
    NotificationRecord,
    ProductPrice,
    Silence,
    TrainingTaskRecord,
    WatchedTask,
    WindowAgg,
)

__all__ = [
    "AlertRecord",
    "BalanceSample",
    "CollectorRun",
    "Event",
    "GpuAgg",
    "InstanceChange",
    "InstanceRecord",
    "MetricRow",
    "NotificationRecord",
    "ProductPrice",
    "Silence",
    "Store",
    "TrainingTaskRecord",
    "WatchedTask",
    "WindowAgg",
    "create_store_engine",
    "migrate",
    "open_store",
]
