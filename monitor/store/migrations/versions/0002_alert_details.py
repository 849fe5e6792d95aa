"""Alert details the rule engine keeps: resource name, severity, last match, notified severity.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource_name", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("severity", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("last_match_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("notified_severity", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("notified_severity")
        batch_op.drop_column("last_match_at")
        batch_op.drop_column("severity")
        batch_op.drop_column("resource_name")
