"""`kpiwatch run` as a subprocess against the fake Slack, on simulated time (the demo source,
one KPI with an ETS model, half a day per second), killed and restarted at chosen points."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from fakeslack import FakeSlack

from alerts.delivery import DeliveryPolicy
from forecaster.pipeline import last_closed_period
from forecaster.schedule import due_periods, moment_after

pytestmark = pytest.mark.slow

SIM_START = "2025-12-06T06:00:00Z"  # the demo's mobile conversion drop starts on 8 Dec
SPEED = 8640.0  # simulated seconds per real second: a day every 10 s (a check takes 1-4 s)
CONFIG = """
timezone: Europe/Amsterdam
state: sqlite:///{state}
sources: {{default: {{type: demo}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
daemon: {{health_port: {port}, log_format: json, catch_up_periods: 30}}
kpis:
  conversion_rate:
    ratio: {{numerator: conversions, denominator: sessions}}
    unit: "%"
    segments: [device]
    model: ets
    schedule: every 1 seconds
    min_volume: 200
    min_abs_change: 0.001
"""
LAST_DAY = pd.Timestamp("2025-12-10", tz="UTC")  # the demo's data ends on 11 Dec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """One daemon process (in its own process group, with its workers); its log lines are
    collected from stderr. Every Run is killed at the end of its test, pass or fail."""

    started: list[Run] = []

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        handle = log.open("a")
        self.process = subprocess.Popen([sys.executable, "-m", "forecaster.cli", "run", "--config", str(config)],
                                        env=env, stdout=handle, stderr=handle, cwd=config.parent,
                                        start_new_session=True)
        Run.started.append(self)

    @classmethod
    def kill_all(cls) -> None:
        """SIGKILL every daemon still running and its process group (fork server, workers)."""
        for run in cls.started:
            try:
                os.killpg(run.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            run.process.wait(30)
        cls.started.clear()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture
def world(tmp_path, request):
    """A config, the fake Slack and an environment with a simulated clock anchored now
    (`@pytest.mark.parametrize("speed", ...)` on a test changes the speed)."""
    speed = getattr(request, "param", SPEED)
    port = free_port()
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", port=port))
    with FakeSlack() as slack:
        env = {**os.environ, "SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": "xoxb-test",
               "KPIWATCH_CLOCK": f"{SIM_START}*{speed}@{time.time()}", "PYTHONUNBUFFERED": "1"}
        env.pop("SLACK_WEBHOOK_URL", None)
        yield {"config": config, "slack": slack, "env": env, "port": port, "log": tmp_path / "daemon.log",
               "tmp": tmp_path}
        Run.kill_all()


def events(log: Path, message: str = "job") -> list[dict]:
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == message]


def judged_days(log: Path) -> list[str]:
    days = []
    for job in events(log):
        if job.get("status") == "ok" and job["periods"] != "none due":
            days.extend(job["periods"].split(","))
    return days


def wait_until(predicate, timeout: float = 90, step: float = 0.5) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError("timed out waiting")


def posted_keys(slack: FakeSlack) -> list[str]:
    return [m["metadata"]["event_payload"]["key"] for m in slack.messages("C0ALERTS")
            if not m["thread_ts"] and m.get("metadata")]


def unsettled_rows(state: Path) -> int:
    """Outbox rows not yet in Slack or dead (waiting, or claimed by a sender)."""
    with sqlite3.connect(state) as db:
        return db.execute("SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')").fetchone()[0]


def test_killed_at_random_points_and_restarted_every_alert_once(world):
    """SIGKILL at random moments, restart each time, until the demo's last day is judged."""
    rng = random.Random(7)
    kills = 0
    while LAST_DAY.strftime("%Y-%m-%d") not in judged_days(world["log"]) and kills < 8:
        run = Run(world["config"], world["env"], world["log"])
        time.sleep(rng.uniform(4.0, 12.0))
        os.killpg(run.process.pid, signal.SIGKILL)  # the daemon and its workers, mid-whatever
        run.process.wait(30)
        kills += 1
    starts = len(events(world["log"], "started"))
    final = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: len(events(world["log"], "started")) > starts)  # serving, its SIGTERM handler set
    # Generous: the restarted daemon chooses models afresh; on a loaded 2-core machine that took > 150 s.
    wait_until(lambda: LAST_DAY.strftime("%Y-%m-%d") in judged_days(world["log"]), timeout=420)
    # A kill between a post and its record leaves the row claimed: the restarted daemon looks it
    # up in Slack (and records it, not posting again) once the claim's lease has passed.
    wait_until(lambda: unsettled_rows(world["tmp"] / "state.db") == 0, timeout=DeliveryPolicy.lease + 60)
    assert final.stop() == 0
    keys = posted_keys(world["slack"])
    assert keys, "the demo's mobile conversion drop (8-10 Dec) must be alerted"
    assert len(keys) == len(set(keys)), Counter(keys)  # none twice
    texts = " ".join(m["text"] for m in world["slack"].messages("C0ALERTS"))
    assert "conversion_rate on device=mobile fell" in texts
    with sqlite3.connect(world["tmp"] / "state.db") as db:
        ledger = db.execute("SELECT last_period FROM ledger WHERE kpi = 'conversion_rate'").fetchone()[0]
        sent = [row[0] for row in db.execute("SELECT key FROM notifications WHERE kind = 'message'")]
    assert ledger >= "2025-12-10"
    assert sorted(sent) == sorted(keys)  # the notification log agrees with Slack: each once


def test_down_for_three_days_then_each_missed_day_is_judged_once(world):
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: len(judged_days(world["log"])) >= 1)
    assert run.stop() == 0
    before = judged_days(world["log"])
    time.sleep(16)  # three simulated days and a bit
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: len(judged_days(world["log"])) >= len(before) + 3)
    assert run.stop() == 0
    days = judged_days(world["log"])
    assert len(days) == len(set(days)), Counter(days)  # each once
    assert [pd.Timestamp(d) for d in days] == list(pd.date_range(days[0], days[-1], freq="D"))  # no gap


def test_two_daemons_on_one_store_send_each_alert_once_and_the_standby_takes_over(world):
    logs = [world["log"], world["tmp"] / "second.log"]
    runs = [Run(world["config"], world["env"], logs[0]), Run(world["config"], world["env"], logs[1])]
    # Generous: on a loaded 2-core machine the judging runs several times slower than idle.
    wait_until(lambda: LAST_DAY.strftime("%Y-%m-%d") in judged_days(logs[0]) + judged_days(logs[1]), timeout=420)
    time.sleep(6)
    started = [len(events(log, "started")) for log in logs]
    assert sorted(started) == [0, 1]  # one became active; the other stood by the whole time
    active, standby = (0, 1) if started[0] else (1, 0)
    assert "standing by until it stops" in logs[standby].read_text()
    sent = posted_keys(world["slack"])
    assert sent and len(sent) == len(set(sent))
    # Stopping the active daemon frees the store: the standby takes over and judges on.
    assert runs[active].stop() == 0
    wait_until(lambda: events(logs[standby], "started"), timeout=120)
    assert events(logs[standby], "store lock taken: this daemon is now active")
    count = len(events(logs[standby]))
    wait_until(lambda: len(events(logs[standby])) > count, timeout=120)  # its first job after taking over
    assert runs[standby].stop() == 0
    keys = posted_keys(world["slack"])
    assert len(keys) == len(set(keys)), Counter(keys)  # the new active daemon sent nothing twice


def test_sigterm_during_a_job_finishes_it_and_exits_0_health_and_metrics_answer(world):
    base = f"http://127.0.0.1:{world['port']}"
    # The first job reads the source and walks two years of history for every series (a stepped
    # day later takes milliseconds, too short to be caught running). Stopped during it, the job
    # ends cleanly: the day being judged is finished, a day not yet begun is left for the restart.
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: _running(base) == ["conversion_rate"], step=0.05)
    assert run.stop(signal.SIGTERM) == 0
    lines = [json.loads(line) for line in world["log"].read_text().splitlines() if line.startswith("{")]
    order = [line["message"] for line in lines]
    after = lines[order.index("stopping: finishing the running job"):]
    finished = [line for line in after if line["message"] == "job"]
    assert finished and finished[0]["status"] == "ok"
    assert order[-1] == "stopped"
    # Restarted, it judges on (the stopped job's day too, once); /healthz and /metrics answer.
    before = judged_days(world["log"])
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: len(judged_days(world["log"])) >= len(before) + 2)
    days = judged_days(world["log"])
    assert len(days) == len(set(days)), days
    health = _health(base)
    assert health["status"] == "ok" and health["scheduler_running"] is True
    assert health["last_good_cycle_age_seconds"] is not None
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert 'kpiwatch_periods_judged_total{kpi="conversion_rate"}' in metrics
    assert "kpiwatch_job_duration_seconds_bucket" in metrics
    assert run.stop(signal.SIGTERM) == 0


def _running(base: str) -> list[str] | None:
    """The KPIs the daemon is judging now, or None while /healthz does not answer yet."""
    try:
        return _health(base)["running"]
    except OSError:
        return None


def _health(base: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=5).read())


def test_sighup_with_a_broken_config_keeps_the_old_one(world):
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: len(judged_days(world["log"])) >= 1)
    good = world["config"].read_text()
    world["config"].write_text(good.replace("model: ets", "modle: ets"))
    run.process.send_signal(signal.SIGHUP)
    wait_until(lambda: events(world["log"], "config reload refused, keeping the running config"))
    count = len(events(world["log"]))
    wait_until(lambda: len(events(world["log"])) > count)  # still judging on the old config
    assert run.process.poll() is None
    refused = events(world["log"], "config reload refused, keeping the running config")[0]
    assert "modle" in refused["error"]
    assert run.stop() == 0


def test_a_config_typo_exits_2_before_any_slack_call(world):
    world["config"].write_text(world["config"].read_text().replace("model: ets", "modle: ets"))
    result = subprocess.run([sys.executable, "-m", "forecaster.cli", "run", "--config", str(world["config"])],
                            env=world["env"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("kpiwatch: error: ") and "modle" in result.stderr
    assert "Traceback" not in result.stderr
    assert world["slack"].calls == []


def test_days_are_judged_once_across_both_dst_changes_with_a_frozen_clock():
    """Europe/Amsterdam: 29 Mar 2026 has 23 hours, 25 Oct 2026 has 25. Step a frozen clock every
    hour across each change and judge what is due: every day exactly once, none skipped."""
    zone = "Europe/Amsterdam"
    for start, end in (("2026-03-27", "2026-04-01"), ("2026-10-23", "2026-10-28")):
        judged: list[pd.Timestamp] = []
        last = None
        for now in pd.date_range(f"{start}T00:00Z", f"{end}T00:00Z", freq="h"):
            for period in due_periods(last, last_closed_period(now, "D", zone), "D", cap=7):
                assert last_closed_period(moment_after(period, "D", zone), "D", zone) == period
                judged.append(period)
                last = period
        assert judged == list(pd.date_range(judged[0], judged[-1], freq="D"))
        assert len(judged) == len(set(judged))


def test_alerts_about_old_periods_say_they_are_late():
    from alerts.daemon import _late_note

    latest = pd.Timestamp("2025-12-10", tz="UTC")
    assert _late_note(latest, latest, "D") == ""
    assert _late_note(latest - pd.Timedelta(days=3), latest, "D").startswith("Late: judged 3 days after it closed")
    assert _late_note(latest - pd.Timedelta(hours=1), latest, "h").startswith("Late: judged 1 hour after it closed")


FILE_CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
daemon: {{health_port: 0, log_format: json, source_failures: 3}}
kpis:
  leads:
    metric: leads
    source: files
    model: ets
    schedule: every 1 seconds
"""


def write_leads(path: Path) -> None:
    """Two years of daily leads with a weekly rhythm (no incident)."""
    days = pd.date_range("2024-01-01", "2025-12-31", freq="D")
    leads = [200 + 40 * (d.day_of_week < 5) + (d.day_of_year % 7) for d in days]
    pd.DataFrame({"day": days.strftime("%Y-%m-%d"), "leads": leads}).to_csv(path, index=False)


def test_a_failing_source_gives_one_alert_keeps_state_and_catches_up(world):
    data = world["tmp"] / "leads.csv"
    write_leads(data)
    world["config"].write_text(FILE_CONFIG.format(state=world["tmp"] / "state.db", path=data))
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: len(judged_days(world["log"])) >= 1)
    hidden = data.with_suffix(".gone")
    data.rename(hidden)  # the export folder is empty: the source fails every cycle
    wait_until(lambda: len([e for e in events(world["log"]) if e["status"] == "source_error"]) >= 5)
    hidden.rename(data)
    wait_until(lambda: len(judged_days(world["log"])) >= 3, timeout=120)
    time.sleep(6)  # the delivery job
    assert run.stop() == 0
    messages = world["slack"].messages("C0ALERTS")
    failing = [m for m in messages if "Source failing: leads" in m["text"]]
    assert len(failing) == 1  # once, not once per failed cycle
    back = [m for m in messages if m["thread_ts"] == failing[0]["ts"] and "Source back" in m["text"]]
    assert len(back) == 1
    assert not [m for m in messages if "Resolved" in m["text"]]  # no false "resolved"
    days = judged_days(world["log"])
    assert [pd.Timestamp(d) for d in days] == list(pd.date_range(days[0], days[-1], freq="D"))  # nothing skipped


def test_days_after_the_source_stops_get_no_data_messages_not_empty_judgements(world):
    """The demo's data ends on 11 Dec: later days have no value. They are not judged (no empty
    evaluation, no silent ledger move): each waits `no_data_after_hours`, then gets one "no data"
    message and is skipped."""
    late_start = f"2025-12-14T06:00:00Z*{SPEED}@{time.time()}"
    env = {**world["env"], "KPIWATCH_CLOCK": late_start}
    world["config"].write_text(world["config"].read_text().replace(
        "    min_abs_change: 0.001\n", "    min_abs_change: 0.001\n    no_data_after_hours: 1\n"))
    run = Run(world["config"], env, world["log"])
    skipped = lambda: [e["no_data"] for e in events(world["log"]) if "no_data" in e]  # noqa: E731
    wait_until(lambda: len(skipped()) >= 2)
    time.sleep(6)  # the delivery job
    assert run.stop() == 0
    assert judged_days(world["log"]) == []  # nothing judged on an empty period
    assert skipped()[:2] == ["2025-12-13", "2025-12-14"]
    messages = [m["text"] for m in world["slack"].messages("C0ALERTS")]
    assert any(t.startswith(":grey_question: No data: conversion_rate for Sat 13 Dec 2025 has no value ")
               for t in messages), messages
    with sqlite3.connect(world["tmp"] / "state.db") as db:
        assert db.execute("SELECT count(*) FROM evaluations").fetchone()[0] == 0
        assert db.execute("SELECT last_period FROM ledger WHERE kpi = 'conversion_rate'").fetchone()[0] >= "2025-12-14"


PARTIAL_CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources:
  late_export: {{type: csv, path: "{late}", timestamp: hour}}
  lost_export: {{type: csv, path: "{lost}", timestamp: hour}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}], charts: false}}
daemon: {{health_port: 0, log_format: json}}
kpis:
  leads:
    metric: leads
    source: late_export
    model: ets
    schedule: every 1 seconds
    no_data_after_hours: 240
  signups:
    metric: leads
    source: lost_export
    model: ets
    schedule: every 1 seconds
    no_data_after_hours: 1
"""
PARTIAL_DAY = pd.Timestamp("2025-12-05", tz="UTC")  # the latest closed day when the simulated clock starts
CHANNELS, HOURS = ("email", "search"), (8, 10, 12, 14, 16)  # 10 export rows a day


def write_hourly_leads(path: Path, partial: dict[pd.Timestamp, float] | None = None) -> None:
    """A long export, one row per channel and hour, from August to the end of the year; a day in
    `partial` keeps only that share of its rows (an export still being written)."""
    rows = []
    for day in pd.date_range("2025-08-01", "2025-12-31", freq="D", tz="UTC"):
        day_rows = [(f"{day:%Y-%m-%d}T{hour:02d}:00:00", channel, 12 + 3 * (day.day_of_week < 5) + (hour % 3))
                    for hour in HOURS for channel in CHANNELS]
        share = (partial or {}).get(day, 1.0)
        rows.extend(day_rows[: round(len(day_rows) * share)])
    pd.DataFrame(rows, columns=["hour", "channel", "leads"]).to_csv(path, index=False)


def kpi_jobs(log: Path, kpi: str) -> list[dict]:
    return [e for e in events(log) if e.get("kpi") == kpi and e.get("status") == "ok"]


def kpi_days(log: Path, kpi: str) -> list[str]:
    return [d for e in kpi_jobs(log, kpi) if e["periods"] != "none due" for d in e["periods"].split(",")]


def test_a_partial_day_waits_until_complete_and_one_left_incomplete_gets_one_no_data_message(world):
    late, lost = world["tmp"] / "late.csv", world["tmp"] / "lost.csv"
    write_hourly_leads(late, {PARTIAL_DAY: 0.4})
    write_hourly_leads(lost, {PARTIAL_DAY: 0.4})
    world["config"].write_text(PARTIAL_CONFIG.format(state=world["tmp"] / "state.db", late=late, lost=lost))
    run = Run(world["config"], world["env"], world["log"])
    # leads: 4 of its usual 10 rows, well inside its 240 h: waits, cycle after cycle, judges nothing
    wait_until(lambda: len([e for e in kpi_jobs(world["log"], "leads") if e.get("waiting") == "2025-12-05"]) >= 3)
    waiting = [e for e in kpi_jobs(world["log"], "leads") if "waiting" in e]
    assert waiting[0]["completeness"] == "0.40" and waiting[0]["periods"] == "none due"
    assert kpi_days(world["log"], "leads") == []
    write_hourly_leads(late)  # the export is complete now
    wait_until(lambda: "2025-12-06" in kpi_days(world["log"], "leads") and "2025-12-06" in kpi_days(world["log"], "signups"))
    time.sleep(6)  # the delivery job
    assert run.stop() == 0
    leads = kpi_days(world["log"], "leads")
    assert leads[:2] == ["2025-12-05", "2025-12-06"] and len(leads) == len(set(leads))  # judged once, complete
    with sqlite3.connect(world["tmp"] / "state.db") as db:
        actual = db.execute("SELECT actual FROM evaluations WHERE kpi = 'leads' AND period LIKE '2025-12-05%'").fetchone()[0]
    full = pd.read_csv(late).query("hour.str.startswith('2025-12-05')")["leads"].sum()
    assert actual == full  # the day was judged on all its rows, never on the 40%
    # signups: 4 of 10 rows more than 1 h after the day ended: one "no data" message, skipped, not judged
    signups = kpi_days(world["log"], "signups")
    assert "2025-12-05" not in signups and signups[0] == "2025-12-06"
    assert [e["no_data"] for e in kpi_jobs(world["log"], "signups") if "no_data" in e] == ["2025-12-05"]
    messages = world["slack"].messages("C0ALERTS")
    no_data = [m for m in messages if "No data" in m["text"]]
    assert len(no_data) == 1
    assert no_data[0]["text"].startswith(":grey_question: No data: signups for Fri 05 Dec 2025 has 40% of its usual "
                                         "rows ")
    assert "it is not judged (a gap is not a drop)" in no_data[0]["text"]
    assert not [m for m in messages if "fell" in m["text"]]  # the gap was never read as a drop


REVISED_CONFIG = FILE_CONFIG.replace('alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}',
                                     'alerting: {{routes: [{{channel: "#kpi-alerts"}}], repeat_hours: 1000, charts: false}}')


def write_dropped_leads(path: Path, first_day: float) -> None:
    """`write_leads` with a drop to 30% from 5 Dec on; 5 Dec itself at `first_day` of normal."""
    write_leads(path)
    frame = pd.read_csv(path)
    share = frame["day"].map(lambda day: first_day if day == "2025-12-05" else 0.3 if day > "2025-12-05" else 1.0)
    frame["leads"] = (frame["leads"] * share).round().astype(int)
    frame.to_csv(path, index=False)


def test_a_value_revised_after_its_alert_edits_the_message(world):
    data = world["tmp"] / "leads.csv"
    write_dropped_leads(data, 0.3)
    assert REVISED_CONFIG != FILE_CONFIG
    world["config"].write_text(REVISED_CONFIG.format(state=world["tmp"] / "state.db", path=data))
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: posted_keys(world["slack"]))  # the drop on 5 Dec is alerted
    before = world["slack"].messages("C0ALERTS")[0]["text"]
    write_dropped_leads(data, 0.4)  # the source corrects 5 Dec (still low, but another number)
    wait_until(lambda: any(m["edited"] for m in world["slack"].messages("C0ALERTS")), timeout=60)
    time.sleep(2)
    assert run.stop() == 0
    [message] = world["slack"].messages("C0ALERTS")  # edited in place: no second message, no reply
    assert len(posted_keys(world["slack"])) == 1 and message["text"] == before
    assert world["slack"].methods().count("chat.postMessage") == 1
    revised = [b for b in message["blocks"] if b.get("block_id") == "kpiwatch-revised"]
    assert len(revised) == 1
    assert "Revised: leads for Fri 05 Dec 2025 is now 97 (was 73; expected" in revised[0]["elements"][0]["text"]


def write_daily(path: Path, start: str, end: str) -> None:
    """Daily leads from `start` to `end` with a weekly rhythm (no incident)."""
    days = pd.date_range(start, end, freq="D")
    leads = [200 + 40 * (d.day_of_week < 5) + (d.day_of_year % 7) for d in days]
    pd.DataFrame({"day": days.strftime("%Y-%m-%d"), "leads": leads}).to_csv(path, index=False)


@pytest.mark.parametrize("change_day", ["2026-03-29", "2026-10-25"])
def test_the_daemon_judges_every_day_once_across_a_dst_change(world, change_day):
    """The daemon as a subprocess, days cut in Europe/Amsterdam, its clock running through a day of
    23 (March) or 25 (October) hours: each local day is judged once, the short or long one too."""
    data = world["tmp"] / "leads.csv"
    write_daily(data, "2024-09-01", "2026-12-31")
    config = FILE_CONFIG.format(state=world["tmp"] / "state.db", path=data).replace("timezone: UTC",
                                                                                   "timezone: Europe/Amsterdam")
    world["config"].write_text(config)
    start = pd.Timestamp(change_day, tz="UTC") - pd.Timedelta(days=2) + pd.Timedelta(hours=12)
    world["env"]["KPIWATCH_CLOCK"] = f"{start.isoformat()}*21600@{time.time()}"  # a day every 4 s
    run = Run(world["config"], world["env"], world["log"])
    after = (pd.Timestamp(change_day) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    wait_until(lambda: after in judged_days(world["log"]), timeout=120)
    assert run.stop() == 0
    days = judged_days(world["log"])
    assert change_day in days
    assert len(days) == len(set(days)), Counter(days)
    assert [pd.Timestamp(d) for d in days] == list(pd.date_range(days[0], days[-1], freq="D"))


def test_a_hung_call_is_killed_after_its_time_limit_and_the_worker_comes_back():
    from alerts.daemon import Worker

    worker = Worker()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"stopped after 1 s \(daemon.job_timeout_seconds\)"):
            worker.call(time.sleep, (60,), 1.0)
        assert time.monotonic() - started < 30
        assert worker.call(pow, (2, 10), 30.0) == 1024  # a fresh process took over
    finally:
        worker.close()


def test_a_kpi_that_fails_every_cycle_gets_one_cannot_judge_alert(tmp_path, monkeypatch):
    """A time-out (or bad data) on every cycle would leave the KPI stuck with only log lines:
    after `daemon.source_failures` cycles one alert, and a reply when it is judged again."""
    from alerts.slack import SlackBot
    from alerts.daemon import Daemon
    from alerts.store import Store

    data = tmp_path / "leads.csv"
    write_leads(data)
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(FILE_CONFIG.format(state=tmp_path / "state.db", path=data))
    with FakeSlack() as slack:
        daemon = Daemon(config)
        daemon.store = Store(daemon.settings.state_url)
        daemon.notifier = SlackBot("xoxb-test", base_url=slack.url)
        daemon.channel_ids, daemon.channels_checked = daemon.notifier.check(["#kpi-alerts"]), True

        def hangs(*_):
            raise TimeoutError("stopped after 900 s (daemon.job_timeout_seconds)")

        monkeypatch.setattr(daemon, "_judge_due", hangs)
        for _ in range(5):
            daemon.judge_kpi("leads")
        monkeypatch.setattr(daemon, "_judge_due", lambda *_: {"status": "ok", "periods": "2025-12-05"})
        daemon.judge_kpi("leads")
        daemon.deliver_outbox()
        daemon.store.close()
        messages = slack.messages("C0ALERTS")
    alerts = [m for m in messages if "Cannot judge: leads failed 3 cycles in a row" in m["text"]]
    assert len(alerts) == 1 and "stopped after 900 s" in alerts[0]["text"]
    assert [m["text"].split(":")[2].strip() for m in messages if m["thread_ts"] == alerts[0]["ts"]] == ["Judged again"]


def test_a_daemon_that_loses_its_postgresql_lock_stops_with_exit_3(tmp_path):
    """A PostgreSQL restart or failover ends the session that held the advisory lock; a standby
    may take over, so this daemon must notice and stop (a supervisor restarts it on standby)."""
    import sqlalchemy as sa
    from storage import store_url

    from alerts.daemon import Daemon, StoreLock
    from alerts.store import Store

    urls = store_url("postgresql", tmp_path)
    url = next(urls)
    try:
        config = tmp_path / "kpiwatch.yaml"
        config.write_text(FILE_CONFIG.format(state="x", path=tmp_path / "leads.csv").replace(
            "state: sqlite:///x", f"state: '{url}'"))
        daemon = Daemon(config)
        daemon.store = Store(url)
        daemon.lock = StoreLock(daemon.store)
        assert daemon.lock.try_acquire() and daemon.lock.held()
        daemon.deliver_outbox()
        assert not daemon.stopping.is_set()  # still held: nothing happens
        backend = daemon.lock._conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        killer = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with killer.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        killer.dispose()
        daemon.deliver_outbox()
        assert daemon.stopping.is_set() and daemon.exit_code == 3
        daemon.lock.release()
        daemon.store.close()
    finally:
        next(urls, None)


FILTER_CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources:
  export: {{type: csv, path: "{path}", timestamp: hour}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}], charts: false}}
daemon: {{health_port: 0, log_format: json}}
kpis:
  search_leads:
    metric: leads
    source: export
    filter: {{channel: [search]}}
    model: ets
    schedule: every 1 seconds
    no_data_after_hours: 1
    completeness: 0  # row counts off: the export's own rows go on (email), only the KPI's stop
"""


def test_a_filtered_kpi_whose_rows_stopped_gets_no_data_messages_not_silent_judgements(world):
    """The export goes on (email rows) but the KPI's own rows (search) stop after 2 Dec: the
    days after are not judged as empty evaluations; each gets a "no data" message."""
    path = world["tmp"] / "export.csv"
    write_hourly_leads(path)
    frame = pd.read_csv(path)
    frame[~((frame["channel"] == "search") & (frame["hour"] >= "2025-12-03"))].to_csv(path, index=False)
    world["config"].write_text(FILTER_CONFIG.format(state=world["tmp"] / "state.db", path=path))
    run = Run(world["config"], world["env"], world["log"])
    skipped = lambda: ",".join(e["no_data"] for e in kpi_jobs(world["log"], "search_leads") if "no_data" in e)  # noqa: E731
    wait_until(lambda: "2025-12-05" in skipped())
    time.sleep(6)  # the delivery job
    assert run.stop() == 0
    assert skipped().split(",")[0] == "2025-12-05"  # a fresh store starts at the latest closed day
    assert kpi_days(world["log"], "search_leads") == []  # no empty judgement, no silent ledger move
    texts = [m["text"] for m in world["slack"].messages("C0ALERTS")]
    assert any(t.startswith(":grey_question: No data: search_leads for Fri 05 Dec 2025 has no value ") for t in texts), texts
    with sqlite3.connect(world["tmp"] / "state.db") as db:
        assert db.execute("SELECT count(*) FROM evaluations").fetchone()[0] == 0
