"""From a check to queued messages: grouping, routing, repeats, resolves, snoozes (no Slack)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from alerting import DAY, alert, report

from alerts.incidents import plan_cycle, previous_actuals_of, record_and_send
from forecaster.settings import parse_config
from alerts.store import Snooze, Store
from forecaster.types import Severity

NOW = datetime(2025, 12, 11, 7, tzinfo=timezone.utc)

CONFIG = """
sources: {default: {type: demo}}
alerting:
  repeat_hours: 24
  routes:
    - channel: "#kpi-alerts"
    - channel: "#paid-media"
      kpis: [cpa]
      tags: [paid]
      min_severity: critical
      good_news: false
kpis:
  conversion_rate: {ratio: {numerator: conversions, denominator: sessions}, segments: [device]}
  cpa: {ratio: {numerator: ad_cost, denominator: conversions}, good: down}
  cpc: {ratio: {numerator: ad_cost, denominator: clicks}, good: down, tags: [paid]}
"""


@pytest.fixture
def settings():
    return parse_config(CONFIG)


@pytest.fixture
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


def _messages(plan):
    return [i for i in plan.items if i.kind == "message"]


def test_one_card_per_incident_in_each_channel_its_members_are_routed_to(settings):
    """conversion_rate on mobile, cpa and cpc on the total share metrics (conversions, ad_cost):
    one incident, one card per channel that takes any member, with
    every member in it; a chart per member in each card's thread."""
    alerts = [alert("conversion_rate"), alert("cpa", {}), alert("cpc", {}, severity=Severity.WARNING)]
    plan = plan_cycle(report(alerts), settings, {}, [], NOW, charts=True)
    messages = {m.channel: m for m in _messages(plan)}
    assert sorted(messages) == ["#kpi-alerts", "#paid-media"]  # #paid-media takes the critical cpa
    assert all(len(m.payload["alert_keys"]) == 3 for m in messages.values())
    [group] = plan.groups_opened
    # no `related` in this config, so no cause direction: the tie is broken by name
    assert (group.root_kpi, group.root_segment) == ("conversion_rate", "device=mobile")
    assert all(m.payload["incident"] == group.key for m in messages.values())
    charts = [i for i in plan.items if i.kind == "chart"]
    assert len(charts) == 6 and all(c.file.startswith(b"\x89PNG") for c in charts)
    assert {c.parent_key for c in charts} == {m.key for m in messages.values()}
    assert len(plan.opened) == 3 and {o.group_key for o in plan.opened} == {group.key}
    cpa = next(o for o in plan.opened if o.kpi == "cpa")
    assert cpa.message_key.split("\n") == [messages["#kpi-alerts"].key, messages["#paid-media"].key]


def test_unlinked_alerts_are_separate_incidents_each_with_its_card(settings):
    alerts = [alert("conversion_rate"), alert("cpc", {"device": "desktop"})]  # different segments, cut apart
    plan = plan_cycle(report(alerts), settings, {}, [], NOW, charts=False, buttons=True)
    cards = _messages(plan)
    assert len(plan.groups_opened) == 2 and len(cards) == 3  # cpc also goes to #paid-media
    for card in cards:
        [buttons] = [b for b in card.payload["blocks"] if b["type"] == "actions"]
        assert [e["action_id"] for e in buttons["elements"]] == [
            "kpiwatch_expected", "kpiwatch_false_alarm", "kpiwatch_snooze", "kpiwatch_resolve"]
        assert {e["value"] for e in buttons["elements"]} == {card.payload["incident"]}
    without = plan_cycle(report(alerts), settings, {}, [], NOW, charts=False)
    assert not [b for m in _messages(without) for b in m.payload["blocks"] if b["type"] == "actions"]


def test_a_later_alert_linked_to_an_open_incident_joins_it_in_its_thread(settings, store):
    record_cycle(store, report([alert("cpc", {})]), settings, NOW)
    [group] = store.open_groups().values()
    cpa = alert("cpa", {}, period=DAY + pd.Timedelta(days=1))
    plan = plan_cycle(report([alert("cpc", {}), cpa]), settings, store.open_incidents(), [], NOW + timedelta(hours=2),
                      charts=False, open_groups=store.open_groups())
    assert plan.groups_opened == [] and [o.group_key for o in plan.opened] == [group.key]
    replies = [i for i in plan.items if i.kind == "reply"]
    assert sorted(r.parent_key for r in replies) == sorted(group.message_keys)  # one per card
    assert all("Joined this incident" in r.text and "cpa" in r.text for r in replies)
    store.record_cycle([], plan, NOW + timedelta(hours=2))
    assert [m.kpi for m in store.group(str(group.id)).members] == ["cpc", "cpa"]


def test_an_incident_resolves_as_a_whole_when_its_last_member_is_normal(settings, store):
    record_cycle(store, report([alert("cpc", {}), alert("cpa", {})]), settings, NOW)
    [group] = store.open_groups().values()
    half = report([alert("cpa", {})], normal=[("cpc", {})])
    assert record_cycle(store, half, settings, NOW + timedelta(hours=12)) == 0  # cpc over, cpa still on: no message
    assert store.open_groups()[group.id].state == "open"
    normal = report([], normal=[("cpa", {})])
    assert record_cycle(store, normal, settings, NOW + timedelta(days=2)) == 2  # one resolve per card
    resolves = [r for r in store.rows(states=["pending"], limit=20) if r.kind == "resolve"]
    assert sorted(r.parent_key for r in resolves) == sorted(group.message_keys)
    assert resolves[0].text.startswith(":white_check_mark: Resolved: cpa and its 1 related alert(s) are back")
    assert store.open_groups() == {} and store.group(str(group.id)).closed_by == "back to normal"


def test_good_news_is_not_sent_where_the_route_says_no(settings):
    good = alert("cpa", {}, severity=Severity.GOOD_NEWS, is_bad=False)
    plan = plan_cycle(report([good]), settings, {}, [], NOW, charts=False)
    assert [m.channel for m in _messages(plan)] == ["#kpi-alerts"]


def test_the_same_check_twice_queues_nothing_new_then_repeats_after_the_interval(settings, store):
    checked = report([alert("conversion_rate")])
    first = record_cycle(store, checked, settings, NOW)
    assert first == 1
    assert record_cycle(store, checked, settings, NOW + timedelta(hours=1)) == 0
    later = NOW + timedelta(hours=25)
    assert record_cycle(store, checked, settings, later) == 1
    repeat = store.rows(states=["pending"], limit=1)[0]
    assert "Still ongoing since Wed 10 Dec 2025." in str(repeat.payload["blocks"])
    assert record_cycle(store, checked, settings, later + timedelta(hours=1)) == 0  # repeat interval restarts


def test_back_to_normal_resolves_in_the_thread_of_each_message(settings, store):
    cpa = alert("cpa", {})
    record_cycle(store, report([cpa]), settings, NOW)
    normal = report([], normal=[("cpa", {})])
    assert record_cycle(store, normal, settings, NOW + timedelta(days=1)) == 2  # one per channel it went to
    resolves = store.rows(states=["pending"], limit=10)
    resolves = [r for r in resolves if r.kind == "resolve"]
    assert sorted(r.channel for r in resolves) == ["#kpi-alerts", "#paid-media"]
    assert all(r.parent_key.startswith(f"message|{r.channel}|") for r in resolves)
    assert resolves[0].text.startswith(":white_check_mark: Resolved: cpa is back inside its band (Thu 11 Dec 2025)")
    assert store.open_incidents() == {}
    assert record_cycle(store, normal, settings, NOW + timedelta(days=2)) == 0


def test_no_false_resolve_when_a_series_was_not_judged_or_is_still_anomalous(settings, store):
    record_cycle(store, report([alert("conversion_rate")]), settings, NOW)
    assert record_cycle(store, report([], normal=[("cpa", {})]), settings, NOW + timedelta(days=1)) == 0
    still = report([], normal=[])
    still = type(still)(still.period, (), (report([alert("conversion_rate")]).results[0],))  # anomalous, no alert
    assert record_cycle(store, still, settings, NOW + timedelta(days=1)) == 0
    assert len(store.open_incidents()) == 1


def test_a_snoozed_segment_is_stored_but_not_sent(settings):
    snooze = Snooze("conversion_rate", "device=mobile", NOW + timedelta(days=1), "release")
    plan = plan_cycle(report([alert("conversion_rate")]), settings, {}, [snooze], NOW, charts=False)
    assert plan.items == [] and plan.opened == []
    whole = Snooze("conversion_rate", "", NOW + timedelta(days=1), "")
    assert plan_cycle(report([alert("conversion_rate")]), settings, {}, [whole], NOW).items == []
    over = Snooze("conversion_rate", "", NOW - timedelta(days=1), "")
    assert len(plan_cycle(report([alert("conversion_rate")]), settings, {}, [over], NOW, charts=False).items) == 1


def test_without_slack_only_the_evaluations_are_stored(settings, store):
    outcome = record_and_send(report([alert("conversion_rate")]), settings, store, None, NOW)
    assert outcome.queued == 0 and outcome.delivery is None
    assert store.counts()["pending"] == 0
    assert len(store.evaluations_of("conversion_rate", "device=mobile")) == 7


def revised(checked, actual: float, period=DAY):
    """The report with the first series' actual at `period` replaced (the source corrected it)."""
    result = checked.results[0]
    judgements = tuple(dataclasses.replace(j, actual=actual) if j.period == period else j for j in result.judgements)
    return dataclasses.replace(checked, results=(dataclasses.replace(result, judgements=judgements),))


def _updates(plan):
    return [i for i in plan.items if i.kind == "update"]


def test_a_revised_alerted_value_queues_an_update_of_each_message_not_a_new_message(settings, store):
    record_cycle(store, report([alert("cpa", {})]), settings, NOW)  # cpa went to two channels, actual 60
    incidents = store.open_incidents()
    before = previous_actuals_of(store, incidents)
    assert before == {("cpa", "", DAY): 60.0}
    later = NOW + timedelta(hours=1)  # within the repeat interval: a message now would be a re-post

    def plan(checked, previous=before):
        return plan_cycle(checked, settings, incidents, [], later, charts=False, previous_actuals=previous)

    assert _updates(plan(report([alert("cpa", {})]))) == []  # judged again, unchanged
    assert _updates(plan(revised(report([alert("cpa", {})]), 60.5))) == []  # 0.8%: rounding, not news
    assert _updates(plan(revised(report([alert("cpa", {})]), 66.0), previous={})) == []  # nothing stored
    updates = _updates(plan(revised(report([alert("cpa", {})]), 66.0)))
    assert sorted(u.parent_key for u in updates) == sorted(incidents[("cpa", "")].message_key.split("\n"))
    assert [u.channel for u in updates] == [u.parent_key.split("|")[1] for u in updates]
    line = "Revised: cpa for Wed 10 Dec 2025 is now 66 (was 60; expected 100)"
    assert all(u.payload == {"line": line} and u.text == line for u in updates)
    assert updates[0].key == f"revise|{incidents[('cpa', '')].alert_key}|{updates[0].parent_key}|66"
    assert _messages(plan(revised(report([alert("cpa", {})]), 66.0))) == []  # no second message
    # the alerted period no longer in the window (judged 7+ periods later): nothing to compare
    moved = revised(report([alert("cpa", {})]), 66.0)
    shifted = tuple(dataclasses.replace(j, period=j.period + timedelta(days=7)) for j in moved.results[0].judgements)
    gone = dataclasses.replace(moved, results=(dataclasses.replace(moved.results[0], judgements=shifted),))
    assert _updates(plan(gone)) == []


def test_record_and_send_compares_with_the_value_stored_before_the_check(settings, store):
    class Bot:  # what planning asks of a notifier (delivery is not run here)
        supports_files = False
        supports_threads = True

    record_and_send(report([alert("conversion_rate")]), settings, store, Bot(), NOW, deliver_now=False)
    checked = revised(report([alert("conversion_rate")]), 50.0)
    assert record_and_send(checked, settings, store, Bot(), NOW + timedelta(hours=1), deliver_now=False).queued == 1
    [update] = [r for r in store.rows(states=["pending"]) if r.kind == "update"]
    assert update.payload["line"].startswith("Revised: conversion_rate on device=mobile for Wed 10 Dec 2025 is now 50 "
                                             "(was 60;")
    # the check stored the new value: the same revision seen again queues nothing
    assert record_and_send(checked, settings, store, Bot(), NOW + timedelta(hours=2), deliver_now=False).queued == 0
    assert store.evaluation("conversion_rate", "device=mobile", DAY.to_pydatetime()).actual == 50.0


def record_cycle(store, checked, settings, now) -> int:
    """Plan against the store's incidents and apply; returns the new outbox rows (no charts)."""
    from alerts.incidents import evaluation_records

    plan = plan_cycle(checked, settings, store.open_incidents(), store.snoozes(now), now, charts=False,
                      open_groups=store.open_groups())
    return store.record_cycle(evaluation_records(checked), plan, now)


def test_an_older_period_never_resolves_a_newer_incident(settings, store):
    """A catch-up (or `check --at` in the past) judging the day before an incident as normal says
    nothing about now: no false "resolved"."""
    record_cycle(store, report([alert("cpa", {})]), settings, NOW)
    from alerting import DAY, series_result

    older = report([])
    older = type(older)({"cpa": DAY - pd.Timedelta(days=1)}, (),
                        (series_result("cpa", {}, False, last=DAY - pd.Timedelta(days=1)),))
    assert record_cycle(store, older, settings, NOW + timedelta(hours=1)) == 0
    assert len(store.open_incidents()) == 1


def test_an_alert_storm_is_one_message_per_channel_within_slacks_limits(settings, store):
    """300 segments alert in one cycle (an outage across every campaign): one message per
    channel, within Slack's 50 blocks, naming how many more there are; a chart for each alert
    shown, not 300; every incident opened, stored in one transaction."""
    from alerts.message import ALERTS_SHOWN, MAX_BLOCKS

    alerts = [alert("conversion_rate", {"device": f"d{number:03d}"}) for number in range(300)]
    plan = plan_cycle(report(alerts), settings, {}, [], NOW, charts=True)
    [message] = _messages(plan)
    assert message.channel == "#kpi-alerts" and len(message.payload["alert_keys"]) == 300
    assert len(message.payload["blocks"]) <= MAX_BLOCKS
    assert f"and {300 - ALERTS_SHOWN} more alert(s)" in str(message.payload["blocks"][-1])
    assert len([i for i in plan.items if i.kind == "chart"]) == ALERTS_SHOWN
    assert len(plan.opened) == 300
    assert store.record_cycle([], plan, NOW) == 1 + ALERTS_SHOWN
    assert len(store.open_incidents()) == 300
