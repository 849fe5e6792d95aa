"""Initial schema (written out explicitly; later revisions alter it, never this file).

Money columns are BIGINT micro-dollars and times are TIMESTAMP WITH TIME ZONE, matching the
TypeDecorators in ``monitor.store.types``; the metric tables use integer epoch seconds.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    op.create_table(
        "alerts",
        sa.Column("fingerprint", sa.String(length=200), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=True),
        sa.Column("resource_kind", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("active_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("firing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_eval_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.Column("values", sa.JSON(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_state", ["state"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("fingerprints", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_created", ["created_at"], unique=False)

    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=True),
        sa.Column("account", sa.String(length=200), nullable=True),
        sa.Column("resource_id", sa.String(length=200), nullable=True),
        sa.Column("matchers", sa.JSON(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silences")),
    )
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_meta")),
    )
    op.create_table(
        "balance_samples",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("cash", sa.BigInteger(), nullable=True),
        sa.Column("credit_limit", sa.BigInteger(), nullable=True),
        sa.Column("pending_charges", sa.BigInteger(), nullable=True),
        sa.Column("outstanding_invoices", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_balance_samples_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "ts", name=op.f("pk_balance_samples")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "collector_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("collector", sa.String(length=64), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_collector_runs_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collector_runs")),
    )
    with op.batch_alter_table("collector_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_collector_runs_lookup",
            ["account_id", "collector", "outcome", "finished"],
            unique=False,
        )

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("resource_kind", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=200), nullable=False),
        sa.Column("old", sa.Text(), nullable=True),
        sa.Column("new", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_events_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_account_ts", ["account_id", "ts"], unique=False)

    op.create_table(
        "fixed_term_bills",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.String(length=200), nullable=False),
        sa.Column("product_id", sa.String(length=200), nullable=False),
        sa.Column("start_ts", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("end_ts", sa.BigInteger(), nullable=True),
        sa.Column("product_name", sa.Text(), nullable=True),
        sa.Column("trade_mode", sa.String(length=64), nullable=True),
        sa.Column("trade_type", sa.String(length=64), nullable=True),
        sa.Column("cycle", sa.String(length=16), nullable=True),
        sa.Column("bill_num", sa.Integer(), nullable=True),
        sa.Column("base_price", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("voucher_amount", sa.BigInteger(), nullable=True),
        sa.Column("pay_amount", sa.BigInteger(), nullable=True),
        sa.Column("create_ts", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_fixed_term_bills_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint(
            "account_id",
            "category",
            "owner_id",
            "product_id",
            "start_ts",
            name=op.f("pk_fixed_term_bills"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "instances",
        sa.Column("key", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("billing_mode", sa.String(length=32), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("cpu_num", sa.Integer(), nullable=True),
        sa.Column("memory", sa.Integer(), nullable=True),
        sa.Column("product_id", sa.String(length=200), nullable=True),
        sa.Column("product_name", sa.Text(), nullable=True),
        sa.Column("cluster_id", sa.String(length=200), nullable=True),
        sa.Column("cluster_name", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("error_state", sa.Text(), nullable=True),
        sa.Column("spot_status", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disappeared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("envs", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_instances_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_instances")),
        sa.UniqueConstraint("account_id", "instance_id", name="uq_instances_account_instance"),
    )
    op.create_table(
        "products",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.String(length=200), nullable=False),
        sa.Column("cluster_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("price_per_hour", sa.BigInteger(), nullable=True),
        sa.Column("spot_price_per_hour", sa.BigInteger(), nullable=True),
        sa.Column("monthly_prices", sa.JSON(), nullable=True),
        sa.Column("available_deploy", sa.Boolean(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_products_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "product_id", "cluster_id", name=op.f("pk_products")),
    )
    op.create_table(
        "training_tasks",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("task_type", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("terminal", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("models", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_training_tasks_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "task_id", name=op.f("pk_training_tasks")),
    )
    op.create_table(
        "usage_bills",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("cycle_type", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.String(length=200), nullable=False),
        sa.Column("product_id", sa.String(length=200), nullable=False),
        sa.Column("start_ts", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("end_ts", sa.BigInteger(), nullable=True),
        sa.Column("product_name", sa.Text(), nullable=True),
        sa.Column("billing_method", sa.Integer(), nullable=True),
        sa.Column("bill_num0", sa.Float(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("voucher_amount", sa.BigInteger(), nullable=True),
        sa.Column("pay_amount", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_usage_bills_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint(
            "account_id",
            "cycle_type",
            "category",
            "owner_id",
            "product_id",
            "start_ts",
            name=op.f("pk_usage_bills"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "watched_tasks",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("terminal", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("task_type", sa.String(length=64), nullable=True),
        sa.Column("progress_percent", sa.Float(), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_checked", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_watched_tasks_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "task_id", name=op.f("pk_watched_tasks")),
    )
    op.create_table(
        "instance_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("instance_key", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("billing_mode", sa.String(length=32), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.String(length=200), nullable=True),
        sa.Column("cluster_id", sa.String(length=200), nullable=True),
        sa.Column("error_state", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_key"],
            ["instances.key"],
            name=op.f("fk_instance_history_instance_key_instances"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_history")),
    )
    with op.batch_alter_table("instance_history", schema=None) as batch_op:
        batch_op.create_index("ix_instance_history_key_ts", ["instance_key", "ts"], unique=False)

    op.create_table(
        "metric_hourly",
        sa.Column("instance_key", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("gpu_util_avg", sa.Integer(), nullable=True),
        sa.Column("gpu_util_max", sa.Integer(), nullable=True),
        sa.Column("gpu_util_min", sa.Integer(), nullable=True),
        sa.Column("gpu_util_n", sa.Integer(), nullable=True),
        sa.Column("gpu_mem_avg", sa.Integer(), nullable=True),
        sa.Column("gpu_mem_max", sa.Integer(), nullable=True),
        sa.Column("gpu_mem_min", sa.Integer(), nullable=True),
        sa.Column("gpu_mem_n", sa.Integer(), nullable=True),
        sa.Column("cpu_avg", sa.Integer(), nullable=True),
        sa.Column("mem_avg", sa.Integer(), nullable=True),
        sa.Column("disk_avg", sa.Integer(), nullable=True),
        sa.Column("gpu_utils_avg", sa.LargeBinary(), nullable=True),
        sa.Column("gpu_utils_max", sa.LargeBinary(), nullable=True),
        sa.Column("gpu_mems_avg", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_key"],
            ["instances.key"],
            name=op.f("fk_metric_hourly_instance_key_instances"),
        ),
        sa.PrimaryKeyConstraint("instance_key", "ts", name=op.f("pk_metric_hourly")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "metric_samples",
        sa.Column("instance_key", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("gpu_util", sa.Integer(), nullable=True),
        sa.Column("gpu_mem", sa.Integer(), nullable=True),
        sa.Column("cpu", sa.Integer(), nullable=True),
        sa.Column("mem", sa.Integer(), nullable=True),
        sa.Column("disk", sa.Integer(), nullable=True),
        sa.Column("gpu_utils", sa.LargeBinary(), nullable=True),
        sa.Column("gpu_mems", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_key"],
            ["instances.key"],
            name=op.f("fk_metric_samples_instance_key_instances"),
        ),
        sa.PrimaryKeyConstraint("instance_key", "ts", name=op.f("pk_metric_samples")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("metric_samples")
    op.drop_table("metric_hourly")
    with op.batch_alter_table("instance_history", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_history_key_ts")

    op.drop_table("instance_history")
    op.drop_table("watched_tasks")
    op.drop_table("usage_bills")
    op.drop_table("training_tasks")
    op.drop_table("products")
    op.drop_table("instances")
    op.drop_table("fixed_term_bills")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_account_ts")

    op.drop_table("events")
    with op.batch_alter_table("collector_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_collector_runs_lookup")

    op.drop_table("collector_runs")
    op.drop_table("balance_samples")
    op.drop_table("store_meta")
    op.drop_table("silences")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_created")

    op.drop_table("notifications")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_state")

    op.drop_table("alerts")
    op.drop_table("accounts")
