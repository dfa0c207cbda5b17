"""The weekly digest (issue 20): last week by funnel phase, one Slack message per channel, exactly
once, in English and Dutch.

The demo's last full week before DEMO_NOW (Thu 11 Dec 2025 08:00, Amsterdam) is Mon 1 – Sun 7 Dec
2025; its digest is due Mon 8 Dec 09:00. The store is built once per module: the demo checked as
of the end of that week (Mon 8 Dec 00:00 local: evaluations of all 7 days), its alerts grouped
into incident groups by the real planner (paid-search CPC +60% from Sun 7 Dec, demo incident 3),
plus one hand-made incident closed as a false alarm by @ana. Every test copies that store file.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from click.testing import CliRunner
from daemon_kit import daemon_in_process, posted_keys, write_leads
from storage import BACKENDS, store_url
from fakeslack import FakeSlack

from alerts.delivery import DeliveryPolicy, deliver
from alerts.digest import (
    DigestData,
    KPIWeek,
    Week,
    build_digest,
    channel_kpis,
    digest_channels,
    due_week,
    gather_digest,
    last_full_week,
    queue_digest,
    week_of,
)
from alerts.incidents import evaluation_records, plan_cycle
from alerts.slack import SlackBot
from alerts.store import GroupOpen, IncidentOpen, Store
from forecaster.catalog import bundled_config_text
from forecaster.cli import cli
from forecaster.executor import make_executor
from forecaster.i18n import use_locale
from forecaster.pipeline import check
from forecaster.settings import load_config, parse_config
from forecaster.types import Direction

TZ = "Europe/Amsterdam"
WEEK = Week(pd.Timestamp("2025-12-01", tz="UTC"), TZ)  # Mon 1 – Sun 7 Dec 2025
MONDAY_9 = pd.Timestamp("2025-12-08 09:00", tz=TZ).tz_convert("UTC")
NOW = MONDAY_9.to_pydatetime()


def local(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=TZ).tz_convert("UTC")


# -- the week and the schedule -------------------------------------------------------------------


@pytest.mark.parametrize("at, monday", [
    ("2025-12-08 09:00", "2025-12-01"),  # the digest's moment
    ("2025-12-08 00:00", "2025-12-01"),  # Sunday has just ended
    ("2025-12-07 23:59", "2025-11-24"),  # Sunday not over yet: the week before
    ("2025-12-11 08:00", "2025-12-01"),  # DEMO_NOW
    ("2025-10-27 09:00", "2025-10-20"),  # the week the clocks went back (26 Oct)
])
def test_the_last_full_week_is_monday_to_sunday_in_the_config_timezone(at, monday):
    assert last_full_week(local(at), TZ).start == pd.Timestamp(monday, tz="UTC")


def test_a_week_has_7_days_and_its_local_hours():
    assert list(WEEK.periods("D").strftime("%a %d")) == ["Mon 01", "Tue 02", "Wed 03", "Thu 04", "Fri 05", "Sat 06",
                                                         "Sun 07"]
    assert WEEK.begins == local("2025-12-01 00:00") and WEEK.ends == local("2025-12-08 00:00")
    assert len(WEEK.periods("h")) == 168
    assert len(Week(pd.Timestamp("2025-10-20", tz="UTC"), TZ).periods("h")) == 169  # 26 Oct has 25 hours


@pytest.mark.parametrize("at, due", [
    ("2025-12-08 08:59", None),  # before its time (the last one, 1 Dec 09:00, is over a day ago)
    ("2025-12-08 09:00", "2025-12-01"),
    ("2025-12-09 08:59", "2025-12-01"),  # the daemon back within a day: still sent (once)
    ("2025-12-09 09:01", None),  # more than a day late: stale, skipped
])
def test_the_digest_due_follows_its_schedule(at, due):
    settings = _settings(Path("/nonexistent/state.db"))
    found = due_week(settings, local(at))
    assert (found.start.date().isoformat() if found else None) == due


# -- the numbers ---------------------------------------------------------------------------------


@dataclasses.dataclass
class J:
    expected: float
    lower: float
    upper: float


def _kpi(text: str):
    return parse_config("sources: {d: {type: demo}}\nkpis:\n  k: " + text + "\n").kpis["k"]


def test_a_count_is_summed_and_a_ratio_comes_from_its_summed_parts():
    days = pd.date_range("2025-12-01", periods=2, tz="UTC")
    count = week_of("leads", _kpi("{metric: leads, source: d}"),
                    pd.DataFrame({"value": [10.0, 20.0]}, index=days),
                    {days[0]: J(12, 10, 14), days[1]: J(18, 16, 20)}, periods=2)
    assert (count.actual, count.actual_compared, count.expected, count.compared) == (30, 30, 30, 2)
    assert count.verdict == "usual"
    ratio = week_of("cr", _kpi("{ratio: {numerator: o, denominator: s}, unit: '%', source: d}"),
                    pd.DataFrame({"numerator": [1.0, 3.0], "denominator": [10.0, 30.0]}, index=days),
                    {days[0]: J(0.2, 0.19, 0.21), days[1]: J(0.1, 0.09, 0.11)}, periods=2)
    assert ratio.actual == pytest.approx(4 / 40)  # not the mean of 0.1 and 0.1 by luck: sums
    assert ratio.expected == pytest.approx((0.2 * 10 + 0.1 * 30) / 40)  # days weighted by their sessions
    assert ratio.verdict == "worse"  # 0.100 against 0.125, far outside a band of ±0.01 a day


def test_days_without_an_expected_value_are_left_out_of_the_comparison():
    days = pd.date_range("2025-12-01", periods=3, tz="UTC")
    week = week_of("leads", _kpi("{metric: leads, source: d, good: down}"),
                   pd.DataFrame({"value": [10.0, 20.0, float("nan")]}, index=days), {days[1]: J(10, 9, 11)}, periods=3)
    assert (week.actual, week.compared, week.actual_compared, week.expected) == (30, 1, 20, 10)
    assert week.verdict == "worse"  # up is bad for this KPI


# -- the message ---------------------------------------------------------------------------------


def test_the_blocks_stay_within_slacks_limits_and_link_the_report():
    kpis = tuple(KPIWeek(f"kpi_{i:03d}_with_a_long_name", ("see", "think", "do", "care", None)[i % 5], "", Direction.UP,
                         False, 1000.0 + i, 7, 7, 1000.0 + i, 990.0, 1.0) for i in range(400))
    digest = build_digest(DigestData(WEEK, kpis, report_url="https://reports.example.com/kpi/"), "#kpi-alerts")
    assert len(digest.blocks) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in digest.blocks if b["type"] == "section")
    assert digest.blocks[-2]["text"]["text"] == "<https://reports.example.com/kpi/|Open the KPI report>"
    assert "Report: https://reports.example.com/kpi/" in digest.text
    assert "*" not in digest.text  # the plain text carries no Slack markup


# -- the demo's week, against the fake Slack -----------------------------------------------------


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Path:
    """The demo's store as the daemon would have it on Mon 8 Dec 2025 (see the module docstring)."""
    folder = tmp_path_factory.mktemp("demo-digest")
    path = folder / "state.db"
    settings = _settings(path)
    report = check(settings, at=WEEK.ends)
    plan = plan_cycle(report, settings, {}, [], NOW - pd.Timedelta(hours=2).to_pytimedelta(), charts=False)
    store = Store(settings.state_url)
    try:
        store.record_cycle(evaluation_records(report), dataclasses.replace(plan, items=[]),
                           NOW - pd.Timedelta(hours=2).to_pytimedelta())
        wednesday = datetime(2025, 12, 3, tzinfo=timezone.utc)
        key = "bounce_rate|device=tablet|2025-12-03T00:00:00+00:00|up"
        closed = GroupOpen(key, "bounce_rate", "device=tablet", "up", "warning", wednesday, None,
                           "bounce_rate on device=tablet rose 9%")
        member = IncidentOpen("bounce_rate", "device=tablet", key, "up", "warning", wednesday, None,
                              "bounce_rate on device=tablet rose 9%", key)
        from alerts.store import CyclePlan

        store.record_cycle([], CyclePlan(opened=[member], groups_opened=[closed]), wednesday)
        store.record_verdict(store.group(key), "false_alarm", "@ana", "slack: marked false alarm", wednesday,
                             close=True)
    finally:
        store.close()
    return path


def _settings(state: Path, extra: str = ""):
    text = bundled_config_text("kpiwatch.yaml") + f"\nstate: sqlite:///{state}\ndaemon: {{health_port: 0}}\n{extra}"
    return parse_config(text)


def _copy(demo_store: Path, tmp_path: Path, extra: str = "") -> Path:
    shutil.copy(demo_store, tmp_path / "state.db")
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(bundled_config_text("kpiwatch.yaml")
                      + f"\nstate: sqlite:///{tmp_path / 'state.db'}\ndaemon: {{health_port: 0}}\n{extra}")
    return config


def _send(config: Path, slack: FakeSlack) -> int:
    settings = load_config(config)
    store = Store(settings.state_url)
    try:
        queued = queue_digest(settings, store, WEEK, NOW)
        bot = SlackBot("xoxb-test", base_url=slack.url)
        report = deliver(store, bot, bot.check(digest_channels(settings)), DeliveryPolicy(max_wait=0))
        assert report.dead == [] and report.waiting == 0
        return queued
    finally:
        store.close()


def test_the_demo_weeks_digest_reaches_each_channel_once(demo_store, tmp_path):
    config = _copy(demo_store, tmp_path)
    with FakeSlack() as slack:
        assert _send(config, slack) == 2
        assert _send(config, slack) == 0  # a rerun (a restart, the job twice) queues nothing
        assert posted_keys(slack, "C0ALERTS") == ["digest|#kpi-alerts|2025-12-01"]
        assert posted_keys(slack, "C0PAID") == ["digest|#paid-media|2025-12-01"]
        [everything] = slack.messages("C0ALERTS")
        [paid] = slack.messages("C0PAID")
    text = everything["text"]
    assert text.startswith("Weekly KPI digest · Mon 01 Dec 2025 – Sun 07 Dec 2025")
    sections = [b["text"]["text"] for b in everything["blocks"] if b["type"] == "section"]
    by_phase = {s.split("\n")[0]: s for s in sections}
    assert set(by_phase) >= {"*See*", "*Think*", "*Do*", "*Furthest from expected*", "*Furthest from target*",
                             "*Incidents this week (2)*"}
    assert "*sessions*: 191,679 in total · expected" in by_phase["*See*"]  # the week's sessions, summed
    assert "*page_load_time*" in by_phase["*See*"] and "*bounce_rate*" in by_phase["*Think*"]
    assert "*cpc*: €0.75 over the week" in by_phase["*Do*"] and "worse than expected" in by_phase["*Do*"]
    assert by_phase["*Furthest from expected*"].split("\n")[1].startswith("• *cpc* (Do): +6.1% against expected")
    assert "*conversion_rate*: 2.66% now" in by_phase["*Furthest from target*"]
    incidents = by_phase["*Incidents this week (2)*"]
    assert "on channel=paid_search" in incidents and "since Sun 07 Dec 2025: still open" in incidents
    assert ("*bounce_rate* on device=tablet, since Wed 03 Dec 2025: closed, marked as a false alarm · feedback: "
            "false alarm (@ana)") in incidents
    assert everything["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": text.split("\n")[0]}}
    # #paid-media gets the KPIs its route takes (tag paid): the Do phase and the paid incident only
    assert "sessions" not in paid["text"] and "Think" not in paid["text"] and "cpa" in paid["text"]
    assert "Incidents this week (1)" in paid["text"] and "bounce_rate" not in paid["text"]


def test_the_demo_weeks_digest_in_dutch(demo_store, tmp_path):
    config = _copy(demo_store, tmp_path)
    with FakeSlack() as slack, use_locale("nl"):
        assert _send(config, slack) == 2
        [message] = slack.messages("C0ALERTS")
    text = message["text"]
    assert text.startswith("Weekoverzicht KPI's · ")
    for said in ("Vorige week, maandag tot en met zondag (Europe/Amsterdam)", "• sessies: ", "• laadtijd: ",
                 "• bouncepercentage: ", "• conversieratio: ", "• kosten per klik: ", "in totaal · verwacht ",
                 "over de week", "Verst van de verwachting", "Verst van het doel", "Incidenten deze week (2)",
                 "nog open", "gesloten, gemarkeerd als vals alarm · feedback: vals alarm (@ana)"):
        assert said in text, said
    for english in ("expected", "Weekly", "in total", "Incidents", "false alarm"):
        assert english not in text, english


def test_kpiwatch_digest_dry_run_prints_it_and_sends_nothing(demo_store, tmp_path, monkeypatch):
    config = _copy(demo_store, tmp_path)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    with FakeSlack() as slack:
        monkeypatch.setenv("SLACK_API_URL", slack.url)
        result = CliRunner().invoke(cli, ["digest", "--config", str(config), "--at", "2025-12-08T09:00", "--dry-run"])
        assert slack.calls == []
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("── #kpi-alerts ──\nWeekly KPI digest · Mon 01 Dec 2025 – Sun 07 Dec 2025\n")
    assert "\n── #paid-media ──\n" in out
    assert "\nSee\n• sessions: 191,679 in total" in out and "\nIncidents this week (2)\n" in out
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert store.counts()["pending"] == 0 and store.rows() == []
    finally:
        store.close()


def test_kpiwatch_digest_sends_once(demo_store, tmp_path, monkeypatch):
    config = _copy(demo_store, tmp_path)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    with FakeSlack() as slack:
        monkeypatch.setenv("SLACK_API_URL", slack.url)
        first = CliRunner().invoke(cli, ["digest", "--config", str(config)])  # no --at: the demo's clock
        again = CliRunner().invoke(cli, ["digest", "--config", str(config)])
        assert len(slack.messages("C0ALERTS")) == len(slack.messages("C0PAID")) == 1
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert "digest of the week of Mon 01 Dec 2025: 2 new message(s) queued, 2 sent" in first.stderr
    assert "0 new message(s) queued, 0 sent" in again.stderr


# -- the daemon's job ----------------------------------------------------------------------------


def test_the_daemons_digest_job_fires_monday_9_local_and_not_twice(demo_store, tmp_path):
    config = _copy(demo_store, tmp_path)
    with FakeSlack() as slack, daemon_in_process(config, local("2025-12-08 08:59"), slack) as daemon:
        trigger = _job_trigger(daemon, "digest")
        fires = [trigger.get_next_fire_time(None, local("2025-12-06 12:00").to_pydatetime())]
        fires.append(trigger.get_next_fire_time(fires[0], fires[0] + pd.Timedelta(seconds=1).to_pytimedelta()))
        assert [pd.Timestamp(f).tz_convert(TZ).strftime("%a %d %b %H:%M") for f in fires] == [
            "Mon 08 Dec 09:00", "Mon 15 Dec 09:00"]
        daemon.send_digest()  # 08:59: not due yet
        assert slack.messages("C0ALERTS") == []
        for at in ("2025-12-08 09:00", "2025-12-08 09:00", "2025-12-08 14:00", "2025-12-09 08:00"):
            daemon.clock = dataclasses.replace(daemon.clock, start=local(at))
            daemon.send_digest()
        assert posted_keys(slack, "C0ALERTS") == ["digest|#kpi-alerts|2025-12-01"]
        assert posted_keys(slack, "C0PAID") == ["digest|#paid-media|2025-12-01"]


def test_the_daemon_starts_without_the_digest(demo_store, tmp_path):
    config = _copy(demo_store, tmp_path, "digest: {enabled: false}\n")
    with FakeSlack() as slack, daemon_in_process(config, MONDAY_9, slack) as daemon:
        assert _job_trigger(daemon, "digest") is None
        assert _job_trigger(daemon, "deliver") is not None


def _job_trigger(daemon, job_id: str):
    """The daemon's jobs on a real scheduler (started paused: nothing runs), the trigger of one."""
    daemon.scheduler = BackgroundScheduler(timezone="UTC")
    daemon._schedule_jobs()
    daemon.scheduler.start(paused=True)
    try:
        job = daemon.scheduler.get_job(job_id)
        return None if job is None else job.trigger
    finally:
        daemon.scheduler.shutdown(wait=False)


def test_kpis_not_in_the_store_are_checked(tmp_path):
    """A store without the week's evaluations (a new install, a dry run): one check as of the end
    of the week gives the expected values."""
    data = tmp_path / "leads.csv"
    write_leads(data, "2024-06-01", "2025-12-07")
    settings = parse_config(f"""
timezone: {TZ}
sources: {{files: {{type: csv, path: "{data}", timestamp: day}}}}
kpis:
  leads: {{metric: leads, source: files, model: ets}}
""")
    executor = make_executor(workers=1)
    try:
        found = gather_digest(settings, None, WEEK, executor)
    finally:
        executor.close()
    [leads] = found.kpis
    assert (leads.compared, leads.periods, leads.phase, leads.verdict) == (7, 7, "do", "usual")
    assert found.incidents == () and found.targets == ()
    assert channel_kpis(settings, "#kpi-alerts") == ["leads"]
    text = build_digest(found, "#kpi-alerts").text
    assert "\nDo\n• leads: " in text and "No incidents this week." in text


# -- the store's part, on SQLite and PostgreSQL ----------------------------------------------------


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    for url in store_url(request.param, tmp_path):
        opened = Store(url)
        yield opened
        opened.close()


def test_the_weeks_incidents_and_evaluations_come_from_the_store(store):
    from alerts.store import CyclePlan, EvaluationRecord

    def group(day: int, closed: int | None) -> None:
        at = datetime(2025, 11, day, tzinfo=timezone.utc)
        key = f"sessions||2025-11-{day:02d}T00:00:00+00:00|down"
        store.record_cycle([], CyclePlan(groups_opened=[GroupOpen(key, "sessions", "", "down", "warning", at, None,
                                                                  "sessions fell")]), at)
        if closed is not None:
            store.record_verdict(store.group(key), "resolve", "bo", "", datetime(2025, 11, closed, tzinfo=timezone.utc),
                                 close=True)

    group(20, 23)  # over before the week
    group(21, 25)  # over during it
    group(26, None)  # open
    group(30, None)  # opened on its Sunday (a daily period label: midnight UTC)
    week = Week(pd.Timestamp("2025-11-24", tz="UTC"), "UTC")
    found = store.groups_during(week.begins.to_pydatetime(), week.ends.to_pydatetime())
    assert [g.first_period.day for g in found] == [30, 26, 21]  # newest first
    days = [datetime(2025, 11, d, tzinfo=timezone.utc) for d in (23, 24, 30)]
    store.record_cycle([EvaluationRecord("sessions", "", d, 1.0, 1.0, 0.0, 2.0, 0.1, False) for d in days],
                       CyclePlan(), days[0])
    assert [r.period.day for r in store.evaluations_of("sessions", "", week.start.to_pydatetime(),
                                                       week.end.to_pydatetime())] == [24, 30]
