"""Exponential smoothing (statsmodels ETSModel): additive error, optional damped trend, seasonality.

Fits in tens of milliseconds on two years of daily data. statsmodels estimates the parameters
and the states up to the end of the history; after that, `update` runs the textbook recursion
(Hyndman & Athanasopoulos, FPP3 8.3) one value at a time with those parameters, because
re-running statsmodels' filter over the whole window for every new value would cost O(window).
Its analytical intervals assume Gaussian errors; the detector calibrates its own band.
"""

from __future__ import annotations

import math
import warnings
from typing import Self

import numpy as np
import pandas as pd
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from forecaster.models.base import (
    check_horizon,
    check_level,
    check_season,
    future_index,
    interpolate_gaps,
    register,
    require_fitted,
    season_length,
    update_by_push,
    z_value,
)
from forecaster.types import Forecast

# Seasons longer than this get heuristic initial states (see `fit`).
HEURISTIC_FROM_SEASON = 24


@register("ets")
class ETS:
    """ETS(A, Ad, A) by default.

    season: periods per cycle; None = from the frequency; seasonality is dropped when the
    history holds fewer than two full seasons (plus 10 periods).
    trend: "add" or None. damped: damp the trend (safer for multi-step forecasts).
    initialization: "estimated" or "heuristic" (initial states read off the first cycles: only
        the smoothing weights are estimated, milliseconds even for a 288-period season); None
        (default) = heuristic for seasons longer than 24 periods.
    A stretch that statsmodels cannot fit with a season is fitted without one.
    """

    name = "ets"

    def __init__(self, season: int | None = None, trend: str | None = "add", damped: bool = True,
                 initialization: str | None = None) -> None:
        self.season = check_season(season)
        self.trend = trend
        self.damped = damped
        self.initialization = initialization
        self.result_: object | None = None
        self.y_: pd.Series | None = None
        self.seasonal_ = False
        self.alpha_: float | None = None  # set by `fit`: the smoothing weights and states follow
        self.updated_ = 0  # values pushed since the fit (0: statsmodels' own forecast is used)

    def fit(self, y: pd.Series) -> Self:
        m = self.season or season_length(y.index.freqstr or "D")
        seasonal = m > 1 and len(y) >= 2 * m + 10
        endog = pd.Series(interpolate_gaps(y).to_numpy(dtype="float64"))  # positional: no freq warnings
        with warnings.catch_warnings():
            # Non-convergence still yields usable smoothing parameters; the band is calibrated later.
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                self.result_ = self._model(endog, m if seasonal else 0).fit(disp=False)
            except (ValueError, np.linalg.LinAlgError):
                if not seasonal:
                    raise
                seasonal = False  # a degenerate stretch for the season: the same model without it
                self.result_ = self._model(endog, 0).fit(disp=False)
        self.seasonal_ = seasonal
        self._read_states(m if seasonal else 1)
        self.y_ = y
        self.updated_ = 0
        return self

    def _model(self, endog: pd.Series, m: int) -> ETSModel:
        init = self.initialization or ("heuristic" if m > HEURISTIC_FROM_SEASON else "estimated")
        return ETSModel(
            endog,
            error="add",
            trend=self.trend,
            damped_trend=self.damped and self.trend is not None,
            seasonal="add" if m else None,
            seasonal_periods=m or None,
            initialization_method=init if m else "estimated",
        )

    def _read_states(self, m: int) -> None:
        """Parameters and final states of the statsmodels fit, for the recursion."""
        result = self.result_
        params = dict(zip(result.param_names, np.asarray(result.params), strict=True))  # type: ignore[attr-defined]
        states = np.asarray(result.states)  # type: ignore[attr-defined]
        has_trend = "smoothing_trend" in params
        self.alpha_ = float(params.get("smoothing_level", 0.0))
        self.beta_ = float(params.get("smoothing_trend", 0.0))
        self.gamma_ = float(params.get("smoothing_seasonal", 0.0))
        self.phi_ = float(params.get("damping_trend", 1.0)) if has_trend else 0.0
        self.level_ = float(states[-1, 0])
        self.slope_ = float(states[-1, 1]) if has_trend else 0.0
        self.seasonals_ = [float(v) for v in states[-m:, -1]] if m > 1 else [0.0]
        resid = np.asarray(result.resid, dtype="float64")  # type: ignore[attr-defined]
        self.sigma_ = float(np.nanstd(resid)) if len(resid) else 0.0

    def next_value(self) -> float:
        """The next period's expected value."""
        require_fitted(self, "alpha_")
        return self.level_ + self.phi_ * self.slope_ + self.seasonals_[0]

    def push(self, value: float) -> None:
        """Take the next period's value into the states (NaN: the forecast stands in for it)."""
        forecast = self.next_value()
        error = 0.0 if math.isnan(value) else value - forecast
        self.level_ = self.level_ + self.phi_ * self.slope_ + self.alpha_ * error
        self.slope_ = self.phi_ * self.slope_ + self.beta_ * error
        self.seasonals_.append(self.seasonals_.pop(0) + self.gamma_ * error)
        self.updated_ += 1

    def update(self, y: pd.Series) -> Self:
        update_by_push(self, y)
        return self

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        require_fitted(self, "alpha_")
        assert self.y_ is not None
        horizon, level = check_horizon(horizon), check_level(level)
        index = future_index(self.y_, horizon)
        if self.updated_ or self.result_ is None:
            mean, half = self._recursive_forecast(horizon, level)
            return Forecast.symmetric(mean, half, index, level, self.name)
        n = len(self.y_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            frame = self.result_.get_prediction(start=n, end=n + horizon - 1).summary_frame(alpha=1 - level)  # type: ignore[attr-defined]
        mean, lower, upper = (frame[c].to_numpy(dtype="float64") for c in ("mean", "pi_lower", "pi_upper"))
        if not np.all(np.isfinite(mean)):
            raise ValueError("ets produced a non-finite forecast")
        return Forecast(
            mean=pd.Series(mean, index=index),
            lower=pd.Series(lower, index=index),
            upper=pd.Series(upper, index=index),
            level=level,
            model=self.name,
        )

    def __getstate__(self) -> dict[str, object]:
        """Pickled without statsmodels' results (the fitted data and matrices: most of the bytes;
        the daemon stores a detector's state every cycle). `predict` then runs the recursion."""
        state = dict(self.__dict__)
        state["result_"] = None
        return state

    def _recursive_forecast(self, horizon: int, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and half-width `horizon` steps from the updated states; the half-width grows as
        an ETS(A,N,N) variance does, sigma^2 (1 + (h - 1) alpha^2) (FPP3 table 8.8)."""
        m = len(self.seasonals_)
        damp = np.cumsum(self.phi_ ** np.arange(1, horizon + 1))
        steps = np.arange(horizon)
        mean = self.level_ + damp * self.slope_ + np.array(self.seasonals_)[steps % m]
        half = z_value(level) * self.sigma_ * np.sqrt(1.0 + steps * self.alpha_**2)
        return mean, half
