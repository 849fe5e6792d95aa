"""Scheduled reports: each due time recorded once, and the report a notification attaches.

* ``report_runs``: one row per (schedule, due time) a scheduled report was produced for (or,
  ``kind`` ``baseline``, where a schedule first seen started counting), unique on the pair:
  written in the transaction that queues the report's notifications, so a restart neither
  resends one nor skips one; the rendered report (``content``) is kept for the outbox;
* ``notifications.report_id``: the report a notification attaches where its channel takes an
  attachment (its body is the text summary).

Plain ``ADD COLUMN`` (no batch rebuild); existing notifications attach nothing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "report_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule", sa.String(length=200), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=True),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("media_type", sa.String(length=64), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_runs")),
        sa.UniqueConstraint("schedule", "due_at", name="uq_report_runs_due"),
    )
    op.add_column("notifications", sa.Column("report_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("notifications", "report_id")
    op.drop_table("report_runs")
