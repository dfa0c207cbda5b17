"""One check's alerts grouped into incidents by root cause (pure functions: no I/O).

A check on a bad day raises several alerts for one cause: a slow mobile landing page shows as
page-load time up, bounce rate up, conversion rate down and CPA up, all on device=mobile. People
want one incident that names the cause, with the other alerts as its symptoms.

Rules (`group_alerts`):

1. Two alerts are *linked* when all three hold:
   - their segments are compatible: the same, one is the total ({}), or one contains the other
     ({channel: paid_search} and {channel: paid_search, device: mobile}); two values of different
     dimensions are *not* (cpa on device=mobile and cpa on channel=paid_search stay apart);
   - their KPIs are linked in the config: the same KPI, one lists the other in `related`, or they
     share a metric (cpa = ad_cost / conversions and cpc = ad_cost / clicks share ad_cost);
   - their episodes start within `within` periods of each other (`episode_start`).
   Linked alerts form one group, transitively (union-find).
2. Groups whose roots are the same KPI moving the same way in segments of different dimensions,
   starting within `within` periods, are one movement seen through two cuts (cpc on
   channel=paid_search and cpc on device=desktop, where most desktop clicks are paid search) and
   are merged; the root whose segment explains the larger share of the change stays the root
   (its `segment` hint, `segment_share`), then the higher score.
3. The root cause of a group is the member furthest upstream: `related` reads "when I move, look
   there", an edge from effect to cause. Among the members with no cause among the members (all
   of them when the edges make a loop), the root is the one the most members lead to, then the
   one that started first, then the one whose segment explains most, then the highest score.
   Members follow the root in cause order (fewest causes among the members first).

Groups are ordered by their root's severity, then its score, then the order of the alerts given;
the same alerts in any order give the same groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from alerts.message import alert_to_dict, plain_text
from alerts.store import IncidentGroup
from forecaster.settings import Settings
from forecaster.timegrid import periods_per_day
from forecaster.types import Alert, Anomaly, Severity, segment_key, segment_label
from forecaster.i18n import kpi_name, t, tn
from forecaster.units import format_change, format_percent, format_period

DEFAULT_WITHIN = 2
"""Periods between two episodes' starts for them to count as one incident (default 2)."""

_DAY = pd.Timedelta(days=1)
_SEVERITY_RANK = {Severity.CRITICAL: 2, Severity.WARNING: 1, Severity.GOOD_NEWS: 0}


@dataclass(frozen=True)
class AlertGroup:
    """One incident: the alert named its root cause and every alert of the group.

    members: the root first, then the others in cause order (see the module's rules).
    why: one line saying why the root is named the root cause.
    """

    root: Alert
    members: tuple[Alert, ...]
    why: str

    @property
    def kpis(self) -> tuple[str, ...]:
        """The members' KPI names, each once, in member order."""
        return tuple(dict.fromkeys(a.anomaly.kpi for a in self.members))

    @property
    def segments(self) -> tuple[Mapping[str, str], ...]:
        """The members' segments, each once, in member order ({} is the total)."""
        seen = {segment_key(a.anomaly.segment): a.anomaly.segment for a in self.members}
        return tuple(seen.values())

    @property
    def first_period(self) -> pd.Timestamp:
        """The earliest episode start among the members (`episode_start`)."""
        return min(episode_start(a.anomaly) for a in self.members)

    @property
    def severity(self) -> Severity:
        """The most severe member's severity (critical > warning > good news)."""
        return max((a.anomaly.severity for a in self.members), key=_SEVERITY_RANK.__getitem__)


def episode_start(anomaly: Anomaly) -> pd.Timestamp:
    """The first period of the anomaly's episode: `period` minus `run_length - 1` periods of `freq`."""
    offset = pd.tseries.frequencies.to_offset(anomaly.freq)
    return anomaly.period - max(anomaly.run_length - 1, 0) * offset


def periods_apart(a: Anomaly, b: Anomaly) -> int:
    """Whole periods between the two episodes' starts, in the coarser of the two frequencies
    (a day of 23 or 25 hours still counts as one)."""
    return _apart(episode_start(a), episode_start(b), min(periods_per_day(a.freq), periods_per_day(b.freq)))


def _apart(a: pd.Timestamp, b: pd.Timestamp, per_day: float) -> int:
    return int(round(abs(a - b) / _DAY * per_day))


def segments_compatible(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """The same segment, or one is the total, or one contains the other (every dimension value
    of the smaller is in the larger)."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return all(large.get(dim) == value for dim, value in small.items())


def kpi_parts(kpi: str, settings: Settings) -> frozenset[str]:
    """The metrics a KPI is computed from: its `metric`, or its ratio's numerator and
    denominator; empty for a KPI the config does not define."""
    config = settings.kpis.get(kpi)
    if config is None:
        return frozenset()
    if config.ratio is not None:
        return frozenset({config.ratio.numerator, config.ratio.denominator})
    return frozenset({config.metric}) if config.metric else frozenset()


def kpis_linked(a: str, b: str, settings: Settings) -> bool:
    """The same KPI, one lists the other in `related`, or they share a metric."""
    if a == b or b in _related(a, settings) or a in _related(b, settings):
        return True
    return bool(kpi_parts(a, settings) & kpi_parts(b, settings))


def linked(a: Alert, b: Alert, settings: Settings, within: int = DEFAULT_WITHIN) -> bool:
    """Rule 1 of the module: compatible segments, linked KPIs, starts within `within` periods."""
    x, y = a.anomaly, b.anomaly
    return (segments_compatible(x.segment, y.segment) and kpis_linked(x.kpi, y.kpi, settings)
            and periods_apart(x, y) <= within)


def segment_share(alert: Alert) -> float | None:
    """The share of the KPI's change its segment explains (the alert's own `segment` hint,
    0.79 = 79%); None when the alert has none (the total, or a hint-less alert)."""
    anomaly = alert.anomaly
    for hint in alert.hints:
        if (hint.kind == "segment" and "share" in hint.data and hint.kpi == anomaly.kpi
                and dict(hint.segment) == dict(anomaly.segment)):
            return float(hint.data["share"])
    return None


def group_alerts(alerts: Sequence[Alert], settings: Settings, within: int = DEFAULT_WITHIN) -> list[AlertGroup]:
    """The alerts of one check as incidents, each with its root cause (the module's rules).

    within: periods between episode starts that still count as one incident (default 2).
    Raises ValueError when `within` is negative.
    """
    if within < 0:
        raise ValueError(f"`within` must be 0 or more periods. Got: {within}")
    ordered = sorted(alerts, key=_identity)  # the same alerts in any order give the same groups
    # Read once per alert and per KPI pair: an alert storm compares every pair (n² / 2).
    starts = [episode_start(a.anomaly) for a in ordered]
    per_day = [periods_per_day(a.anomaly.freq) for a in ordered]
    kpi_names = sorted({a.anomaly.kpi for a in ordered})
    kpi_links = {(x, y): kpis_linked(x, y, settings) for x in kpi_names for y in kpi_names}
    parent = list(range(len(ordered)))
    for i, a in enumerate(ordered):
        for j in range(i + 1, len(ordered)):
            b = ordered[j]
            if (_find(parent, i) != _find(parent, j) and kpi_links[a.anomaly.kpi, b.anomaly.kpi]
                    and segments_compatible(a.anomaly.segment, b.anomaly.segment)
                    and _apart(starts[i], starts[j], min(per_day[i], per_day[j])) <= within):
                _union(parent, i, j)
    components: dict[int, list[Alert]] = {}
    for index, alert in enumerate(ordered):
        components.setdefault(_find(parent, index), []).append(alert)
    groups = [_rooted(members, settings) for members in components.values()]
    merged = _merge_cuts(groups, within)
    position = {id(a): n for n, a in enumerate(alerts)}
    return sorted(merged, key=lambda g: (-_SEVERITY_RANK[g.root.anomaly.severity], -g.root.anomaly.score,
                                         min(position[id(a)] for a in g.members)))


def join_open_groups(
    groups: Sequence[AlertGroup], open_groups: Mapping[int, IncidentGroup], settings: Settings,
    within: int = DEFAULT_WITHIN,
) -> tuple[list[AlertGroup], dict[int, list[Alert]]]:
    """The new groups of a check that belong to an incident still open (its members started in an
    earlier check: roas alerting a day after cpc) join it; the rest stay new incidents.

    A new group joins the open incident (the oldest, when several qualify) with a member that
    one of its alerts is linked to by rule 1 (compatible segments, linked KPIs, episodes starting
    within `within` periods), or whose root cause is its root's KPI moving the same way in
    another dimension (rule 2). Returns the new groups left and, per open incident id, the
    alerts that joined it.
    """
    left: list[AlertGroup] = []
    joined: dict[int, list[Alert]] = {}
    for group in groups:
        target = next((group_id for group_id, incident in sorted(open_groups.items())
                       if _belongs(group, incident, settings, within)), None)
        if target is None:
            left.append(group)
        else:
            joined.setdefault(target, []).extend(group.members)
    return left, joined


def _belongs(group: AlertGroup, incident: IncidentGroup, settings: Settings, within: int) -> bool:
    for member in incident.members:
        if member.state != "open":
            continue
        segment = parse_segment_key(member.segment)
        start = pd.Timestamp(member.first_period)
        for alert in group.members:
            anomaly = alert.anomaly
            near = _periods_between(episode_start(anomaly), start, anomaly.freq) <= within
            if near and segments_compatible(anomaly.segment, segment) and kpis_linked(anomaly.kpi, member.kpi, settings):
                return True
    root = group.root.anomaly
    if root.kpi == incident.root_kpi and root.direction.value == incident.direction and root.segment:
        segment = parse_segment_key(incident.root_segment)
        return (bool(segment) and set(segment) != set(root.segment)
                and _periods_between(episode_start(root), pd.Timestamp(incident.first_period), root.freq) <= within)
    return False


def _periods_between(a: pd.Timestamp, b: pd.Timestamp, freq: str) -> int:
    """Whole periods of `freq` between two times."""
    return _apart(a, b, periods_per_day(freq))


def parse_segment_key(key: str) -> dict[str, str]:
    """The stored form of a segment (`channel=email,device=mobile`; "" = the total) as a mapping."""
    return dict(part.split("=", 1) for part in key.split(",") if "=" in part)


def incident_to_dict(group: AlertGroup, number: int) -> dict[str, Any]:
    """The JSON shape of one incident (`check`/`demo --format json`, key `incidents`):
    `{"id", "root_cause": {"kpi", "segment", "direction", "period", "why"}, "members": [alert,
    ...] (root first), "kpis", "segments", "first_period", "severity"}`."""
    root = group.root.anomaly
    return {
        "id": number,
        "root_cause": {"kpi": root.kpi, "segment": dict(root.segment), "direction": root.direction.value,
                       "period": root.period.isoformat(), "why": group.why},
        "members": [alert_to_dict(a) for a in group.members],
        "kpis": list(group.kpis),
        "segments": [dict(s) for s in group.segments],
        "first_period": group.first_period.isoformat(),
        "severity": group.severity.value,
    }


def incident_text(group: AlertGroup, number: int, max_hints: int = 2) -> str:
    """A few lines of plain text: the headline (root cause and the number of alerts), why, one
    line per member (its severity and headline), then the root's top `max_hints` hints. An
    incident of one alert is its headline and that alert's line only (there is no why to tell)."""
    count = len(group.members)
    headline = tn("incident.text_headline", count, number=number, root=root_headline(group))
    members = [f"  {plain_text(a, max_hints=0)}" for a in group.members]
    if count == 1:
        return "\n".join([headline, *members])
    lines = [headline, t("incident.why_line", why=group.why), *members]
    lines.extend(f"  - {hint.text}" for hint in group.root.hints[:max_hints])
    return "\n".join(lines)


def root_headline(group: AlertGroup) -> str:
    """What the root did, short: "page_load_time on device=mobile rose 149.7% since Mon 08 Dec
    2025" (the change at the latest period against its expected value; since its episode began)."""
    anomaly = group.root.anomaly
    where = t("word.on_segment", segment=segment_label(anomaly.segment)) if anomaly.segment else ""
    change = format_change(anomaly.actual, anomaly.expected, anomaly.unit).lstrip("+-")
    return t("incident.root_headline", kpi=kpi_name(anomaly.kpi), where=where, verb=t(f"word.{anomaly.direction.value}"),
             change=change, start=format_period(episode_start(anomaly), anomaly.freq))


# -- the root of a group ---------------------------------------------------------------------


def _rooted(members: Sequence[Alert], settings: Settings) -> AlertGroup:
    """A group of linked alerts with its root and cause order (read per KPI: an alert storm
    holds many alerts of few KPIs)."""
    present = {a.anomaly.kpi for a in members}
    upstream = _upstream(present, settings)
    count = Counter(a.anomaly.kpi for a in members)
    reach = {kpi: sum(count[other] for other in present if kpi in upstream[other]) for kpi in present}
    start = {id(a): episode_start(a.anomaly) for a in members}
    candidates = [a for a in members if not upstream[a.anomaly.kpi]] or list(members)
    root = min(candidates, key=lambda a: (-reach[a.anomaly.kpi], start[id(a)], -(segment_share(a) or 0.0),
                                          -a.anomaly.score, _identity(a)))
    cause = root.anomaly.kpi
    rest = sorted((a for a in members if a is not root),
                  key=lambda a: (cause not in upstream[a.anomaly.kpi], len(upstream[a.anomaly.kpi]), start[id(a)],
                                 -a.anomaly.score, _identity(a)))
    downstream = [a.anomaly.kpi for a in rest if cause in upstream[a.anomaly.kpi]]
    return AlertGroup(root, (root, *rest), _why(root, rest, downstream))


def _upstream(kpis: set[str], settings: Settings) -> dict[str, frozenset[str]]:
    """Each KPI's causes among `kpis`, transitively along `related` (effect -> cause); a KPI is
    never its own cause, even in a loop."""
    found = {}
    for kpi in kpis:
        seen: set[str] = set()
        todo = [k for k in _related(kpi, settings) if k in kpis]
        while todo:
            nxt = todo.pop()
            if nxt not in seen and nxt != kpi:
                seen.add(nxt)
                todo.extend(k for k in _related(nxt, settings) if k in kpis)
        found[kpi] = frozenset(seen)
    return found


def _why(root: Alert, rest: Sequence[Alert], downstream: Sequence[str]) -> str:
    """The group's `why`; downstream: the KPIs of the members the root is a cause of."""
    kpi = root.anomaly.kpi
    if not rest:
        return t("incident.why_alone", moved=_moved(root, rest))
    names = list(dict.fromkeys(downstream))
    if names:
        return t("incident.why_upstream", moved=_moved(root, rest), names=", ".join(kpi_name(n) for n in names))
    others = [k for k in dict.fromkeys(a.anomaly.kpi for a in rest) if k != kpi]
    if others:
        return t("incident.why_shared", moved=_moved(root, rest), names=", ".join(kpi_name(n) for n in others))
    return t("incident.why_same_kpi", moved=_moved(root, rest))


def _moved(root: Alert, rest: Sequence[Alert]) -> str:
    """"cpc moved first on channel=paid_search (from Sun 07 Dec 2025)", or "... moved from ..."
    when another member started earlier (or there is none)."""
    anomaly = root.anomaly
    where = t("word.on_segment", segment=segment_label(anomaly.segment)) if anomaly.segment else t("word.on_total")
    start = episode_start(anomaly)
    when = format_period(start, anomaly.freq)
    first = rest and all(start <= episode_start(a.anomaly) for a in rest)
    return t("incident.moved_first" if first else "incident.moved_from", kpi=kpi_name(anomaly.kpi), where=where,
             start=when)


# -- one movement seen through two cuts ------------------------------------------------------


def _merge_cuts(groups: Sequence[AlertGroup], within: int) -> list[AlertGroup]:
    """Groups whose roots are one KPI moving one way in segments of different dimensions,
    starting within `within` periods, merged; the root whose segment explains most leads."""
    parent = list(range(len(groups)))
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if _same_movement(groups[i].root.anomaly, groups[j].root.anomaly, within):
                _union(parent, i, j)
    clusters: dict[int, list[AlertGroup]] = {}
    for index, group in enumerate(groups):
        clusters.setdefault(_find(parent, index), []).append(group)
    return [cluster[0] if len(cluster) == 1 else _merged(cluster) for cluster in clusters.values()]


def _same_movement(a: Anomaly, b: Anomaly, within: int) -> bool:
    return (a.kpi == b.kpi and a.direction is b.direction and bool(a.segment) and bool(b.segment)
            and set(a.segment) != set(b.segment) and periods_apart(a, b) <= within)


def _merged(cluster: Sequence[AlertGroup]) -> AlertGroup:
    ranked = sorted(cluster, key=lambda g: (-(segment_share(g.root) or 0.0), -g.root.anomaly.score, _identity(g.root)))
    lead, others = ranked[0], ranked[1:]
    members = tuple(a for g in ranked for a in g.members)
    cuts = ", ".join(t("incident.cut", kpi=kpi_name(g.root.anomaly.kpi), segment=segment_label(g.root.anomaly.segment))
                     for g in others)
    shares = [segment_share(g.root) for g in ranked]
    where = segment_label(lead.root.anomaly.segment)
    if all(share is not None for share in shares):
        because = t("incident.explains_more", segment=where,
                    shares=t("incident.vs").join(format_percent(s) for s in shares if s is not None))
    else:
        because = t("incident.higher_score", segment=where)
    base = lead.why if len(lead.members) > 1 else _moved(lead.root, members[1:])
    why = t("incident.cuts_one" if len(others) == 1 else "incident.cuts_other", base=base, cuts=cuts, because=because)
    return AlertGroup(lead.root, members, why)


# -- helpers ---------------------------------------------------------------------------------


def _related(kpi: str, settings: Settings) -> Sequence[str]:
    config = settings.kpis.get(kpi)
    return config.related if config is not None else ()


def _identity(alert: Alert) -> tuple[str, str, str, pd.Timestamp]:
    """A total order on alerts (kpi, segment, direction, period), for deterministic output."""
    a = alert.anomaly
    return a.kpi, segment_key(a.segment), a.direction.value, a.period


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _union(parent: list[int], i: int, j: int) -> None:
    a, b = _find(parent, i), _find(parent, j)
    if a != b:
        parent[max(a, b)] = min(a, b)
