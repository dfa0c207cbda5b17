"""Load the demo shop's daily data into a SQL database, for `config/kpiwatch.postgres.yaml`.

    python -m forecaster.demo.load "$WAREHOUSE_URL"          # table shop_daily

The table has one row per local day, channel and device: `day` (a DATE: the local calendar day
in Europe/Amsterdam), `channel`, `device` and the demo's metrics (see `forecaster.demo`)
as double precision. Reading it through the SQL source gives exactly the demo source's frames.
"""

from __future__ import annotations

import sys

import sqlalchemy as sa

from forecaster.demo.shop import DIMENSIONS, METRICS, demo_frame
from forecaster.sources.sql import database_url

DEFAULT_TABLE = "shop_daily"
_CHUNK = 5_000  # rows per INSERT batch


def demo_table(table: str = DEFAULT_TABLE, metadata: sa.MetaData | None = None) -> sa.Table:
    """The demo table's schema (`day`, the dimensions, the metrics), indexed by day."""
    return sa.Table(
        table,
        metadata or sa.MetaData(),
        sa.Column("day", sa.Date, nullable=False, index=True),
        *(sa.Column(name, sa.String(32), nullable=False) for name in DIMENSIONS),
        *(sa.Column(name, sa.Float, nullable=False) for name in METRICS),
    )


def load_demo(url: str, table: str = DEFAULT_TABLE, seed: int = 7) -> int:
    """(Re)create `table` at `url` with the demo's daily rows; returns the number of rows.

    seed: the demo data's seed (default 7, the one the docs and tests describe).
    An existing table of that name is dropped first.
    """
    frame = demo_frame("D", seed)
    records = frame.assign(day=frame["timestamp"].dt.date).drop(columns="timestamp").to_dict("records")
    schema = demo_table(table)
    engine = sa.create_engine(database_url(url, "demo_load"))
    try:
        with engine.begin() as conn:
            schema.drop(conn, checkfirst=True)
            schema.create(conn)
            for at in range(0, len(records), _CHUNK):
                conn.execute(schema.insert(), records[at:at + _CHUNK])
    finally:
        engine.dispose()
    return len(records)


def main(argv: list[str] | None = None) -> int:
    """`python -m forecaster.demo.load URL [TABLE]`."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m forecaster.demo.load URL [TABLE]", file=sys.stderr)
        return 2
    rows = load_demo(args[0], *args[1:])
    print(f"loaded {rows} demo rows into {args[1] if len(args) > 1 else DEFAULT_TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
