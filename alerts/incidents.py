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
from alerts.message import ALERTS_SHOWN, message_blocks, message_text, resolved_text
from alerts.slack import SlackError
from alerts.store import (
    CyclePlan,
    EvaluationRecord,
    Incident,
    IncidentOpen,
    OutboxItem,
    Snooze,
    Store,
    utcnow,
)
from forecaster.pipeline import CheckReport, SeriesResult
from forecaster.settings import Settings
from forecaster.sources.frames import local_midnight
from forecaster.types import Alert, segment_key
from forecaster.units import format_period, format_value

CHARTS_ELSEWHERE = ("Charts are not sent over a webhook: `kpiwatch check --dry-run --out DIR` draws them "
                    "(or `kpiwatch forecast KPI --plot chart.png`).")


@dataclass(frozen=True)
class Outgoing:
    """One alert to announce in this cycle: new, or a repeat of an open incident."""

    alert: Alert
    alert_key: str
    note: str = ""  # "still ongoing since ..." for a repeat


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


def plan_cycle(
    report: CheckReport,
    settings: Settings,
    open_incidents: Mapping[tuple[str, str], Incident],
    snoozes: Sequence[Snooze],
    now: datetime,
    charts: bool = True,
    late_note: str = "",
    previous_actuals: Mapping[tuple[str, str, pd.Timestamp], float] | None = None,
) -> CyclePlan:
    """What this check changes: incidents to open, keep, repeat or resolve, and the messages.

    charts: queue one chart per alert for the message's thread (bot mode; default True).
    late_note: said under each new alert when the period is judged late (after downtime).
    previous_actuals: (kpi, segment, period) -> the actual stored before this check, for the
        alerted period of each open incident (`previous_actuals_of`); a value revised since
        its alert edits the alert's message (default None: no revisions looked for).
    """
    repeat_after = timedelta(hours=settings.alerting.repeat_hours)
    outgoing: list[Outgoing] = []
    opened_keys: dict[str, Alert] = {}
    still_open: dict[int, datetime] = {}
    renotified: list[int] = []
    for alert in report.alerts:
        anomaly = alert.anomaly
        where = segment_key(anomaly.segment)
        if any(s.covers(anomaly.kpi, where, now) for s in snoozes):
            continue
        incident = open_incidents.get((anomaly.kpi, where))
        if incident is None:
            key = alert_key(alert)
            outgoing.append(Outgoing(alert, key, late_note))
            opened_keys[key] = alert
            continue
        still_open[incident.id] = anomaly.period.to_pydatetime()
        if now - incident.notified_at >= repeat_after:
            since = format_period(pd.Timestamp(incident.first_period), anomaly.freq)
            outgoing.append(Outgoing(alert, f"{incident.alert_key}|repeat|{anomaly.period.isoformat()}",
                                     f"Still ongoing since {since}."))
            renotified.append(incident.id)
    items, message_of = _messages(outgoing, report, settings, charts)
    opened = [IncidentOpen(a.anomaly.kpi, segment_key(a.anomaly.segment), key, a.anomaly.direction.value,
                           a.anomaly.severity.value, a.anomaly.period.to_pydatetime(), "\n".join(message_of.get(key, [])),
                           a.text)
              for key, a in opened_keys.items()]
    resolved, resolve_items = _resolves(report, open_incidents, now, settings.timezone)
    revised = revisions(report, settings, open_incidents, previous_actuals or {})
    return CyclePlan(opened, still_open, renotified, [i.id for i in resolved], items + resolve_items + revised)


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
        where_text = f" on {incident.segment}" if incident.segment else ""
        line = (f"Revised: {incident.kpi}{where_text} for {format_period(period, result.series.freq)} is now "
                f"{format_value(again.actual, unit)} (was {format_value(before, unit)}; expected "
                f"{format_value(again.expected, unit)})")
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
    outgoing: Sequence[Outgoing], report: CheckReport, settings: Settings, charts: bool
) -> tuple[list[OutboxItem], dict[str, list[str]]]:
    """One message per channel (its routes decide), plus a chart per alert for its thread.

    Returns the items and, per alert key, the message keys that carry it.
    """
    by_channel: dict[str, list[Outgoing]] = {}
    for item in outgoing:
        anomaly = item.alert.anomaly
        tags = settings.kpis[anomaly.kpi].tags if anomaly.kpi in settings.kpis else []
        for channel in settings.alerting.channels_for(anomaly.kpi, tags, anomaly.severity.value):
            by_channel.setdefault(channel, []).append(item)
    items: list[OutboxItem] = []
    carried: dict[str, list[str]] = {}
    for channel, group in by_channel.items():
        key = _message_key(channel, [g.alert_key for g in group])
        alerts = [g.alert for g in group]
        title = _title(alerts)
        footer = "" if charts else CHARTS_ELSEWHERE
        blocks = message_blocks(alerts, title, settings.alerting.dashboard_url, settings.alerting.max_hints,
                                [g.note for g in group], footer)
        items.append(OutboxItem(key, "message", channel, message_text(alerts, title, settings.alerting.max_hints),
                                {"blocks": blocks, "alert_keys": [g.alert_key for g in group]}))
        for shown, entry in enumerate(group):
            carried.setdefault(entry.alert_key, []).append(key)
            # A chart for each alert the message shows; in an alert storm the rest are counted in
            # its last line, and drawing hundreds of charts would hold up the cycle.
            if charts and shown < ALERTS_SHOWN:
                items.append(_chart_item(entry, key, channel, report.result_for(entry.alert.anomaly)))
    return items, carried


def _resolves(
    report: CheckReport, open_incidents: Mapping[tuple[str, str], Incident], now: datetime, timezone: str
) -> tuple[list[Incident], list[OutboxItem]]:
    """Open incidents whose series was judged normal at its latest period and whose alert episode
    has ended (`Judgement.episode`: a calm spell after the last anomaly): resolved, with a thread
    reply (and an update of the original message) per message that announced them."""
    latest = {(r.series.name, segment_key(r.series.segment)): _last_judgement(r) for r in report.results}
    alerted = {(a.anomaly.kpi, segment_key(a.anomaly.segment)) for a in report.alerts}
    resolved: list[Incident] = []
    items: list[OutboxItem] = []
    for where, incident in open_incidents.items():
        judgement = latest.get(where)
        if where in alerted or judgement is None or judgement.is_anomaly or judgement.episode:
            continue  # still anomalous (or not calm for long enough), or not judged this time
        if judgement.period <= pd.Timestamp(incident.last_period):
            continue  # an older period (catch-up, `check --at` in the past) says nothing about now
        resolved.append(incident)
        day = format_period(judgement.period, "D" if judgement.period == judgement.period.normalize() else "h")
        text = resolved_text(incident.kpi, incident.segment, incident.summary, day)
        for message_key in filter(None, (incident.message_key or "").split("\n")):
            channel = message_key.split("|")[1]
            items.append(OutboxItem(f"resolve|{incident.alert_key}|{message_key}", "resolve", channel, text,
                                    {"line": text}, parent_key=message_key))
    return resolved, items


def _last_judgement(result: SeriesResult):  # noqa: ANN202 - Judgement | None
    return result.judgements[-1] if result.judgements else None


def _chart_item(entry: Outgoing, message_key: str, channel: str, result: SeriesResult) -> OutboxItem:
    """The alert's chart as PNG bytes in the outbox (a file path would not survive a restart)."""
    from alerts.chart import render_chart
    from alerts.message import alert_slug

    anomaly = entry.alert.anomaly
    title = f"{anomaly.kpi} {', '.join(f'{k}={v}' for k, v in sorted(anomaly.segment.items())) or 'total'}"
    with tempfile.TemporaryDirectory(prefix="kpiwatch-chart-") as folder:
        path = render_chart(Path(folder) / f"{alert_slug(entry.alert)}.png", result.series.values, result.forecast,
                            result.judgements, title=f"{title} ({anomaly.model})", unit=anomaly.unit)
        data = path.read_bytes()
        name = path.name
    return OutboxItem(f"{message_key}|chart|{entry.alert_key}", "chart", channel, title,
                      {"title": title, "filename": name}, parent_key=message_key, file=data)


def _message_key(channel: str, alert_keys: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(alert_keys)).encode()).hexdigest()[:20]
    return f"message|{channel}|{digest}"


def _title(alerts: Sequence[Alert]) -> str:
    bad = sum(1 for a in alerts if a.anomaly.is_bad)
    good = len(alerts) - bad
    parts = []
    if bad:
        parts.append(f"{bad} anomal{'y' if bad == 1 else 'ies'}")
    if good:
        parts.append(f"{good} good news")
    first = alerts[0].anomaly
    return f"kpiwatch: {' and '.join(parts)} · {format_period(first.period, first.freq)}"


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
    snoozes = config_snoozes(settings) + store.snoozes(now)
    incidents = store.open_incidents()
    plan = plan_cycle(report, settings, incidents, snoozes, now,
                      charts=settings.alerting.charts and notifier.supports_files, late_note=late_note,
                      previous_actuals=previous_actuals_of(store, incidents))
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
