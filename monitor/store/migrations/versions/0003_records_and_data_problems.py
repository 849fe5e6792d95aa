"""Records as SQLModel models; renewal fields, bill unit price, data problems.

The move to SQLModel models (revision 0003 of the code) keeps every table, column, type, key
and ``WITHOUT ROWID`` choice of 0001-0002, so nothing is rebuilt or copied: this revision only
adds. Columns are added with plain ``ALTER TABLE ... ADD COLUMN`` (never alembic's batch mode,
whose table rebuild on SQLite would drop ``WITHOUT ROWID``), so a database written by the code
at 0002 keeps every row (tested in ``tests/test_store_migrations.py``).

* ``instances.auto_renew``, ``auto_renew_month``, ``keep_data_day``: the listing's
  ``autoRenew``, ``autoRenewMonth``, ``keepDataDay`` (NULL until the next listing);
* ``usage_bills.unit_price``: USD per unit of ``billNum0`` (``discountPrice0`` divided by
  ``pricePrecision``), micro-dollars; NULL for bills stored before, filled when re-read;
* ``data_problems``: values from the API that could not be used, counted per account, kind,
  resource and field.

Fixed-term bills stored before keep ``base_price`` as it was read then (``basePrice`` without
the ``pricePrecision`` division, which only matters when the API sends a precision); bills
re-read after the upgrade are stored in USD.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("auto_renew", sa.Boolean(), nullable=True))
    op.add_column("instances", sa.Column("auto_renew_month", sa.Integer(), nullable=True))
    op.add_column("instances", sa.Column("keep_data_day", sa.Integer(), nullable=True))
    op.add_column("usage_bills", sa.Column("unit_price", sa.BigInteger(), nullable=True))
    op.create_table(
        "data_problems",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=200), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=False),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_data_problems_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "kind", "resource_id", "field", name=op.f("pk_data_problems")
        ),
    )


def downgrade() -> None:
    op.drop_table("data_problems")
    with op.batch_alter_table("usage_bills", recreate="never") as batch_op:
        batch_op.drop_column("unit_price")
    with op.batch_alter_table("instances", recreate="never") as batch_op:
        batch_op.drop_column("keep_data_day")
        batch_op.drop_column("auto_renew_month")
        batch_op.drop_column("auto_renew")
