"""The schema: the store's records as SQLModel models, and the packed metric tables as Core tables,
all in one metadata (``SQLModel.metadata``) so that alembic compares one schema.

One definition per record: each model below is at once the table (``Model.__table__``, which the
store's bulk statements use) and the type the store returns. Returned instances are loaded by a
session that is closed before the call returns: plain detached objects with every column loaded
(no relationships, so nothing loads lazily later).

Layout choices (the size target is 1.5 MB per instance-year, see ``novita-monitor bench store``):

* every row knows its account through ``account_id`` (small integer), directly or through
  ``instances.key``;
* the two big tables (``metric_samples``: one row per instance and minute; ``metric_hourly``: one
  row per instance and hour) stay Core tables (written and read in bulk, never as objects): an
  integer instance key, integer epoch seconds, integer tenths of a percent and one byte per GPU,
  with the natural key as primary key and ``WITHOUT ROWID`` on SQLite (no second copy of the key
  in a rowid index); balance samples and bills are keyed the same way;
* other tables are small and use aware UTC datetimes (:class:`UTCDateTime`) and exact money
  (:class:`Money`, micro-dollars).

Where an attribute's name differs from its column's (``BalanceSample.available_usd`` is column
``available``), the column keeps the name revisions 0001-0002 gave it and the attribute keeps the
name callers used. SQLModel's default column types (``AutoString``, ``Numeric``) are overridden
with ``sa_type``/``sa_column`` wherever the physical schema chose otherwise.

The schema is created by the alembic migrations in ``migrations/versions``, never by
``metadata.create_all``; a test checks that the migrations produce exactly this metadata.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from monitor.store.types import (
    EpochSeconds,
    JSONList,
    JSONObject,
    Money,
    MonthlyPrices,
    TextOrEmpty,
    UTCDateTime,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = SQLModel.metadata
metadata.naming_convention = NAMING  # before any table: constraint names are fixed at creation

# -- Core tables: accounts, events, history, meta, and the packed metric tables ---------------

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
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

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

#: the replicas' lease (``monitor.leader``): one row per lease name; ``epoch`` grows at every
#: change of holder and fences the writes of a leader that lost the lease
leader_lease = Table(
    "leader_lease",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)


def _account_key() -> Any:
    return Field(primary_key=True, foreign_key="accounts.id")


def _str(length: int, **kwargs: Any) -> Any:
    return Field(sa_type=String(length), **kwargs)


def _key_str(length: int) -> Any:
    """A string part of a natural key: ``""`` rather than NULL, so the key is unique on both
    databases."""
    return Field(primary_key=True, sa_type=String(length))


# -- records ----------------------------------------------------------------------------------


class StoreRecord(SQLModel):
    """Base of the store's record models: SQLModel, with a faster constructor.

    SQLModel builds a table model by setting each field through both SQLAlchemy's
    instrumentation and pydantic's ``__setattr__``: about 40 µs for an alert, twenty times a
    frozen dataclass, and the rule evaluation builds one :class:`AlertRecord` per changed alert
    (hundreds in a first evaluation of a thousand instances). Table models are not validated
    by SQLModel either, so this constructor does what it does, directly: every field from the
    keywords or its default (factories called per instance), written to the instance's
    ``__dict__`` (which SQLAlchemy's instrumentation reads; its generated ``__init__`` wrapper
    still creates the instance state first), and pydantic's set of fields given. Unknown or
    missing required fields raise ``TypeError`` rather than passing silently. Rows loaded from
    the database never run ``__init__``.
    """

    def __init__(self, **data: Any) -> None:
        cls = type(self)
        plan = cls.__dict__.get("_init_plan_")
        if plan is None:
            plan = [
                (name, info.default_factory, info.default, info.is_required())
                for name, info in cls.model_fields.items()
            ]
            type.__setattr__(cls, "_init_plan_", plan)
            # pydantic's ``model_fields`` is a descriptor that builds its answer per access
            type.__setattr__(cls, "_field_names_", frozenset(cls.model_fields))
        names = cls.__dict__["_field_names_"]
        if not data.keys() <= names:
            unknown = sorted(data.keys() - names)
            raise TypeError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        values = self.__dict__
        for name, factory, default, required in plan:
            if name in data:
                values[name] = data[name]
            elif required:
                raise TypeError(f"{cls.__name__}: missing required field {name!r}")
            else:
                values[name] = factory() if factory is not None else default  # type: ignore[call-arg]
        object.__setattr__(self, "__pydantic_fields_set__", set(data))


class InstanceRecord(StoreRecord, table=True):
    """An instance's current state as last listed (and when it was first and last seen)."""

    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("account_id", "instance_id", name="uq_instances_account_instance"),
    )

    key: int | None = Field(default=None, primary_key=True)  # the metric tables' instance key
    account_id: int = Field(foreign_key="accounts.id")
    instance_id: str = _str(200)
    name: str = Field(default="", sa_type=Text)
    status: str = _str(64, default="")
    billing_mode: str | None = _str(32, default=None)
    end_time: datetime | None = Field(default=None, sa_type=UTCDateTime)
    gpu_count: int = 0
    cpu_num: int | None = None
    memory: int | None = None
    product_id: str | None = _str(200, default=None)
    product_name: str | None = Field(default=None, sa_type=Text)
    cluster_id: str | None = _str(200, default=None)
    cluster_name: str | None = Field(default=None, sa_type=Text)
    kind: str | None = _str(32, default=None)
    error_state: str | None = Field(default=None, sa_type=Text)
    spot_status: str | None = _str(64, default=None)
    created_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    first_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    disappeared_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    envs: dict[str, str] = Field(default_factory=dict, sa_type=JSONObject, nullable=True)
    # revision 0003: subscription renewal (wire-format §7: the platform charges about 3 days
    # before ``endTime`` when auto-renew is on) and how long data is kept after expiry
    auto_renew: bool | None = Field(default=None, sa_type=Boolean)
    auto_renew_month: int | None = None
    keep_data_day: int | None = None


#: the fields a listing provides (what :meth:`Store.upsert_instances` takes per instance, beside
#: ``instance_id``); the others are the store's own bookkeeping
LISTED_FIELDS = (
    "name",
    "status",
    "billing_mode",
    "end_time",
    "gpu_count",
    "cpu_num",
    "memory",
    "product_id",
    "product_name",
    "cluster_id",
    "cluster_name",
    "kind",
    "error_state",
    "spot_status",
    "created_at",
    "last_started_at",
    "last_stopped_at",
    "envs",
    "auto_renew",
    "auto_renew_month",
    "keep_data_day",
)


class BalanceSample(StoreRecord, table=True):
    """The account's balance at ``ts`` (stored as epoch seconds: the table grows with time)."""

    __tablename__ = "balance_samples"
    __table_args__ = {"sqlite_with_rowid": False}

    account_id: int | None = Field(default=None, primary_key=True, foreign_key="accounts.id")
    ts: datetime = Field(
        sa_column=Column("ts", EpochSeconds, primary_key=True, autoincrement=False)
    )
    available_usd: Decimal = Field(sa_column=Column("available", Money, nullable=False))
    cash_usd: Decimal | None = Field(default=None, sa_column=Column("cash", Money))
    credit_limit_usd: Decimal | None = Field(default=None, sa_column=Column("credit_limit", Money))
    pending_charges_usd: Decimal | None = Field(
        default=None, sa_column=Column("pending_charges", Money)
    )
    outstanding_invoices_usd: Decimal | None = Field(
        default=None, sa_column=Column("outstanding_invoices", Money)
    )
    source: str = _str(32, default="")


class UsageBillRecord(StoreRecord, table=True):
    """A pay-as-you-go bill (one period of one product of one owner); its amount grows until
    the period ends. Times are epoch seconds (bills are many and keyed by start)."""

    __tablename__ = "usage_bills"
    # keyed by start before owner (revision 0006): a window of time is a range of the key,
    # whatever the history kept; no secondary index (on a WITHOUT ROWID table it would repeat
    # the whole key)
    __table_args__ = (
        PrimaryKeyConstraint(
            "account_id",
            "cycle_type",
            "category",
            "start_ts",
            "owner_id",
            "product_id",
            name="pk_usage_bills",
        ),
        {"sqlite_with_rowid": False},
    )

    account_id: int = _account_key()
    cycle_type: str = _key_str(16)
    category: str = _key_str(64)
    owner_id: str = _key_str(200)
    product_id: str = _key_str(200)
    start_ts: int = Field(
        sa_column=Column("start_ts", BigInteger, primary_key=True, autoincrement=False)
    )
    end_ts: int | None = Field(default=None, sa_type=BigInteger)
    product_name: str | None = Field(default=None, sa_type=Text)
    billing_method: int | None = None
    bill_num0: float | None = Field(default=None, sa_type=Float)  # "cards x billing time"
    amount: Decimal | None = Field(default=None, sa_type=Money)
    voucher_amount: Decimal | None = Field(default=None, sa_type=Money)
    pay_amount: Decimal | None = Field(default=None, sa_type=Money)
    # revision 0003: USD per card-hour (the wire's ``discountPrice0`` divided by
    # ``pricePrecision`` where sent): ``amount / unit_price`` gives the card-hours the bill
    # charged for, whatever unit ``bill_num0`` counts in (the docs leave it open, wire-format
    # §6/§7.1; ``monitor.economics.bill_card_hours`` cross-checks the two)
    unit_price: Decimal | None = Field(default=None, sa_type=Money)


class FixedTermBillRecord(StoreRecord, table=True):
    """A subscription (monthly/yearly) bill."""

    __tablename__ = "fixed_term_bills"
    __table_args__ = {"sqlite_with_rowid": False}

    account_id: int = _account_key()
    category: str = _key_str(64)
    owner_id: str = _key_str(200)
    product_id: str = _key_str(200)
    start_ts: int = Field(
        sa_column=Column("start_ts", BigInteger, primary_key=True, autoincrement=False)
    )
    end_ts: int | None = Field(default=None, sa_type=BigInteger)
    product_name: str | None = Field(default=None, sa_type=Text)
    trade_mode: str | None = _str(64, default=None)
    trade_type: str | None = _str(64, default=None)
    cycle: str | None = _str(16, default=None)
    bill_num: int | None = None
    base_price: Decimal | None = Field(default=None, sa_type=Money)  # USD
    amount: Decimal | None = Field(default=None, sa_type=Money)
    voucher_amount: Decimal | None = Field(default=None, sa_type=Money)
    pay_amount: Decimal | None = Field(default=None, sa_type=Money)
    create_ts: int | None = Field(default=None, sa_type=BigInteger)


class ProductPrice(StoreRecord, table=True):
    """A product's listed prices in one cluster (``cluster_id`` "" when listed without one)."""

    __tablename__ = "products"

    account_id: int = _account_key()
    product_id: str = _key_str(200)
    cluster_id: str = _key_str(200)
    name: str = Field(default="", sa_type=Text)
    price_usd_per_hour: Decimal | None = Field(
        default=None, sa_column=Column("price_per_hour", Money)
    )
    spot_price_usd_per_hour: Decimal | None = Field(
        default=None, sa_column=Column("spot_price_per_hour", Money)
    )
    monthly_prices_usd: dict[int, Decimal] = Field(
        default_factory=dict, sa_column=Column("monthly_prices", MonthlyPrices, nullable=True)
    )
    available_deploy: bool | None = Field(default=None, sa_type=Boolean)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

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


class TrainingTaskRecord(StoreRecord, table=True):
    __tablename__ = "training_tasks"

    account_id: int = _account_key()
    task_id: str = _key_str(200)
    name: str = Field(default="", sa_type=Text)
    task_type: str | None = _str(64, default=None)
    status: str = _str(64)
    terminal: bool = Field(default=False, sa_type=Boolean)
    created_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    first_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    models: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONList, nullable=True)


class WatchedTask(StoreRecord, table=True):
    """An async task id the monitor polls (the API cannot list them)."""

    __tablename__ = "watched_tasks"

    account_id: int = _account_key()
    task_id: str = _key_str(200)
    label: str = Field(default="", sa_type=Text)
    status: str = _str(64, default="")
    terminal: bool = Field(default=False, sa_type=Boolean)
    reason: str | None = Field(default=None, sa_type=Text)
    task_type: str | None = _str(64, default=None)
    progress_percent: float | None = Field(default=None, sa_type=Float)
    added_at: datetime = Field(sa_type=UTCDateTime)
    last_checked: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CollectorRun(StoreRecord, table=True):
    __tablename__ = "collector_runs"
    __table_args__ = (
        Index("ix_collector_runs_lookup", "account_id", "collector", "outcome", "finished"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="accounts.id")
    collector: str = _str(64)
    started: datetime = Field(sa_type=UTCDateTime)
    finished: datetime = Field(sa_type=UTCDateTime)
    outcome: str = _str(16)  # ok | partial | failed
    counts: dict[str, Any] = Field(default_factory=dict, sa_type=JSONObject, nullable=True)
    error: str | None = Field(default=None, sa_type=Text)


class AlertRecord(StoreRecord, table=True):
    """One alert's lifecycle state, as the rule engine last saved it."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_state", "state"),)

    fingerprint: str = Field(primary_key=True, sa_type=String(200))
    rule: str = _str(200)
    account: str | None = _str(200, default=None)  # account name; None for monitor-wide alerts
    resource_kind: str = _str(32)
    resource_id: str = _str(200)
    state: str = _str(16)  # pending | firing | resolved
    active_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    firing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_eval_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_notified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    labels: dict[str, Any] = Field(default_factory=dict, sa_type=JSONObject, nullable=True)
    values: dict[str, Any] = Field(default_factory=dict, sa_type=JSONObject, nullable=True)
    summary: str = Field(default="", sa_type=TextOrEmpty, nullable=True)
    # revision 0002
    resource_name: str | None = Field(default=None, sa_type=Text)
    severity: str | None = _str(32, default=None)
    last_match_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    notified_severity: str | None = _str(32, default=None)
    # revision 0004: written with compare-and-set (a writer that read version n updates only
    # a row still at n, and sets n + 1): two processes never both move one alert
    version: int = Field(default=0, sa_type=Integer, nullable=False)


class Silence(StoreRecord, table=True):
    __tablename__ = "silences"

    id: int | None = Field(default=None, primary_key=True)
    rule: str | None = _str(200, default=None)
    account: str | None = _str(200, default=None)
    resource_id: str | None = _str(200, default=None)
    matchers: dict[str, Any] = Field(default_factory=dict, sa_type=JSONObject, nullable=True)
    starts_at: datetime = Field(sa_type=UTCDateTime)
    ends_at: datetime = Field(sa_type=UTCDateTime)
    reason: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime)

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at


class NotificationRecord(StoreRecord, table=True):
    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_created", "created_at"),
        # the delivery step's query every few seconds (revision 0006): the pending rows due,
        # not a scan of a year of sent ones
        Index("ix_notifications_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str = _str(200)
    kind: str = _str(16)  # firing | resolved | test
    fingerprints: list[str] = Field(default_factory=list, sa_type=JSONList, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    status: str = _str(16)  # pending | sent | failed | expired
    error: str | None = Field(default=None, sa_type=Text)
    body: str | None = Field(default=None, sa_type=Text)
    # revision 0004, the outbox: a notification is written (pending) in the transaction that
    # decides it, and a delivery step sends it, retrying with backoff until ``expires_at``
    title: str | None = Field(default=None, sa_type=Text)
    notify_type: str | None = _str(16, default=None)  # apprise: info | success | warning | failure
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # revision 0006: a scheduled report's notification carries it (``report_runs.id``) as an
    # attachment where the channel takes one
    report_id: int | None = Field(default=None, sa_type=Integer)


class ActionRecord(StoreRecord, table=True):
    """One remedial action (stop, start, renew, convert_to_subscription, set_auto_renew): the
    ledger row that explains it afterwards. Its intent is committed before any API call and its
    outcome after; a row is claimed for execution with a compare-and-set on ``version``.

    ``intent_key`` names what it is about: rule, action, instance and period (the ``endTime``
    being renewed; for a stop, the run being stopped: ``lastStartedAt``, or ``createdAt``).
    ``idempotency_key`` holds the same text while the row may still act or has acted (unique:
    the same renewal can never be planned, so never paid, twice) and is cleared when the row
    ends without acting (aborted, refused, skipped, rejected, expired, dry run), so that a later
    plan for the same intent may go ahead.
    """

    __tablename__ = "actions"
    __table_args__ = (
        Index("ix_actions_state_due", "state", "due_at"),
        Index("ix_actions_account_planned", "account", "planned_at"),
        UniqueConstraint("idempotency_key", name="uq_actions_idempotency_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account: str = _str(200)
    rule: str = _str(200)
    action: str = _str(32)
    instance_id: str = _str(200)
    instance_name: str = Field(default="", sa_type=TextOrEmpty, nullable=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSONObject, nullable=True)
    # the figures and snapshot that triggered it (alert values, instance state, data ages)
    facts: dict[str, Any] = Field(default_factory=dict, sa_type=JSONObject, nullable=True)
    intent_key: str = _str(400)
    idempotency_key: str | None = _str(400, default=None)
    dry_run: bool = Field(default=False, sa_type=Boolean, nullable=False)
    # planned | announced | awaiting_approval | approved | rejected | expired | executing |
    # succeeded | failed | aborted | refused | skipped | dry_run | outcome_unknown | undone
    state: str = _str(32)
    reason: str = Field(default="", sa_type=TextOrEmpty, nullable=True)
    planned_at: datetime = Field(sa_type=UTCDateTime)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # grace ends / approved
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # approval TTL
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # approved/rejected
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    answer: dict[str, Any] = Field(default_factory=dict, sa_type=JSONObject, nullable=True)
    attempts: int = Field(default=0, sa_type=Integer, nullable=False)
    claimed_by: str | None = _str(200, default=None)
    version: int = Field(default=0, sa_type=Integer, nullable=False)
    # savings (gross: the compute price not paid): expected per hour from the stop; realized
    # = hours stopped x that price, closed when the instance runs again
    saving_per_hour_usd: Decimal | None = Field(default=None, sa_type=Money)
    saving_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    saving_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    realized_saving_usd: Decimal | None = Field(default=None, sa_type=Money)


class DataProblem(StoreRecord, table=True):
    """A value from the API that could not be used (did not parse, or fell outside its physical
    bounds), counted per (account, kind, resource, field): ``raw`` is the latest offending value
    (at most :data:`RAW_LIMIT` characters), ``count`` how often it was reported."""

    __tablename__ = "data_problems"

    account_id: int | None = Field(default=None, primary_key=True, foreign_key="accounts.id")
    kind: str = _key_str(64)
    resource_id: str = _key_str(200)
    field: str = _key_str(200)
    raw: str | None = Field(default=None, sa_type=Text)
    count: int = 0
    first_seen: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=False)
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=False)


class ReportRun(StoreRecord, table=True):
    """One due time of a scheduled report (revision 0006), recorded in the transaction that
    queues its notifications: ``(schedule, due_at)`` is unique, so a restart neither resends
    a report nor skips one (the next due time is the one after the latest recorded). ``kind``
    ``baseline`` marks where a schedule first seen started counting (nothing was sent)."""

    __tablename__ = "report_runs"
    __table_args__ = (UniqueConstraint("schedule", "due_at", name="uq_report_runs_due"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule: str = _str(200)
    due_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    kind: str = _str(16)  # report | baseline
    format: str | None = _str(16, default=None)
    filename: str | None = Field(default=None, sa_type=Text)
    media_type: str | None = _str(64, default=None)
    content: bytes | None = Field(default=None, sa_type=LargeBinary)


#: the longest ``DataProblem.raw`` kept (a whole bad payload is not worth storing)
RAW_LIMIT = 500
