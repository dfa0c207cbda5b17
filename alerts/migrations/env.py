"""Alembic's environment for the state store.

At run time `alerts.store.Store` hands over an open connection, already in the transaction that
holds the migration lock (`config.attributes["connection"]`); the revisions run inside it. For a
developer writing a new revision, a URL works too (`sqlalchemy.url`, see README.md here).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from alerts.store import VERSION_TABLE, metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters a table by copying it: autogenerate writes batch ops
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


_main()
