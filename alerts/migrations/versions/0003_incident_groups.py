"""Incidents grouped by root cause (`incident_groups`), their members (`incidents.group_id`) and
one feedback row per incident and verdict; schema version 3.

Every incident stored before this revision becomes a group of one (its own root cause), so
open incidents keep repeating and resolving as before. Feedback rows (nothing wrote them before
this release) are kept; duplicates of one key and verdict are dropped to the oldest, so the
unique index can hold.

Revision ID: 0003_incident_groups
Revises: 0002_detector_states
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_incident_groups"
down_revision: str | None = "0002_detector_states"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create `incident_groups`, give each incident a group, make feedback unique per verdict."""
    op.create_table(
        "incident_groups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(700), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("root_kpi", sa.String(128), nullable=False),
        sa.Column("root_segment", sa.String(512), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("first_period", sa.DateTime, nullable=False),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("notified_at", sa.DateTime, nullable=False),
        sa.Column("resolved_at", sa.DateTime),
        sa.Column("message_key", sa.String(2000)),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("why", sa.Text, nullable=False),
        sa.Column("closed_by", sa.String(32), nullable=False),
    )
    # A plain ADD COLUMN: a batch copy on SQLite would rebuild the table and could lose the
    # partial unique index of open incidents.
    op.add_column("incidents", sa.Column("group_id", sa.Integer))
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, kpi, segment, alert_key, state, direction, severity, first_period, opened_at, notified_at, "
        "resolved_at, message_key, summary FROM incidents ORDER BY id")).mappings().all()
    groups = sa.table("incident_groups", *(sa.column(name) for name in (
        "key", "state", "root_kpi", "root_segment", "direction", "severity", "first_period", "opened_at",
        "notified_at", "resolved_at", "message_key", "summary", "why", "closed_by")))
    for row in rows:
        bind.execute(groups.insert().values(
            key=row["alert_key"], state=row["state"], root_kpi=row["kpi"], root_segment=row["segment"],
            direction=row["direction"], severity=row["severity"], first_period=row["first_period"],
            opened_at=row["opened_at"], notified_at=row["notified_at"], resolved_at=row["resolved_at"],
            message_key=row["message_key"], summary=row["summary"], why="", closed_by=""))
        bind.execute(sa.text("UPDATE incidents SET group_id = (SELECT id FROM incident_groups WHERE key = :key) "
                             "WHERE id = :id"), {"key": row["alert_key"], "id": row["id"]})
    op.create_index("ix_incident_group", "incidents", ["group_id"])
    bind.execute(sa.text("DELETE FROM feedback WHERE id NOT IN "
                         "(SELECT MIN(id) FROM feedback GROUP BY alert_key, verdict)"))
    op.create_index("uq_feedback_verdict", "feedback", ["alert_key", "verdict"], unique=True)
    _set_schema_version("3")


def downgrade() -> None:
    """Back to one incident per series (the groups are dropped) and schema version 2."""
    op.drop_index("uq_feedback_verdict", "feedback")
    op.drop_index("ix_incident_group", "incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("group_id")
    op.drop_index("uq_open_incident", "incidents", if_exists=True)
    op.create_index("uq_open_incident", "incidents", ["kpi", "segment"], unique=True,
                    sqlite_where=sa.text("state = 'open'"), postgresql_where=sa.text("state = 'open'"))
    op.drop_table("incident_groups")
    _set_schema_version("2")


def _set_schema_version(value: str) -> None:
    """Keep `kpiwatch_meta` in step (see 0002)."""
    meta = sa.table("kpiwatch_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))
