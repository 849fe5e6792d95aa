"""Remedies: the action ledger, the notification outbox, versioned alerts.

* ``actions``: one row per remedial action (the ledger): rule, action, instance, parameters,
  the facts that triggered it, its intent and idempotency keys (unique while it may act), its
  state and reason, the API's answer, timings, a ``version`` for compare-and-set claims, and
  the savings a stop brings;
* ``notifications``: ``title``, ``notify_type``, ``next_attempt_at``, ``expires_at``, so a
  notification is written pending in the evaluation's transaction and delivered (retried with
  backoff until it expires) by a delivery step: a crash between the two loses nothing;
* ``alerts.version``: alert rows are written with compare-and-set.

Plain ``ADD COLUMN`` (never a batch rebuild, which would drop ``WITHOUT ROWID`` on SQLite);
existing rows keep their data: notifications stored before have no title (their ``body``
holds title and body) and are not resent; alerts start at version 0.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("notifications", sa.Column("title", sa.Text(), nullable=True))
    op.add_column("notifications", sa.Column("notify_type", sa.String(length=16), nullable=True))
    op.add_column(
        "notifications", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "notifications", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("instance_id", sa.String(length=200), nullable=False),
        sa.Column("instance_name", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("intent_key", sa.String(length=400), nullable=False),
        sa.Column("idempotency_key", sa.String(length=400), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("saving_per_hour_usd", sa.BigInteger(), nullable=True),
        sa.Column("saving_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("saving_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("realized_saving_usd", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actions")),
        sa.UniqueConstraint("idempotency_key", name="uq_actions_idempotency_key"),
    )
    op.create_index("ix_actions_state_due", "actions", ["state", "due_at"])
    op.create_index("ix_actions_account_planned", "actions", ["account", "planned_at"])


def downgrade() -> None:
    op.drop_index("ix_actions_account_planned", table_name="actions")
    op.drop_index("ix_actions_state_due", table_name="actions")
    op.drop_table("actions")
    op.drop_column("notifications", "expires_at")
    op.drop_column("notifications", "next_attempt_at")
    op.drop_column("notifications", "notify_type")
    op.drop_column("notifications", "title")
    op.drop_column("alerts", "version")
