"""Feedback on incidents, end to end (issue 19): a card's button clicked in Slack (signed as Slack
signs it, posted to the daemon's /slack/actions) or `kpiwatch feedback` on the CLI is recorded
once, edits the card once, and changes what the detector does next."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from click.testing import CliRunner
from daemon_kit import daemon_in_process, free_port, frozen_clock, write_leads
from fakeslack import FakeSlack
from slackclicks import SECRET, click_body, form, healthz, post, signed

from alerts.feedback import SNOOZE_DAYS, apply_feedback, series_feedback
from alerts.store import Store
from forecaster.cli import cli

CONFIG = """
timezone: UTC
state: sqlite:///{state}
sources: {{files: {{type: csv, path: "{path}", timestamp: day}}}}
alerting: {{routes: [{{channel: "#kpi-alerts"}}]}}
daemon: {{health_port: {port}, log_format: json}}
kpis:
  leads: {{metric: leads, source: files, model: ets}}
"""
DROP = "2025-12-10"  # leads fall to 30% from this day: one incident


def at_morning(day: str) -> str:
    """06:00 UTC of the day after `day` (so `day` is the latest closed day)."""
    return f"{pd.Timestamp(day) + pd.Timedelta(days=1):%Y-%m-%d}T06:00:00Z"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A daemon in this process on a leads file with a drop on DROP, the fake Slack, the
    signing secret set, and its health server (with /slack/actions) listening."""
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    data = tmp_path / "leads.csv"
    write_leads(data, end="2025-12-20", drop_from=DROP)
    port = free_port()
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", path=data, port=port))
    with FakeSlack() as slack, daemon_in_process(config, at_morning(DROP), slack) as daemon:
        daemon._start_health()
        try:
            yield {"daemon": daemon, "slack": slack, "port": port, "config": config, "state": tmp_path / "state.db"}
        finally:
            daemon._stop_health()


def card_of(world) -> dict:
    """The daemon's incident card in the fake Slack (it posts exactly one here)."""
    world["daemon"].judge_kpis(["leads"])
    world["daemon"].deliver_outbox()
    [card] = [m for m in world["slack"].messages("C0ALERTS") if not m.get("thread_ts")]
    return card


def button_value(card: dict, action_id: str) -> str:
    [actions] = [b for b in card["blocks"] if b["type"] == "actions"]
    return next(e["value"] for e in actions["elements"] if e["action_id"] == action_id)


def updates(slack: FakeSlack) -> int:
    return slack.methods().count("chat.update")


def test_a_signed_click_is_recorded_and_edits_the_card_once(world):
    daemon, slack, port = world["daemon"], world["slack"], world["port"]
    card = card_of(world)
    incident = button_value(card, "kpiwatch_false_alarm")
    body = click_body(incident, "kpiwatch_false_alarm", message_ts=card["ts"])
    status, answer = post(port, body, signed(body))
    assert status == 200, answer
    assert json.loads(answer)["text"].startswith("marked false alarm by @ana")
    [said] = daemon.store.feedback_for(incident)
    assert (said["verdict"], said["user"]) == ("false_alarm", "ana")
    group = daemon.store.group(incident)
    assert group.state == "resolved" and group.closed_by == "false_alarm"
    daemon.deliver_outbox()
    assert updates(slack) == 1
    [edited] = [m for m in slack.messages("C0ALERTS") if m["ts"] == card["ts"]]
    assert "marked false alarm by @ana" in json.dumps(edited["blocks"])
    assert [b["type"] for b in edited["blocks"]][-1] == "actions"  # the buttons stay
    # The same button again (a new, validly signed request a second later): nothing new.
    again = click_body(incident, "kpiwatch_false_alarm", message_ts=card["ts"], user_name="bob")
    status, answer = post(port, again, signed(again, timestamp=time.time() + 1))
    assert status == 200 and "already" in json.loads(answer)["text"]
    daemon.deliver_outbox()
    assert len(daemon.store.feedback_for(incident)) == 1 and updates(slack) == 1


def test_bad_stale_replayed_and_malformed_clicks_record_nothing_and_the_daemon_goes_on(world):
    daemon, slack, port = world["daemon"], world["slack"], world["port"]
    card = card_of(world)
    incident = button_value(card, "kpiwatch_expected")
    body = click_body(incident, "kpiwatch_expected", message_ts=card["ts"])
    assert post(port, body, signed(body, "not-the-secret"))[0] == 401
    assert post(port, body, signed(body, timestamp=time.time() - 600))[0] == 401  # 10 minutes old
    malformed = form({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "kpiwatch_expected"}]})
    assert post(port, malformed, signed(malformed))[0] == 400
    not_json = b"payload=%7Bnot-json"
    assert post(port, not_json, signed(not_json))[0] == 400
    headers = signed(body)
    assert post(port, body, headers)[0] == 200  # the real one
    assert post(port, body, headers)[0] == 401  # ... replayed
    assert [f["verdict"] for f in daemon.store.feedback_for(incident)] == ["expected"]
    assert healthz(port) == 200
    daemon.deliver_outbox()
    assert updates(slack) == 1


def test_expected_closes_the_incident_and_the_series_is_rebuilt_with_the_period_normal(world):
    daemon = world["daemon"]
    card = card_of(world)
    incident = button_value(card, "kpiwatch_expected")
    assert daemon.store.detector_states("leads")  # stepped state stored
    body = click_body(incident, "kpiwatch_expected", message_ts=card["ts"])
    assert post(world["port"], body, signed(body))[0] == 200
    assert daemon.store.detector_states("leads") == {}  # rebuilt next cycle, knowing the day was expected
    feedback = series_feedback(daemon.store.feedback_records())
    assert feedback[("leads", "")].is_expected(pd.Timestamp(DROP, tz="UTC"))
    daemon.clock = frozen_clock(at_morning("2025-12-11"))
    daemon.judge_kpis(["leads"])
    marked = daemon.store.evaluation("leads", "", pd.Timestamp(DROP, tz="UTC").to_pydatetime())
    assert not marked.anomalous  # the expected day, judged again in the rebuild: normal


def test_snooze_silences_the_members_for_seven_days(world):
    daemon = world["daemon"]
    card = card_of(world)
    incident = button_value(card, "kpiwatch_snooze")
    body = click_body(incident, "kpiwatch_snooze", message_ts=card["ts"])
    assert post(world["port"], body, signed(body))[0] == 200
    now = pd.Timestamp(at_morning(DROP)).to_pydatetime()
    [snooze] = daemon.store.snoozes(now)
    assert (snooze.kpi, snooze.segment) == ("leads", "") and snooze.until == now + timedelta(days=SNOOZE_DAYS)
    assert daemon.store.group(incident).state == "open"  # snoozed, not over


def test_the_cli_answers_an_incident_by_its_number(world, monkeypatch):
    card = card_of(world)
    group = world["daemon"].store.group(button_value(card, "kpiwatch_resolve"))
    monkeypatch.setenv("KPIWATCH_CLOCK", at_morning(DROP))
    monkeypatch.setenv("SLACK_API_URL", world["slack"].url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    runner = CliRunner()
    args = ["feedback", str(group.id), "resolve", "--user", "ana", "--config", str(world["config"])]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert f"incident {group.id} (leads): resolved by @ana" in first.output
    assert updates(world["slack"]) == 1  # the card edited at once
    second = runner.invoke(cli, args)
    assert second.exit_code == 0 and "already resolve; nothing changed" in second.output
    unknown = runner.invoke(cli, ["feedback", "999", "resolve", "--config", str(world["config"])])
    assert unknown.exit_code == 2 and "no incident '999'" in unknown.output
    listed = runner.invoke(cli, ["alerts", "--config", str(world["config"]), "--format", "json"])
    [shown] = json.loads(listed.output)["incidents"]
    assert shown["closed_by"] == "resolve" and shown["feedback"][0]["verdict"] == "resolve"


def test_a_false_alarm_note_shows_on_the_next_card_and_in_alerts(tmp_path):
    """What feedback changed is said where people look: `kpiwatch alerts` and the next card."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        from alerting import alert, report
        from alerts.incidents import evaluation_records, plan_cycle
        from alerts.feedback import feedback_notes
        from forecaster.settings import parse_config

        settings = parse_config("sources: {default: {type: demo}}\nalerting: {routes: [{channel: '#a'}]}\n"
                                "kpis:\n  cpa: {ratio: {numerator: ad_cost, denominator: conversions}, good: down}\n")
        now = datetime(2025, 12, 3, 9, tzinfo=timezone.utc)
        plan = plan_cycle(report([alert("cpa", {})]), settings, {}, [], now, charts=False)
        store.record_cycle(evaluation_records(report([alert("cpa", {})])), plan, now)
        [group] = store.open_groups().values()
        apply_feedback(store, settings, str(group.id), "false_alarm", "ana", now)
        later = now + timedelta(days=1)
        notes = feedback_notes(series_feedback(store.feedback_records()), later)
        assert notes == {("cpa", ""): "cpa: sensitivity lowered: band ×1.24 after 1 false alarm (last 2025-12-03)"}
        card = plan_cycle(report([alert("cpa", {}, period=pd.Timestamp("2025-12-20", tz="UTC"))]), settings, {}, [],
                          later, charts=False, notes=notes)
        assert "sensitivity lowered" in json.dumps([i.payload for i in card.items if i.kind == "message"])
    finally:
        store.close()


def test_a_replay_dates_a_recorded_false_alarm_back_to_its_announcement():
    """`kpiwatch replay KPI --feedback`: a verdict given today applies as if given when the
    incident's last alerted period closed (the detector applies it to the periods after)."""
    from alerts.store import FeedbackRecord

    day = datetime(2025, 11, 25, tzinfo=timezone.utc)
    record = FeedbackRecord("k", "false_alarm", "ana", datetime(2026, 12, 4, tzinfo=timezone.utc), "sessions",
                            "channel=organic", day, day)
    [(where, now)] = series_feedback([record]).items()
    [(_, then)] = series_feedback([record], as_announced={"sessions": "D"}).items()
    assert where == ("sessions", "channel=organic")
    assert now.false_alarms == (pd.Timestamp("2026-12-04", tz="UTC"),)
    assert then.false_alarms == (pd.Timestamp("2025-11-26", tz="UTC"),)
    assert then.band_scale(pd.Timestamp("2025-11-26", tz="UTC")) == 1.0  # not the alerted day itself
    assert then.band_scale(pd.Timestamp("2025-11-27", tz="UTC")) > 1.0  # the next one


def test_replay_feedback_is_for_a_configured_kpi():
    result = CliRunner().invoke(cli, ["replay", "--csv", "x.csv", "--output", "o.csv", "--feedback"])
    assert result.exit_code == 2 and "--feedback are for a configured KPI" in result.output
