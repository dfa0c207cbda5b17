"""What people say about an incident, from a Slack button or `kpiwatch feedback`, and what it does.

Verdicts (one row per incident and verdict in the store: a second click records nothing):
- `expected`: a known campaign or event. The incident closes; its members' alerted periods are
  normal for the detector from now on (kept in the training data as they are, not pulled back
  to the band, their errors do not widen the band), so their stored states are dropped and the
  next cycle rebuilds them by walking forward with that knowledge.
- `false_alarm`: these series were too sensitive. The incident closes; each member's band
  widens by the rule in `forecaster.detect.feedback` (bounded, decaying), from the next period on.
- `snooze`: the members are silenced for `SNOOZE_DAYS` days; the incident stays open.
- `resolve`: the incident closes now (handled); a member that alerts again opens a new one.

Each verdict edits the incident's cards once ("marked false alarm by @ana"), through the outbox,
so a Slack outage delays the edit but loses nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from alerts.actions import Click
from alerts.store import FeedbackRecord, IncidentGroup, OutboxItem, Store
from forecaster.detect.feedback import SeriesFeedback
from forecaster.i18n import kpi_name, t
from forecaster.settings import Settings
from forecaster.types import BadInputError
from forecaster.units import format_moment

VERDICTS = ("expected", "false_alarm", "snooze", "resolve")
SNOOZE_DAYS = 7
SIGNING_SECRET_ENV = "SLACK_SIGNING_SECRET"


def said(verdict: str) -> str:
    """What a verdict did, for the card's feedback line: "marked false alarm" ("gemarkeerd als vals alarm")."""
    return t(f"feedback.{verdict}", days=SNOOZE_DAYS) if verdict == "snooze" else t(f"feedback.{verdict}")


@dataclass(frozen=True)
class FeedbackOutcome:
    """What one verdict did: recorded (False: the same verdict was given before), the line shown
    on the cards, and the incident."""

    recorded: bool
    line: str
    group: IncidentGroup


def verdict_of(text: str) -> str:
    """A verdict as typed (`false-alarm`, `False_Alarm`) in its stored form; BadInputError if unknown."""
    verdict = text.strip().lower().replace("-", "_")
    if verdict not in VERDICTS:
        raise BadInputError(f"unknown verdict {text!r}: use one of expected, false-alarm, snooze, resolve")
    return verdict


def apply_feedback(store: Store, settings: Settings, ref: str, verdict: str, user: str, now: datetime,
                   source: str = "cli") -> FeedbackOutcome:
    """Record `verdict` (see the module docstring) on the incident `ref` (its number or key) by
    `user`, act on it and queue the cards' edit; the same verdict twice records and queues nothing.
    source: where it came from ("slack" or "cli"), kept as the row's note."""
    group = store.group(ref)
    if group is None:
        raise BadInputError(f"no incident {ref!r}: `kpiwatch alerts` lists the incidents and their numbers")
    who = f"@{user}" if user and not user.startswith("@") else (user or t("feedback.someone"))
    line = t("feedback.line", said=said(verdict), who=who, at=format_moment(pd.Timestamp(now)))
    edits = [OutboxItem(f"feedback|{group.key}|{verdict}|{key}", "feedback", key.split("|")[1], line, {"line": line},
                        parent_key=key) for key in group.message_keys]
    recorded = store.record_verdict(
        group, verdict, user, f"{source}: {line}", now, close=verdict in ("expected", "false_alarm", "resolve"),
        snooze_until=now + timedelta(days=SNOOZE_DAYS) if verdict == "snooze" else None,
        forget=[(m.kpi, m.segment) for m in group.members] if verdict == "expected" else (), items=edits)
    return FeedbackOutcome(recorded, line, group)


def series_feedback(records: Sequence[FeedbackRecord],
                    as_announced: Mapping[str, str] | None = None) -> dict[tuple[str, str], SeriesFeedback]:
    """The detector's view of the recorded verdicts, per (kpi, segment): when each false alarm
    was given, and which periods were marked expected (each member's alerted periods).

    as_announced: kpi -> its frequency (pandas alias): date each false alarm back to the end of
    the member's last alerted period (a replay over history: "had we said so when it was
    announced"); default None: when it was given. The detector applies a false alarm to the
    periods that end after it was given."""
    false_alarms: dict[tuple[str, str], list[pd.Timestamp]] = {}
    expected: dict[tuple[str, str], list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for record in records:
        where = (record.kpi, record.segment)
        if record.verdict == "false_alarm":
            given = pd.Timestamp(record.created_at)
            if as_announced is not None and record.kpi in as_announced:
                given = pd.Timestamp(record.last_period) + pd.tseries.frequencies.to_offset(as_announced[record.kpi])
            false_alarms.setdefault(where, []).append(given)
        elif record.verdict == "expected":
            expected.setdefault(where, []).append((pd.Timestamp(record.first_period), pd.Timestamp(record.last_period)))
    return {where: SeriesFeedback(tuple(false_alarms.get(where, ())), tuple(expected.get(where, ())))
            for where in sorted(set(false_alarms) | set(expected))}


def feedback_notes(feedback: Mapping[tuple[str, str], SeriesFeedback], now: datetime) -> dict[tuple[str, str], str]:
    """What feedback changed per series, for the next card and `kpiwatch alerts`
    ("sensitivity lowered: band x1.25 after 1 false alarm ..."); series without a change are left out."""
    at = pd.Timestamp(now)
    notes = {}
    for (kpi, segment), item in feedback.items():
        text = item.describe(at)
        if text:
            notes[(kpi, segment)] = t("feedback.note", kpi=kpi_name(kpi), where=f" {segment}" if segment else "",
                                      text=text)
    return notes


def buttons_enabled(supports_threads: bool) -> bool:
    """Cards carry the feedback buttons when a bot posts them (a webhook's cards cannot be edited)
    and the daemon can verify the clicks (`SLACK_SIGNING_SECRET` is set)."""
    return supports_threads and bool(os.environ.get(SIGNING_SECRET_ENV, "").strip())


def apply_click(store: Store, settings: Settings, click: Click, now: datetime) -> str:
    """A verified button click (`alerts.actions`): the verdict on the card's incident, by the
    Slack user who clicked; returns the line shown ("marked false alarm by @ana ...")."""
    outcome = apply_feedback(store, settings, click.incident, click.verdict, click.user_name or click.user_id, now,
                             source="slack")
    return outcome.line if outcome.recorded else t("feedback.already", said=said(click.verdict))
