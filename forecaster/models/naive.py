"""Seasonal naive: the value one season ago, with a band from its own past errors.

Fast (microseconds), assumption-free, and the fallback when a richer model fails to fit.
"""

from __future__ import annotations

import math
from typing import Self

import numpy as np
import pandas as pd

from forecaster.models.base import (
    check_horizon,
    check_level,
    check_season,
    future_index,
    register,
    require_fitted,
    season_length,
    update_by_push,
)
from forecaster.types import Forecast


@register("seasonal_naive")
class SeasonalNaive:
    """Forecast = the last observed value at the same phase of the season.

    season: periods per cycle; None = from the frequency (7 for daily, 24 for hourly).
    The band is the `level` quantile of |y_t - y_(t-season)| over the history, widened by
    sqrt(k) for the k-th season ahead (errors of a random walk across seasons add up).
    """

    name = "seasonal_naive"

    def __init__(self, season: int | None = None) -> None:
        self.season = check_season(season)
        self.y_: pd.Series | None = None
        self.last_season_: np.ndarray | None = None
        self.abs_errors_: np.ndarray | None = None

    def fit(self, y: pd.Series) -> Self:
        m = self.season or season_length(y.index.freqstr or "D")
        m = m if len(y) >= 2 * m else 1  # too short for one seasonal comparison: plain naive
        values = y.to_numpy(dtype="float64")
        self.y_ = y
        self.last_season_ = _last_seen_per_phase(values, m)
        errors = values[m:] - values[:-m]
        self.abs_errors_ = np.abs(errors[~np.isnan(errors)])
        return self

    def next_value(self) -> float:
        """The value one season ago (the next phase's last value)."""
        require_fitted(self, "last_season_")
        assert self.last_season_ is not None
        return float(self.last_season_[0])

    def push(self, value: float) -> None:
        """The next value becomes its phase's last value (NaN: the phase keeps its old one)."""
        assert self.last_season_ is not None
        kept = self.last_season_[0] if math.isnan(value) else value
        self.last_season_ = np.append(self.last_season_[1:], kept)

    def update(self, y: pd.Series) -> Self:
        update_by_push(self, y)
        return self

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        require_fitted(self, "y_")
        assert self.y_ is not None and self.last_season_ is not None and self.abs_errors_ is not None
        horizon, level = check_horizon(horizon), check_level(level)
        m = len(self.last_season_)
        steps = np.arange(horizon)
        mean = self.last_season_[steps % m]
        half = np.quantile(self.abs_errors_, level) if len(self.abs_errors_) else 0.0
        half_widths = half * np.sqrt(steps // m + 1)
        index = future_index(self.y_, horizon)
        return Forecast.symmetric(mean, half_widths, index, level, self.name)


def _last_seen_per_phase(values: np.ndarray, m: int) -> np.ndarray:
    """For each of the m phases ending at the last value, the most recent non-NaN value.

    A phase never observed takes the mean of the observed values (better than NaN or zero).
    """
    n = len(values)
    out = np.full(m, np.nan)
    for phase in range(m):
        # positions n-m+phase, n-2m+phase, ... walking back until a value is found
        for pos in range(n - m + phase, -1, -m):
            if not np.isnan(values[pos]):
                out[phase] = values[pos]
                break
    out[np.isnan(out)] = np.nanmean(values)
    return out
