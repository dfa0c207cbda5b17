"""Delivery on the daemon's clock: a simulated clock ahead of the wall clock (`KPIWATCH_CLOCK`)
queues its rows at its own "now", so delivery must compare with that "now" too (issue 17, #4)."""

from __future__ import annotations

import time

import pandas as pd
from click.testing import CliRunner
from daemon_kit import posted_keys, slack_env, write_leads
from fakeslack import FakeSlack

from alerts.daemon import Daemon
from alerts.store import OutboxItem, Store
from forecaster.cli import cli

CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
daemon: {{health_port: 0, log_format: json}}
kpis:
  leads: {{metric: leads, source: files, model: ets}}
"""


def a_year_ahead() -> pd.Timestamp:
    """06:00 UTC on the first 12 March at least a year from now (11 March, the latest closed
    day, is no holiday or retail peak: the detector learns those instead of judging them)."""
    now = pd.Timestamp.now(tz="UTC")
    year = now.year + 1 if pd.Timestamp(f"{now.year + 1}-03-12", tz="UTC") - now >= pd.Timedelta(days=365) else now.year + 2
    return pd.Timestamp(f"{year}-03-12T06:00:00Z")


def test_a_daemon_on_a_clock_a_year_ahead_delivers_its_alerts(tmp_path, monkeypatch):
    ahead = a_year_ahead()
    last = ahead.normalize() - pd.Timedelta(days=1)
    data = tmp_path / "leads.csv"
    write_leads(data, f"{last - pd.Timedelta(days=400):%Y-%m-%d}", f"{last:%Y-%m-%d}", drop_from=f"{last:%Y-%m-%d}")
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=data))
    with FakeSlack() as slack, slack_env(monkeypatch, slack, f"{ahead.isoformat()}*1"):
        code = Daemon(config).run(once=True)
    assert code == 0
    [key] = posted_keys(slack)  # the drop on the last day, delivered (rows due a year from now)
    [message] = [m for m in slack.messages("C0ALERTS") if not m["thread_ts"]]
    assert key.startswith("message|") and "leads fell" in message["text"], message["text"]
    assert len(slack.files) == 1  # and its chart, in the thread
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert store.counts()["pending"] == store.counts()["sending"] == 0
    finally:
        store.close()


def test_outbox_retry_compares_with_the_clock_the_rows_were_queued_by(tmp_path, monkeypatch):
    """`kpiwatch outbox retry` reads `KPIWATCH_CLOCK` as the daemon does: rows a simulated
    daemon queued a year ahead are due for it, not "waiting" for a year."""
    ahead = a_year_ahead()
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=tmp_path / "leads.csv"))
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.queue([OutboxItem(f"no-data|leads|{i}|#kpi-alerts", "message", "#kpi-alerts", f"queued {i}", {"blocks": []})
                 for i in range(5)], ahead.to_pydatetime())
    store.close()
    with FakeSlack() as slack, slack_env(monkeypatch, slack, f"{ahead.isoformat()}*1@{time.time()}"):
        result = CliRunner().invoke(cli, ["outbox", "retry", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "5 sent; outbox: 0 waiting, 0 dead" in result.stdout
    assert [m["text"] for m in slack.messages("C0ALERTS")] == [f"queued {i}" for i in range(5)]
