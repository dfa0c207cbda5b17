"""/metrics counts alert messages apart from charts, resolves and notices (issue 17, #8), and
/healthz and /metrics listen on `daemon.bind`, 127.0.0.1 unless the operator opens them (#13)."""

from __future__ import annotations

import json
import urllib.request

import pandas as pd
from alerting import DAY, alert, report
from click.testing import CliRunner
from daemon_kit import daemon_in_process, free_port
from fakeslack import FakeSlack

from alerts.incidents import record_and_send
from alerts.store import OutboxItem
from forecaster.cli import cli

CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
daemon: {{health_port: {port}, log_format: json{extra}}}
kpis:
  leads: {{metric: leads, source: files, model: ets}}
"""


def write_config(tmp_path, extra: str = "") -> tuple:
    port = free_port()
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=tmp_path / "leads.csv", port=port, extra=extra))
    return config, port


def get(port: int, path: str) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read().decode()


def test_metrics_count_alert_messages_apart_from_charts_and_notices(tmp_path):
    config, port = write_config(tmp_path)
    after = DAY + pd.Timedelta(days=1, hours=6)
    with FakeSlack() as slack, daemon_in_process(config, after, slack) as daemon:
        daemon._start_health()
        try:
            two = report([alert("conversion_rate"), alert("cpc", {"channel": "paid_search"})])
            record_and_send(two, daemon.settings, daemon.store, daemon.notifier, after.to_pydatetime(), deliver_now=False)
            daemon.store.queue([OutboxItem("no-data|leads|x|#kpi-alerts", "message", "#kpi-alerts", "no data",
                                           {"blocks": []})], after.to_pydatetime())
            daemon.deliver_outbox()
            metrics = get(port, "/metrics")
        finally:
            daemon._stop_health()
    # two unlinked incidents (two cards) and the notice; a chart per alert in its card's thread
    assert len([m for m in slack.messages("C0ALERTS") if not m["thread_ts"]]) == 3 and len(slack.files) == 2
    assert "kpiwatch_alerts_sent_total 2.0" in metrics  # alert messages (cards), not the 5 rows
    assert 'kpiwatch_slack_sent_total{kind="alert"} 2.0' in metrics
    assert 'kpiwatch_slack_sent_total{kind="chart"} 2.0' in metrics
    assert 'kpiwatch_slack_sent_total{kind="notice"} 1.0' in metrics


def test_health_and_metrics_listen_on_127_0_0_1_unless_bind_says_otherwise(tmp_path):
    config, port = write_config(tmp_path)
    with daemon_in_process(config, "2025-12-10") as daemon:
        daemon._start_health()
        try:
            assert daemon.health.server_address[:2] == ("127.0.0.1", port)
            assert json.loads(get(port, "/healthz"))["status"] == "ok"
        finally:
            daemon._stop_health()
    opened, port = write_config(tmp_path, ", bind: 0.0.0.0")
    with daemon_in_process(opened, "2025-12-10") as daemon:
        daemon._start_health()
        try:
            assert daemon.health.server_address[:2] == ("0.0.0.0", port)
            assert "kpiwatch_periods_judged" in get(port, "/metrics")  # reachable on every interface
        finally:
            daemon._stop_health()


def test_a_bind_that_is_not_an_address_is_one_line_exit_2(tmp_path):
    config, _ = write_config(tmp_path, ", bind: 'localhost:8321'")
    result = CliRunner().invoke(cli, ["validate", "--config", str(config)])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "bind" in line and "'localhost:8321' is not an IP address" in line and "0.0.0.0" in line
