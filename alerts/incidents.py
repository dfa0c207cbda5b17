"""From a check's alerts to queued Slack messages: incidents, grouping, repeats, resolves, snoozes.

`plan_cycle` is pure: it compares a check's report with the open incidents and returns a
`CyclePlan` that `Store.record_cycle` applies in one transaction together with the evaluations.
Sending is a separate step (`alerts.delivery.deliver`), so a crash between the two loses nothing
and sends nothing twice.

Keys (unique in the store): an incident's alert key is `kpi|segment|first period|direction`; a
message's key names its channel and the alert keys (and, for a repeat, the period) it carries, so
the same check run twice queues nothing new.

A value revised after its alert was sent (the source corrected the alerted period) queues an
`update` of the alert's message, never a second message (`revisions`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from alerts.delivery import DeliveryPolicy, DeliveryReport, Notifier, deliver
from alerts.grouping import group_alerts, join_open_groups
from alerts.message import (
    ALERTS_SHOWN,
    card_text,
    incident_blocks,
    incident_resolved_text,
    member_line,
    message_blocks,
    message_text,
    resolved_text,
)
from alerts.slack import SlackError
from alerts.store import (
    CyclePlan,
    EvaluationRecord,
    GroupOpen,
    Incident,
    IncidentGroup,
    IncidentOpen,
    OutboxItem,
    Snooze,
    Store,
    utcnow,
)
from forecaster.pipeline import CheckReport, SeriesResult
from forecaster.settings import Settings
from forecaster.sources.frames import local_midnight
from forecaster.types import Alert, segment_key, segment_label
from forecaster.i18n import kpi_name, t, tn
from forecaster.units import format_period, format_value

# The footer of a card without charts (a webhook cannot carry files): the catalogue's incident.charts_elsewhere.


def evaluation_records(report: CheckReport) -> list[EvaluationRecord]:
    """The periods each series' check judged (`SeriesResult.fresh`): the new period when a
    stored state stepped on, the whole check window when the series was walked again (after a
    revision of a value, so the revision is visible in the store). A cycle of 10,000 series
    writes 10,000 rows, not 70,000."""
    records = []
    for result in report.results:
        segment = segment_key(result.series.segment)
        for judgement in result.judgements[len(result.judgements) - result.fresh:]:
            records.append(EvaluationRecord(
                result.series.name, segment, judgement.period.to_pydatetime(), judgement.actual, judgement.expected,
                judgement.lower, judgement.upper, judgement.score, judgement.is_anomaly))
    return records


def config_snoozes(settings: Settings) -> list[Snooze]:
    """The config's snoozes, each until the start of its `until` day in the config's timezone."""
    return [Snooze(s.kpi, segment_key(s.segment), _day_start(s.until, settings.timezone), s.reason)
            for s in settings.alerting.snoozes]


CARDS_PER_CHANNEL = 5
"""Incident cards one channel gets from one check; more (an outage across every campaign) are
bundled into one message that lists each incident's root cause, within Slack's 50 blocks."""


@dataclass(frozen=True)
class Card:
    """One incident to announce in this cycle: a new group, or a repeat of an open one.

    key: the group's key (its root cause's alert key); members: the alerts it carries, root
    first; alert_keys: their keys (a repeat's carry the period); note: said under the root."""

    key: str
    members: tuple[Alert, ...]
    alert_keys: tuple[str, ...]
    why: str = ""
    note: str = ""


def plan_cycle(
    report: CheckReport,
    settings: Settings,
    open_incidents: Mapping[tuple[str, str], Incident],
    snoozes: Sequence[Snooze],
    now: datetime,
    charts: bool = True,
    late_note: str = "",
    previous_actuals: Mapping[tuple[str, str, pd.Timestamp], float] | None = None,
    open_groups: Mapping[int, IncidentGroup] | None = None,
    buttons: bool = False,
    notes: Mapping[tuple[str, str], str] | None = None,
) -> CyclePlan:
    """What this check changes: incidents to open, join, repeat or resolve, and the messages.

    The alerts of series without an open incident are grouped by cause (`alerts.grouping`); a
    group linked to an open incident joins it (a thread reply), the others open new incidents
    with one card each. An open incident whose members still alert is announced again after
    `repeat_hours`; it resolves when its last open member is back to normal.

    charts: queue one chart per member for the card's thread (bot mode; default True).
    late_note: said under each new card when the period is judged late (after downtime).
    previous_actuals: see `previous_actuals_of` (revised values edit the cards).
    open_groups: the open incident groups by id (`Store.open_groups`; default none).
    buttons: the cards carry the feedback buttons (Slack interactivity is configured).
    notes: (kpi, segment) -> what feedback changed for the series ("sensitivity lowered ...").
    """
    open_groups = open_groups or {}
    repeat_after = timedelta(hours=settings.alerting.repeat_hours)
    fresh: list[Alert] = []
    still_open: dict[int, datetime] = {}
    ongoing: dict[int, list[tuple[Alert, Incident]]] = {}
    for alert in report.alerts:
        anomaly = alert.anomaly
        where = segment_key(anomaly.segment)
        if any(s.covers(anomaly.kpi, where, now) for s in snoozes):
            continue
        incident = open_incidents.get((anomaly.kpi, where))
        if incident is None:
            fresh.append(alert)
            continue
        still_open[incident.id] = anomaly.period.to_pydatetime()
        if incident.group_id is not None:
            ongoing.setdefault(incident.group_id, []).append((alert, incident))
    new_groups, joined = join_open_groups(group_alerts(fresh, settings), open_groups, settings)
    cards = [Card(alert_key(g.root), g.members, tuple(alert_key(a) for a in g.members), g.why, late_note)
             for g in new_groups]
    renotified, groups_renotified = [], []
    for group_id, entries in sorted(ongoing.items()):
        group = open_groups.get(group_id)
        if group is None or now - group.notified_at < repeat_after:
            continue
        members = _root_first([a for a, _ in entries], group)
        since = format_period(pd.Timestamp(group.first_period), members[0].anomaly.freq)
        period = members[0].anomaly.period.isoformat()
        cards.append(Card(group.key, tuple(members),
                          tuple(f"{alert_key(a)}|repeat|{period}" for a in members), group.why,
                          t("incident.still_ongoing", since=since)))
        groups_renotified.append(group_id)
        renotified.extend(incident.id for _, incident in entries)
    items, cards_of = _messages(cards, report, settings, charts, buttons, notes or {})
    opened = [_member_open(a, alert_key(g.root), cards_of.get(alert_key(g.root), [])) for g in new_groups
              for a in g.members]
    for group_id, alerts in joined.items():
        group = open_groups[group_id]
        opened.extend(_member_open(a, group.key, group.message_keys) for a in alerts)
        items.extend(_joined_items(group, alerts))
    groups_opened = [GroupOpen(alert_key(g.root), g.root.anomaly.kpi, segment_key(g.root.anomaly.segment),
                               g.root.anomaly.direction.value, _worst(g.members), g.first_period.to_pydatetime(),
                               "\n".join(cards_of.get(alert_key(g.root), [])), g.root.text, g.why)
                     for g in new_groups]
    resolved, groups_resolved, resolve_items = _resolves(report, open_incidents, open_groups, now, settings.timezone)
    revised = revisions(report, settings, open_incidents, previous_actuals or {})
    return CyclePlan(opened, still_open, renotified, [i.id for i in resolved], items + resolve_items + revised,
                     groups_opened=groups_opened, groups_renotified=groups_renotified,
                     groups_resolved=groups_resolved)


def _member_open(alert: Alert, group_key: str, message_keys: Sequence[str]) -> IncidentOpen:
    anomaly = alert.anomaly
    return IncidentOpen(anomaly.kpi, segment_key(anomaly.segment), alert_key(alert), anomaly.direction.value,
                        anomaly.severity.value, anomaly.period.to_pydatetime(), "\n".join(message_keys), alert.text,
                        group_key)


def _worst(alerts: Sequence[Alert]) -> str:
    """The group's severity: critical if any member is, else warning, else good news."""
    values = {a.anomaly.severity.value for a in alerts}
    return next(v for v in ("critical", "warning", "good_news") if v in values)


def _root_first(alerts: Sequence[Alert], group: IncidentGroup) -> list[Alert]:
    """A repeat's members with the group's root cause first when it still alerts."""
    root = (group.root_kpi, group.root_segment)
    return sorted(alerts, key=lambda a: (a.anomaly.kpi, segment_key(a.anomaly.segment)) != root)


def _joined_items(group: IncidentGroup, alerts: Sequence[Alert]) -> list[OutboxItem]:
    """A reply in the thread of each of the incident's cards: the members that joined it."""
    lines = "\n".join(member_line(a).replace("*", "") for a in alerts)
    text = t("incident.joined", lines=lines)
    keys = "|".join(sorted(alert_key(a) for a in alerts))
    return [OutboxItem(f"join|{keys}|{message_key}", "reply", message_key.split("|")[1], text,
                       {"line": text, "alert_keys": [alert_key(a) for a in alerts]}, parent_key=message_key)
            for message_key in group.message_keys]


REVISION_SHARE = 0.01
"""A stored actual that moved by more than this share of itself (1%) is a revision; less is
rounding in the source, not news."""


def previous_actuals_of(
    store: Store, open_incidents: Mapping[tuple[str, str], Incident]
) -> dict[tuple[str, str, pd.Timestamp], float]:
    """The stored actual of each open incident's alerted period (read before the check is
    stored, which overwrites it); incidents without a stored value are left out."""
    found: dict[tuple[str, str, pd.Timestamp], float] = {}
    for incident in open_incidents.values():
        record = store.evaluation(incident.kpi, incident.segment, incident.first_period)
        if record is not None and record.actual is not None:
            found[(incident.kpi, incident.segment, pd.Timestamp(incident.first_period))] = float(record.actual)
    return found


def revisions(
    report: CheckReport,
    settings: Settings,
    open_incidents: Mapping[tuple[str, str], Incident],
    previous_actuals: Mapping[tuple[str, str, pd.Timestamp], float],
) -> list[OutboxItem]:
    """An `update` row per message of each open incident whose alerted period, judged again
    in this check's window, now has an actual that differs from the stored one by more than
    `REVISION_SHARE`: delivery edits the message (chat.update) instead of posting again.

    The key carries the new value (rounded), so the same revision is queued once and a second,
    different one edits again.
    """
    judged = {(r.series.name, segment_key(r.series.segment)): r for r in report.results}
    items: list[OutboxItem] = []
    for where, incident in open_incidents.items():
        result = judged.get(where)
        period = pd.Timestamp(incident.first_period)
        before = previous_actuals.get((incident.kpi, incident.segment, period))
        if result is None or before is None or math.isnan(before):
            continue
        again = next((j for j in result.judgements if j.period == period), None)
        if again is None or math.isnan(again.actual):
            continue  # outside the window, or gone: a gap is not a revision
        if abs(again.actual - before) <= REVISION_SHARE * abs(before):
            continue
        kpi = settings.kpis.get(incident.kpi)
        unit = kpi.unit if kpi is not None else ""
        where_text = t("word.on_segment", segment=incident.segment) if incident.segment else ""
        line = t("incident.revised", kpi=kpi_name(incident.kpi), where=where_text,
                 period=format_period(period, result.series.freq), actual=format_value(again.actual, unit),
                 before=format_value(before, unit), expected=format_value(again.expected, unit))
        for message_key in filter(None, (incident.message_key or "").split("\n")):
            channel = message_key.split("|")[1]
            items.append(OutboxItem(f"revise|{incident.alert_key}|{message_key}|{again.actual:.6g}", "update",
                                    channel, line, {"line": line}, parent_key=message_key))
    return items


def alert_key(alert: Alert) -> str:
    """The alert's identity: KPI, segment, period and direction (`conversion_rate|device=mobile|...`)."""
    anomaly = alert.anomaly
    return f"{anomaly.kpi}|{segment_key(anomaly.segment)}|{anomaly.period.isoformat()}|{anomaly.direction.value}"


def _messages(
    cards: Sequence[Card], report: CheckReport, settings: Settings, charts: bool, buttons: bool,
    notes: Mapping[tuple[str, str], str],
) -> tuple[list[OutboxItem], dict[str, list[str]]]:
    """One card per incident and channel (a channel takes an incident when its routes take any
    member), plus a chart per member for the card's thread. A channel with more than
    `CARDS_PER_CHANNEL` incidents in one check gets them bundled into one message instead.

    Returns the items and, per incident key, the message keys that carry it.
    """
    by_channel: dict[str, list[Card]] = {}
    for card in cards:
        channels: list[str] = []
        for alert in card.members:
            anomaly = alert.anomaly
            tags = settings.kpis[anomaly.kpi].tags if anomaly.kpi in settings.kpis else []
            channels.extend(c for c in settings.alerting.channels_for(anomaly.kpi, tags, anomaly.severity.value)
                            if c not in channels)
        for channel in channels:
            by_channel.setdefault(channel, []).append(card)
    items: list[OutboxItem] = []
    carried: dict[str, list[str]] = {}
    footer = "" if charts else t("incident.charts_elsewhere")
    for channel, group in by_channel.items():
        if len(group) > CARDS_PER_CHANNEL:
            items.extend(_bundle(channel, group, report, settings, charts, footer, carried))
            continue
        for card in group:
            key = _message_key(channel, card.alert_keys)
            title = _card_title(card)
            member_notes = [n for a in card.members
                            if (n := notes.get((a.anomaly.kpi, segment_key(a.anomaly.segment)), ""))]
            blocks = incident_blocks(card.members, title, settings.alerting.dashboard_url,
                                     settings.alerting.max_hints, card.note, card.why, member_notes,
                                     card.key if buttons else "", footer, settings.alerting.report_url)
            items.append(OutboxItem(key, "message", channel,
                                    card_text(card.members, title, card.why, settings.alerting.max_hints),
                                    {"blocks": blocks, "alert_keys": list(card.alert_keys), "incident": card.key}))
            carried.setdefault(card.key, []).append(key)
            if charts:
                items.extend(_chart_item(a, k, key, channel, report.result_for(a.anomaly))
                             for a, k in list(zip(card.members, card.alert_keys))[:ALERTS_SHOWN])
    return items, carried


def _bundle(channel: str, cards: Sequence[Card], report: CheckReport, settings: Settings, charts: bool,
            footer: str, carried: dict[str, list[str]]) -> list[OutboxItem]:
    """An alert storm: one message for the channel listing each incident's root cause (with how
    many related alerts it has), charts for the roots it shows; no buttons (`kpiwatch feedback`)."""
    roots = [card.members[0] for card in cards]
    key = _message_key(channel, [k for card in cards for k in card.alert_keys])
    notes = [" · ".join(filter(None, [card.note, t("incident.related_count", count=len(card.members) - 1)
                                      if len(card.members) > 1 else ""])) for card in cards]
    title = _title(roots)
    blocks = message_blocks(roots, title, settings.alerting.dashboard_url, settings.alerting.max_hints, notes, footer)
    items = [OutboxItem(key, "message", channel, message_text(roots, title, settings.alerting.max_hints),
                        {"blocks": blocks, "alert_keys": [k for card in cards for k in card.alert_keys]})]
    for shown, card in enumerate(cards):
        carried.setdefault(card.key, []).append(key)
        # A chart for each root the message shows; drawing hundreds would hold up the cycle.
        if charts and shown < ALERTS_SHOWN:
            items.append(_chart_item(card.members[0], card.alert_keys[0], key, channel,
                                     report.result_for(card.members[0].anomaly)))
    return items


def _card_title(card: Card) -> str:
    """"kpiwatch: page_load_time on device=mobile and 3 related · Wed 10 Dec 2025"."""
    root = card.members[0].anomaly
    where = t("word.on_segment", segment=segment_label(root.segment)) if root.segment else ""
    more = t("incident.title_more", count=len(card.members) - 1) if len(card.members) > 1 else ""
    kind = t("incident.kind_good_news") if not root.is_bad else t("incident.kind_incident")
    return t("incident.title", kind=kind, kpi=kpi_name(root.kpi), where=where, more=more,
             period=format_period(root.period, root.freq))


def _resolves(
    report: CheckReport, open_incidents: Mapping[tuple[str, str], Incident], open_groups: Mapping[int, IncidentGroup],
    now: datetime, timezone: str,
) -> tuple[list[Incident], list[int], list[OutboxItem]]:
    """Open member incidents whose series was judged normal at its latest period and whose alert
    episode has ended (`Judgement.episode`: a calm spell after the last anomaly) are over; an
    incident group is over when its last open member is: a thread reply (and an edit of the
    card) per card that announced it. A member without a group resolves on its own, as before."""
    latest = {(r.series.name, segment_key(r.series.segment)): _last_judgement(r) for r in report.results}
    alerted = {(a.anomaly.kpi, segment_key(a.anomaly.segment)) for a in report.alerts}
    resolved: list[Incident] = []
    day_of: dict[int, str] = {}
    for where, incident in open_incidents.items():
        judgement = latest.get(where)
        if where in alerted or judgement is None or judgement.is_anomaly or judgement.episode:
            continue  # still anomalous (or not calm for long enough), or not judged this time
        if judgement.period <= pd.Timestamp(incident.last_period):
            continue  # an older period (catch-up, `check --at` in the past) says nothing about now
        resolved.append(incident)
        day_of[incident.id] = format_period(judgement.period,
                                            "D" if judgement.period == judgement.period.normalize() else "h")
    over = {incident.id for incident in resolved}
    groups_resolved: list[int] = []
    items: list[OutboxItem] = []
    for group_id, group in sorted(open_groups.items()):
        still = [m for m in group.members if m.state == "open" and m.id not in over]
        ended = [m for m in group.members if m.id in over]
        if still or not ended:
            continue
        groups_resolved.append(group_id)
        text = incident_resolved_text(group.root_kpi, group.root_segment, len(group.members), group.summary,
                                      day_of[ended[-1].id])
        items.extend(OutboxItem(f"resolve|{group.key}|{message_key}", "resolve", message_key.split("|")[1], text,
                                {"line": text}, parent_key=message_key) for message_key in group.message_keys)
    grouped = {m.id for g in open_groups.values() for m in g.members}
    for incident in resolved:
        if incident.id in grouped:
            continue
        text = resolved_text(incident.kpi, incident.segment, incident.summary, day_of[incident.id])
        for message_key in filter(None, (incident.message_key or "").split("\n")):
            channel = message_key.split("|")[1]
            items.append(OutboxItem(f"resolve|{incident.alert_key}|{message_key}", "resolve", channel, text,
                                    {"line": text}, parent_key=message_key))
    return resolved, groups_resolved, items


def _last_judgement(result: SeriesResult):  # noqa: ANN202 - Judgement | None
    return result.judgements[-1] if result.judgements else None


def _chart_item(alert: Alert, key: str, message_key: str, channel: str, result: SeriesResult) -> OutboxItem:
    """The alert's chart as PNG bytes in the outbox (a file path would not survive a restart);
    key: the alert's key in this message."""
    from alerts.chart import chart_subject, chart_title, render_chart
    from alerts.message import alert_slug

    anomaly = alert.anomaly
    title = chart_subject(anomaly)
    with tempfile.TemporaryDirectory(prefix="kpiwatch-chart-") as folder:
        path = render_chart(Path(folder) / f"{alert_slug(alert)}.png", result.series.values, result.forecast,
                            result.judgements, title=chart_title(anomaly), unit=anomaly.unit)
        data = path.read_bytes()
        name = path.name
    return OutboxItem(f"{message_key}|chart|{key}", "chart", channel, title,
                      {"title": title, "filename": name}, parent_key=message_key, file=data)


def _message_key(channel: str, alert_keys: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(alert_keys)).encode()).hexdigest()[:20]
    return f"message|{channel}|{digest}"


def _title(alerts: Sequence[Alert]) -> str:
    bad = sum(1 for a in alerts if a.anomaly.is_bad)
    good = len(alerts) - bad
    parts = []
    if bad:
        parts.append(tn("incident.anomalies", bad))
    if good:
        parts.append(t("incident.good_news_count", count=good))
    first = alerts[0].anomaly
    return t("incident.message_title", parts=t("incident.and").join(parts), period=format_period(first.period, first.freq))


def _day_start(day: object, timezone: str) -> datetime:
    return local_midnight(pd.Timestamp(str(day)).date(), timezone).to_pydatetime()


@dataclass(frozen=True)
class CycleOutcome:
    """What `record_and_send` did: new outbox rows, and the delivery report (None: no Slack)."""

    queued: int
    delivery: DeliveryReport | None
    problem: str = ""  # a Slack failure that left rows queued (exit code 3)


def record_and_send(
    report: CheckReport,
    settings: Settings,
    store: Store,
    notifier: Notifier | None,
    now: datetime | None = None,
    policy: DeliveryPolicy = DeliveryPolicy(),
    judged: Mapping[tuple[str, str], datetime] | None = None,
    late_note: str = "",
    deliver_now: bool = True,
    states: Mapping[tuple[str, str], object] | None = None,
) -> CycleOutcome:
    """Store the check and queue its messages (one transaction), then deliver the outbox.

    judged: ledger entries that move in the same transaction (the daemon). late_note: see
    `plan_cycle`. deliver_now: False leaves delivery to the caller (the daemon's delivery job).
    states: detector states by (kpi, segment) stored in the same transaction (the daemon).

    notifier None (no Slack configured): only the evaluations are stored; nothing is queued, so
    nothing piles up to be sent stale once Slack is configured. A Slack that refuses the token or
    a channel leaves the queued rows in the outbox for the next run.
    """
    now = now or utcnow()
    if notifier is None:
        store.record_cycle(evaluation_records(report), CyclePlan(judged=judged or {}, states=states or {}), now)
        return CycleOutcome(0, None)
    from alerts.feedback import buttons_enabled, feedback_notes, series_feedback

    snoozes = config_snoozes(settings) + store.snoozes(now)
    incidents = store.open_incidents()
    notes = feedback_notes(series_feedback(store.feedback_records()), now)
    plan = plan_cycle(report, settings, incidents, snoozes, now,
                      charts=settings.alerting.charts and notifier.supports_files, late_note=late_note,
                      previous_actuals=previous_actuals_of(store, incidents), open_groups=store.open_groups(),
                      buttons=buttons_enabled(notifier.supports_threads), notes=notes)
    plan = dataclasses.replace(plan, judged=judged or {}, states=states or {})
    queued = store.record_cycle(evaluation_records(report), plan, now)
    if not deliver_now:
        return CycleOutcome(queued, None)
    return CycleOutcome(queued, *_deliver_checked(settings, store, notifier, policy))


def deliver_outbox(settings: Settings, store: Store, notifier: Notifier,
                   policy: DeliveryPolicy = DeliveryPolicy(),
                   clock: Callable[[], datetime] = utcnow) -> tuple[DeliveryReport | None, str]:
    """Deliver what waits in the outbox (after `kpiwatch outbox retry`, or from the daemon).
    clock: "now" as the rows were queued with it (the daemon's `KPIWATCH_CLOCK`; default UTC now)."""
    return _deliver_checked(settings, store, notifier, policy, clock)


def _deliver_checked(
    settings: Settings, store: Store, notifier: Notifier, policy: DeliveryPolicy,
    clock: Callable[[], datetime] = utcnow,
) -> tuple[DeliveryReport | None, str]:
    """Check the token and channels once, then deliver; a refusal is reported, rows stay queued."""
    channels = sorted({route.channel for route in settings.alerting.routes})
    try:
        ids = notifier.check(channels)
    except SlackError as exc:
        return None, str(exc)
    result = deliver(store, notifier, ids, policy, clock=clock)
    problem = f"{len(result.dead)} message(s) refused by Slack (dead letters): {result.dead[0]}" if result.dead else ""
    return result, problem
