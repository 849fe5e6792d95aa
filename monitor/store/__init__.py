"""The database layer: SQLModel records (Core tables for the packed metrics), alembic
migrations, repository functions. It never imports the API's wire models: the collectors
convert (``monitor.collect.convert``).

Usage::

    from monitor.store import open_store

    store = open_store("sqlite:///monitor.db")   # or postgresql+psycopg://user:pw@host/db
    events = store.upsert_instances("main", convert.instance_rows(instances), now)
    store.upsert_metrics("main", instance.id, convert.minute_rows(metrics, instance.cpu_num))
    agg = store.metric_window("main", None, "gpu_util", now - timedelta(minutes=30), now)
    store.close()

The :class:`Store` (one per process; every call is its own short transaction, thread-safe):

* accounts: ``ensure_account``, ``accounts``, ``instance_key``;
* instances: ``upsert_instances`` (-> events), ``instances``, ``instance``,
  ``instance_history``, ``status_histories``, ``events``;
* metrics: ``upsert_metrics``, ``upsert_metrics_many``, ``latest_metric_ts``, ``samples``,
  ``bulk_insert_metrics``, ``rollup``, ``enforce_retention``;
* windows (SQL aggregates, rollups beyond the raw part): ``metric_window``, ``per_gpu_window``;
  ``gpu_minutes`` (the raw minutes an idle stretch is traced in);
* money: ``add_balance``, ``latest_balance``, ``balance_samples``, ``upsert_usage_bills``,
  ``upsert_fixed_term_bills``, ``bills``, ``fixed_term_bills``, ``usage_bills_overlapping``,
  ``upsert_products``, ``product_price``, ``product_prices`` (every listing, picked by
  ``money.pick_price``), ``max_listed_price`` (the store only fetches: every figure is
  computed by ``monitor.economics``);
* data problems: ``record_data_problems``, ``data_problems``;
* tasks and runs: ``upsert_training_tasks`` (-> events), ``training_tasks``, ``watch_task``,
  ``watched_tasks``, ``update_async_task`` (-> event), ``record_run``, ``last_success``,
  ``last_runs``; ``collect_mark``, ``set_collect_mark`` (how far a backfill has got);
* rule state: ``load_alerts``, ``save_alerts``, ``write_alerts`` (compare-and-set, in the
  evaluation's transaction), ``delete_alerts``, ``add_silence``, ``list_silences``,
  ``remove_silence``, ``record_notification``, ``update_notification``, ``notifications``;
* the outbox: ``insert_notifications`` (in the evaluation's transaction), ``due_notifications``,
  ``claim_notification``, ``finish_notification``, ``expire_notifications``;
* ``transaction()``: one transaction for the writes that take ``conn`` (alert states,
  notifications and ``insert_actions`` together).

Modules: ``db`` (engine, pragmas, migrations), ``models`` (the schema: SQLModel records and
the Core metric tables), ``tables`` (every table as a Core ``Table``), ``types`` (UTC datetimes,
money as micro-dollars, metric encodings), ``sql`` (the dialect-chosen upsert), ``base`` (engine,
caches, meta), ``repo`` (instances, events), ``money`` (balance, bills, prices), ``tasks``
(training/async tasks, collector runs), ``progress`` (collectors' backfill marks), ``metrics``
(samples, rollups, windows, retention), ``alerting`` (alerts, silences, notifications),
``problems`` (data problems), ``facade`` (:class:`Store`), ``records`` (the returned types),
``testing`` (fresh SQLite/PostgreSQL URLs for tests), ``lease`` (the replicas' lease row and the
fence on every commit, PostgreSQL), ``filelock`` (one daemon per SQLite file).
"""

from monitor.store.db import create_store_engine, migrate, open_store
from monitor.store.facade import Store
from monitor.store.records import (
    AlertRecord,
    BalanceSample,
    CollectorRun,
    DataProblem,
    Event,
    FixedTermBillRecord,
    GpuAgg,
    InstanceChange,
    InstanceRecord,
    MetricRow,
    NotificationRecord,
    ProductPrice,
    Silence,
    TrainingTaskRecord,
    UsageBillRecord,
    WatchedTask,
    WindowAgg,
)

__all__ = [
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
    "Store",
    "TrainingTaskRecord",
    "UsageBillRecord",
    "WatchedTask",
    "WindowAgg",
    "create_store_engine",
    "migrate",
    "open_store",
]
