"""From the anomalous series of one KPI to alerts that say where to look.

One alert per KPI, period and direction: its headline is the segment that concentrates the
deviation (device=mobile carries 90% of a conversion-rate drop with 50% of the sessions), not
every segment the drop touches; those others become hints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from forecaster.calendar import Calendar
from forecaster.i18n import kpi_name, metric_name, t
from forecaster.types import Alert, Anomaly, Direction, Hint, KPISeries, segment_label
from forecaster.units import (
    DEFAULT_CURRENCY,
    MONEY_METRICS,
    format_change,
    format_money,
    format_number,
    format_ordinal,
    format_percent,
    format_period,
    format_points,
    format_value,
)

# A segment must concentrate at least this much more of the deviation than of the volume to be
# the headline instead of the KPI's total.
MIN_CONCENTRATION = 0.10
# ... or be the only anomalous value of its dimension and carry at least this share of the change.
MIN_SHARE_ALONE = 0.5
# A segment at or below this fraction of its expected value, alone in its dimension, reads as a
# tracking or data fault (an email outage of tracking, not a market move).
NEAR_ZERO = 0.10


@dataclass(frozen=True)
class Evaluated:
    """What the explainer needs of one evaluated series at the judged period."""

    series: KPISeries
    actual: float
    expected: float
    anomaly: Anomaly | None
    flagged: bool = False  # outside its band at the period, whatever the direction rules say
    score: float = 0.0
    good: Direction = Direction.UP
    unit: str = ""
    numerator: str | None = None  # a ratio's numerator metric, to price the impact
    denominator_name: str | None = None  # a ratio's denominator metric
    currency: str = DEFAULT_CURRENCY  # ISO 4217 code of money metrics (the unit's, else the config's)


def build_alerts(evaluated: Sequence[Evaluated], calendar: Calendar = Calendar()) -> list[Alert]:
    """Alerts for one KPI at one period, most severe first.

    Per direction, each segment dimension (channel, device, ...) whose deviation is concentrated
    in one anomalous value gets an alert on that value; when no dimension is concentrated, the
    KPI's total carries the alert. A conversion-rate drop on mobile and a CPA rise from a paid
    channel thus give two alerts, not one per touched segment.
    """
    alerts = []
    for direction in ("up", "down"):
        group = [e for e in evaluated if e.anomaly is not None and e.anomaly.direction.value == direction]
        for headline in _headlines(group, evaluated):
            alerts.append(_alert_for(headline, group, evaluated, calendar))
    return sorted(alerts, key=lambda a: (a.anomaly.severity.value != "critical", -a.anomaly.score))


def _headlines(group: list[Evaluated], everything: Sequence[Evaluated]) -> list[Evaluated]:
    """The series that carry alerts: the most concentrated anomalous value per dimension."""
    best: dict[str, tuple[float, Evaluated]] = {}
    for item in group:
        if not item.series.segment:
            continue
        (dimension,) = item.series.segment
        shares = _shares(item, everything)
        alone = sum(1 for e in group if set(e.series.segment) == {dimension}) == 1
        # The only anomalous value of its dimension that carries most of the change is the place
        # to look even when it is also most of the volume (paid_search within the paid channels).
        located = _concentration(shares) >= MIN_CONCENTRATION or (alone and shares[0] >= MIN_SHARE_ALONE)
        if located and _concentration(shares) > best.get(dimension, (-2.0, item))[0]:
            best[dimension] = (_concentration(shares), item)
    if best:
        return [item for _, item in best.values()]
    totals = [e for e in group if not e.series.segment]
    if totals:
        return totals
    return [max(group, key=lambda e: e.anomaly.score if e.anomaly else 0.0)] if group else []


def _alert_for(
    headline: Evaluated, group: list[Evaluated], everything: Sequence[Evaluated], calendar: Calendar
) -> Alert:
    anomaly = headline.anomaly
    assert anomaly is not None  # headlines are anomalous series only
    hints = [
        *_segment_hints(headline, _shares(headline, everything), group),
        *_mix_hint(headline, everything),
        *_tracking_hint(headline, everything),
        *_impact_hint(headline),
        *_component_hint(headline),
        *_context_hints(headline, calendar),
    ]
    return Alert(anomaly=anomaly, text=headline_text(anomaly), hints=tuple(sorted(hints, key=lambda h: -h.evidence)))


def add_related_hints(
    alerts: Sequence[Alert], lookup: Mapping[tuple[str, str], Evaluated], related: Mapping[str, Sequence[str]]
) -> list[Alert]:
    """Each alert plus the related KPIs (same segment and period) that moved the way that explains
    it: for bad news, a related KPI that moved its own bad way (conversion rate down <- page-load
    time up); for good news, its good way. Anomalous ones rank first."""
    enriched = []
    for alert in alerts:
        anomaly = alert.anomaly
        found = [
            hint
            for name in related.get(anomaly.kpi, ())
            if (hint := _related_hint(anomaly, lookup.get((name, segment_label(anomaly.segment))))) is not None
        ]
        hints = sorted([*alert.hints, *found], key=lambda h: -h.evidence)
        enriched.append(Alert(anomaly=anomaly, text=alert.text, hints=tuple(hints)))
    return enriched


def _related_hint(anomaly: Anomaly, item: Evaluated | None) -> Hint | None:
    if item is None or pd.isna(item.actual) or pd.isna(item.expected) or item.actual == item.expected:
        return None
    moved_up = item.actual > item.expected
    moved_bad_way = moved_up == (item.good is Direction.DOWN)
    if moved_bad_way != anomaly.is_bad:
        return None  # moved the other way: no explanation
    change = format_change(item.actual, item.expected, item.unit).lstrip("+-")
    flag = t("hint.related_flag") if item.flagged else ""
    return Hint(
        kind="related",
        kpi=item.series.name,
        segment=dict(item.series.segment),
        text=t("hint.related", kpi=kpi_name(item.series.name), where=on_where(item.series.segment),
               verb=t("word.up" if moved_up else "word.down"), change=change,
               actual=format_value(item.actual, item.unit), expected=format_value(item.expected, item.unit), flag=flag),
        evidence=(2.0 if item.flagged else 0.5) + item.score,
        data={"anomalous": item.flagged, "actual": item.actual, "expected": item.expected},
    )


def _tracking_hint(headline: Evaluated, everything: Sequence[Evaluated]) -> list[Hint]:
    """A segment at (near) zero while its siblings are normal: a tracking or data fault."""
    anomaly = headline.anomaly
    if anomaly is None or not headline.series.segment or anomaly.direction is not Direction.DOWN:
        return []
    if not (anomaly.expected > 0 and anomaly.actual <= NEAR_ZERO * anomaly.expected):
        return []
    (dimension,) = headline.series.segment
    siblings = [e for e in everything if set(e.series.segment) == {dimension} and e is not headline]
    if any(e.flagged for e in siblings):
        return []
    where = segment_label(headline.series.segment)
    return [
        Hint(
            kind="context",
            kpi=anomaly.kpi,
            segment=dict(anomaly.segment),
            text=t("hint.tracking", segment=where, ratio=format_percent(anomaly.actual / anomaly.expected),
                   dimension=dimension),
            evidence=3.0,
            data={"likely": "tracking", "ratio_to_expected": anomaly.actual / anomaly.expected},
        )
    ]


def _mix_hint(headline: Evaluated, everything: Sequence[Evaluated]) -> list[Hint]:
    """For a ratio on a segment: did the segment's own rate move (rate effect), or did the traffic
    shift between segments of different rates (mix effect)? Both in the total's units, with the
    usual denominator shares taken from the same weekday over the previous four weeks."""
    anomaly = headline.anomaly
    if anomaly is None or not headline.series.segment or headline.series.denominator is None:
        return []
    (dimension,) = headline.series.segment
    siblings = [e for e in everything if set(e.series.segment) == {dimension} and e.series.denominator is not None]
    parts = []
    for item in siblings:
        assert item.series.denominator is not None
        now = item.series.denominator.get(anomaly.period)
        usual = _same_phase_mean(item.series.denominator, anomaly.period, anomaly.freq)
        if now is None or pd.isna(now) or usual is None or pd.isna(item.actual) or pd.isna(item.expected):
            return []
        parts.append((item, float(now), usual))
    total_now, total_usual = sum(p[1] for p in parts), sum(p[2] for p in parts)
    if total_now <= 0 or total_usual <= 0:
        return []
    rate = mix = 0.0
    for item, now, usual in parts:
        rate += usual / total_usual * (item.actual - item.expected)
        mix += (now / total_now - usual / total_usual) * item.actual
    own = next(usual for item, _, usual in parts if item is headline) / total_usual * (headline.actual - headline.expected)
    which = t("hint.rate_effect") if abs(rate) >= abs(mix) else t("hint.mix_effect")
    where = segment_label(headline.series.segment)
    return [
        Hint(
            kind="segment",
            kpi=anomaly.kpi,
            segment=dict(anomaly.segment),
            text=t("hint.mix", which=which, dimension=dimension, rate=_effect(rate, anomaly.unit), segment=where,
                   own=_effect(own, anomaly.unit), mix=_effect(mix, anomaly.unit)),
            evidence=0.65,
            data={"rate_effect": rate, "mix_effect": mix, "own_rate_effect": own},
        )
    ]


def _effect(value: float, unit: str) -> str:
    if unit == "%":
        return format_points(value)
    sign = "+" if value >= 0 else "-"
    return f"{sign}{format_value(abs(value), unit)}"


def _component_hint(headline: Evaluated) -> list[Hint]:
    """For a ratio: did the numerator or the denominator move? Each part against its mean on the
    same weekday (same hour) over the previous four weeks: a cheap, model-free reference."""
    anomaly = headline.anomaly
    changes = _part_changes(headline)
    if anomaly is None or changes is None:
        return []
    (top_name, top_change), (other_name, other_change) = sorted(changes.items(), key=lambda kv: -abs(kv[1]))
    driver = "numerator" if top_name == headline.numerator else "denominator"
    return [
        Hint(
            kind="component",
            kpi=anomaly.kpi,
            segment=dict(anomaly.segment),
            text=t("hint.component", driver=t(f"hint.{driver}"), top=metric_name(top_name),
                   top_change=format_percent(top_change, sign=True), usual=_phase_word(anomaly.freq),
                   other=metric_name(other_name), other_change=format_percent(other_change, sign=True)),
            evidence=0.7,
            data={"driver": driver, "changes": changes},
        )
    ]


def _part_changes(headline: Evaluated) -> dict[str, float] | None:
    """A ratio's numerator and denominator at the period as fractions of their usual values
    ({"ad_cost": 0.7, "revenue": -0.07}), numerator first; None without a usual value (not a
    ratio, not daily or hourly, no history on the same weekday, or a usual of zero)."""
    anomaly, denominator = headline.anomaly, headline.series.denominator
    if anomaly is None or denominator is None or headline.numerator is None or headline.denominator_name is None:
        return None
    numerator = headline.series.values * denominator
    changes = {}
    for name, part in ((headline.numerator, numerator), (headline.denominator_name, denominator)):
        usual = _same_phase_mean(part, anomaly.period, anomaly.freq)
        now = part.get(anomaly.period)
        if usual is None or now is None or pd.isna(now) or usual == 0:
            return None
        changes[name] = float(now) / usual - 1.0
    return changes


def _same_phase_mean(part: pd.Series, period: pd.Timestamp, freq: str) -> float | None:
    lag = pd.Timedelta(days=7) if freq in {"D", "h"} else None
    if lag is None:
        return None
    values = [part.get(period - k * lag) for k in range(1, 5)]
    values = [float(v) for v in values if v is not None and not pd.isna(v)]
    return sum(values) / len(values) if values else None


def _phase_word(freq: str) -> str:
    return t("hint.usual_weekday_4w") if freq == "D" else t("hint.usual_hour_4w")


def _impact_hint(headline: Evaluated) -> list[Hint]:
    """What the deviation is worth in the period, told in the part of the KPI that moved: money
    (in the KPI's currency) where that part is money, else its count (conversions, sessions).

    A count or an amount: actual - expected. A ratio N / D whose expected value is r deviates by
    N - r * D in the numerator's terms, or by D - N / r in the denominator's: one deviation
    (the first is -r times the second). It is told in the part that moved most against its usual
    same weekday (the component hint's reference): ROAS down because revenue fell is "≈ €7,770
    less revenue than expected, given the day's ad cost"; ROAS down because ad cost rose 70%
    while revenue fell 7% is "≈ €3,080 more ad cost than the day's revenue called for at the
    expected 2.50x; the roas drop is mostly the rise in ad cost: ad cost +70%, revenue -7% ...".
    Without a usual value (too little history, weekly data) it is told in the numerator.
    """
    anomaly = headline.anomaly
    if anomaly is None or anomaly.unit == "s":
        return []  # seconds of load time summed over sessions mean nothing on their own
    denominator = headline.series.denominator
    volume = float(denominator.get(anomaly.period, float("nan"))) if denominator is not None else 1.0
    if pd.isna(volume):
        return []
    period_word = _period_word(anomaly.freq)
    changes = _part_changes(headline)
    if changes is not None and _denominator_moved(headline, changes) and anomaly.expected != 0:
        return [_denominator_impact(headline, volume, changes, period_word)]
    amount = (anomaly.actual - anomaly.expected) * volume
    metric = headline.numerator or anomaly.kpi
    than = (t("hint.impact_given", unit=period_word, denominator=metric_name(headline.denominator_name))
            if headline.denominator_name else t("hint.impact_that", unit=period_word))
    driver = "numerator" if changes is not None else None
    return [_impact(headline, amount, metric, than, driver, changes)]


def _denominator_moved(headline: Evaluated, changes: Mapping[str, float]) -> bool:
    """Whether the ratio's denominator moved more than its numerator (relative to their usual)."""
    assert headline.numerator is not None and headline.denominator_name is not None  # changes exist
    return abs(changes[headline.denominator_name]) > abs(changes[headline.numerator])


def _denominator_impact(headline: Evaluated, volume: float, changes: Mapping[str, float], period_word: str) -> Hint:
    """The impact of a ratio that moved because its denominator did, in the denominator's terms:
    D - N / r (ad cost beyond what the day's revenue called for at the expected ROAS r)."""
    anomaly = headline.anomaly
    assert anomaly is not None and headline.numerator is not None and headline.denominator_name is not None
    numerator, denominator = headline.numerator, headline.denominator_name
    amount = volume - anomaly.actual * volume / anomaly.expected
    what = {name: metric_name(name) for name in (numerator, denominator)}
    moved = t("hint.rise") if anomaly.direction is Direction.UP else t("hint.drop")
    cause = t("hint.rise") if changes[denominator] > 0 else t("hint.drop")
    usual = t("hint.usual_weekday") if anomaly.freq == "D" else t("hint.usual_hour")
    than = t("hint.impact_denominator", unit=period_word, numerator=what[numerator],
             expected=format_value(anomaly.expected, anomaly.unit), kpi=kpi_name(anomaly.kpi), moved=moved, cause=cause,
             denominator=what[denominator], denominator_change=format_percent(changes[denominator], sign=True),
             numerator_change=format_percent(changes[numerator], sign=True), usual=usual)
    return _impact(headline, amount, denominator, than, "denominator", changes)


def _impact(headline: Evaluated, amount: float, metric: str, than: str, driver: str | None,
            changes: Mapping[str, float] | None) -> Hint:
    """The impact hint "≈ {amount} more/less/fewer {metric} {than}"; `amount` in `metric`'s terms."""
    anomaly = headline.anomaly
    assert anomaly is not None
    money = metric in MONEY_METRICS
    value = format_money(abs(amount), headline.currency, whole=True) if money else format_number(abs(amount))
    more_or_less = t("hint.more") if amount > 0 else (t("hint.less") if money else t("hint.fewer"))
    data: dict[str, object] = {"amount": amount, "metric": metric, "money": money}
    if money:
        data["currency"] = headline.currency
    if driver is not None and changes is not None:
        data |= {"driver": driver, "changes": dict(changes)}
    return Hint(
        kind="impact",
        kpi=anomaly.kpi,
        segment=dict(anomaly.segment),
        text=t("hint.impact", amount=value, more_or_less=more_or_less, metric=metric_name(metric), than=than),
        evidence=0.6,  # above "also outside" segments: what it costs matters more
        data=data,
    )


def headline_text(anomaly: Anomaly) -> str:
    """One line: what moved, where, by how much against what was expected, since when."""
    run = (t("alert.run", ordinal=format_ordinal(anomaly.run_length), unit=_period_word(anomaly.freq))
           if anomaly.run_length > 1 else "")
    unit = anomaly.unit
    return t(
        "alert.headline", news=t("alert.good_news") if not anomaly.is_bad else "", kpi=kpi_name(anomaly.kpi),
        where=on_where(anomaly.segment), verb=t(f"word.{anomaly.direction.value}"),
        change=format_change(anomaly.actual, anomaly.expected, unit).lstrip("+-"),
        period=format_period(anomaly.period, anomaly.freq), actual=format_value(anomaly.actual, unit),
        expected=format_value(anomaly.expected, unit), level=format_percent(anomaly.level),
        lower=format_value(anomaly.lower, unit), upper=format_value(anomaly.upper, unit), run=run,
    )


def on_where(segment: Mapping[str, str]) -> str:
    """" on device=mobile" (" op device=mobile" in Dutch) for a segment, "" for the total."""
    return t("word.on_segment", segment=segment_label(segment)) if segment else ""


def _period_word(freq: str) -> str:
    """The name of one period of `freq` in a sentence: day, hour, else period."""
    return t({"D": "word.day", "h": "word.hour"}.get(freq, "word.period"))


def _shares(item: Evaluated, everything: Sequence[Evaluated]) -> tuple[float, float]:
    """(share of the deviation, share of the volume) of `item` within its dimension; total = (1, 1)."""
    if not item.series.segment:
        return 1.0, 1.0
    (dimension,) = item.series.segment
    siblings = [e for e in everything if set(e.series.segment) == {dimension}]
    parts = {id(e): _contribution(e) for e in siblings}
    total_change = sum(change for change, _ in parts.values())
    total_volume = sum(volume for _, volume in parts.values())
    change, volume = parts[id(item)]
    if total_change == 0 or total_volume <= 0:
        return 0.0, 0.0
    return max(0.0, min(1.0, change / total_change)), volume / total_volume


def _contribution(item: Evaluated) -> tuple[float, float]:
    """(change, weight): a ratio weighs its change by its denominator, a count is itself."""
    if pd.isna(item.actual) or pd.isna(item.expected):
        return 0.0, 0.0
    denominator = item.series.denominator
    if denominator is None:
        return item.actual - item.expected, max(item.expected, 0.0)
    period = item.anomaly.period if item.anomaly else denominator.index[-1]
    weight = float(denominator.get(period, 0.0) or 0.0)
    return weight * (item.actual - item.expected), weight


def _concentration(shares: tuple[float, float]) -> float:
    change_share, volume_share = shares
    return change_share - volume_share


def _segment_hints(headline: Evaluated, shares: tuple[float, float], group: list[Evaluated]) -> list[Hint]:
    hints = []
    if headline.series.segment:
        change_share, volume_share = shares
        hints.append(
            Hint(
                kind="segment",
                kpi=headline.series.name,
                segment=dict(headline.series.segment),
                text=t("hint.segment", segment=segment_label(headline.series.segment),
                       share=format_percent(change_share), volume_share=format_percent(volume_share)),
                evidence=change_share,
                data={"share": round(change_share, 4), "volume_share": round(volume_share, 4)},
            )
        )
    for other in group:
        if other is headline or other.anomaly is None:
            continue
        anomaly = other.anomaly
        hints.append(
            Hint(
                kind="segment",
                kpi=anomaly.kpi,
                segment=dict(anomaly.segment),
                text=t("hint.also_outside", segment=segment_label(anomaly.segment) if anomaly.segment else t("word.total"),
                       change=format_change(anomaly.actual, anomaly.expected, anomaly.unit)),
                evidence=0.5 * anomaly.score,
                data={"actual": anomaly.actual, "expected": anomaly.expected},
            )
        )
    return hints


def _context_hints(headline: Evaluated, calendar: Calendar) -> list[Hint]:
    anomaly = headline.anomaly
    assert anomaly is not None
    hints = []
    year_ago = _value_at(headline.series.values, anomaly.period - pd.Timedelta(days=364))
    if year_ago is not None:
        hints.append(
            Hint(
                kind="context",
                kpi=anomaly.kpi,
                segment=dict(anomaly.segment),
                text=t("hint.last_year", value=format_value(year_ago, anomaly.unit)),
                evidence=0.09,
                data={"last_year": year_ago},
            )
        )
    week_ago = _value_at(headline.series.values, anomaly.period - pd.Timedelta(days=7))
    if week_ago is not None:
        hints.append(
            Hint(
                kind="context",
                kpi=anomaly.kpi,
                segment=dict(anomaly.segment),
                text=t("hint.last_week", value=format_value(week_ago, anomaly.unit)),
                evidence=0.1,
                data={"last_week": week_ago},
            )
        )
    if anomaly.freq in {"D", "h"}:
        names = calendar.describe(anomaly.period.date())
        if names:
            hints.append(
                Hint(
                    kind="context",
                    kpi=anomaly.kpi,
                    text=t("hint.calendar", events="; ".join(names)),
                    evidence=0.2,
                    data={"events": names},
                )
            )
    return hints


def _value_at(values: pd.Series, when: pd.Timestamp) -> float | None:
    value = values.get(when)
    return None if value is None or pd.isna(value) else float(value)

