"""KPIs that fall due at the same moment are judged by one job, and their alerts go out as one
message per channel, as `kpiwatch check` sends a cycle (issue 17, #11e: a 400-KPI storm was
400 messages and 400 charts)."""

from __future__ import annotations

from daemon_kit import frozen, posted_keys, slack_env, write_leads
from fakeslack import FakeSlack

from alerts.daemon import Daemon

KPIS = ("a", "b", "c", "d")
CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting:
  routes:
    - channel: "#kpi-alerts"
    - {{channel: "#paid-media", tags: [paid]}}
daemon: {{health_port: 0, log_format: json}}
kpis:
  a: {{metric: a, source: files, model: ets, tags: [paid]}}
  b: {{metric: b, source: files, model: ets, tags: [paid], schedule: "0 7 * * *"}}
  c: {{metric: c, source: files, model: ets}}
  d: {{metric: d, source: files, model: ets, schedule: every day at 7:00}}
  e: {{metric: a, source: files, model: ets, schedule: every hour at :10}}
"""


def test_kpis_due_at_once_with_alerts_get_one_message_per_channel(tmp_path, monkeypatch):
    data = tmp_path / "export.csv"
    write_leads(data, "2025-01-01", "2025-12-04", columns=KPIS, drop_from="2025-12-04")  # every KPI falls
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=data).replace(
        "  e: {metric: a, source: files, model: ets, schedule: every hour at :10}\n", ""))
    with FakeSlack() as slack, slack_env(monkeypatch, slack, frozen("2025-12-05T06:00:00Z")):
        assert Daemon(config).run(once=True) == 0
    assert len(posted_keys(slack, "C0ALERTS")) == len(posted_keys(slack, "C0PAID")) == 1  # one message per channel
    alerts = [m for m in slack.messages("C0ALERTS") if not m["thread_ts"]][0]
    assert alerts["text"].startswith("kpiwatch: 4 anomalies · Thu 04 Dec 2025")
    assert all(f"{kpi} fell" in alerts["text"] for kpi in KPIS), alerts["text"]
    paid_text = slack.messages("C0PAID")[0]["text"]
    assert paid_text.startswith("kpiwatch: 2 anomalies") and "a fell" in paid_text and "c fell" not in paid_text
    threads = {(f["channel_id"], f["thread_ts"]) for f in slack.files}  # the charts: one per alert, in its thread
    assert len(slack.files) == 6 and {ts for _, ts in threads} == {alerts["ts"], slack.messages("C0PAID")[0]["ts"]}


def test_schedules_that_fire_together_are_one_job(tmp_path):
    """`every day at 7:00` and the cron line `0 7 * * *` fire together: one job; an hourly
    schedule is another."""
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=tmp_path / "export.csv"))
    groups = [names for names, _ in Daemon(config)._job_groups().values()]
    assert groups == [["a", "b", "c", "d"], ["e"]]
