"""KPIs that fall due at the same moment are judged by one job, and their alerts are grouped
into incidents across KPIs (issue 19), one card per incident and channel, as `kpiwatch check`
sends a cycle (issue 17, #11e: a 400-KPI storm was 400 messages and 400 charts; more than 5
incidents for one channel are bundled into one message: tests/test_incidents.py)."""

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
  a: {{metric: a, source: files, model: ets, tags: [paid], related: [b]}}
  b: {{metric: b, source: files, model: ets, tags: [paid], schedule: "0 7 * * *"}}
  c: {{metric: c, source: files, model: ets}}
  d: {{metric: d, source: files, model: ets, schedule: every day at 7:00}}
  e: {{metric: a, source: files, model: ets, schedule: every hour at :10}}
"""


def test_kpis_due_at_once_are_grouped_into_incidents_one_card_each(tmp_path, monkeypatch):
    data = tmp_path / "export.csv"
    write_leads(data, "2025-01-01", "2025-12-04", columns=KPIS, drop_from="2025-12-04")  # every KPI falls
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=data).replace(
        "  e: {metric: a, source: files, model: ets, schedule: every hour at :10}\n", ""))
    with FakeSlack() as slack, slack_env(monkeypatch, slack, frozen("2025-12-05T06:00:00Z")):
        assert Daemon(config).run(once=True) == 0
    # a lists b as where to look: one incident with b as its root cause; c and d on their own
    assert len(posted_keys(slack, "C0ALERTS")) == 3 and len(posted_keys(slack, "C0PAID")) == 1
    cards = [m for m in slack.messages("C0ALERTS") if not m["thread_ts"]]
    assert sorted(card["text"].splitlines()[0] for card in cards) == [
        "kpiwatch incident: b and 1 related · Thu 04 Dec 2025", "kpiwatch incident: c · Thu 04 Dec 2025",
        "kpiwatch incident: d · Thu 04 Dec 2025"]
    [paid] = [m for m in slack.messages("C0PAID") if not m["thread_ts"]]
    assert paid["text"].startswith("kpiwatch incident: b and 1 related") and "• a ↓ total: " in paid["text"]
    threads = {(f["channel_id"], f["thread_ts"]) for f in slack.files}  # the charts: one per member, in its thread
    assert len(slack.files) == 6 and {ts for _, ts in threads} == {c["ts"] for c in cards} | {paid["ts"]}


def test_schedules_that_fire_together_are_one_job(tmp_path):
    """`every day at 7:00` and the cron line `0 7 * * *` fire together: one job; an hourly
    schedule is another."""
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=tmp_path / "export.csv"))
    groups = [names for names, _ in Daemon(config)._job_groups().values()]
    assert groups == [["a", "b", "c", "d"], ["e"]]
