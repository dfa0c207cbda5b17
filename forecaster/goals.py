"""SMART targets: will each KPI reach its target by its deadline?

For a KPI with `target: {value, by}`: the current value (mean of the last 7 closed periods of the
total), the forecast for the deadline with its band, and the probability of reaching the target,
read from the forecast distribution (normal, with the sigma the band implies). At least 50% = on
track; below = at risk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from forecaster.pipeline import forecast_series, kpi_total_series, last_closed_period
from forecaster.settings import Settings
from forecaster.sources import make_source
from forecaster.types import BadInputError, Direction

BAND_LEVEL = 0.8  # the band shown, and the one read for the forecast's sigma
CURRENT_PERIODS = 7  # "current value" = mean of this many last closed periods (a week of days)


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
        return self.probability >= 0.5


def goals(settings: Settings, at: pd.Timestamp | None = None) -> list[GoalStatus]:
    """The status of every KPI target in the config (in config order)."""
    return [_status(settings, name, at) for name, kpi in settings.kpis.items() if kpi.target is not None]


def _status(settings: Settings, name: str, at: pd.Timestamp | None) -> GoalStatus:
    kpi = settings.kpi(name)
    assert kpi.target is not None  # only KPIs with targets reach here
    now = at if at is not None else make_source(settings.sources[kpi.source]).now()
    last = last_closed_period(now, kpi.freq, settings.timezone)
    deadline = pd.Timestamp(kpi.target.by, tz="UTC")
    step = pd.tseries.frequencies.to_offset(kpi.freq)
    horizon = len(pd.date_range(last + step, deadline, freq=step))
    if horizon < 1:
        raise BadInputError(f"kpis.{name}.target.by: {kpi.target.by} has passed (last closed period {last:%Y-%m-%d})")
    series = kpi_total_series(settings, name, at=now)
    forecast = forecast_series(series, horizon, BAND_LEVEL, model=kpi.model, params=kpi.model_params,
                               country=settings.country)
    mean, lower, upper = (float(part.iloc[-1]) for part in (forecast.mean, forecast.lower, forecast.upper))
    sigma = max((upper - lower) / (2 * float(stats.norm.ppf(0.5 + BAND_LEVEL / 2))), 1e-12)
    above = 1.0 - float(stats.norm.cdf((kpi.target.value - mean) / sigma))
    probability = above if kpi.good is Direction.UP else 1.0 - above
    current = float(series.values.dropna().tail(CURRENT_PERIODS).mean())
    return GoalStatus(name, kpi.unit, kpi.target.value, deadline, current, mean, lower, upper,
                      probability if math.isfinite(probability) else 0.0, forecast.model)
