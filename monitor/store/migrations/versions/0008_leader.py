"""The replicas' lease: ``leader_lease`` (``monitor.leader``).

Replicas of one configuration may share one PostgreSQL database; one of them, the leader,
holds the row of its accounts (``name``: the account names, sorted, comma-separated) and
renews it (``expires_at``) every third of the lease. ``epoch`` grows at every change of holder:
each write transaction of the leader checks, at its commit, that the row still carries its
epoch (``monitor.store.lease.install_fence``), so a leader that lost the lease can
no longer write. On SQLite (one daemon per file, held by a lock file) the table stays empty.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leader_lease")),
    )


def downgrade() -> None:
    op.drop_table("leader_lease")
