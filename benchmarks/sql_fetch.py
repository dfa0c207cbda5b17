"""How long the SQL source takes to fetch two years of daily data for 50 segments from PostgreSQL.

Two tables are generated in a throw-away schema (in SQL, with generate_series; loading is not
timed): `daily` (one row per day and segment, a DATE column: 730 x 50 = 36,500 rows) and `hourly`
(one row per hour and segment, timestamp with time zone: 876,000 rows, cut into Europe/Amsterdam
days by the database). The 50 segments are 10 channels x 5 regions. For each, the SQL source's
`fetch` (aggregation in the database) is timed per segment and for the total, against a peer that
pulls the raw rows with pandas.read_sql and sums them in pandas. Prints a Markdown table.

    .venv/bin/python benchmarks/sql_fetch.py                      # KPIWATCH_TEST_POSTGRES_URL or local test db
    .venv/bin/python benchmarks/sql_fetch.py --url postgresql://postgres@127.0.0.1:5432/test --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable

import pandas as pd
import sqlalchemy as sa

from forecaster.sources.config import SQLSourceConfig
from forecaster.sources.sql import SQLSource, database_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
TIMEZONE = "Europe/Amsterdam"
FIRST_DAY, DAYS = "2024-11-23", 730
METRICS = ["sessions", "orders", "revenue"]
DIMENSIONS = ["channel", "region"]

# Generated values are pseudo-random but fixed (setseed); 10 channels x 5 regions = 50 segments.
_SEGMENTS = """(SELECT 'channel_' || c AS channel, 'region_' || r AS region
                FROM generate_series(1, 10) c, generate_series(1, 5) r) s"""
_LOAD = [
    "SELECT setseed(0.42)",
    f"""CREATE TABLE daily AS SELECT d::date AS day, s.channel, s.region,
        (100 + floor(random() * 900))::int AS sessions, floor(random() * 30)::int AS orders,
        round((random() * 2000)::numeric, 2) AS revenue
        FROM generate_series(DATE '{FIRST_DAY}', DATE '{FIRST_DAY}' + {DAYS - 1}, INTERVAL '1 day') d, {_SEGMENTS}""",
    f"""CREATE TABLE hourly AS SELECT h AS ts, s.channel, s.region,
        (5 + floor(random() * 40))::int AS sessions, floor(random() * 2)::int AS orders,
        round((random() * 90)::numeric, 2) AS revenue
        FROM generate_series(TIMESTAMPTZ '{FIRST_DAY} 00:00+00', TIMESTAMPTZ '{FIRST_DAY} 00:00+00'
                             + INTERVAL '{DAYS * 24 - 1} hours', INTERVAL '1 hour') h, {_SEGMENTS}""",
    "CREATE INDEX ON daily (day)",
    "CREATE INDEX ON hourly (ts)",
    "ANALYZE daily",
    "ANALYZE hourly",
]


def _timed(run: Callable[[], pd.DataFrame], repeat: int) -> tuple[int, float, float]:
    """(rows returned, first-run seconds, median seconds of the next `repeat` runs)."""
    began = time.perf_counter()
    rows = len(run())
    first = time.perf_counter() - began
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return rows, first, statistics.median(times)


def _pandas_peer(engine: sa.Engine, table: str, ts: str, dimensions: list[str]) -> pd.DataFrame:
    """The naive way: every raw row to the client, then the day cut and the sums in pandas."""
    raw = pd.read_sql(sa.text(f"SELECT {ts}, channel, region, sessions, orders, revenue FROM {table}"), engine)
    stamps = pd.to_datetime(raw[ts], utc=True)
    if table == "hourly":
        stamps = stamps.dt.tz_convert(TIMEZONE).dt.tz_localize(None).dt.normalize().dt.tz_localize("UTC")
    raw = raw.assign(timestamp=stamps, revenue=raw["revenue"].astype(float))
    return raw.groupby(["timestamp", *dimensions])[METRICS].sum().reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("KPIWATCH_TEST_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after the first (default 3)")
    args = parser.parse_args()

    schema = f"kpiwatch_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(database_url(args.url, "benchmark"))
    separator = "&" if "?" in args.url else "?"
    url = f"{args.url}{separator}options=-csearch_path%3D{schema}"
    engine = sa.create_engine(database_url(url, "benchmark"))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        began = time.perf_counter()
        with engine.begin() as conn:
            for statement in _LOAD:
                conn.execute(sa.text(statement))
            counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in ("daily", "hourly")}
        load = time.perf_counter() - began
        print(f"loaded daily ({counts['daily']:,} rows) and hourly ({counts['hourly']:,} rows) in {load:.1f} s\n")
        print("| table (rows) | dimensions | rows returned | SQL source: first fetch | SQL source: median | "
              "read_sql + pandas: median | ratio |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for table, ts in (("daily", "day"), ("hourly", "ts")):
            config = SQLSourceConfig(type="sql", url=url, table=table, timestamp=ts)
            source = SQLSource(config, TIMEZONE, "bench")
            for dims in (DIMENSIONS, []):
                rows, first, median = _timed(lambda d=dims: source.fetch(METRICS, d, "D"), args.repeat)
                peer_rows, _, peer = _timed(lambda d=dims, t=table, c=ts: _pandas_peer(engine, t, c, d), args.repeat)
                if peer_rows != rows:
                    raise SystemExit(f"{table}: the source returned {rows} rows but the peer {peer_rows}")
                shown = "+".join(dims) if dims else "(total)"
                print(f"| {table} ({counts[table]:,}) | {shown} | {rows:,} | {first:.2f} s | {median:.2f} s | "
                      f"{peer:.2f} s | {peer / median:.1f}x |")
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
