"""Delivery to Slack exactly once: the real slack-sdk client against the local fake Slack."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from alerting import DAY, alert, report
from fakeslack import FakeSlack
from storage import BACKENDS, store_url

from alerts.delivery import DeliveryPolicy, _look_back_from, deliver
from alerts.slack import SlackBot, SlackWebhook
from alerts.incidents import evaluation_records, plan_cycle, previous_actuals_of
from forecaster.settings import parse_config
from alerts.store import OutboxItem, Store

NOW = datetime(2025, 12, 11, 7, tzinfo=timezone.utc)
TESTS = Path(__file__).parent

CONFIG = """
sources: {default: {type: demo}}
alerting:
  routes: [{channel: "#kpi-alerts"}]
kpis:
  conversion_rate: {ratio: {numerator: conversions, denominator: sessions}, segments: [device]}
  cpa: {ratio: {numerator: ad_cost, denominator: conversions}, good: down}
"""


class Clock:
    """A fake clock: `sleep` moves it on instantly, so retries after Retry-After take no time."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings():
    return parse_config(CONFIG)


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    yield from store_url(request.param, tmp_path)


@pytest.fixture
def store(url):
    opened = Store(url)
    yield opened
    opened.close()


@pytest.fixture
def slack():
    with FakeSlack() as fake:
        yield fake


def queue(store, settings, alerts, now=NOW, normal=(), charts=False) -> int:
    checked = report(alerts, normal)
    plan = plan_cycle(checked, settings, store.open_incidents(), [], now, charts=charts,
                      open_groups=store.open_groups())
    return store.record_cycle(evaluation_records(checked), plan, now)


def send(store, slack, clock=None, max_wait=600.0):
    bot = SlackBot("xoxb-test", base_url=slack.url)
    clock = clock or Clock(NOW)
    policy = DeliveryPolicy(backoff=2.0, max_backoff=60.0, max_wait=max_wait)
    return deliver(store, bot, bot.check(["#kpi-alerts"]), policy, clock=clock, sleep=clock.sleep)


def posts(slack, channel="C0ALERTS", top_level=True):
    return [m for m in slack.messages(channel) if not top_level or not m["thread_ts"]]


def test_a_message_carries_its_key_and_its_charts_go_into_the_thread(store, settings, slack):
    queue(store, settings, [alert("conversion_rate"), alert("cpa", {})], charts=True)
    result = send(store, slack)
    [message] = posts(slack)
    assert result.sent == 3 and result.dead == []
    assert message["metadata"]["event_payload"]["key"].startswith("message|#kpi-alerts|")
    assert "conversion_rate" in message["text"] and message["blocks"][0]["type"] == "header"
    assert [(f["thread_ts"], f["content"][:4]) for f in slack.files] == [(message["ts"], b"\x89PNG")] * 2
    assert [n["kind"] for n in store.notification_log()] == ["chart", "chart", "message"]


def test_429_three_times_then_ok_is_one_message(store, settings, slack):
    slack.fail_next("chat.postMessage", times=3, status=429, retry_after=1)
    queue(store, settings, [alert()])
    clock = Clock(NOW)
    result = send(store, slack, clock)
    assert len(posts(slack)) == 1
    assert slack.methods().count("chat.postMessage") == 4
    assert clock.slept == [1.0, 1.0, 1.0]  # Slack's Retry-After, not our backoff
    assert result.sent == 1 and result.retries == 3


def test_a_dropped_connection_after_the_post_is_settled_without_a_second_post(store, settings, slack):
    slack.fail_next("chat.postMessage", drop=True)
    queue(store, settings, [alert()])
    result = send(store, slack)
    assert len(posts(slack)) == 1
    assert slack.methods().count("chat.postMessage") == 1  # found by its key in the channel's history
    assert "conversations.history" in slack.methods()
    assert result.sent == 1


def storm(store, count, now=None):
    """`count` one-KPI messages queued at once (the daemon posts one per KPI job), oldest first."""
    items = [OutboxItem(f"message|#kpi-alerts|kpi{i:03d}", "message", "#kpi-alerts", f"kpi{i:03d} fell")
             for i in range(count)]
    return store.queue(items, now)


def test_after_a_storm_the_first_post_dropped_is_found_past_250_newer_posts_not_posted_twice(store, slack):
    """#11a: the first post of a storm is accepted but its connection drops; the other 250 go out
    before its retry, which must find it by key (paging through the history back to its queue
    time), not post it again. The look-up used to read the newest 200 messages only."""
    assert storm(store, 251) == 251
    slack.fail_next("chat.postMessage", drop=True)
    result = send(store, slack, Clock(datetime.now(timezone.utc)))
    keys = [m["metadata"]["event_payload"]["key"] for m in posts(slack)]
    assert len(keys) == 251 == len(set(keys))  # each once
    assert slack.methods().count("chat.postMessage") == 251  # the dropped one was not re-posted
    history = [p for m, p in slack.calls if m == "conversations.history"]
    assert len(history) == 2 and all(float(p["oldest"]) > 0 for p in history)  # two pages, bounded
    first = store.get("message|#kpi-alerts|kpi000")
    assert (first.state, first.last_error) == ("sent", "found in Slack after an unknown outcome")
    assert result.sent == 251 and result.retries == 1


def test_the_look_up_starts_at_the_queue_time_not_a_fixed_count(store, slack):
    """A row queued after older messages: only messages since its queue time (less the margin
    for clock skew) are read; a queue time ahead of the wall clock (a simulated clock) reads all."""
    slack.fail_next("chat.postMessage", drop=True)
    storm(store, 1)
    send(store, slack, Clock(datetime.now(timezone.utc)), max_wait=0)  # dropped: left `sending`
    [row] = store.rows(states=["sending"])
    policy = DeliveryPolicy()
    wall = datetime.now(timezone.utc)
    oldest = _look_back_from(row, lambda: wall, policy)
    assert row.created_at.timestamp() - policy.look_back_margin - 1 < oldest <= row.created_at.timestamp() - policy.look_back_margin
    fast = _look_back_from(row, lambda: wall + timedelta(days=1), policy)  # a clock a day ahead: earlier
    assert fast <= wall.timestamp() - 86400 - policy.look_back_margin + 1
    ahead = dataclasses.replace(row, created_at=wall + timedelta(days=30))
    assert _look_back_from(ahead, lambda: wall, policy) is None


def test_a_dropped_connection_before_slack_saw_it_is_posted_again(store, settings, slack):
    slack.fail_next("chat.postMessage", drop_before=True)
    queue(store, settings, [alert()])
    send(store, slack)
    assert len(posts(slack)) == 1
    assert slack.methods().count("chat.postMessage") == 2


def test_500_for_a_while_then_the_alert_once_and_then_its_resolve_in_order(store, settings, slack):
    slack.fail_next("chat.postMessage", times=4, status=500)
    queue(store, settings, [alert("cpa", {})])
    queue(store, settings, [], now=NOW + timedelta(days=1), normal=[("cpa", {})])  # back to normal meanwhile
    clock = Clock(NOW + timedelta(days=1))
    result = send(store, slack, clock)
    [message] = posts(slack)
    replies = [m for m in slack.messages("C0ALERTS") if m["thread_ts"] == message["ts"]]
    assert [r["text"].split(":")[1].strip() for r in replies] == ["white_check_mark"]
    assert "Resolved: cpa" in replies[0]["text"] and float(replies[0]["ts"]) > float(message["ts"])
    assert message["edited"] and "Resolved: cpa" in str(message["blocks"][1])  # the original says so too
    assert result.retries == 4 and clock.slept  # backed off (with jitter) between the 500s
    assert all(0 < s <= 60 for s in clock.slept)


def test_channel_not_found_is_a_dead_letter_and_later_alerts_still_go_out(store, settings, slack, caplog):
    queue(store, settings, [alert("cpa", {})])
    slack.fail_next("chat.postMessage", error="channel_not_found")
    first = send(store, slack)
    assert slack.methods().count("chat.postMessage") == 1
    assert len(first.dead) == 1 and "channel_not_found" in first.dead[0]
    assert "dead letter message|#kpi-alerts|" in caplog.text
    assert store.counts()["dead"] == 1
    # an incident of its own (days later: not linked to the dead one, which it would join)
    queue(store, settings, [alert("conversion_rate", period=DAY + pd.Timedelta(days=3))], now=NOW + timedelta(hours=1))
    second = send(store, slack, Clock(NOW + timedelta(hours=1)))
    assert second.sent == 1 and len(posts(slack)) == 1
    assert store.retry_dead(NOW + timedelta(hours=2)) == 1  # `kpiwatch outbox retry`
    send(store, slack, Clock(NOW + timedelta(hours=2)))
    assert len(posts(slack)) == 2 and store.counts()["dead"] == 0


def test_a_resolve_waits_for_its_dead_alert(store, settings, slack):
    queue(store, settings, [alert("cpa", {})])
    slack.fail_next("chat.postMessage", error="channel_not_found")
    send(store, slack)
    queue(store, settings, [], now=NOW + timedelta(days=1), normal=[("cpa", {})])
    send(store, slack, Clock(NOW + timedelta(days=1)))
    assert posts(slack, top_level=False) == []  # never a resolve before its alert
    store.retry_dead(NOW + timedelta(days=2))
    send(store, slack, Clock(NOW + timedelta(days=2)))
    texts = [m["text"] for m in slack.messages("C0ALERTS")]
    assert len(texts) == 2 and "Resolved" in texts[1]


def test_the_same_check_twice_posts_nothing_and_repeats_after_the_interval(store, settings, slack):
    queue(store, settings, [alert()])
    send(store, slack)
    queue(store, settings, [alert()], now=NOW + timedelta(hours=2))
    send(store, slack, Clock(NOW + timedelta(hours=2)))
    assert len(posts(slack)) == 1
    queue(store, settings, [alert()], now=NOW + timedelta(hours=25))
    send(store, slack, Clock(NOW + timedelta(hours=25)))
    assert len(posts(slack)) == 2 and "Still ongoing since" in posts(slack)[1]["text"] + str(posts(slack)[1]["blocks"])


def test_retries_wait_no_longer_than_max_wait(store, settings, slack):
    slack.fail_next("chat.postMessage", times=50, status=500)
    queue(store, settings, [alert()])
    result = send(store, slack, max_wait=10.0)
    assert result.waiting == 1 and result.sent == 0  # left queued for the next run, nothing lost
    assert store.counts()["sending"] == 1


def test_webhook_posts_resolves_on_their_own_and_skips_charts(store, settings, slack):
    queue(store, settings, [alert("cpa", {})], charts=True)
    queue(store, settings, [], now=NOW + timedelta(days=1), normal=[("cpa", {})])
    hook = SlackWebhook(slack.webhook_url)
    clock = Clock(NOW + timedelta(days=1))
    result = deliver(store, hook, {}, DeliveryPolicy(), clock=clock, sleep=clock.sleep)
    texts = [m["text"] for m in slack.messages("webhook")]
    assert len(texts) == 2 and "cpa" in texts[0] and "Resolved" in texts[1]
    assert slack.files == [] and result.sent == 3
    notes = {n["kind"]: n["note"] for n in store.notification_log()}
    assert "webhook cannot upload files" in notes["chart"] and "no thread" in notes["resolve"]


def test_without_charts_the_message_says_where_they_are(store, settings, slack):
    queue(store, settings, [alert("cpa", {})], charts=False)
    deliver(store, SlackWebhook(slack.webhook_url), {}, DeliveryPolicy(), clock=Clock(NOW))
    [posted] = slack.messages("webhook")
    assert "kpiwatch check --dry-run --out DIR" in posted["blocks"][-1]["elements"][0]["text"]


def queue_revision(store, settings, actual, now=NOW + timedelta(hours=1)) -> int:
    """The conversion_rate alert's period judged again with a corrected actual (the source was revised)."""
    checked = report([alert()])
    result = checked.results[0]
    judgements = tuple(j if j.period != result.judgements[-1].period else type(j)(**{**j.__dict__, "actual": actual})
                       for j in result.judgements)
    checked = type(checked)(checked.period, checked.alerts, (type(result)(**{**result.__dict__, "judgements": judgements}),))
    incidents = store.open_incidents()
    plan = plan_cycle(checked, settings, incidents, [], now, charts=False,
                      previous_actuals=previous_actuals_of(store, incidents))
    return store.record_cycle(evaluation_records(checked), plan, now)


def test_a_revised_value_edits_the_message_and_posts_nothing_new(store, settings, slack):
    queue(store, settings, [alert()])
    send(store, slack)
    assert queue_revision(store, settings, 45.0) == 1
    result = send(store, slack, Clock(NOW + timedelta(hours=1)))
    [message] = slack.messages("C0ALERTS")  # no reply, no second message
    assert result.sent == 1 and slack.methods().count("chat.postMessage") == 1
    assert message["edited"] and slack.methods().count("chat.update") == 1
    revised = [b for b in message["blocks"] if b.get("block_id") == "kpiwatch-revised"]
    assert revised and "Revised: conversion_rate on device=mobile for Wed 10 Dec 2025 is now 45 (was 60; expected 100)" \
        in revised[0]["elements"][0]["text"]
    assert message["blocks"][0]["type"] == "header" and message["blocks"][1] == revised[0]  # under the header
    [update] = [r for r in store.rows(states=["sent"]) if r.kind == "update"]
    assert (update.slack_channel, update.slack_ts) == ("C0ALERTS", message["ts"])  # the parent's place


def test_revised_and_resolved_lines_both_stay_on_the_message(store, settings, slack):
    queue(store, settings, [alert()])
    send(store, slack)
    queue_revision(store, settings, 45.0)
    send(store, slack, Clock(NOW + timedelta(hours=1)))
    queue(store, settings, [], now=NOW + timedelta(days=1), normal=[("conversion_rate", {"device": "mobile"})])
    send(store, slack, Clock(NOW + timedelta(days=1)))
    [message] = posts(slack)
    ids = [b.get("block_id") for b in message["blocks"]]
    assert ids[1:3] == ["kpiwatch-resolved", "kpiwatch-revised"]  # under the header, resolved first
    texts = [str(b) for b in message["blocks"][1:3]]
    assert "Resolved: conversion_rate" in texts[0] and "Revised: conversion_rate" in texts[1]


def test_webhook_posts_a_revision_on_its_own(store, settings, slack):
    queue(store, settings, [alert()])
    hook = SlackWebhook(slack.webhook_url)
    deliver(store, hook, {}, DeliveryPolicy(), clock=Clock(NOW))
    queue_revision(store, settings, 45.0)
    clock = Clock(NOW + timedelta(hours=1))
    result = deliver(store, hook, {}, DeliveryPolicy(), clock=clock, sleep=clock.sleep)
    texts = [m["text"] for m in slack.messages("webhook")]
    assert result.sent == 1 and len(texts) == 2 and texts[1].startswith("Revised: conversion_rate")
    assert {n["kind"]: n["note"] for n in store.notification_log()}["update"] == "no updates: posted on its own"


CRASH = """
import os, sys
from datetime import datetime, timezone
from alerting import alert, report
from alerts.delivery import deliver
from alerts.slack import SlackBot
from alerts.incidents import evaluation_records, plan_cycle
from forecaster.settings import parse_config
from alerts.store import Store

settings = parse_config(sys.argv[3])
store = Store(sys.argv[1])
now = datetime(2025, 12, 11, 7, tzinfo=timezone.utc)
checked = report([alert()])
store.record_cycle(evaluation_records(checked), plan_cycle(checked, settings, {}, [], now, charts=False), now)
bot = SlackBot("xoxb-test", base_url=sys.argv[2])
ids = bot.check(["#kpi-alerts"])
if sys.argv[4] == "before_post":
    bot.post = lambda *a, **k: os._exit(9)      # killed after the outbox commit, before the post
else:
    real = store.mark_sent
    store.mark_sent = lambda *a, **k: os._exit(9)  # killed after the post, before it is recorded
deliver(store, bot, ids)
"""


@pytest.mark.parametrize("point", ["before_post", "after_post"])
def test_killed_mid_delivery_then_restarted_gives_exactly_one_message(url, settings, slack, point):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    crashed = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH), url, slack.url, CONFIG, point],
                             env=env, capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 9, crashed.stderr
    assert len(posts(slack)) == (0 if point == "before_post" else 1)
    restarted = Store(url)
    try:
        # a row caught mid-send is left alone for its lease (120 s) before it is settled
        send(restarted, slack, Clock(datetime.now(timezone.utc) + timedelta(minutes=3)))
        assert restarted.counts()["sent"] == 1
    finally:
        restarted.close()
    assert len(posts(slack)) == 1


SECRET_TOKEN = "xoxb-1111-2222-SeCrEtToKeN0123456789"
SECRET_SEGMENTS = ("T0SECRET1", "B0SECRET2", "SeCrEtPaTh0123456789")
SECRET_PATH = "/services/" + "/".join(SECRET_SEGMENTS)


def secrets_in(texts):
    """Every configured secret (the token, the webhook path and each of its secret segments) found."""
    secrets = (SECRET_TOKEN, SECRET_PATH, *SECRET_SEGMENTS)
    return sorted({s for s in secrets for t in texts if s in t})


def stored_texts(store, result):
    rows = store.rows(states=["pending", "sending", "sent", "dead"], limit=1000)
    return [r.last_error for r in rows] + [n["note"] for n in store.notification_log()] + result.dead


@pytest.mark.parametrize(("webhook", "fail", "expect"), [
    ("htps://hooks.slack.com" + SECRET_PATH, None, "not a valid webhook URL"),  # slack-sdk: "Invalid URL detected: <url>"
    ("hooks.slack.com" + SECRET_PATH, None, "not a valid webhook URL"),  # urllib: ValueError "unknown url type: '<url>'"
    ("https://hooks.slack.com/services/T0SECRET1/B0SECRET2/SeCrEt PaTh0123456789", None, "not a valid webhook URL"),
    ("{root}/webhook" + SECRET_PATH, {"status": 404, "error": "no_service"}, "no_service"),
    ("{root}/webhook" + SECRET_PATH, {"drop": True}, ""),
])
def test_no_secret_in_any_dead_letter_error_or_log_line(store, settings, slack, caplog, webhook, fail, expect):
    """#13: a bad webhook URL's secret path ended up in the dead-letter text. Every stored error,
    dead letter, notification note and log line (slack-sdk's DEBUG lines too) is grepped for the
    configured secrets."""
    caplog.set_level(logging.DEBUG)
    queue(store, settings, [alert("cpa", {})])
    if fail:
        slack.fail_next("webhook", **fail)
    hook = SlackWebhook(webhook.format(root=slack.root), timeout=5)
    clock = Clock(NOW)
    result = deliver(store, hook, {}, DeliveryPolicy(max_wait=10), clock=clock, sleep=clock.sleep)
    texts = stored_texts(store, result) + [caplog.text]
    assert expect in " ".join(texts)
    assert secrets_in(texts) == [], texts


@pytest.mark.parametrize("fail", [None, {"drop": True}, {"status": 500}])
def test_no_bot_token_in_any_dead_letter_error_or_log_line(store, settings, slack, caplog, fail):
    caplog.set_level(logging.DEBUG)
    queue(store, settings, [alert("cpa", {})])
    if fail:
        slack.fail_next("chat.postMessage", **fail)
    slack.tokens.add(SECRET_TOKEN)
    bot = SlackBot(SECRET_TOKEN, base_url=slack.url, timeout=5)
    ids = bot.check(["#kpi-alerts"])
    slack.tokens.discard(SECRET_TOKEN)  # revoked meanwhile
    clock = Clock(NOW)
    result = deliver(store, bot, ids, DeliveryPolicy(max_wait=10), clock=clock, sleep=clock.sleep)
    texts = stored_texts(store, result) + [caplog.text]
    assert "invalid_auth" in " ".join(result.dead) and "check SLACK_BOT_TOKEN" in " ".join(result.dead)
    assert secrets_in(texts) == [], texts


def test_a_malformed_webhook_url_is_one_permanent_error_naming_the_fix(store, settings):
    queue(store, settings, [alert("cpa", {})])
    result = deliver(store, SlackWebhook("hooks.slack.com" + SECRET_PATH), {}, DeliveryPolicy(), clock=Clock(NOW))
    [line] = result.dead
    assert "SLACK_WEBHOOK_URL is not a valid webhook URL: it must start with https:// and a host (got hooks.slack.com/services/***)" in line and "Incoming Webhooks page" in line
    assert store.counts()["dead"] == 1 and secrets_in([line]) == []
