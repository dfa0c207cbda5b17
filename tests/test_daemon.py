"""The daemon: `kpiwatch run` as a subprocess against the fake Slack (killed, stopped and
restarted at chosen points), and its jobs called in this process; every test on an injected
clock (`KPIWATCH_CLOCK`, `Clock`), frozen unless time must pass, so nothing depends on how fast
a loaded machine is: the tests wait for log lines and rows, never for the wall clock."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from daemon_kit import (
    Run,
    daemon_in_process,
    events,
    free_port,
    frozen,
    frozen_clock,
    job_lines,
    judged_days,
    posted_keys,
    query,
    soon,
    unsettled_rows,
    wait_until,
    write_leads,
)
from fakeslack import FakeSlack

from alerts.message import late_text
from alerts.store import Store
from forecaster.pipeline import last_closed_period
from forecaster.schedule import due_periods, moment_after

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
# The demo's mobile conversion drop runs from 8 Dec; its data end on 11 Dec.
AFTER_DEC_8 = "2025-12-09T06:00:00Z"  # frozen here, 8 Dec is the latest closed day


@pytest.fixture
def world(tmp_path):
    """A config (the demo source), the fake Slack and an environment with a frozen clock."""
    port = free_port()
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", port=port))
    with FakeSlack() as slack:
        env = {**os.environ, "SLACK_API_URL": slack.url, "SLACK_BOT_TOKEN": "xoxb-test",
               "KPIWATCH_CLOCK": frozen(AFTER_DEC_8), "PYTHONUNBUFFERED": "1"}
        env.pop("SLACK_WEBHOOK_URL", None)
        yield {"config": config, "slack": slack, "env": env, "port": port, "log": tmp_path / "daemon.log",
               "tmp": tmp_path, "state": tmp_path / "state.db"}
        Run.kill_all()


def started(world, count: int = 1) -> bool:
    return len(events(world["log"], "started")) >= count


def test_killed_at_random_points_and_restarted_every_alert_once(world):
    """SIGKILL at random points of a catch-up (while walking the history, right after a day is
    stored, while a message is being posted), restart each time, until every day is judged."""
    state = world["state"]
    store = Store(f"sqlite:///{state}")
    store.set_judged("conversion_rate", "", pd.Timestamp("2025-12-04", tz="UTC").to_pydatetime())
    store.close()
    # Six days due (5-10 Dec). The clock runs (10 simulated minutes a second) so that a row
    # claimed by a killed daemon is free again (its lease) a fraction of a second later.
    world["env"]["KPIWATCH_CLOCK"] = f"2025-12-11T05:00:00Z*600@{time.time()}"
    world["slack"].fail_next("chat.postMessage", drop=True)  # posted, but the answer is lost
    rng = random.Random(7)

    def ledger() -> str:
        rows = query(state, "SELECT last_period FROM ledger WHERE kpi = 'conversion_rate'")
        return rows[0][0] if rows else ""

    for kill in range(4):
        before, starts = ledger(), len(events(world["log"], "started"))
        run = Run(world["config"], world["env"], world["log"])
        wait_until(lambda: started(world, starts + 1) or run.process.poll() is not None)
        point = rng.choice(["walk", "stored", "posting"])
        if point == "stored":  # right after a day is stored (its alerts queued, maybe not yet sent)
            soon(lambda: ledger() > before or ledger() >= "2025-12-10", timeout=120, step=0.02)
        elif point == "posting":  # while the outbox is being sent
            soon(lambda: unsettled_rows(state) or ledger() >= "2025-12-10", timeout=120, step=0.01)
        else:  # during start-up or the first walk over the history
            time.sleep(rng.uniform(0.0, 1.0))
        run.kill()
    starts = len(events(world["log"], "started"))
    final = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: started(world, starts + 1))
    wait_until(lambda: ledger() >= "2025-12-10" and unsettled_rows(state) == 0)
    assert final.stop() == 0
    keys = posted_keys(world["slack"])
    assert keys, "the demo's mobile conversion drop (8-10 Dec) must be alerted"
    assert len(keys) == len(set(keys)), Counter(keys)  # none twice
    texts = " ".join(m["text"] for m in world["slack"].messages("C0ALERTS"))
    assert "conversion_rate on device=mobile fell" in texts
    sent = [row[0] for row in query(state, "SELECT key FROM notifications WHERE kind = 'message'")]
    assert sorted(sent) == sorted(keys)  # the notification log agrees with Slack: each once
    days = query(state, "SELECT DISTINCT substr(period, 1, 10) FROM evaluations WHERE kpi = 'conversion_rate' "
                        "AND segment = '' ORDER BY 1")
    assert [d for (d,) in days][-6:] == [f"2025-12-{d:02d}" for d in range(5, 11)]  # every day, none skipped


def test_down_for_three_days_then_each_missed_day_is_judged_once(world):
    world["env"]["KPIWATCH_CLOCK"] = frozen("2025-12-07T06:00:00Z")
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: judged_days(world["log"]) == ["2025-12-06"])
    assert run.stop() == 0
    world["env"]["KPIWATCH_CLOCK"] = frozen("2025-12-10T06:00:00Z")  # three days later
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: len(judged_days(world["log"])) >= 4)
    assert run.stop() == 0
    assert judged_days(world["log"]) == ["2025-12-06", "2025-12-07", "2025-12-08", "2025-12-09"]  # each once, no gap


def test_two_daemons_on_one_store_send_each_alert_once_and_the_standby_takes_over(world):
    logs = [world["log"], world["tmp"] / "second.log"]
    runs = [Run(world["config"], world["env"], logs[0]), Run(world["config"], world["env"], logs[1])]
    wait_until(lambda: "2025-12-08" in judged_days(logs[0]) + judged_days(logs[1]))
    wait_until(lambda: unsettled_rows(world["state"]) == 0 and posted_keys(world["slack"]))
    active, standby = (0, 1) if events(logs[0], "started") else (1, 0)
    wait_until(lambda: "standing by until it stops" in logs[standby].read_text())
    assert not events(logs[standby], "started")  # one active; the other stands by
    # Stopping the active daemon frees the store: the standby takes over and judges on.
    assert runs[active].stop() == 0
    wait_until(lambda: events(logs[standby], "store lock taken: this daemon is now active"))
    wait_until(lambda: events(logs[standby]))  # its first job after taking over
    assert runs[standby].stop() == 0
    assert judged_days(logs[0]) + judged_days(logs[1]) == ["2025-12-08"]  # judged once, by one of them
    keys = posted_keys(world["slack"])
    assert keys and len(keys) == len(set(keys)), Counter(keys)  # the new active daemon sent nothing twice


def test_sighup_with_a_broken_config_keeps_the_old_one(world):
    run = Run(world["config"], world["env"], world["log"])
    wait_until(lambda: judged_days(world["log"]))
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
    latest = pd.Timestamp("2025-12-10", tz="UTC")
    assert late_text(latest, latest, "D") == ""
    assert late_text(latest - pd.Timedelta(days=3), latest, "D").startswith("Late: judged 3 days after it closed")
    assert late_text(latest - pd.Timedelta(hours=1), latest, "h").startswith("Late: judged 1 hour after it closed")


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


def day(at: str) -> str:
    """The frozen clock's time: 06:00 UTC of the day after `at` (so `at` is the latest closed day)."""
    return f"{pd.Timestamp(at) + pd.Timedelta(days=1):%Y-%m-%d}T06:00:00Z"


@pytest.fixture
def jobs():
    """The job lines (their fields) of the daemons run in this process during the test."""
    with job_lines() as lines:
        yield lines


def test_a_failing_source_gives_one_alert_keeps_state_and_catches_up(tmp_path, jobs):
    data = tmp_path / "leads.csv"
    write_leads(data)
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(FILE_CONFIG.format(state=tmp_path / "state.db", path=data))
    with FakeSlack() as slack, daemon_in_process(config, day("2025-12-04"), slack) as daemon:
        daemon.judge_kpis(["leads"])
        hidden = data.with_suffix(".gone")
        data.rename(hidden)  # the export folder is empty: the source fails every cycle
        for at in ("2025-12-05", "2025-12-06", "2025-12-06", "2025-12-07", "2025-12-07"):
            daemon.clock = frozen_clock(day(at))
            daemon.judge_kpis(["leads"])
        hidden.rename(data)
        daemon.judge_kpis(["leads"])
        daemon.deliver_outbox()
        messages = slack.messages("C0ALERTS")
    statuses = [line["status"] for line in jobs]
    assert statuses == ["ok"] + ["source_error"] * 5 + ["ok"]
    failing = [m for m in messages if "Source failing: leads" in m["text"]]
    assert len(failing) == 1  # once, not once per failed cycle
    back = [m for m in messages if m["thread_ts"] == failing[0]["ts"] and "Source back" in m["text"]]
    assert len(back) == 1
    assert not [m for m in messages if "Resolved" in m["text"]]  # no false "resolved"
    judged = [line["periods"] for line in jobs if line["status"] == "ok"]
    assert judged == ["2025-12-04", "2025-12-05,2025-12-06,2025-12-07"]  # the missed days, each once


def test_days_after_the_source_stops_get_no_data_messages_not_empty_judgements(world, jobs):
    """The demo's data ends on 11 Dec: later days have no value. They are not judged (no empty
    evaluation, no silent ledger move): each waits `no_data_after_hours`, then gets one "no data"
    message and is skipped."""
    text = world["config"].read_text().replace(
        "    min_abs_change: 0.001\n", "    min_abs_change: 0.001\n    no_data_after_hours: 1\n")
    # two routes to one channel (issue 17, #2): still one message per period there
    two_routes = text.replace('alerting: {routes: [{channel: "#kpi-alerts"}]}',
                              'alerting: {routes: [{channel: "#kpi-alerts"}, '
                              '{channel: "#kpi-alerts", kpis: [conversion_rate]}]}')
    assert two_routes != text
    world["config"].write_text(two_routes)
    with daemon_in_process(world["config"], "2025-12-13T06:00:00Z", world["slack"]) as daemon:
        daemon.store.set_judged("conversion_rate", "", pd.Timestamp("2025-12-11", tz="UTC").to_pydatetime())
        daemon.judge_kpis(["conversion_rate"])  # 12 Dec: ended 7 h ago, more than its 1 h
        daemon.clock = frozen_clock("2025-12-13T23:30:00Z")
        daemon.judge_kpis(["conversion_rate"])  # 13 Dec (Amsterdam): ended 30 min ago, it waits
        daemon.clock = frozen_clock("2025-12-14T04:00:00Z")
        daemon.judge_kpis(["conversion_rate"])
        daemon.deliver_outbox()
        last = daemon.store.last_judged("conversion_rate", "")
    lines = jobs
    assert [line.get("no_data") for line in lines] == ["2025-12-12", None, "2025-12-13"]
    assert lines[1]["waiting"] == "2025-12-13" and lines[1]["completeness"] == "no value"
    assert all(line["periods"] == "none due" for line in lines)  # nothing judged on an empty period
    messages = [m["text"] for m in world["slack"].messages("C0ALERTS")]
    assert len(messages) == 2
    assert messages[1].startswith(":grey_question: No data: conversion_rate for Sat 13 Dec 2025 has no value 5 h "
                                  "after it ended; it is not judged (a gap is not a drop)."), messages
    assert query(world["state"], "SELECT count(*) FROM evaluations")[0][0] == 0
    assert pd.Timestamp(last) == pd.Timestamp("2025-12-13", tz="UTC")


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
CHANNELS, HOURS = ("email", "search"), (8, 10, 12, 14, 16)  # 10 export rows a day


def write_hourly_leads(path: Path, partial: dict[pd.Timestamp, float] | None = None) -> None:
    """A long export, one row per channel and hour, from August to the end of the year; a day in
    `partial` keeps only that share of its rows (an export still being written)."""
    rows = []
    for when in pd.date_range("2025-08-01", "2025-12-31", freq="D", tz="UTC"):
        day_rows = [(f"{when:%Y-%m-%d}T{hour:02d}:00:00", channel, 12 + 3 * (when.day_of_week < 5) + (hour % 3))
                    for hour in HOURS for channel in CHANNELS]
        share = (partial or {}).get(when, 1.0)
        rows.extend(day_rows[: round(len(day_rows) * share)])
    pd.DataFrame(rows, columns=["hour", "channel", "leads"]).to_csv(path, index=False)


def test_a_partial_day_waits_until_complete_and_one_left_incomplete_gets_one_no_data_message(tmp_path, jobs):
    partial = pd.Timestamp("2025-12-05", tz="UTC")
    late, lost = tmp_path / "late.csv", tmp_path / "lost.csv"
    write_hourly_leads(late, {partial: 0.4})
    write_hourly_leads(lost, {partial: 0.4})
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(PARTIAL_CONFIG.format(state=tmp_path / "state.db", late=late, lost=lost))
    with FakeSlack() as slack, daemon_in_process(config, day("2025-12-05"), slack) as daemon:
        for _ in range(3):  # leads: 4 of its usual 10 rows, well inside its 240 h: waits, judges nothing
            daemon.judge_kpis(["leads", "signups"])
        waiting = [line for line in jobs if line["kpi"] == "leads"]
        assert [(line["waiting"], line["completeness"], line["periods"]) for line in waiting] == \
            [("2025-12-05", "0.40", "none due")] * 3
        write_hourly_leads(late)  # the export is complete now
        daemon.judge_kpis(["leads", "signups"])
        daemon.clock = frozen_clock(day("2025-12-06"))  # a day later
        daemon.judge_kpis(["leads", "signups"])
        daemon.deliver_outbox()
        messages = slack.messages("C0ALERTS")
    lines = jobs
    leads = [d for line in lines if line["kpi"] == "leads" and line["periods"] != "none due"
             for d in line["periods"].split(",")]
    assert leads == ["2025-12-05", "2025-12-06"]  # judged once, complete
    actual = query(tmp_path / "state.db", "SELECT actual FROM evaluations WHERE kpi = 'leads' AND segment = '' "
                                          "AND period LIKE '2025-12-05%'")[0][0]
    full = pd.read_csv(late).query("hour.str.startswith('2025-12-05')")["leads"].sum()
    assert actual == full  # the day was judged on all its rows, never on the 40%
    # signups: 4 of 10 rows more than 1 h after the day ended: one "no data" message, skipped, not judged
    signups = [line for line in lines if line["kpi"] == "signups"]
    assert [line.get("no_data") for line in signups] == ["2025-12-05", None, None, None, None]
    assert [line["periods"] for line in signups] == ["none due"] * 4 + ["2025-12-06"]
    no_data = [m for m in messages if "No data" in m["text"]]
    assert len(no_data) == 1
    assert no_data[0]["text"].startswith(":grey_question: No data: signups for Fri 05 Dec 2025 has 40% of its usual "
                                         "rows 6 h after it ended; it is not judged (a gap is not a drop).")
    assert not [m for m in messages if "fell" in m["text"]]  # the gap was never read as a drop


def test_a_value_revised_after_its_alert_edits_the_message(tmp_path):
    data = tmp_path / "leads.csv"
    write_leads(data, drop_from="2025-12-05")
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(FILE_CONFIG.replace('alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}',
                                          'alerting: {{routes: [{{channel: "#kpi-alerts"}}], repeat_hours: 1000, '
                                          'charts: false}}').format(state=tmp_path / "state.db", path=data))
    with FakeSlack() as slack, daemon_in_process(config, day("2025-12-05"), slack) as daemon:
        daemon.judge_kpis(["leads"])  # the drop on 5 Dec is alerted
        daemon.deliver_outbox()
        assert len(posted_keys(slack)) == 1
        before = slack.messages("C0ALERTS")[0]["text"]
        frame = pd.read_csv(data)
        frame.loc[frame["day"] == "2025-12-05", "leads"] = 97  # the source corrects 5 Dec (still low)
        frame.to_csv(data, index=False)
        daemon.clock = frozen_clock(day("2025-12-06"))
        daemon.judge_kpis(["leads"])  # 6 Dec's check window holds 5 Dec again, revised
        daemon.deliver_outbox()
        messages = slack.messages("C0ALERTS")
    [message] = messages  # edited in place: no second message, no reply
    assert message["edited"] and message["text"] == before
    assert slack.methods().count("chat.postMessage") == 1
    revised = [b for b in message["blocks"] if b.get("block_id") == "kpiwatch-revised"]
    assert len(revised) == 1
    assert "Revised: leads for Fri 05 Dec 2025 is now 97 (was 73; expected" in revised[0]["elements"][0]["text"]


@pytest.mark.parametrize("change_day", ["2026-03-29", "2026-10-25"])
def test_the_daemon_judges_every_day_once_across_a_dst_change(tmp_path, jobs, change_day):
    """Days cut in Europe/Amsterdam, the daemon's clock stepped every 3 hours through a day of 23
    (March) or 25 (October) hours: each local day is judged once, the short or long one too."""
    data = tmp_path / "leads.csv"
    write_leads(data, "2025-06-01", "2026-12-31")
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(FILE_CONFIG.format(state=tmp_path / "state.db", path=data).replace(
        "timezone: UTC", "timezone: Europe/Amsterdam"))
    start = pd.Timestamp(change_day, tz="UTC") - pd.Timedelta(days=1) + pd.Timedelta(hours=12)
    with daemon_in_process(config, start) as daemon:
        for now in pd.date_range(start, start + pd.Timedelta(days=3), freq="3h"):
            daemon.clock = frozen_clock(now)
            daemon.judge_kpis(["leads"])
    days = [d for line in jobs if line["status"] == "ok" and line["periods"] != "none due"
            for d in line["periods"].split(",")]
    assert change_day in days
    assert len(days) == len(set(days)), Counter(days)
    assert [pd.Timestamp(d) for d in days] == list(pd.date_range(days[0], days[-1], freq="D"))


def test_a_check_past_its_time_limit_is_stopped_and_says_which_setting(tmp_path, jobs):
    """The executor stops a check after `daemon.job_timeout_seconds` (its own tests show the
    hung workers killed and the pool working afterwards); the job line names the setting."""
    from forecaster.executor import InProcessExecutor

    class TimesOut(InProcessExecutor):
        def map(self, function, items, *, timeout=None, progress=None):
            assert timeout is not None and 0 < timeout <= 7
            raise TimeoutError(f"stopped after {timeout:g} s (the map's timeout) with 0 of {len(items)} items done")

    data = tmp_path / "leads.csv"
    write_leads(data)
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(FILE_CONFIG.format(state=tmp_path / "state.db", path=data).replace(
        "source_failures: 3}", "source_failures: 3, job_timeout_seconds: 7}"))
    with daemon_in_process(config, day("2025-12-04")) as daemon:
        daemon.executor = TimesOut()
        daemon.judge_kpis(["leads"])
    [job] = [line for line in jobs if line["kpi"] == "leads"]
    assert job["status"] == "error" and job["error"] == "stopped after 7 s (daemon.job_timeout_seconds)", job


def test_a_kpi_that_fails_every_cycle_gets_one_cannot_judge_alert(tmp_path, monkeypatch):
    """A time-out (or bad data) on every cycle would leave the KPI stuck with only log lines:
    after `daemon.source_failures` cycles one alert, and a reply when it is judged again."""
    data = tmp_path / "leads.csv"
    write_leads(data)
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(FILE_CONFIG.format(state=tmp_path / "state.db", path=data))
    with FakeSlack() as slack, daemon_in_process(config, day("2025-12-04"), slack) as daemon:
        def hangs(*_):
            raise TimeoutError("stopped after 900 s (daemon.job_timeout_seconds)")

        monkeypatch.setattr(daemon, "_plan", hangs)
        for _ in range(5):
            daemon.judge_kpis(["leads"])
        monkeypatch.setattr(daemon, "_plan", lambda *_: None)  # nothing due, judged fine
        daemon.judge_kpis(["leads"])
        daemon.deliver_outbox()
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


def test_a_filtered_kpi_whose_rows_stopped_gets_no_data_messages_not_silent_judgements(tmp_path, jobs):
    """The export goes on (email rows) but the KPI's own rows (search) stop after 2 Dec: the
    days after are not judged as empty evaluations; each gets a "no data" message."""
    path = tmp_path / "export.csv"
    write_hourly_leads(path)
    frame = pd.read_csv(path)
    frame[~((frame["channel"] == "search") & (frame["hour"] >= "2025-12-03"))].to_csv(path, index=False)
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(FILTER_CONFIG.format(state=tmp_path / "state.db", path=path))
    with FakeSlack() as slack, daemon_in_process(config, day("2025-12-05"), slack) as daemon:
        daemon.judge_kpis(["search_leads"])
        daemon.deliver_outbox()
        texts = [m["text"] for m in slack.messages("C0ALERTS")]
    [line] = jobs
    assert line["no_data"] == "2025-12-05" and line["periods"] == "none due"  # a fresh store starts at the latest day
    assert any(t.startswith(":grey_question: No data: search_leads for Fri 05 Dec 2025 has no value ") for t in texts), texts
    assert query(tmp_path / "state.db", "SELECT count(*) FROM evaluations")[0][0] == 0


def test_a_long_check_says_how_far_it_is(tmp_path, monkeypatch):
    """A new KPI of many series warms up for minutes: the daemon logs how many series are done
    (every PROGRESS_SECONDS; here every chunk) and /healthz shows it while it runs."""
    from alerts import daemon as daemon_module
    from forecaster.executor import InProcessExecutor

    monkeypatch.setattr(daemon_module, "PROGRESS_SECONDS", 0.0)
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(f"""
timezone: Europe/Amsterdam
state: sqlite:///{tmp_path / 'state.db'}
sources: {{default: {{type: demo}}}}
daemon: {{health_port: 0}}
kpis:
  sessions: {{metric: sessions, segments: [channel, device]}}
""")
    seen: list[dict] = []
    with job_lines("judging") as lines, daemon_in_process(config, "2025-12-09T06:00:00Z") as daemon:
        class Watched(InProcessExecutor):
            def map(self, function, items, *, timeout=None, progress=None):
                def noted(done, total):
                    progress(done, total)
                    seen.append(daemon.health_status()[1]["progress"])
                return super().map(function, items, timeout=timeout, progress=noted)

        daemon.executor = Watched()
        daemon.judge_kpis(["sessions"])
        assert daemon.progress == {}  # gone once the check is over
    total = lines[0]["series"]
    assert total >= 8 and [line["series_done"] for line in lines] == sorted({line["series_done"] for line in lines})
    assert all(0 < line["series_done"] < total and line["kpi"] == "sessions" for line in lines)
    assert {"sessions": f"{total}/{total} series"} in seen
