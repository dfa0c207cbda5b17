"""Exponential smoothing (statsmodels ETSModel): additive error, damped trend, seasonality.

Fits in tens of milliseconds on two years of daily data; its analytical intervals are only a
starting point (they assume Gaussian errors) and are calibrated downstream.
"""

from __future__ import annotations

import warnings
from typing import Self

import numpy as np
import pandas as pd
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from forecaster.models.base import (
    check_horizon,
    check_season,
    check_level,
    future_index,
    interpolate_gaps,
    register,
    require_fitted,
    season_length,
)
from forecaster.types import Forecast

# Seasons longer than this get heuristic initial states (see `fit`).
HEURISTIC_FROM_SEASON = 24


@register("ets")
class ETS:
    """ETS(A, Ad, A) by default.

    season: periods per cycle; None = from the frequency; seasonality is dropped when the
    history holds fewer than two full seasons.
    trend: "add" or None. damped: damp the trend (safer for multi-step forecasts).
    """

    name = "ets"

    def __init__(self, season: int | None = None, trend: str | None = "add", damped: bool = True) -> None:
        self.season = check_season(season)
        self.trend = trend
        self.damped = damped
        self.result_: object | None = None
        self.y_: pd.Series | None = None

    def fit(self, y: pd.Series) -> Self:
        m = self.season or season_length(y.index.freqstr or "D")
        seasonal = "add" if m > 1 and len(y) >= 2 * m + 10 else None
        endog = pd.Series(interpolate_gaps(y).to_numpy(dtype="float64"))  # positional: no freq warnings
        model = ETSModel(
            endog,
            error="add",
            trend=self.trend,
            damped_trend=self.damped and self.trend is not None,
            seasonal=seasonal,
            seasonal_periods=m if seasonal else None,
            # A long season (24 hours, 288 five-minute periods) has as many initial states as
            # periods; estimating them all by likelihood takes minutes, so they are read off the
            # first cycles instead and only the smoothing weights are estimated.
            initialization_method="heuristic" if seasonal and m > HEURISTIC_FROM_SEASON else "estimated",
        )
        with warnings.catch_warnings():
            # Non-convergence still yields usable smoothing parameters; the band is calibrated later.
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            self.result_ = model.fit(disp=False)
        self.y_ = y
        return self

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        require_fitted(self, "result_")
        assert self.y_ is not None
        horizon, level = check_horizon(horizon), check_level(level)
        n = len(self.y_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            frame = self.result_.get_prediction(start=n, end=n + horizon - 1).summary_frame(alpha=1 - level)  # type: ignore[attr-defined]
        mean, lower, upper = (frame[c].to_numpy(dtype="float64") for c in ("mean", "pi_lower", "pi_upper"))
        if not np.all(np.isfinite(mean)):
            raise ValueError("ets produced a non-finite forecast")
        index = future_index(self.y_, horizon)
        return Forecast(
            mean=pd.Series(mean, index=index),
            lower=pd.Series(lower, index=index),
            upper=pd.Series(upper, index=index),
            level=level,
            model=self.name,
        )
