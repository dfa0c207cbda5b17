"""Exit code 3 when a source or Slack fails (README "Commands"), for `run --once` and `check`;
nothing queued is lost (issue 17, #11d)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from alerting import alert, report
from daemon_kit import REPO, frozen, slack_env
from fakeslack import FakeSlack

from alerts.daemon import Daemon
from alerts.delivery import DeliveryPolicy
from alerts.store import OutboxItem, Store
from forecaster.cli import SlackFailed, _send
from forecaster.settings import load_config

CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
daemon: {{health_port: 0}}
kpis:
  leads: {{metric: leads, source: files, model: ets}}
"""


def write_config(tmp_path):
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=tmp_path / "missing.csv"))
    return config


def test_run_once_with_a_failed_source_exits_3(tmp_path):
    config = write_config(tmp_path)  # the export is not there: the source fails
    env = {**os.environ, "PYTHONPATH": str(REPO), "KPIWATCH_CLOCK": frozen("2025-12-10T06:00:00Z")}
    for name in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "forecaster.cli", "run", "--once", "--config", str(config)],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "status=source_error" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_once_with_slack_answering_500_exits_3_and_keeps_the_messages(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    store = Store(load_config(config).state_url)
    store.set_judged("leads", "", datetime(2025, 12, 9, tzinfo=timezone.utc))
    store.queue([OutboxItem(f"no-data|leads|{i}|#kpi-alerts", "message", "#kpi-alerts", f"queued {i}", {"blocks": []})
                 for i in range(2)], datetime(2025, 12, 10, 6, tzinfo=timezone.utc))
    store.close()
    with FakeSlack() as slack, slack_env(monkeypatch, slack, frozen("2025-12-10T06:00:00Z")):
        slack.fail_next("chat.postMessage", times=100, status=500)
        code = Daemon(config).run(once=True)  # nothing due (judged up to 9 Dec): only the outbox
    assert code == 3
    store = Store(load_config(config).state_url)
    try:
        assert store.counts()["pending"] + store.counts()["sending"] == 2  # nothing lost
    finally:
        store.close()


def test_check_with_every_slack_post_answered_500_exits_3_with_one_line(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    settings = load_config(config)
    quick = DeliveryPolicy(backoff=0.01, max_backoff=0.02, max_wait=0.3)  # the CLI waits up to 60 s
    with FakeSlack() as slack, slack_env(monkeypatch, slack):
        slack.fail_next("chat.postMessage", times=1000, status=500)
        with pytest.raises(SlackFailed) as failed:
            _send(report([alert("conversion_rate"), alert("cpc", {"channel": "paid_search"})]), settings, quick)
    message = str(failed.value)
    assert failed.value.exit_code == 3 and "\n" not in message
    assert message.startswith("Slack did not take 2 message(s) (") and "500" in message  # two incidents, a card each
    assert "`kpiwatch outbox retry` sends them" in message
    store = Store(settings.state_url)
    try:
        counts = store.counts()
    finally:
        store.close()
    assert counts["pending"] + counts["sending"] == 4 and counts["sent"] == 0  # the two cards and their charts wait
