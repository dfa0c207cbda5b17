"""SMART targets: will each KPI reach its target by its deadline?

For a KPI with `target: {value, by}`: the current value (mean of the last 7 closed periods of the
total), the forecast for the deadline with its band, and the probability of reaching the target,
read from the forecast distribution (normal, with the sigma the band implies). At least 50%
(`ON_TRACK`) = on track; below = at risk.

An alert that is bad news for a KPI whose target is at risk says so (`add_target_hints`): the
status is computed once per such KPI per check, from the total series the check already read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from forecaster.pipeline import forecast_series, kpi_total_series, last_closed_period
from forecaster.settings import KPIConfig, Settings
from forecaster.sources import make_source
from forecaster.types import (
    Alert,
    Anomaly,
    BadInputError,
    Direction,
    Hint,
    KPISeries,
    segment_label,
)
from forecaster.i18n import metric_name, t
from forecaster.units import format_day_month, format_percent, format_value

BAND_LEVEL = 0.8  # the band shown, and the one read for the forecast's sigma
CURRENT_PERIODS = 7  # "current value" = mean of this many last closed periods (a week of days)
ON_TRACK = 0.5  # probability of reaching the target at or above which it is on track
# Rank of the target hint among an alert's hints: below the related KPIs and the headline
# segment's share (where to look), above the ratio arithmetic (component, mix) and the impact,
# because a committed goal slipping is what a marketer acts on first.
TARGET_EVIDENCE = 0.75


@dataclass(frozen=True)
class GoalStatus:
    """One target's outlook. probability: chance the deadline's value is on the good side."""

    kpi: str
    unit: str
    target: float
    by: pd.Timestamp
    current: float
    forecast: float
    lower: float
    upper: float
    probability: float
    model: str

    @property
    def on_track(self) -> bool:
        return self.probability >= ON_TRACK


def goals(settings: Settings, at: pd.Timestamp | None = None) -> list[GoalStatus]:
    """The status of every KPI target in the config (in config order)."""
    return [_status(settings, name, at) for name, kpi in settings.kpis.items() if kpi.target is not None]


def _status(settings: Settings, name: str, at: pd.Timestamp | None) -> GoalStatus:
    kpi = settings.kpi(name)
    now = at if at is not None else make_source(settings.sources[kpi.source], settings.timezone, kpi.source).now()
    last = last_closed_period(now, kpi.freq, settings.timezone)
    _check_deadline(name, kpi, last)
    return target_status(name, kpi, kpi_total_series(settings, name, at=now), last, settings.country)


def target_status(
    name: str, kpi: KPIConfig, series: KPISeries, last: pd.Timestamp, country: str | None = None
) -> GoalStatus:
    """The target's outlook from the KPI's total `series` (up to the closed period `last`).

    One forecast fit from `last` to the deadline (`kpi.target.by`, a day), with the KPI's model.
    Raises BadInputError when the KPI has no target or the deadline is not after `last`.
    """
    deadline, horizon = _check_deadline(name, kpi, last)
    target = kpi.target
    assert target is not None  # checked above
    forecast = forecast_series(series, horizon, BAND_LEVEL, model=kpi.model, params=kpi.model_params, country=country)
    mean, lower, upper = (float(part.iloc[-1]) for part in (forecast.mean, forecast.lower, forecast.upper))
    sigma = max((upper - lower) / (2 * float(stats.norm.ppf(0.5 + BAND_LEVEL / 2))), 1e-12)
    above = 1.0 - float(stats.norm.cdf((target.value - mean) / sigma))
    probability = above if kpi.good is Direction.UP else 1.0 - above
    current = float(series.values.dropna().tail(CURRENT_PERIODS).mean())
    return GoalStatus(name, kpi.unit, target.value, deadline, current, mean, lower, upper,
                      probability if math.isfinite(probability) else 0.0, forecast.model)


def _check_deadline(name: str, kpi: KPIConfig, last: pd.Timestamp) -> tuple[pd.Timestamp, int]:
    """(deadline, periods from `last` to it); BadInputError without a target or after its deadline."""
    if kpi.target is None:
        raise BadInputError(f"kpis.{name}.target: not set; add `target: {{value: ..., by: YYYY-MM-DD}}`")
    deadline = pd.Timestamp(kpi.target.by, tz="UTC")
    step = pd.tseries.frequencies.to_offset(kpi.freq)
    horizon = len(pd.date_range(last + step, deadline, freq=step))
    if horizon < 1:
        raise BadInputError(f"kpis.{name}.target.by: {kpi.target.by} has passed (last closed period {last:%Y-%m-%d})")
    return deadline, horizon


def add_target_hints(
    alerts: Sequence[Alert],
    kpis: Mapping[str, KPIConfig],
    totals: Mapping[str, KPISeries],
    periods: Mapping[str, pd.Timestamp],
    country: str | None = None,
) -> list[Alert]:
    """Each alert, plus a "context" hint when it is bad news and its KPI's target is at risk.

    kpis: the checked KPIs' settings; totals: each KPI's total series as the check read it;
    periods: each KPI's judged (last closed) period. The target status is computed once per KPI,
    and only for KPIs with a target, a bad-news alert and a deadline still ahead.
    """
    statuses: dict[str, GoalStatus | None] = {}
    enriched = []
    for alert in alerts:
        name = alert.anomaly.kpi
        kpi = kpis.get(name)
        if not alert.anomaly.is_bad or kpi is None or kpi.target is None or name not in totals:
            enriched.append(alert)
            continue
        if name not in statuses:
            try:
                statuses[name] = target_status(name, kpi, totals[name], periods[name], country)
            except BadInputError:
                statuses[name] = None  # deadline passed or no forecast: the alert goes out without it
        hint = target_hint(alert.anomaly, statuses[name])
        if hint is None:
            enriched.append(alert)
        else:
            hints = sorted([*alert.hints, hint], key=lambda h: -h.evidence)
            enriched.append(Alert(anomaly=alert.anomaly, text=alert.text, hints=tuple(hints)))
    return enriched


def target_hint(anomaly: Anomaly, status: GoalStatus | None) -> Hint | None:
    """The hint "Target 2.70% conversion rate by 31 Jan 2026 is at risk: 18% likely ...", or None.

    Only for bad news on a KPI whose target is below the on-track line (`ON_TRACK`); a segment's
    alert names the target as the total's (targets are set on a KPI's total).
    """
    if status is None or not anomaly.is_bad or status.on_track:
        return None
    what = metric_name(status.kpi)
    where = t("hint.target_where", segment=segment_label(anomaly.segment)) if anomaly.segment else ""
    return Hint(
        kind="context",
        kpi=status.kpi,
        segment={},
        text=t("hint.target", target=format_value(status.target, status.unit), kpi=what, where=where,
               by=format_day_month(status.by), probability=format_percent(status.probability),
               on_track=format_percent(ON_TRACK)),
        evidence=TARGET_EVIDENCE,
        data={"target": status.target, "by": status.by.date().isoformat(), "probability": status.probability,
              "status": "at risk", "forecast": status.forecast},
    )
