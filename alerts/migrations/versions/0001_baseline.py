"""Baseline: the schema of the first release (commit 39b85a2, `kpiwatch_meta` schema version 1).

A store made before migrations existed has these tables and no Alembic version table;
`alerts.store` stamps it with this revision and upgrades it from here.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# The tables as that release's `metadata.create_all` made them (times are naive UTC DateTime).


def upgrade() -> None:
    """Create the first release's tables and record schema version 1."""
    meta = op.create_table(
        "kpiwatch_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kpi", sa.String(128), nullable=False),
        sa.Column("segment", sa.String(512), nullable=False),
        sa.Column("period", sa.DateTime, nullable=False),
        sa.Column("actual", sa.Float),
        sa.Column("expected", sa.Float),
        sa.Column("lower", sa.Float),
        sa.Column("upper", sa.Float),
        sa.Column("score", sa.Float),
        sa.Column("anomalous", sa.Boolean, nullable=False),
        sa.Column("judged_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("kpi", "segment", "period", name="uq_evaluation"),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kpi", sa.String(128), nullable=False),
        sa.Column("segment", sa.String(512), nullable=False),
        sa.Column("alert_key", sa.String(700), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("first_period", sa.DateTime, nullable=False),
        sa.Column("last_period", sa.DateTime, nullable=False),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("notified_at", sa.DateTime, nullable=False),
        sa.Column("resolved_at", sa.DateTime),
        sa.Column("message_key", sa.String(700)),
        sa.Column("summary", sa.Text, nullable=False),
    )
    open_only = sa.text("state = 'open'")
    op.create_index("uq_open_incident", "incidents", ["kpi", "segment"], unique=True,
                    sqlite_where=open_only, postgresql_where=open_only)
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(700), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("parent_key", sa.String(700)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("file", sa.LargeBinary),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime),
        sa.Column("slack_channel", sa.String(64)),
        sa.Column("slack_ts", sa.String(64)),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(700), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("slack_channel", sa.String(64)),
        sa.Column("slack_ts", sa.String(64)),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("sent_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "snoozes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kpi", sa.String(128), nullable=False),
        sa.Column("segment", sa.String(512), nullable=False),
        sa.Column("until", sa.DateTime, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_key", sa.String(700), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "ledger",
        sa.Column("kpi", sa.String(128), primary_key=True),
        sa.Column("segment", sa.String(512), primary_key=True),
        sa.Column("last_period", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    """Drop every table (the store is empty afterwards)."""
    for table in ("ledger", "feedback", "snoozes", "notifications", "outbox", "incidents", "evaluations",
                  "kpiwatch_meta"):
        op.drop_table(table)
