"""The detector's state per series (`detector_states`); schema version 2.

Development builds between the first release and migrations created this table without a
revision, so it is created only when missing.

Revision ID: 0002_detector_states
Revises: 0001_baseline
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_detector_states"
down_revision: str | None = "0001_baseline"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create `detector_states` (if missing) and record schema version 2."""
    if "detector_states" not in sa.inspect(op.get_bind()).get_table_names():
        op.create_table(
            "detector_states",
            sa.Column("kpi", sa.String(128), primary_key=True),
            sa.Column("segment", sa.String(512), primary_key=True),
            sa.Column("next_period", sa.DateTime, nullable=False),
            sa.Column("state", sa.LargeBinary, nullable=False),
            sa.Column("updated_at", sa.DateTime, nullable=False),
        )
    _set_schema_version("2")


def downgrade() -> None:
    """Drop `detector_states` (losing it costs only time) and record schema version 1."""
    op.drop_table("detector_states")
    _set_schema_version("1")


def _set_schema_version(value: str) -> None:
    """Keep `kpiwatch_meta` in step: releases before migrations read only that row, so they refuse
    a store this version has changed instead of writing into a schema they do not know."""
    meta = sa.table("kpiwatch_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=value))
