"""The schema, as SQLAlchemy Core tables (portable to SQLite and PostgreSQL).

Layout choices (the size target is 1.5 MB per instance-year, see ``scripts/store_size.py``):

* every row knows its account through ``account_id`` (small integer), directly or through
  ``instances.key``;
* the two big tables (``metric_samples``: one row per instance and minute; ``metric_hourly``: one
  row per instance and hour) use an integer instance key, integer epoch seconds, integer tenths of a
  percent and one byte per GPU, with the natural key as primary key and ``WITHOUT ROWID`` on SQLite
  (no second copy of the key in a rowid index);
* other tables are small and use aware UTC datetimes (:class:`UTCDateTime`) and exact money
  (:class:`Money`, micro-dollars).

The schema is created by the alembic migrations in ``migrations/versions``, never by
``metadata.create_all``; a test checks that the migrations produce exactly this metadata.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from monitor.store.types import Money, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
)

instances = Table(
    "instances",
    metadata,
    Column("key", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("instance_id", String(200), nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("status", String(64), nullable=False, default=""),
    Column("billing_mode", String(32)),
    Column("end_time", UTCDateTime),
    Column("gpu_count", Integer, nullable=False, default=0),
    Column("cpu_num", Integer),
    Column("memory", Integer),
    Column("product_id", String(200)),
    Column("product_name", Text),
    Column("cluster_id", String(200)),
    Column("cluster_name", Text),
    Column("kind", String(32)),
    Column("error_state", Text),
    Column("spot_status", String(64)),
    Column("created_at", UTCDateTime),
    Column("last_started_at", UTCDateTime),
    Column("last_stopped_at", UTCDateTime),
    Column("first_seen", UTCDateTime),
    Column("last_seen", UTCDateTime),
    Column("disappeared_at", UTCDateTime),
    Column("envs", JSON),
    UniqueConstraint("account_id", "instance_id", name="uq_instances_account_instance"),
)

instance_history = Table(
    "instance_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_key", Integer, ForeignKey("instances.key"), nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("status", String(64), nullable=False),
    Column("billing_mode", String(32)),
    Column("end_time", UTCDateTime),
    Column("gpu_count", Integer, nullable=False),
    Column("product_id", String(200)),
    Column("cluster_id", String(200)),
    Column("error_state", Text),
    Index("ix_instance_history_key_ts", "instance_key", "ts"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("resource_kind", String(32), nullable=False),
    Column("resource_id", String(200), nullable=False),
    Column("old", Text),
    Column("new", Text),
    Index("ix_events_account_ts", "account_id", "ts"),
)

metric_samples = Table(
    "metric_samples",
    metadata,
    Column("instance_key", Integer, ForeignKey("instances.key"), primary_key=True),
    Column("ts", BigInteger, primary_key=True, autoincrement=False),  # epoch s, start of minute
    # integer tenths of a percent
    Column("gpu_util", Integer),
    Column("gpu_mem", Integer),
    Column("cpu", Integer),  # per core
    Column("mem", Integer),
    Column("disk", Integer),
    # one byte per GPU, percent 0..100, 255 = missing
    Column("gpu_utils", LargeBinary),
    Column("gpu_mems", LargeBinary),
    sqlite_with_rowid=False,
)

metric_hourly = Table(
    "metric_hourly",
    metadata,
    Column("instance_key", Integer, ForeignKey("instances.key"), primary_key=True),
    Column("ts", BigInteger, primary_key=True, autoincrement=False),  # epoch s, start of hour
    Column("n", Integer, nullable=False),  # samples in the hour
    # tenths of a percent; *_n = samples that had that series
    Column("gpu_util_avg", Integer),
    Column("gpu_util_max", Integer),
    Column("gpu_util_min", Integer),
    Column("gpu_util_n", Integer),
    Column("gpu_mem_avg", Integer),
    Column("gpu_mem_max", Integer),
    Column("gpu_mem_min", Integer),
    Column("gpu_mem_n", Integer),
    Column("cpu_avg", Integer),
    Column("mem_avg", Integer),
    Column("disk_avg", Integer),
    Column("gpu_utils_avg", LargeBinary),
    Column("gpu_utils_max", LargeBinary),
    Column("gpu_mems_avg", LargeBinary),
    sqlite_with_rowid=False,
)

balance_samples = Table(
    "balance_samples",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("ts", BigInteger, primary_key=True, autoincrement=False),
    Column("available", Money, nullable=False),
    Column("cash", Money),
    Column("credit_limit", Money),
    Column("pending_charges", Money),
    Column("outstanding_invoices", Money),
    Column("source", String(32), nullable=False, default=""),
    sqlite_with_rowid=False,
)

usage_bills = Table(
    "usage_bills",
    metadata,
    # natural key; "" rather than NULL so that the key is unique on both databases
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("cycle_type", String(16), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("owner_id", String(200), primary_key=True),
    Column("product_id", String(200), primary_key=True),
    Column("start_ts", BigInteger, primary_key=True, autoincrement=False),
    Column("end_ts", BigInteger),
    Column("product_name", Text),
    Column("billing_method", Integer),
    Column("bill_num0", Float),
    Column("amount", Money),
    Column("voucher_amount", Money),
    Column("pay_amount", Money),
    # no secondary index: the key's prefix (account, cycle, category, owner) serves the
    # queries, and a secondary index on a WITHOUT ROWID table repeats the whole key
    sqlite_with_rowid=False,
)

fixed_term_bills = Table(
    "fixed_term_bills",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("owner_id", String(200), primary_key=True),
    Column("product_id", String(200), primary_key=True),
    Column("start_ts", BigInteger, primary_key=True, autoincrement=False),
    Column("end_ts", BigInteger),
    Column("product_name", Text),
    Column("trade_mode", String(64)),
    Column("trade_type", String(64)),
    Column("cycle", String(16)),
    Column("bill_num", Integer),
    Column("base_price", Money),
    Column("amount", Money),
    Column("voucher_amount", Money),
    Column("pay_amount", Money),
    Column("create_ts", BigInteger),
    sqlite_with_rowid=False,
)

products = Table(
    "products",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("product_id", String(200), primary_key=True),
    Column("cluster_id", String(200), primary_key=True),  # "" when fetched without a cluster
    Column("name", Text, nullable=False, default=""),
    Column("price_per_hour", Money),
    Column("spot_price_per_hour", Money),
    Column("monthly_prices", JSON),  # {"1": "123.45", ...} USD as strings
    Column("available_deploy", Boolean),
    Column("updated_at", UTCDateTime),
)

training_tasks = Table(
    "training_tasks",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("task_id", String(200), primary_key=True),
    Column("name", Text, nullable=False, default=""),
    Column("task_type", String(64)),
    Column("status", String(64), nullable=False),
    Column("terminal", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime),
    Column("first_seen", UTCDateTime),
    Column("last_seen", UTCDateTime),
    Column("status_changed_at", UTCDateTime),
    Column("models", JSON),
)

watched_tasks = Table(
    "watched_tasks",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("task_id", String(200), primary_key=True),
    Column("label", Text, nullable=False, default=""),
    Column("status", String(64), nullable=False, default=""),
    Column("terminal", Boolean, nullable=False, default=False),
    Column("reason", Text),
    Column("task_type", String(64)),
    Column("progress_percent", Float),
    Column("added_at", UTCDateTime, nullable=False),
    Column("last_checked", UTCDateTime),
    Column("status_changed_at", UTCDateTime),
)

collector_runs = Table(
    "collector_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("collector", String(64), nullable=False),
    Column("started", UTCDateTime, nullable=False),
    Column("finished", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),  # ok | partial | failed
    Column("counts", JSON),
    Column("error", Text),
    Index("ix_collector_runs_lookup", "account_id", "collector", "outcome", "finished"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("fingerprint", String(200), primary_key=True),
    Column("rule", String(200), nullable=False),
    Column("account", String(200)),  # account name; NULL for monitor-wide alerts
    Column("resource_kind", String(32), nullable=False),
    Column("resource_id", String(200), nullable=False),
    Column("state", String(16), nullable=False),  # pending | firing | resolved
    Column("active_since", UTCDateTime),
    Column("firing_since", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    Column("last_eval_at", UTCDateTime),
    Column("last_notified_at", UTCDateTime),
    Column("labels", JSON),
    Column("values", JSON),
    Column("summary", Text),
    # revision 0002
    Column("resource_name", Text),
    Column("severity", String(32)),
    Column("last_match_at", UTCDateTime),
    Column("notified_severity", String(32)),
    Index("ix_alerts_state", "state"),
)

silences = Table(
    "silences",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(200)),
    Column("account", String(200)),
    Column("resource_id", String(200)),
    Column("matchers", JSON),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # firing | resolved | test
    Column("fingerprints", JSON),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("error", Text),
    Column("body", Text),
    Index("ix_notifications_created", "created_at"),
)

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)
