"""Keys for reads by time: usage bills keyed by start before owner; due notifications indexed.

Notifications gain ``ix_notifications_due (status, next_attempt_at)``: the delivery step asks
every few seconds for the pending rows due, and the table keeps a year of sent ones.

Usage bills: the key becomes ``(account, cycle, category, start, owner, product)``.

Until this revision the key was ``(account, cycle, category, owner, product, start)``: every
query over a window of time (the spend of the last 24 h, the running hours of 7 days, each
billing instance's latest complete hour) had no prefix of the key to seek on and read every
stored bill of the cycle: with the 45 days of hourly bills the retention keeps, a 24-hour spend
read 45 times the rows it needed, and that grew with the fleet and the history. Keyed by start
first, a window reads its own rows (a range of the key) whatever the history; reads by owner
name the owners and a short time range (``latest_complete_bills``), so they lose nothing. The
size is unchanged (the same columns; the table stays ``WITHOUT ROWID`` on SQLite, where the
key is the table).

SQLite cannot change a primary key in place: the table is rebuilt (created under a temporary
name, rows copied, the old one dropped, the new one renamed) in the migration's transaction.
PostgreSQL drops and re-adds the constraint. Every row is kept (tested).

Downgrade: the old key back, the same way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_KEY = ("account_id", "cycle_type", "category", "start_ts", "owner_id", "product_id")
OLD_KEY = ("account_id", "cycle_type", "category", "owner_id", "product_id", "start_ts")
COLUMNS = (
    "account_id", "cycle_type", "category", "owner_id", "product_id", "start_ts", "end_ts",
    "product_name", "billing_method", "bill_num0", "amount", "voucher_amount", "pay_amount",
    "unit_price",
)  # fmt: skip


def _table(name: str, key: Sequence[str]) -> sa.Table:
    metadata = sa.MetaData()
    sa.Table("accounts", metadata, sa.Column("id", sa.Integer(), primary_key=True))  # exists
    return sa.Table(
        name,
        metadata,
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
        sa.Column("unit_price", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_usage_bills_account_id_accounts"
        ),
        sa.PrimaryKeyConstraint(*key, name="pk_usage_bills"),
        sqlite_with_rowid=False,
    )


def _rekey(key: Sequence[str]) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        staged = _table("usage_bills_rekeyed", key)
        staged.create(bind)
        cols = ", ".join(COLUMNS)
        op.execute(f"INSERT INTO usage_bills_rekeyed ({cols}) SELECT {cols} FROM usage_bills")
        op.drop_table("usage_bills")
        op.rename_table("usage_bills_rekeyed", "usage_bills")
        return
    op.drop_constraint("pk_usage_bills", "usage_bills", type_="primary")
    op.create_primary_key("pk_usage_bills", "usage_bills", list(key))


def upgrade() -> None:
    _rekey(NEW_KEY)
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_due", table_name="notifications")
    _rekey(OLD_KEY)
