"""The interval detector: is a period outside its band, how far, and is it worth an alert?

Two steps, kept apart so replay and check share the first:
1. `judge_series`: per period, the score and whether it lies outside the (widened) band and
   passes the volume and absolute-change guardrails. Direction-blind.
2. `anomaly_at`: whether the last period becomes an Anomaly for this KPI: the bad direction
   (or good news when asked), "for N periods", severity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecaster.models.base import z_value
from forecaster.settings import KPIConfig
from forecaster.types import Anomaly, Direction, Forecast, Judgement, KPISeries, Severity

# A band is never narrower than this fraction of the expected value on each side: a constant
# or near-constant history must not turn every tiny wiggle into an alert.
MIN_RELATIVE_HALF_WIDTH = 0.01
# Outside by at least this many band half-widths = critical rather than warning.
CRITICAL_EXCESS = 2.0


@dataclass(frozen=True)
class Rules:
    """The detection settings of one KPI (see KPIConfig for meanings and defaults)."""

    good: Direction = Direction.UP
    level: float = 0.99
    min_volume: float = 0.0
    min_abs_change: float = 0.0
    for_periods: int = 1
    good_news: bool = False
    event_margin: float = 0.15

    @classmethod
    def from_kpi(cls, kpi: KPIConfig) -> Rules:
        return cls(
            kpi.good, kpi.level, kpi.min_volume, kpi.min_abs_change, kpi.for_periods, kpi.good_news, kpi.event_margin
        )


def judge_series(
    series: KPISeries, forecast: Forecast, rules: Rules, event_periods: frozenset[pd.Timestamp] = frozenset()
) -> list[Judgement]:
    """One Judgement per forecast period (a period without data is judged 'no data').

    event_periods: periods on a known calendar event, whose band gets `rules.event_margin`.
    """
    actuals = series.values.reindex(forecast.mean.index)
    volumes = _volumes(series, forecast.mean.index)
    typical = _typical_volume(series, forecast.mean.index[0])
    proportion = _is_proportion(series)
    return [
        judge(
            period,
            float(actuals.loc[period]),
            float(forecast.mean.loc[period]),
            float(forecast.lower.loc[period]),
            float(forecast.upper.loc[period]),
            rules,
            volume=float(volumes.loc[period]),
            typical_volume=typical,
            proportion=proportion,
            on_event=period in event_periods,
        )
        for period in forecast.mean.index
    ]


def judge(
    period: pd.Timestamp,
    actual: float,
    expected: float,
    lower: float,
    upper: float,
    rules: Rules,
    volume: float = math.nan,
    typical_volume: float = math.nan,
    proportion: bool = False,
    on_event: bool = False,
) -> Judgement:
    """Score one period against its band and apply the volume and absolute-change guardrails.

    volume: the period's denominator (ratio KPIs) or NaN; typical_volume: its usual size.
    proportion: the KPI is a share (0..1), so a small denominator adds binomial noise.
    on_event: the period is a holiday or retail peak; its expected value was learned from one or
        two earlier years, so the band widens by `rules.event_margin` of the expected value.
    """
    if math.isnan(actual):
        return Judgement(period, actual, expected, lower, upper, 0.0, False, "no data")
    z_level = z_value(rules.level)
    floor = max(MIN_RELATIVE_HALF_WIDTH * abs(expected), 1e-12)
    sigma_up = max(upper - expected, floor) / z_level
    sigma_down = max(expected - lower, floor) / z_level
    if proportion and volume > 0:
        extra = _extra_binomial_variance(expected, volume, typical_volume)
        # Never narrower than the sampling noise itself: a band calibrated on a mostly-zero
        # history (a handful of sessions a day) can be far too confident for such a share. Half a
        # count (0.5 / volume) on each side is the continuity correction: one conversion out of 3
        # sessions is a jump of 33 points, not a 1-in-100 event when the rate is 1.5%.
        sampling = math.sqrt(_binomial_variance(expected, volume)) + 0.5 / volume / z_level
        sigma_up = max(math.hypot(sigma_up, math.sqrt(extra)), sampling)
        sigma_down = max(math.hypot(sigma_down, math.sqrt(extra)), sampling)
    margin = rules.event_margin * abs(expected) if on_event else 0.0
    sigma_up, sigma_down = sigma_up + margin / z_level, sigma_down + margin / z_level
    lower, upper = expected - z_level * sigma_down, expected + z_level * sigma_up
    sigma = sigma_up if actual >= expected else sigma_down
    score = math.erf(abs(actual - expected) / sigma / math.sqrt(2.0))
    # A hair of tolerance: a band clipped at zero has a lower edge of ~1e-19 after the arithmetic
    # above, and a true zero must not read as below it.
    tolerance = 1e-9 * max(abs(expected), abs(upper), abs(lower), 1e-12)
    outside = actual > upper + tolerance or actual < lower - tolerance
    reason = guardrail(actual, expected, volume, rules) if outside else ""
    return Judgement(period, actual, expected, lower, upper, score, outside and not reason, reason)


def anomaly_at(
    series: KPISeries, judgements: list[Judgement], rules: Rules, model: str, unit: str = ""
) -> Anomaly | None:
    """The Anomaly for the last judged period, or None when it is not worth an alert."""
    if not judgements or not judgements[-1].is_anomaly:
        return None
    last = judgements[-1]
    direction = Direction.UP if last.actual > last.expected else Direction.DOWN
    is_bad = direction is not rules.good
    if not is_bad and not rules.good_news:
        return None
    run = _run_length(judgements, direction)
    if run < rules.for_periods:
        return None
    return Anomaly(
        kpi=series.name,
        segment=dict(series.segment),
        period=last.period,
        freq=series.freq,
        actual=last.actual,
        expected=last.expected,
        lower=last.lower,
        upper=last.upper,
        direction=direction,
        is_bad=is_bad,
        severity=_severity(last, is_bad),
        score=last.score,
        model=model,
        unit=unit,
        run_length=run,
        level=rules.level,
    )


def guardrail(actual: float, expected: float, volume: float, rules: Rules) -> str:
    """Why an outside-the-band period is still not news, or "" when it is (`min_abs_change`,
    then `min_volume` against `volume`, or max(actual, expected) when `volume` is NaN)."""
    change = abs(actual - expected)
    if change < rules.min_abs_change:
        return f"change {change:g} is below min_abs_change {rules.min_abs_change:g}"
    size = volume if not math.isnan(volume) else max(actual, expected)
    if size < rules.min_volume:
        return f"volume {size:g} is below min_volume {rules.min_volume:g}"
    return ""


def _extra_binomial_variance(rate: float, volume: float, typical_volume: float) -> float:
    """Binomial variance a share gains when this period's denominator is below its usual size.

    The model's band already holds the sampling noise of a typical period; only the excess of
    a small period (40 sessions instead of 4,000) is added.
    """
    usual = _binomial_variance(rate, typical_volume) if typical_volume > 0 else 0.0
    return max(0.0, _binomial_variance(rate, volume) - usual)


def _binomial_variance(rate: float, volume: float) -> float:
    """Variance of a share `rate` (clipped to 0..1) observed over `volume` trials: p(1-p)/n."""
    p = min(max(rate, 0.0), 1.0)
    return p * (1 - p) / volume


def _run_length(judgements: list[Judgement], direction: Direction) -> int:
    """Consecutive anomalous periods in `direction`, ending at the last judgement."""
    run = 0
    for judgement in reversed(judgements):
        same_way = (judgement.actual > judgement.expected) == (direction is Direction.UP)
        if not (judgement.is_anomaly and same_way):
            break
        run += 1
    return run


def _severity(judgement: Judgement, is_bad: bool) -> Severity:
    if not is_bad:
        return Severity.GOOD_NEWS
    bound = judgement.upper if judgement.actual > judgement.expected else judgement.lower
    half = abs(bound - judgement.expected)
    excess = abs(judgement.actual - judgement.expected) / half if half > 0 else math.inf
    return Severity.CRITICAL if excess >= CRITICAL_EXCESS else Severity.WARNING


def _volumes(series: KPISeries, index: pd.DatetimeIndex) -> pd.Series:
    if series.denominator is None:
        return pd.Series(np.nan, index=index)
    return series.denominator.reindex(index)


def _typical_volume(series: KPISeries, before: pd.Timestamp) -> float:
    """The median denominator over the last 28 periods before `before` (NaN for counts)."""
    if series.denominator is None:
        return math.nan
    recent = series.denominator[series.denominator.index < before].dropna().tail(28)
    return float(recent.median()) if len(recent) else math.nan


def _is_proportion(series: KPISeries) -> bool:
    """A ratio whose values all lie in [0, 1] is treated as a share of its denominator."""
    if series.denominator is None:
        return False
    observed = series.values.dropna()
    return bool(len(observed)) and bool(observed.between(0.0, 1.0).all())
