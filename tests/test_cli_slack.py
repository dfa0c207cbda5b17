"""`kpiwatch check` and friends against the local fake Slack, on the demo config (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakeslack import FakeSlack

from forecaster.cli import cli

DEMO_CONFIG = str(Path(__file__).parent.parent / "config" / "kpiwatch.yaml")


@pytest.fixture
def slack(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the state store (.kpiwatch/state.db) lands here
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    with FakeSlack() as fake:
        monkeypatch.setenv("SLACK_API_URL", fake.url)
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
        yield fake


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def top_level(fake: FakeSlack, channel: str) -> list[dict]:
    return [m for m in fake.messages(channel) if not m["thread_ts"]]


@pytest.mark.slow
def test_check_posts_one_card_per_incident_with_charts_then_nothing_on_a_rerun(slack):
    first = run("check", "--config", DEMO_CONFIG, "--format", "json")
    assert first.exit_code == 0, first.output
    checked = json.loads(first.stdout)
    alerts, incidents = checked["alerts"], checked["incidents"]
    assert len(incidents) == 2 and len(alerts) == 8
    cards, paid = top_level(slack, "C0ALERTS"), top_level(slack, "C0PAID")
    assert len(cards) == 2 and len(paid) == 2  # each incident has a critical paid member (cpa, cpc)
    assert all(len(card["metadata"]["event_payload"]["key"]) > 20 for card in cards)
    mobile = json.dumps(next(c["blocks"] for c in cards if "page_load_time on device=mobile" in c["text"]))
    assert "Also in this incident" in mobile and "conversion_rate" in mobile and "bounce_rate" in mobile
    assert "https://analytics.example.com/kpi/page_load_time?segment=device%3Dmobile" in mobile
    assert "Root cause: page_load_time moved first on device=mobile" in mobile
    charts = {(f["channel_id"], f["thread_ts"]) for f in slack.files}
    assert charts == {("C0ALERTS", c["ts"]) for c in cards} | {("C0PAID", c["ts"]) for c in paid}
    assert sum(f["channel_id"] == "C0ALERTS" for f in slack.files) == len(alerts)  # one chart per member
    assert "Slack: " in first.stderr and ", 0 dead" in first.stderr

    again = run("check", "--config", DEMO_CONFIG)
    assert again.exit_code == 0, again.output
    assert slack.methods().count("chat.postMessage") == 4  # nothing new
    assert "Slack: 0 new message(s) queued, 0 sent" in again.stderr

    listed = json.loads(run("alerts", "--config", DEMO_CONFIG, "--format", "json").stdout)
    assert listed["outbox"]["sent"] == 4 + len(slack.files) and listed["outbox"]["dead"] == 0
    assert sorted(i["root_cause"]["kpi"] for i in listed["incidents"]) == ["cpc", "page_load_time"]


def test_a_refused_token_is_exit_3_and_the_messages_wait_in_the_outbox(slack, monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked")
    refused = run("check", "--config", DEMO_CONFIG, "--kpi", "cpc")
    assert refused.exit_code == 3
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("kpiwatch: error: ") and "invalid_auth" in last and "SLACK_BOT_TOKEN" in last
    assert "Traceback" not in refused.output
    assert slack.methods().count("chat.postMessage") == 0
    waiting = json.loads(run("alerts", "--config", DEMO_CONFIG, "--format", "json").stdout)["outbox"]
    assert waiting["pending"] >= 1  # nothing lost

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    fixed = run("outbox", "retry", "--config", DEMO_CONFIG)
    assert fixed.exit_code == 0, fixed.output
    assert "0 waiting, 0 dead" in fixed.stdout
    assert len(top_level(slack, "C0ALERTS")) == 1


def test_without_slack_check_says_so_and_sends_nothing(slack, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    result = run("check", "--config", DEMO_CONFIG, "--kpi", "cpc")
    assert result.exit_code == 0, result.output
    assert "no Slack configured (set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL)" in result.stderr
    assert slack.calls == []


def test_snooze_silences_a_segment_and_alerts_lists_it(slack):
    snoozed = run("snooze", "cpc", "--segment", "channel=paid_search", "--until", "2099-01-01",
                  "--reason", "bid test", "--config", DEMO_CONFIG)
    assert snoozed.exit_code == 0, snoozed.output
    assert "snoozed cpc channel=paid_search until 2099-01-01" in snoozed.stdout
    listed = run("alerts", "--config", DEMO_CONFIG)
    assert "snoozed: cpc channel=paid_search until 2099-01-01" in listed.stdout and "bid test" in listed.stdout
    checked = run("check", "--config", DEMO_CONFIG, "--kpi", "cpc")
    assert checked.exit_code == 0, checked.output
    posted = json.dumps([m["blocks"] for m in slack.messages("C0ALERTS")])
    assert "channel=paid_search" not in posted  # the snoozed segment is judged, not sent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["snooze", "nope", "--until", "2099-01-01"], "unknown KPI 'nope'"),
        (["snooze", "cpc", "--until", "2001-01-01"], "--until '2001-01-01' is not in the future"),
        (["snooze", "cpc", "--segment", "paid", "--until", "2099-01-01"], "use DIMENSION=VALUE"),
    ],
)
def test_snooze_bad_input_is_one_line_exit_2(slack, args, message):
    result = run(*args, "--config", DEMO_CONFIG)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_malformed_webhook_url_is_exit_3_in_one_line_and_its_secret_path_is_never_echoed(slack, monkeypatch):
    """#13: a bad webhook URL's secret path ended up in the dead-letter text (and slack-sdk's
    error log line); every line `check`, `outbox retry` and `alerts` print is grepped for it."""
    secret = ("T0SECRET1", "B0SECRET2", "SeCrEtPaTh0123456789")
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "htps://hooks.slack.com/services/" + "/".join(secret))
    checked = run("check", "--config", DEMO_CONFIG, "--kpi", "cpc")
    assert checked.exit_code == 3
    last = checked.stderr.strip().splitlines()[-1]
    assert "SLACK_WEBHOOK_URL is not a valid webhook URL" in last and "htps://hooks.slack.com/services/***" in last
    retried = run("outbox", "retry", "--config", DEMO_CONFIG)
    listed = run("alerts", "--config", DEMO_CONFIG, "--format", "json")
    assert json.loads(listed.stdout)["outbox"]["pending"] >= 1  # nothing lost
    printed = checked.output + retried.output + listed.output
    assert "Traceback" not in printed and [s for s in secret if s in printed] == []
