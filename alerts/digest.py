"""The weekly digest: last week's KPIs in one Slack message per channel (issue 20).

Monday to Sunday in the config's timezone, by funnel phase (see, think, do, care; the KPI's
`phase`, else its catalogue entry's; KPIs without one last): each KPI's week (a count summed, a
ratio from its summed parts) against what kpiwatch expected for those days, the KPIs furthest
from expected and from their targets, the incidents of the week and what became of them, and a
link to the report (`alerting.report_url`).

Two halves: `gather_digest` reads what it needs (the source's values of the week, the store's
evaluations of those days, a check for the days the store lacks, the targets' forecasts, the
store's incident groups and feedback) into a `DigestData`; `build_digest` turns that into one
channel's message (Block Kit and plain text), pure. `queue_digest` puts one message per
channel in the outbox in one transaction, each under the key `digest|<channel>|<week start>`, so
a second run (a rerun, a restart, the job firing twice) queues nothing; delivery sends them like
alerts. Every text comes from the catalogues (`digest.*`), numbers and dates from
`forecaster.units`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from scipy import stats

from alerts.store import IncidentGroup, OutboxItem, Store
from forecaster.catalog import load_catalog
from forecaster.executor import Executor
from forecaster.goals import GoalStatus, target_status
from forecaster.i18n import kpi_name, t
from forecaster.pipeline import check, kpi_total_series
from forecaster.schedule import parse_schedule
from forecaster.settings import KPIConfig, Settings
from forecaster.sources import make_source
from forecaster.sources.frames import local_midnight
from forecaster.types import BadInputError, Direction
from forecaster.units import format_change, format_period, format_value

PHASES = ("see", "think", "do", "care")
LATE_LIMIT = timedelta(days=1)
"""A digest whose scheduled time passed while the daemon was down is still sent when the daemon
is back within this long; an older one is stale and skipped."""
SECTION_CHARS = 2900  # a section's text (Slack allows 3000)
MAX_BLOCKS = 50  # Slack's limit per message


# -- the week ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Week:
    """Monday to Sunday in `timezone`. start, end: the daily labels of Monday and Sunday
    (midnight UTC of the local date, as daily periods are labelled)."""

    start: pd.Timestamp
    timezone: str

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=6)

    @property
    def begins(self) -> pd.Timestamp:
        """The instant the week starts: Monday's local midnight, UTC."""
        return local_midnight(self.start.date(), self.timezone)

    @property
    def ends(self) -> pd.Timestamp:
        """The instant after the week: the next Monday's local midnight, UTC."""
        return local_midnight((self.start + pd.Timedelta(days=7)).date(), self.timezone)

    def periods(self, freq: str) -> pd.DatetimeIndex:
        """The week's periods of a KPI: 7 days, or its hours (UTC; 167 or 169 when the clocks change)."""
        if freq == "D":
            return pd.date_range(self.start, self.end, freq="D")
        return pd.date_range(self.begins, self.ends - pd.Timedelta(hours=1), freq="h")


def last_full_week(at: pd.Timestamp, timezone: str) -> Week:
    """The last Monday-to-Sunday week (in `timezone`) that ended at or before `at`."""
    at = pd.Timestamp(at)
    local = (at.tz_localize("UTC") if at.tzinfo is None else at).tz_convert(timezone)
    monday = local.date() - timedelta(days=local.weekday() + 7)
    return Week(pd.Timestamp(monday, tz="UTC"), timezone)


def due_week(settings: Settings, now: pd.Timestamp) -> Week | None:
    """The week whose digest is due at `now`: the last full week before the latest scheduled
    time (`digest.schedule`) at or before `now`; None when that time is more than `LATE_LIMIT`
    ago (nothing due: the job ran at another moment, or the daemon was down too long)."""
    trigger = parse_schedule(settings.digest.schedule, settings.timezone)
    moment = pd.Timestamp(now).to_pydatetime()
    if not hasattr(trigger, "fields"):  # an interval (`every 30 seconds`): due whenever it runs
        return last_full_week(now, settings.timezone)
    fired = None
    nxt = trigger.get_next_fire_time(None, moment - LATE_LIMIT)
    while nxt is not None and nxt <= moment:
        fired = nxt
        nxt = trigger.get_next_fire_time(nxt, nxt + timedelta(seconds=1))
    return None if fired is None else last_full_week(pd.Timestamp(fired), settings.timezone)


def digest_key(channel: str, week: Week) -> str:
    """The outbox key of a channel's digest of `week`: one per channel and week, ever."""
    return f"digest|{channel}|{week.start.date().isoformat()}"


# -- what goes in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KPIWeek:
    """One KPI's week. actual: the week's total (a count) or its ratio of summed parts; over
    the periods with an expected value (`compared`): actual_compared, expected and score (how
    many standard deviations of the week's band the week is from expected)."""

    name: str
    phase: str | None
    unit: str
    good: Direction
    is_ratio: bool
    actual: float
    periods: int
    compared: int = 0
    actual_compared: float = math.nan
    expected: float = math.nan
    score: float = math.nan
    z: float = 2.576  # the band's half-width in standard deviations (from the KPI's level)

    @property
    def has_expected(self) -> bool:
        return self.compared > 0 and math.isfinite(self.expected) and math.isfinite(self.actual_compared)

    @property
    def verdict(self) -> str:
        """usual (inside the week's band), worse or better (outside, in the bad or good direction)."""
        if not math.isfinite(self.score) or abs(self.score) <= self.z:
            return "usual"
        up = self.score > 0
        return "better" if up == (self.good is Direction.UP) else "worse"


@dataclass(frozen=True)
class DigestIncident:
    """An incident group of the week, with the feedback given on it: (verdict, user)."""

    group: IncidentGroup
    feedback: tuple[tuple[str, str], ...] = ()

    @property
    def kpis(self) -> set[str]:
        return {self.group.root_kpi} | {m.kpi for m in self.group.members}


@dataclass(frozen=True)
class DigestData:
    """Everything a week's digest says, for every channel (`build_digest` picks each one's KPIs)."""

    week: Week
    kpis: tuple[KPIWeek, ...]
    targets: tuple[GoalStatus, ...] = ()
    incidents: tuple[DigestIncident, ...] = ()
    report_url: str = ""


def phase_of(name: str, kpi: KPIConfig) -> str | None:
    """The KPI's funnel phase: its own `phase`, else its catalogue entry's (by its name)."""
    if kpi.phase:
        return kpi.phase
    found = load_catalog().get(name, {}).get("phase")
    return found if found in PHASES else None


def week_of(name: str, kpi: KPIConfig, parts: pd.DataFrame, judged: Mapping[pd.Timestamp, Any],
            periods: int, phase: str | None = None) -> KPIWeek:
    """One KPI's week from the source's sums per period and the judgements of its periods.

    parts: indexed by period; a count's column `value`, a ratio's `numerator` and `denominator`.
    judged: period -> anything with `expected`, `lower`, `upper` (a stored evaluation or a
    check's judgement); periods without one (or without a value) are left out of the comparison.
    A ratio's expected value is the daily expected ratios weighted by the week's denominators:
    what the week's ratio would have been had every day been as expected.
    """
    z = float(stats.norm.ppf(0.5 + kpi.level / 2))
    ratio = kpi.ratio is not None
    if ratio:
        numerator, denominator = parts["numerator"], parts["denominator"]
        usable = numerator.notna() & (denominator > 0)
        total = denominator[usable].sum()
        actual = float(numerator[usable].sum() / total) if total > 0 else math.nan
    else:
        values = parts["value"].dropna()
        actual = float(values.sum()) if len(values) else math.nan
    base = KPIWeek(name, phase, kpi.unit, kpi.good, ratio, actual, periods, z=z)
    rows = []
    for period in parts.index:
        record = judged.get(period)
        expected = getattr(record, "expected", None)
        if record is None or expected is None or not math.isfinite(expected):
            continue
        sigma = (_finite(record.upper) - _finite(record.lower)) / (2 * z)
        if ratio:
            num, den = parts.at[period, "numerator"], parts.at[period, "denominator"]
            if not (math.isfinite(num) and den > 0):
                continue
            rows.append((num, den, expected, sigma))
        else:
            value = parts.at[period, "value"]
            if math.isfinite(value):
                rows.append((value, 1.0, expected, sigma))
    if not rows:
        return base
    frame = pd.DataFrame(rows, columns=["value", "weight", "expected", "sigma"])
    if ratio:
        weight = frame["weight"] / frame["weight"].sum()
        seen = float(frame["value"].sum() / frame["weight"].sum())
        wanted = float((frame["expected"] * weight).sum())
        spread = math.sqrt(float(((frame["sigma"] * weight) ** 2).sum()))
    else:
        seen, wanted = float(frame["value"].sum()), float(frame["expected"].sum())
        spread = math.sqrt(float((frame["sigma"] ** 2).sum()))
    score = (seen - wanted) / spread if spread > 0 and math.isfinite(spread) else math.nan
    return KPIWeek(name, phase, kpi.unit, kpi.good, ratio, actual, periods, len(frame), seen, wanted, score, z)


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.nan


def gather_digest(settings: Settings, store: Store | None, week: Week, executor: Executor | None = None) -> DigestData:
    """Read what the digest of `week` says (see the module docstring).

    store: the state store (None: a dry run without one: expected values from a check, no
    incidents). A KPI whose periods of the week are not all in the store's evaluations is
    checked as of the end of the week (one check for all such KPIs, on `executor` if given).
    Raises SourceError when a source cannot be read.
    """
    judged: dict[str, dict[pd.Timestamp, Any]] = {}
    missing = []
    for name, kpi in settings.kpis.items():
        periods = week.periods(kpi.freq)
        found = {}
        if store is not None:
            records = store.evaluations_of(name, "", periods[0].to_pydatetime(), periods[-1].to_pydatetime())
            found = {pd.Timestamp(r.period): r for r in records if r.expected is not None}
        judged[name] = found
        if len(found) < len(periods):
            missing.append(name)
    if missing:
        report = check(settings, at=week.ends, kpis=missing, executor=executor)
        for result in report.results:
            if not result.series.segment:
                mine = judged[result.series.name]
                for judgement in result.judgements:
                    mine.setdefault(pd.Timestamp(judgement.period), judgement)
    weeks = []
    for name, kpi in settings.kpis.items():
        periods = week.periods(kpi.freq)
        weeks.append(week_of(name, kpi, _parts(settings, kpi, periods), judged[name], len(periods),
                             phase_of(name, kpi)))
    incidents: list[DigestIncident] = []
    if store is not None:
        for group in reversed(store.groups_during(week.begins.to_pydatetime(), week.ends.to_pydatetime())):
            said = tuple((row["verdict"], row["user"]) for row in store.feedback_for(group.key))
            incidents.append(DigestIncident(group, said))
    return DigestData(week, tuple(weeks), tuple(_targets(settings, week)), tuple(incidents),
                      getattr(settings.alerting, "report_url", "") or "")


def _parts(settings: Settings, kpi: KPIConfig, periods: pd.DatetimeIndex) -> pd.DataFrame:
    """The KPI's total per period of the week from its source: `value`, or `numerator` and
    `denominator` (summed parts, after the KPI's filter); NaN where the source has nothing."""
    source = make_source(settings.sources[kpi.source], settings.timezone, kpi.source)
    frame = source.fetch(kpi.metrics, sorted(kpi.filter), kpi.freq, start=periods[0], end=periods[-1])
    for dimension, values in kpi.filter.items():
        frame = frame[frame[dimension].astype(str).isin(values)]
    sums = frame.groupby("timestamp")[kpi.metrics].sum(min_count=1) if len(frame) else pd.DataFrame(
        columns=kpi.metrics, dtype=float)
    sums.index = pd.DatetimeIndex(sums.index)
    sums = sums.reindex(periods)
    if kpi.ratio is not None:
        return pd.DataFrame({"numerator": sums[kpi.ratio.numerator].astype(float),
                             "denominator": sums[kpi.ratio.denominator].astype(float)}, index=periods)
    return pd.DataFrame({"value": sums[kpi.metrics[0]].astype(float)}, index=periods)


def _targets(settings: Settings, week: Week) -> list[GoalStatus]:
    """The outlook of every KPI target whose deadline is after the week (a forecast each, from
    the KPI's total up to the end of the week), least likely to be reached first."""
    found = []
    for name, kpi in settings.kpis.items():
        if kpi.target is None:
            continue
        last = week.periods(kpi.freq)[-1]
        try:
            series = kpi_total_series(settings, name, at=week.ends)
            found.append(target_status(name, kpi, series, last, settings.country))
        except BadInputError:  # the deadline has passed, or no data: nothing to say about it
            continue
    return sorted(found, key=lambda s: (s.probability, s.kpi))


# -- the message ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """One channel's digest: the plain text (the dry run's print, Slack's fallback) and the blocks."""

    channel: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def digest_channels(settings: Settings) -> list[str]:
    """Where the digest goes: `digest.channels`, else every routed channel (in route order)."""
    return list(dict.fromkeys(settings.digest.channels or [r.channel for r in settings.alerting.routes]))


def channel_kpis(settings: Settings, channel: str) -> list[str]:
    """The KPIs a channel's digest covers: those its routes take (any severity), every KPI when
    no route names the channel (config order)."""
    routes = [r for r in settings.alerting.routes if r.channel == channel]
    if not routes or any(not r.kpis and not r.tags for r in routes):
        return list(settings.kpis)
    return [name for name, kpi in settings.kpis.items()
            if any(name in r.kpis or set(kpi.tags) & set(r.tags) for r in routes)]


def build_digest(data: DigestData, channel: str, kpis: Iterable[str] | None = None, top: int = 3) -> Digest:
    """One channel's digest of `data` (pure): its KPIs (`kpis`; None: all) by phase, the `top`
    furthest from expected and from their targets, the incidents that touch its KPIs, the report
    link. Texts in the current locale (`forecaster.i18n.use_locale`)."""
    wanted = set(kpis) if kpis is not None else {k.name for k in data.kpis}
    mine = [k for k in data.kpis if k.name in wanted]
    title = t("digest.title", start=format_period(data.week.start, "D"), end=format_period(data.week.end, "D"))
    parts: list[tuple[str, list[str]]] = []  # (heading, bulleted lines); heading "" = a paragraph
    parts.append(("", [t("digest.intro", timezone=data.week.timezone)]))
    for phase in (*PHASES, None):
        lines = [_kpi_line(k) for k in mine if k.phase == phase]
        if lines:
            parts.append((t(f"phase.{phase}") if phase else t("digest.phase_other"), lines))
    furthest = sorted((k for k in mine if k.has_expected and math.isfinite(k.score)),
                      key=lambda k: (-abs(k.score), k.name))[:top]
    if furthest:
        parts.append((t("digest.furthest_expected"), [_furthest_line(k) for k in furthest]))
    targets = [s for s in data.targets if s.kpi in wanted][:top]
    if targets:
        parts.append((t("digest.furthest_target"), [_target_line(s) for s in targets]))
    incidents = [i for i in data.incidents if i.kpis & wanted]
    if incidents:
        parts.append((t("digest.incidents", count=len(incidents)), [_incident_line(i) for i in incidents]))
    else:
        parts.append(("", [t("digest.no_incidents")]))
    footer = t("digest.footer")
    text = _plain(title, parts, data.report_url, footer)
    return Digest(channel, text, _blocks(title, parts, data.report_url, footer))


def _kpi_line(week: KPIWeek) -> str:
    """"*sessions*: 191,679 in total · expected 188,300 · +1.8% · within the usual range"."""
    name = f"*{kpi_name(week.name)}*"
    value = t("digest.week_mean" if week.is_ratio else "digest.week_total", value=format_value(week.actual, week.unit))
    if not week.has_expected:
        return t("digest.kpi_no_expected", kpi=name, value=value)
    line = t("digest.kpi", kpi=name, value=value, expected=format_value(week.expected, week.unit),
             change=format_change(week.actual_compared, week.expected, week.unit),
             verdict=t(f"digest.verdict.{week.verdict}"))
    if week.compared < week.periods:
        line += t("digest.partial", compared=week.compared, periods=week.periods)
    return line


def _furthest_line(week: KPIWeek) -> str:
    """"*cpc* (Do): +6.1% against expected · worse than expected"."""
    phase = t(f"phase.{week.phase}") if week.phase else t("digest.phase_other")
    return t("digest.furthest", kpi=f"*{kpi_name(week.name)}*", phase=phase,
             change=format_change(week.actual_compared, week.expected, week.unit),
             verdict=t(f"digest.verdict.{week.verdict}"))


def _target_line(status: GoalStatus) -> str:
    """"*conversion_rate*: 2.66% now (mean of the last 7 days) · target 2.70% by Sat 31 Jan 2026 · 26% likely: at risk"."""
    return t("digest.target", kpi=f"*{kpi_name(status.kpi)}*", current=format_value(status.current, status.unit),
             target=format_value(status.target, status.unit), by=format_period(status.by, "D"),
             chance=f"{round(status.probability * 100)}%",
             status=t("digest.on_track" if status.on_track else "digest.at_risk"))


def _incident_line(incident: DigestIncident) -> str:
    """"#3 *cpa* on channel=paid_search and 3 related, since Sun 07 Dec 2025: still open"."""
    group = incident.group
    where = t("digest.on_segment", segment=group.root_segment.replace(",", ", ")) if group.root_segment else ""
    others = len({(m.kpi, m.segment) for m in group.members} - {(group.root_kpi, group.root_segment)})
    more = t("digest.related", count=others) if others else ""
    if group.state == "open":
        state = t("digest.state.open")
    else:
        closed = {"back to normal": "back_to_normal"}.get(group.closed_by, group.closed_by)
        key = closed if closed in ("back_to_normal", "expected", "false_alarm", "resolve") else "closed"
        state = t(f"digest.state.{key}")
    line = t("digest.incident", id=group.id, kpi=f"*{kpi_name(group.root_kpi)}*", where=where, more=more,
             since=format_period(pd.Timestamp(group.first_period), "D"), state=state)
    said = [t("digest.said", verdict=t(f"digest.verdicts.{verdict}"), user=user) if user else
            t(f"digest.verdicts.{verdict}") for verdict, user in incident.feedback if verdict in _VERDICTS]
    if said:
        line += t("digest.feedback", said=", ".join(said))
    return line


_VERDICTS = ("expected", "false_alarm", "snooze", "resolve")


def _plain(title: str, parts: Sequence[tuple[str, list[str]]], report_url: str, footer: str) -> str:
    lines = [title]
    for heading, body in parts:
        lines.append("")
        if heading:
            lines.append(heading)
        lines.extend(f"• {line}" if heading else line for line in body)
    if report_url:
        lines.extend(["", t("digest.report_text", url=report_url)])
    lines.extend(["", footer])
    return "\n".join(lines).replace("*", "")


def _blocks(title: str, parts: Sequence[tuple[str, list[str]]], report_url: str, footer: str) -> list[dict[str, Any]]:
    """Block Kit: a header, a section per part (split to stay under Slack's 3000 characters),
    the report link, a context footer; at most `MAX_BLOCKS`."""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    for heading, body in parts:
        chunks = _chunks([f"*{heading}*"] if heading else [], [f"• {line}" if heading else line for line in body])
        blocks.extend({"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in chunks)
    tail: list[dict[str, Any]] = []
    if report_url:  # a link, not a URL button: a button's click would reach /slack/actions as a foreign action
        tail.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{report_url}|{t('digest.report_button')}>"}})
    tail.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    room = MAX_BLOCKS - len(tail)
    if len(blocks) > room:
        cut = len(blocks) - room + 1
        blocks = blocks[:room - 1] + [{"type": "section", "text": {"type": "mrkdwn",
                                                                   "text": t("digest.cut", count=cut)}}]
    return blocks + tail


def _chunks(head: list[str], lines: list[str]) -> list[str]:
    """`head` + `lines` joined by newlines, in pieces of at most `SECTION_CHARS`."""
    chunks, current = [], list(head)
    for line in lines:
        line = line[:SECTION_CHARS]
        if current and len("\n".join([*current, line])) > SECTION_CHARS:
            chunks.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        chunks.append("\n".join(current))
    return chunks


# -- into the outbox ------------------------------------------------------------------------------


def digest_items(data: DigestData, settings: Settings, channels: Sequence[str] | None = None) -> list[OutboxItem]:
    """One outbox message per channel (`channels`, default `digest_channels`), keyed `digest_key`."""
    items = []
    for channel in channels if channels is not None else digest_channels(settings):
        digest = build_digest(data, channel, channel_kpis(settings, channel), settings.digest.top)
        items.append(OutboxItem(digest_key(channel, data.week), "message", channel, digest.text,
                                {"blocks": digest.blocks, "digest": data.week.start.date().isoformat()}))
    return items


def queue_digest(settings: Settings, store: Store, week: Week, now: datetime,
                 executor: Executor | None = None) -> int:
    """Queue the digest of `week` for every channel that has not had it, in one transaction;
    returns the new rows (0 when every channel's is queued already: nothing is read then)."""
    channels = [c for c in digest_channels(settings) if store.get(digest_key(c, week)) is None]
    if not channels:
        return 0
    data = gather_digest(settings, store, week, executor)
    return store.queue(digest_items(data, settings, channels), now)


def digest_now(settings: Settings) -> pd.Timestamp:
    """"Now" for `kpiwatch digest` without --at: the first KPI's source's clock (the demo's fixed
    one, else the wall clock)."""
    name, kpi = next(iter(settings.kpis.items()))
    return make_source(settings.sources[kpi.source], settings.timezone, kpi.source).now()
