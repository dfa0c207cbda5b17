"""`probe_sources`: one row per KPI with rows, last period and delay; a failing source never
stops the others."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from forecaster.settings import parse_config
from forecaster.demo import DEMO_NOW
from forecaster.sources.probe import SourceProbe, probe_sources

TZ = "Europe/Amsterdam"


def _config(tmp_path: Path) -> str:
    # A daily export that stops two days before the last closed day (a late export).
    today = pd.Timestamp.now(tz=TZ).date()
    days = pd.date_range(end=pd.Timestamp(today) - pd.Timedelta(days=3), periods=10, freq="D")
    (tmp_path / "daily.csv").write_text(
        "timestamp,device,sessions\n" + "".join(f"{d:%Y-%m-%d},{dev},{10 + i}\n"
                                                  for i, d in enumerate(days) for dev in ("mobile", "desktop")))
    db = tmp_path / "wh.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (ts DATETIME, channel TEXT, amount REAL)"))
        stamps = pd.date_range(end=pd.Timestamp.now(tz="UTC").floor("h"), periods=30, freq="h")
        conn.execute(sa.text("INSERT INTO orders VALUES (:ts, :channel, :amount)"),
                     [{"ts": f"{t:%Y-%m-%d %H:%M:%S}", "channel": "email", "amount": 5.0} for t in stamps])
    engine.dispose()
    return f"""
timezone: {TZ}
sources:
  demo: {{type: demo}}
  exports: {{type: csv, path: "{tmp_path / 'daily.csv'}"}}
  warehouse: {{type: sql, url: "sqlite:///{db}", table: orders, timestamp: ts, metrics: {{revenue: amount}}}}
  gone: {{type: csv, path: "{tmp_path / 'missing' / '*.csv'}"}}
  broken: {{type: sql, url: "sqlite:///{db}", table: ordres, timestamp: ts}}
kpis:
  sessions: {{metric: sessions, source: demo, segments: [channel, device]}}
  export_sessions: {{metric: sessions, source: exports, segments: [device]}}
  hourly_revenue: {{metric: revenue, source: warehouse, freq: h}}
  lost: {{metric: sessions, source: gone}}
  typo: {{metric: revenue, source: broken}}
"""


def test_probe_reports_every_kpi_and_keeps_going_after_failures(tmp_path: Path) -> None:
    settings = parse_config(_config(tmp_path))
    probes = probe_sources(settings, periods=3)
    by_kpi = {p.kpi: p for p in probes}
    assert [p.kpi for p in probes] == ["sessions", "export_sessions", "hourly_revenue", "lost", "typo"]
    assert all(isinstance(p, SourceProbe) for p in probes)

    demo = by_kpi["sessions"]
    assert (demo.ok, demo.kind, demo.source) == (True, "demo", "demo")
    assert demo.rows == 3 * 7 * 3  # three days x seven channels x three devices
    assert demo.last_period == demo.asked_until == pd.Timestamp("2025-12-10", tz="UTC")
    # The demo's clock is 2025-12-11 08:00 local; the local day of Dec 10 ended at 23:00 UTC.
    assert demo.delay == DEMO_NOW - pd.Timestamp("2025-12-10 23:00", tz="UTC") == pd.Timedelta(hours=8)

    export = by_kpi["export_sessions"]
    assert export.ok and export.rows == 2 * 1  # only the first probed day is in the file, two devices
    assert export.last_period == export.asked_from and export.last_period < export.asked_until
    assert export.delay is not None and export.delay > pd.Timedelta(days=2)

    hourly = by_kpi["hourly_revenue"]
    assert hourly.ok and hourly.rows == 3 and hourly.error == ""
    assert hourly.last_period == hourly.asked_until
    assert pd.Timedelta(0) <= hourly.delay < pd.Timedelta(hours=1)  # type: ignore[operator]

    lost = by_kpi["lost"]
    assert not lost.ok and lost.rows == 0 and lost.last_period is None
    assert lost.error.startswith("source 'gone' (csv): no file matches ")

    typo = by_kpi["typo"]
    assert not typo.ok and typo.error.startswith("source 'broken' (sql): table 'ordres' does not exist in sqlite:///")


def test_probe_notes_empty_periods(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_text("timestamp,sessions\n2020-01-01,1\n2020-01-02,2\n")
    settings = parse_config(f"""
sources:
  old: {{type: csv, path: "{tmp_path / 'old.csv'}"}}
kpis:
  sessions: {{metric: sessions, source: old}}
""")
    [probe] = probe_sources(settings, periods=2, at=pd.Timestamp("2020-01-10 12:00", tz="UTC"))
    assert probe.ok and probe.rows == 0 and probe.last_period is None and probe.delay is None
    assert probe.notes == ("no rows in the 2 period(s) 2020-01-08 00:00 .. 2020-01-09 00:00 UTC",)
    with pytest.raises(ValueError, match="periods must be at least 1"):
        probe_sources(settings, periods=0)


def test_a_probe_carries_the_exit_code_of_its_error(tmp_path: Path) -> None:
    """A missing table is a mistake in the config (2, as `check` exits); no file at all is a
    source that did not answer (3)."""
    by_kpi = {p.kpi: p for p in probe_sources(parse_config(_config(tmp_path)), periods=1)}
    assert by_kpi["typo"].exit_code == 2 and by_kpi["lost"].exit_code == 3
    assert by_kpi["sessions"].exit_code == 0
