"""The SQL source against SQLite (always) and the real PostgreSQL (KPIWATCH_TEST_POSTGRES_URL).

A small shop warehouse is seeded: `web_sessions` (one row per hour, channel and device, naive
UTC timestamps), `orders` (one row per order, timestamp with time zone on PostgreSQL), and
`ad_spend` (one row per day and channel, a `date` column). Expected sums are computed in pandas
from the seeded rows, independently of the source's SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from forecaster.pipeline import last_closed_period
from forecaster.settings import ConfigError, Settings, load_config, parse_config
from forecaster.sources import make_source
from forecaster.sources.config import SQLSourceConfig
from forecaster.demo import DEMO_NOW, demo_frame
from forecaster.sources.demo import DemoSource
from forecaster.sources.sql import SQLSource
from forecaster.types import BadInputError, SourceError
from tests.storage import BACKENDS, postgres_url_or_skip, store_url

TZ = "Europe/Amsterdam"
# 2025-10-26 is the DST switch in Amsterdam: a local day of 25 hours.
FIRST, LAST = pd.Timestamp("2025-10-20", tz="UTC"), pd.Timestamp("2025-10-30 23:00", tz="UTC")
CHANNELS = ("email", "organic", "paid_search")
DEVICES = ("desktop", "mobile")


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _sessions_rows() -> pd.DataFrame:
    hours = pd.date_range(FIRST, LAST, freq="h")
    rng = np.random.default_rng(3)
    rows = [
        {"ts": h, "channel": c, "device": d, "sessions": int(rng.integers(5, 60)), "bounces": int(rng.integers(0, 5))}
        for h in hours for c in CHANNELS for d in DEVICES
    ]
    return pd.DataFrame(rows)


def _orders_rows() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    stamps = FIRST + pd.to_timedelta(rng.integers(0, int((LAST - FIRST).total_seconds()), 400), unit="s")
    return pd.DataFrame({
        "created_at": stamps,
        "channel": rng.choice(CHANNELS, 400),
        "device": rng.choice(DEVICES, 400),
        "amount": np.round(rng.gamma(4, 17, 400), 2),
    })


def _spend_rows() -> pd.DataFrame:
    days = pd.date_range("2025-10-20", "2025-10-30", freq="D")
    return pd.DataFrame([
        {"day": d.date(), "channel": c, "cost": round(100 + 7 * i + 3 * j, 2), "clicks": 50 + i}
        for i, d in enumerate(days) for j, c in enumerate(("paid_search", "paid_social"))
    ])


SESSIONS, ORDERS, SPEND = _sessions_rows(), _orders_rows(), _spend_rows()


def _seed(url: str, backend: str) -> None:
    meta = sa.MetaData()
    aware = backend == "postgresql"  # SQLite has no zones: there orders are naive UTC text too
    web = sa.Table("web_sessions", meta, sa.Column("ts", sa.DateTime), sa.Column("channel", sa.String(32)),
                   sa.Column("device", sa.String(16)), sa.Column("sessions", sa.Integer),
                   sa.Column("bounces", sa.Integer), sa.Column("note", sa.String(16)))
    orders = sa.Table("orders", meta, sa.Column("created_at", sa.DateTime(timezone=aware)),
                      sa.Column("channel", sa.String(32)), sa.Column("device", sa.String(16)),
                      sa.Column("amount", sa.Numeric(12, 2)))
    spend = sa.Table("ad_spend", meta, sa.Column("day", sa.Date), sa.Column("channel", sa.String(32)),
                     sa.Column("ad cost", sa.Numeric(12, 2)), sa.Column("clicks", sa.Integer))
    engine = _engine(url)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(web.insert(), [
            {**r, "ts": r["ts"].tz_localize(None).to_pydatetime(), "note": "x"} for r in SESSIONS.to_dict("records")])
        conn.execute(orders.insert(), [
            {**r, "created_at": (r["created_at"].to_pydatetime() if aware
                                 else r["created_at"].tz_localize(None).to_pydatetime())}
            for r in ORDERS.to_dict("records")])
        conn.execute(spend.insert(), [{"day": r["day"], "channel": r["channel"], "ad cost": r["cost"],
                                       "clicks": r["clicks"]} for r in SPEND.to_dict("records")])
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, tmp_path: Path) -> Iterator[str]:
    for one in store_url(backend, tmp_path):
        _seed(one, backend)
        yield one


def _source(url: str, kpi_tz: str = TZ, **config: object) -> SQLSource:
    return SQLSource(SQLSourceConfig.model_validate({"type": "sql", "url": url, **config}), kpi_tz, "warehouse")


def _labels(stamps: pd.Series, freq: str, timezone: str) -> pd.Series:
    """Reference labels: the UTC hour, or the local date as midnight UTC."""
    utc = pd.DatetimeIndex(stamps).tz_convert("UTC")
    if freq == "h":
        return pd.Series(utc.floor("h"))
    return pd.Series(utc.tz_convert(timezone).tz_localize(None).normalize().tz_localize("UTC"))


def _expected(rows: pd.DataFrame, ts: str, dims: list[str], metrics: dict[str, str], freq: str,
              timezone: str = TZ) -> pd.DataFrame:
    frame = rows.assign(timestamp=_labels(rows[ts], freq, timezone).to_numpy())
    frame = frame.rename(columns={col: name for name, col in metrics.items()})
    out = frame.groupby(["timestamp", *dims], sort=True)[list(metrics)].sum().reset_index()
    out[list(metrics)] = out[list(metrics)].astype("float64")
    return out


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.reset_index(drop=True)
    want = want.reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    assert got["timestamp"].tolist() == pd.DatetimeIndex(want["timestamp"]).tz_convert("UTC").tolist()
    for col in got.columns[1:]:
        if got[col].dtype.kind == "f":
            np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(dtype="float64"), rtol=1e-9)
        else:
            assert got[col].astype(str).tolist() == want[col].astype(str).tolist()


# --------------------------------------------------------------------------- table mode


def test_daily_sums_are_cut_in_the_kpi_timezone_with_a_25_hour_day(url: str) -> None:
    source = _source(url, table="web_sessions", timestamp="ts")
    got = source.fetch(["sessions", "bounces"], ["channel"], "D")
    want = _expected(SESSIONS, "ts", ["channel"], {"sessions": "sessions", "bounces": "bounces"}, "D")
    _same(got, want)
    # The local day of the DST switch holds 25 hours of rows; its neighbours 24.
    hours = SESSIONS.assign(day=_labels(SESSIONS["ts"], "D", TZ).to_numpy()).groupby("day").size() / 6
    assert hours[pd.Timestamp("2025-10-26", tz="UTC")] == 25
    assert hours[pd.Timestamp("2025-10-25", tz="UTC")] == 24


def test_daily_in_utc_and_hourly_labels(url: str) -> None:
    daily = _source(url, "UTC", table="web_sessions", timestamp="ts").fetch(["sessions"], [], "D")
    _same(daily, _expected(SESSIONS, "ts", [], {"sessions": "sessions"}, "D", "UTC"))
    hourly = _source(url, table="web_sessions", timestamp="ts").fetch(["sessions"], ["device"], "h")
    _same(hourly, _expected(SESSIONS, "ts", ["device"], {"sessions": "sessions"}, "h"))
    assert len(hourly) == len(pd.date_range(FIRST, LAST, freq="h")) * len(DEVICES)


def test_start_and_end_are_inclusive_labels(url: str) -> None:
    source = _source(url, table="web_sessions", timestamp="ts")
    start, end = pd.Timestamp("2025-10-25", tz="UTC"), pd.Timestamp("2025-10-27", tz="UTC")
    got = source.fetch(["sessions"], [], "D", start=start, end=end)
    want = _expected(SESSIONS, "ts", [], {"sessions": "sessions"}, "D")
    want = want[(want["timestamp"] >= start) & (want["timestamp"] <= end)]
    assert got["timestamp"].tolist() == [start, start + pd.Timedelta(days=1), end]
    _same(got, want)
    hour = pd.Timestamp("2025-10-22 13:00", tz="UTC")
    one = source.fetch(["sessions"], [], "h", start=hour, end=hour)
    assert one["timestamp"].tolist() == [hour]
    assert one["sessions"].iloc[0] == SESSIONS.loc[SESSIONS["ts"] == hour, "sessions"].sum()


def test_timestamps_with_time_zone_and_metric_mapping(url: str) -> None:
    source = _source(url, table="orders", timestamp="created_at", metrics={"revenue": "amount"},
                     dimensions={"platform": "device"})
    got = source.fetch(["revenue"], ["platform"], "D")
    want = _expected(ORDERS.rename(columns={"device": "platform"}), "created_at", ["platform"],
                     {"revenue": "amount"}, "D")
    _same(got, want)


def test_naive_timestamps_stored_in_local_time(url: str) -> None:
    # The same rows read as Amsterdam wall-clock times: every label moves accordingly.
    source = _source(url, "UTC", table="web_sessions", timestamp="ts", timezone=TZ)
    got = source.fetch(["sessions"], [], "h")
    local = pd.DatetimeIndex(SESSIONS["ts"]).tz_localize(None).tz_localize(
        TZ, ambiguous=np.zeros(len(SESSIONS), dtype=bool), nonexistent="shift_forward")  # as PostgreSQL
    want = _expected(SESSIONS.assign(ts=local), "ts", [], {"sessions": "sessions"}, "h", "UTC")
    _same(got, want)


def test_date_column_and_quoted_column_names(url: str) -> None:
    source = _source(url, table="ad_spend", timestamp="day", metrics={"ad_cost": "ad cost"})
    got = source.fetch(["ad_cost", "clicks"], ["channel"], "D", start=pd.Timestamp("2025-10-22"))
    want = SPEND.assign(timestamp=pd.to_datetime(SPEND["day"]).dt.tz_localize("UTC"))
    want = want[want["timestamp"] >= pd.Timestamp("2025-10-22", tz="UTC")]
    want = want.rename(columns={"cost": "ad_cost"})[["timestamp", "channel", "ad_cost", "clicks"]]
    _same(got, want.sort_values(["timestamp", "channel"]))
    with pytest.raises(BadInputError, match="holds dates, so an hourly KPI cannot be cut from it"):
        source.fetch(["ad_cost"], [], "h")


def test_make_source_from_a_config_file(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", url)
    settings = parse_config(f"""
timezone: {TZ}
sources:
  warehouse:
    type: sql
    url: ${{WAREHOUSE_URL}}
    table: web_sessions
    timestamp: ts
kpis:
  bounce_rate:
    ratio: {{numerator: bounces, denominator: sessions}}
    source: warehouse
    segments: [device]
""")
    kpi = settings.kpis["bounce_rate"]
    source = make_source(settings.sources["warehouse"], settings.timezone, "warehouse")
    got = source.fetch(kpi.metrics, kpi.dimensions, kpi.freq)
    _same(got, _expected(SESSIONS, "ts", ["device"], {"bounces": "bounces", "sessions": "sessions"}, "D"))
    assert source.data_delay == pd.Timedelta(0)


def test_empty_range_gives_the_contract_columns(url: str) -> None:
    got = _source(url, table="web_sessions", timestamp="ts").fetch(
        ["sessions"], ["channel"], "D", start=pd.Timestamp("2030-01-01"))
    assert list(got.columns) == ["timestamp", "channel", "sessions"] and got.empty


def _statements(engine_url: str) -> tuple[list[tuple[str, object]], object]:
    """Record the SELECTs with GROUP BY that reach the database (statement, parameters)."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "GROUP BY" in statement:
            seen.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    return seen, record


def test_sqlite_bounds_reach_an_index_on_the_time_column(tmp_path: Path) -> None:
    """SQLite cannot use an index for `datetime(ts) >= ?`, so a range on the bare column goes
    with it: a window of days reads the index, not the whole table (a cycle asks for one day
    to check completeness, and a warm cycle for ~100 days of 2 years)."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with _engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE daily (day TEXT, campaign TEXT, sessions REAL)"))
        conn.execute(sa.text("CREATE INDEX daily_day ON daily (day)"))
        days = pd.date_range("2025-01-01", periods=60, freq="D")
        conn.execute(sa.text("INSERT INTO daily VALUES (:day, :c, :s)"),
                     [{"day": f"{d:%Y-%m-%d}", "c": c, "s": 1.0} for d in days for c in ("a", "b")])
    seen, record = _statements(url)
    try:
        got = _source(url, "UTC", table="daily", timestamp="day").fetch(
            ["sessions"], ["campaign"], "D", start=pd.Timestamp("2025-02-01"), end=pd.Timestamp("2025-02-03"))
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    assert got["timestamp"].dt.strftime("%Y-%m-%d").tolist() == ["2025-02-01"] * 2 + ["2025-02-02"] * 2 + [
        "2025-02-03"] * 2
    statement, parameters = seen[-1]
    with _engine(url).connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    assert "USING INDEX daily_day" in plan, plan
    assert "SCAN daily" not in plan, plan


def test_sqlite_index_range_keeps_offsets_and_julian_days_at_the_edges(tmp_path: Path) -> None:
    """The range on the bare column is only a first cut: text with a UTC offset that names the
    day before, and Julian day numbers, are still found and put in their UTC day."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    rows = [
        ("2025-02-01 00:00:00", 1.0),        # the first day's first second
        ("2025-01-31T23:30:00-05:00", 2.0),  # 2025-02-01 04:30 UTC: written as the day before
        ("2025-02-04T01:00:00+03:00", 4.0),  # 2025-02-03 22:00 UTC: written as the day after
        (2460709.25, 8.0),                   # Julian day: 2025-02-02 18:00 UTC
        ("2025-01-31 23:59:59", 16.0),       # just before the range
        ("2025-02-04 00:00:00", 32.0),       # just after it
        ("2025-02-03T23:30:00-01:00", 64.0),  # 2025-02-04 00:30 UTC: after it, though written inside
    ]
    with _engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (ts DATETIME, v REAL)"))  # numeric affinity
        conn.execute(sa.text("CREATE INDEX t_ts ON t (ts)"))
        conn.execute(sa.text("INSERT INTO t VALUES (:ts, :v)"), [{"ts": ts, "v": v} for ts, v in rows])
    source = _source(url, "UTC", table="t", timestamp="ts")
    got = source.fetch(["v"], [], "D", start=pd.Timestamp("2025-02-01"), end=pd.Timestamp("2025-02-03"))
    assert dict(zip(got["timestamp"].dt.strftime("%Y-%m-%d"), got["v"])) == {
        "2025-02-01": 3.0, "2025-02-02": 8.0, "2025-02-03": 4.0}
    hourly = source.fetch(["v"], [], "h", start=pd.Timestamp("2025-02-01 04:00"), end=pd.Timestamp("2025-02-03 22:00"))
    assert hourly["v"].tolist() == [2.0, 8.0, 4.0]
    assert source.fetch(["v"], [], "D", end=pd.Timestamp("2025-01-31"))["v"].tolist() == [16.0]
    assert source.fetch(["v"], [], "D", start=pd.Timestamp("2025-02-04"))["v"].tolist() == [96.0]


# --------------------------------------------------------------------------- query mode

QUERY = """
SELECT {day} AS day, channel, device, SUM(sessions) AS sessions, SUM(bounces) AS bounces
FROM web_sessions WHERE ts >= :start AND ts < :end
GROUP BY {day}, channel, device
"""


def _day_sql(backend: str) -> str:
    return "date(ts)" if backend == "sqlite" else "CAST(ts AS DATE)"


def test_query_rows_are_re_summed_over_dimensions_the_kpi_does_not_use(url: str, backend: str) -> None:
    source = _source(url, "UTC", query=QUERY.format(day=_day_sql(backend)), timestamp="day")
    got = source.fetch(["sessions"], ["channel"], "D", end=pd.Timestamp("2025-10-28"))
    want = _expected(SESSIONS, "ts", ["channel"], {"sessions": "sessions"}, "D", "UTC")
    _same(got, want[want["timestamp"] <= pd.Timestamp("2025-10-28", tz="UTC")])


def test_query_duplicate_period_is_rejected_naming_the_rows(url: str, backend: str) -> None:
    query = QUERY.format(day=_day_sql(backend)).replace(", device", "").replace(
        "GROUP BY", "GROUP BY device,")  # a forgotten dimension: one row per device, same key
    source = _source(url, "UTC", query=query, timestamp="day")
    with pytest.raises(BadInputError) as info:
        source.fetch(["sessions"], ["channel"], "D")
    message = str(info.value)
    assert message.startswith("source 'warehouse' (sql): the query returns rows ")
    assert "for the same period (2025-10-" in message and "channel=" in message
    assert message.endswith("in column 'day'; GROUP BY the period and the dimensions so each appears once")


def test_query_text_in_a_number_column_names_the_row_and_column(url: str) -> None:
    query = ("SELECT ts, channel, device, CASE WHEN sessions > 55 THEN note ELSE CAST(sessions AS VARCHAR(16)) "
             "END AS sessions FROM web_sessions WHERE ts >= :start AND ts < :end ORDER BY ts, channel, device")
    source = _source(url, "UTC", query=query, timestamp="ts", metrics={"visits": "sessions"})
    ordered = SESSIONS.sort_values(["ts", "channel", "device"], kind="stable").reset_index(drop=True)
    first_bad = int(np.flatnonzero(ordered["sessions"].to_numpy() > 55)[0]) + 1
    with pytest.raises(BadInputError) as info:
        source.fetch(["visits"], ["channel"], "h")
    assert str(info.value) == (f"source 'warehouse' (sql): query result: row {first_bad}: column 'sessions' has "
                               "'x', not a number; give numbers with '.' as the decimal point (empty for missing)")


def test_query_without_a_needed_column_names_it(url: str) -> None:
    query = "SELECT ts, SUM(sessions) AS sessions FROM web_sessions WHERE ts >= :start AND ts < :end GROUP BY ts"
    with pytest.raises(BadInputError) as info:
        _source(url, "UTC", query=query, timestamp="ts").fetch(["sessions"], ["device"], "h")
    assert str(info.value) == ("source 'warehouse' (sql): the query returns no column 'device'; it returns: ts, "
                               "sessions. Name the column in the SELECT or map it under `metrics:`/`dimensions:`/"
                               "`timestamp:`")


def test_query_bounds_are_bound_parameters(url: str) -> None:
    query = "SELECT ts, SUM(sessions) AS sessions FROM web_sessions WHERE ts >= :start AND ts < :end GROUP BY ts"
    source = _source(url, "UTC", query=query, timestamp="ts")
    start = pd.Timestamp("2025-10-22 10:00", tz="UTC")
    got = source.fetch(["sessions"], [], "h", start=start, end=start + pd.Timedelta(hours=1))
    hours = SESSIONS[SESSIONS["ts"].between(start, start + pd.Timedelta(hours=1))]
    assert got["timestamp"].tolist() == [start, start + pd.Timedelta(hours=1)]
    assert got["sessions"].tolist() == hours.groupby("ts")["sessions"].sum().astype(float).tolist()


# --------------------------------------------------------------------------- rows (completeness)


def test_table_rows_are_a_count_in_the_same_group_by(url: str) -> None:
    source = _source(url, table="web_sessions", timestamp="ts")
    got = source.fetch(["sessions"], ["device"], "D", rows=True)
    assert list(got.columns) == ["timestamp", "device", "sessions", "_rows"]
    _same(got.drop(columns="_rows"), _expected(SESSIONS, "ts", ["device"], {"sessions": "sessions"}, "D"))
    want = SESSIONS.assign(timestamp=_labels(SESSIONS["ts"], "D", TZ).to_numpy()).groupby(
        ["timestamp", "device"]).size()
    assert got["_rows"].tolist() == want.astype(float).tolist()
    # the 25-hour local day holds 25 hours of rows (3 channels each), on SQLite summed from hours
    day = got[got["timestamp"] == pd.Timestamp("2025-10-26", tz="UTC")]
    assert day["_rows"].tolist() == [75.0, 75.0]
    hour = pd.Timestamp("2025-10-22 13:00", tz="UTC")
    one = source.fetch(["sessions"], [], "h", start=hour, end=hour, rows=True)
    assert one["_rows"].tolist() == [6.0]
    assert "_rows" not in source.fetch(["sessions"], [], "h", start=hour, end=hour).columns
    empty = source.fetch(["sessions"], [], "D", start=pd.Timestamp("2026-01-01", tz="UTC"), rows=True)
    assert list(empty.columns) == ["timestamp", "sessions", "_rows"] and empty.empty


def test_query_mode_cannot_count_rows_and_says_so_by_leaving_them_out(url: str, backend: str) -> None:
    source = _source(url, "UTC", query=QUERY.format(day=_day_sql(backend)), timestamp="day")
    got = source.fetch(["sessions"], [], "D", end=pd.Timestamp("2025-10-28"), rows=True)
    assert list(got.columns) == ["timestamp", "sessions"]  # the daemon then treats periods as complete


def test_the_demo_cannot_count_rows() -> None:
    got = DemoSource().fetch(["sessions"], [], "D", end=DEMO_NOW, rows=True)
    assert list(got.columns) == ["timestamp", "sessions"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("config", "message"), [
    pytest.param({"table": "web_sesions", "timestamp": "ts"},
                 "source 'warehouse' (sql): table 'web_sesions' does not exist in {url}; check `table:` "
                 "(schema.table for another schema)", id="missing-table"),
    pytest.param({"table": "web_sessions", "timestamp": "time"},
                 "source 'warehouse' (sql): table 'web_sessions' has no column 'time'; columns are: ts, channel, "
                 "device, sessions, bounces, note. Set `timestamp:`", id="missing-timestamp-column"),
    pytest.param({"table": "web_sessions", "timestamp": "ts", "metrics": {"sessions": "visits"}},
                 "source 'warehouse' (sql): table 'web_sessions' has no column 'visits'; columns are: ts, "
                 "channel, device, sessions, bounces, note. Map metric 'sessions' under `metrics:`",
                 id="unknown-metric-column"),
    pytest.param({"table": "web_sessions", "timestamp": "ts", "metrics": {"sessions": "note"}},
                 "source 'warehouse' (sql): column 'note' of table 'web_sessions' is VARCHAR(16), not a number, "
                 "so metric 'sessions' cannot be summed; map a number column", id="text-metric-column"),
])
def test_table_config_errors_are_one_line_bad_input(url: str, config: dict[str, object], message: str) -> None:
    source = _source(url, **config)
    with pytest.raises(BadInputError) as info:
        source.fetch(["sessions"], ["channel"], "D")
    assert str(info.value) == message.format(url=source.shown_url)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


@pytest.mark.parametrize("query", [
    pytest.param("SELEC day FROM web_sessions WHERE ts >= :start AND ts < :end", id="syntax"),
    pytest.param("SELECT ts, sessions FROM nowhere WHERE ts >= :start AND ts < :end", id="missing-table"),
    pytest.param("SELECT ts, visits FROM web_sessions WHERE ts >= :start AND ts < :end", id="unknown-column"),
])
def test_malformed_query_is_bad_input(url: str, query: str) -> None:
    with pytest.raises(BadInputError) as info:
        _source(url, "UTC", query=query, timestamp="ts").fetch(["sessions"], [], "D")
    message = str(info.value)
    assert message.startswith("source 'warehouse' (sql): the query failed: ")
    assert message.endswith("; fix `query:`") and "\n" not in message
    assert info.value.exit_code == 2


def test_unreachable_server_is_a_source_error_with_the_password_hidden() -> None:
    source = _source("postgresql://kpiwatch:s3cret@127.0.0.1:1/warehouse", table="t", connect_timeout=2)
    with pytest.raises(SourceError) as info:
        source.fetch(["sessions"], [], "D")
    message = str(info.value)
    assert message.startswith("source 'warehouse' (sql): cannot connect to "
                              "postgresql+psycopg://kpiwatch:***@127.0.0.1:1/warehouse: ")
    assert "s3cret" not in message and "\n" not in message and info.value.exit_code == 3


def test_unknown_role_on_postgres_is_a_source_error() -> None:
    base = postgres_url_or_skip()
    bad = sa.engine.make_url(base.replace("postgresql://", "postgresql+psycopg://", 1)).set(
        username="no_such_role_kpiwatch", password="pw")
    source = _source(bad.render_as_string(hide_password=False), table="t")
    with pytest.raises(SourceError) as info:
        source.fetch(["sessions"], [], "D")
    assert "cannot connect to postgresql+psycopg://no_such_role_kpiwatch:***@" in str(info.value)
    assert "no_such_role_kpiwatch" in str(info.value).split(": ", 2)[2]
    assert "pw@" not in str(info.value)


def test_sqlite_file_that_cannot_be_opened_is_a_source_error(tmp_path: Path) -> None:
    source = _source(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", table="t")
    with pytest.raises(SourceError, match=r"cannot connect to sqlite:///.*unable to open database file"):
        source.fetch(["sessions"], [], "D")


def test_config_rules() -> None:
    with pytest.raises(ValueError, match="give exactly one of `table:`"):
        SQLSourceConfig.model_validate({"type": "sql", "url": "sqlite://"})
    with pytest.raises(ValueError, match="must use both bound parameters :start and :end"):
        SQLSourceConfig.model_validate({"type": "sql", "url": "sqlite://", "query": "SELECT 1 WHERE x > :start"})
    with pytest.raises(ValueError, match=r"the URL \(no scheme such as postgresql://\) does not parse"):
        _source("not a url", table="t")
    # refused at load, naming the scheme only: an unescaped @ would make the password's tail the host
    with pytest.raises(ValueError, match=r"the URL \(postgresql://...\) has an unescaped '@'") as refused:
        _source("postgresql://bob:p@ss@db/x", table="t")
    assert "ss@db" not in refused.value.errors()[0]["msg"]  # (the CLI shows the msg, never the input)
    with pytest.raises(BadInputError, match=r"pip install 'kpiwatch\[snowflake\]'"):
        _source("snowflake://u@acct/db", table="t").fetch(["x"], [], "D")



# --------------------------------------------------------------------------- the demo on PostgreSQL

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
DEMO_KPIS = ["sessions", "conversion_rate", "cpa", "page_load_time"]


@pytest.fixture(scope="module")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL schema holding the demo's daily data (table shop_daily), or a skip."""
    postgres_url_or_skip()
    from forecaster.demo.load import load_demo

    for url in store_url("postgresql", tmp_path_factory.mktemp("demo")):
        assert load_demo(url) == len(demo_frame("D"))
        yield url


def _postgres_settings(url: str, monkeypatch: pytest.MonkeyPatch, state: Path) -> Settings:
    monkeypatch.setenv("WAREHOUSE_URL", url)
    settings = load_config(CONFIG_DIR / "kpiwatch.postgres.yaml")
    return settings.model_copy(update={"state_dir": str(state)})


def test_postgres_example_config_has_the_demo_kpis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://kpiwatch@db.example/warehouse")
    postgres, demo = load_config(CONFIG_DIR / "kpiwatch.postgres.yaml"), load_config(CONFIG_DIR / "kpiwatch.yaml")
    assert postgres.kpis == demo.kpis and postgres.timezone == demo.timezone and postgres.alerting == demo.alerting
    assert postgres.sources["default"].type == "sql"


def test_demo_kpis_read_from_postgres_equal_the_demo_source(
    demo_warehouse: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _postgres_settings(demo_warehouse, monkeypatch, tmp_path)
    sql = make_source(settings.sources["default"], settings.timezone, "default")
    demo = DemoSource()
    until = last_closed_period(DEMO_NOW, "D", settings.timezone)
    for name in DEMO_KPIS:
        kpi = settings.kpi(name)
        want = demo.fetch(kpi.metrics, kpi.dimensions, kpi.freq, end=until)
        got = sql.fetch(kpi.metrics, kpi.dimensions, kpi.freq, end=until)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=name)
    window = sql.fetch(["sessions"], [], "D", start=until - pd.Timedelta(days=6), end=until)
    pd.testing.assert_frame_equal(window, demo.fetch(["sessions"], [], "D", start=until - pd.Timedelta(days=6),
                                                     end=until), check_dtype=False)


@pytest.mark.slow
def test_one_demo_kpi_checked_from_postgres_alerts_like_the_demo(
    demo_warehouse: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from forecaster.pipeline import check

    postgres = _postgres_settings(demo_warehouse, monkeypatch, tmp_path / "pg")
    demo = load_config(CONFIG_DIR / "kpiwatch.yaml").model_copy(update={"state_dir": str(tmp_path / "demo")})
    got = check(postgres, at=DEMO_NOW, kpis=["cpa"], workers=1)
    want = check(demo, at=DEMO_NOW, kpis=["cpa"], workers=1)

    def summary(report: object) -> list[tuple[object, ...]]:
        return [(a.anomaly.kpi, dict(a.anomaly.segment), a.anomaly.period, a.anomaly.severity,
                 round(a.anomaly.actual, 9), round(a.anomaly.expected, 9)) for a in report.alerts]  # type: ignore[attr-defined]

    assert summary(got) == summary(want)
    assert any(a.anomaly.segment == {"channel": "paid_search"} for a in got.alerts)  # incident 3 is found


def test_statement_timeout_is_a_source_error() -> None:
    base = postgres_url_or_skip()
    query = "SELECT now() AS ts, 1 AS sessions FROM pg_sleep(3) WHERE now() >= :start AND now() < :end"
    source = _source(base, "UTC", query=query, timestamp="ts", statement_timeout=0.3)
    with pytest.raises(SourceError) as info:
        source.fetch(["sessions"], [], "h")
    message = str(info.value)
    assert message.startswith("source 'warehouse' (sql): the query on postgresql+psycopg://")
    assert "canceling statement due to statement timeout" in message and info.value.exit_code == 3


@pytest.mark.parametrize(("entry", "message"), [
    ("{type: sql, url: 'sqlite://', tabel: x}",
     "sources.w.tabel: unknown key; allowed here: type, delay_hours, timestamp, timezone, metrics, dimensions, url, "
     "table, query, connect_timeout, statement_timeout"),
    ("{type: sql, table: x}", "sources.w.url: required key is missing"),
    ("{type: sql, url: 'sqlite://', table: x, timezone: Mars/Olympus}",
     "sources.w.timezone: unknown timezone 'Mars/Olympus'; use an IANA name such as Europe/Amsterdam"),
    ("{type: sql, url: 'sqlite://', query: 'select 1'}",
     "sources.w: `query:` must use both bound parameters :start and :end (e.g. WHERE day >= :start AND day < :end)"),
    ("{type: ga4, property_id: abc}",
     "sources.w.property_id: GA4 property id 'abc' is not a number; give the numeric id from Admin > Property "
     "details, e.g. '123456789'"),
    ("{type: ga4, property_id: 12, metrics: {bounce rate: bounceRate}}",
     "sources.w.metrics: kpiwatch name 'bounce rate' is not a plain name; use letters, digits and _"),
    ("{type: csv}", "sources.w.path: required key is missing"),
    ("{path: x.csv}", "sources.w.type: required key is missing"),
    ("[csv]", "sources.w: expected a mapping with a `type:` key (one of demo, csv, parquet, sql, ga4)"),
    ("{type: parquet, path: x, delay_hours: -1}",
     "sources.w.delay_hours: Input should be greater than or equal to 0 (got -1)"),
])
def test_source_config_errors_are_one_line(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"sources:\n  w: {entry}\nkpis:\n  s: {{metric: sessions, source: w}}\n", origin="c.yaml")
    assert str(info.value) == f"c.yaml: {message}"


def test_query_bounds_do_not_depend_on_the_server_time_zone(tmp_path: Path) -> None:
    # The server's default zone for this login is New York; naive timestamps must still compare as UTC.
    for url in store_url("postgresql", tmp_path):
        _seed(url, "postgresql")
        new_york = url.replace("options=-csearch_path", "options=-cTimeZone%3DAmerica/New_York%20-csearch_path")
        query = "SELECT ts, SUM(sessions) AS sessions FROM web_sessions WHERE ts >= :start AND ts < :end GROUP BY ts"
        start = pd.Timestamp("2025-10-22 10:00", tz="UTC")
        got = _source(new_york, "UTC", query=query, timestamp="ts").fetch(["sessions"], [], "h", start=start, end=start)
        assert got["sessions"].tolist() == [float(SESSIONS.loc[SESSIONS["ts"] == start, "sessions"].sum())]


def test_integer_dimension_values_keep_their_names(tmp_path: Path) -> None:
    """Segment names are what they were before the frame was built by columns: an integer
    column reads 7, and (as pandas types a column with a NULL) 7.0 when a NULL is in it."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with _engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (day TEXT, campaign INTEGER, other INTEGER, v REAL)"))
        conn.execute(sa.text("INSERT INTO t VALUES (:d, :c, :o, 1.0)"),
                     [{"d": "2025-01-01", "c": 7, "o": o} for o in (7, None)])
    source = _source(url, "UTC", table="t", timestamp="day")
    assert source.fetch(["v"], ["campaign"], "D")["campaign"].tolist() == ["7"]
    assert source.fetch(["v"], ["other"], "D")["other"].tolist() == ["(none)", "7.0"]
