"""`auto`: choose a model per series by a short backtest, then calibrate its band.

Selection: each candidate is fitted at `origins` rolling origins just before the end of the
history and scored by MASE on the `horizon` periods after each origin; the best mean wins (ties:
the simpler model, listed first). Prophet is a candidate only for daily or weekly data with a year
of history (it has nothing to add on shorter or sub-daily series and costs the most).

Across a known calendar event (a holiday, Black Friday) in the forecast window, a model that
knows the calendar (Prophet) forecasts even when an ordinary-week backtest preferred another.

Calibration: model intervals assume their own error model (Gaussian, no parameter
uncertainty) and are too narrow or too wide on real data. The same backtest gives out-of-sample
errors; dividing each by the model's own normal-equivalent sigma at that horizon step gives
standardised errors whose spread `scale` should be 1. The final band is the chosen model's band
with every half-width multiplied by `scale` (shrunk towards 1 with a prior worth
`PRIOR_WEIGHT` errors, since a short backtest holds few of them). The band keeps the model's
shape over the horizon (wider further out) and gets the width the data show.

`choice` and `scale` may be passed in to skip the backtest (a remembered selection).
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import pandas as pd

from forecaster.calendar import Calendar
from forecaster.models.fallback import FIT_ERRORS
from forecaster.models.base import check_horizon, check_level, make_model, register, require_fitted, z_value
from forecaster.types import Forecast

CALENDAR_MODELS = ("prophet",)  # models that learn holiday and retail-peak effects
PRIOR_WEIGHT = 10.0  # standardised errors' worth of belief that the model's own band is right
SCALE_LIMITS = (0.5, 4.0)  # a calibration outside these says more about the backtest than the band
CALIBRATION_LEVEL = 0.8  # the model band read for its sigma (central, so tails do not distort it)


@register("auto")
class AutoModel:
    """Pick among `candidates` by a short backtest and calibrate the band (see module docstring).

    candidates: model names tried in order of simplicity (default: seasonal_naive, ets, and
        prophet when the data allow). origins: backtest origins (default 3). horizon: periods
        per origin (default 28: four weeks of days show a model's weekly and trend errors; with
        7 the choice on Peyton Manning was MASE 1.03 against 0.95, BENCHMARKS.md). country / calendar: holidays and events for
        Prophet and for spotting an event ahead (calendar wins when both are given).
    choice, scale: a remembered selection; both given = no backtest.
    event_horizon: periods ahead in which a calendar event brings in Prophet (default 7; the
        pipeline passes its check window).
    """

    name = "auto"

    def __init__(
        self,
        candidates: list[str] | None = None,
        origins: int = 3,
        horizon: int = 28,
        country: str | None = None,
        choice: str | None = None,
        scale: float | None = None,
        calendar: Calendar | None = None,
        event_horizon: int = 7,
    ) -> None:
        self.candidates = candidates
        self.origins = origins
        self.horizon = horizon
        self.country = country
        self.calendar = calendar or Calendar(country)
        self.event_horizon = event_horizon
        self.choice = choice
        self.scale = scale
        self.model_: Any = None
        self.choice_: str | None = None
        self.scale_: float = 1.0
        self.scores_: dict[str, float] = {}

    def fit(self, y: pd.Series) -> Self:
        if self.choice is not None and self.scale is not None:
            self.choice_, self.scale_ = self.choice, float(self.scale)
        else:
            self.choice_, self.scale_, self.scores_ = self._select(y)
        if self.choice_ not in CALENDAR_MODELS and self._event_ahead(y):
            # A backtest on ordinary weeks cannot show that a model without holidays will miss
            # Black Friday: across a known event, a model that knows the calendar forecasts.
            self.choice_, self.scale_ = CALENDAR_MODELS[0], 1.0
        self.model_ = self._make(self.choice_).fit(y)
        return self

    def _event_ahead(self, y: pd.Series) -> bool:
        """A holiday or retail peak in the next `horizon` days, with a year of daily history."""
        if "prophet" not in self._candidates(y):
            return False
        start = y.index[-1] + (y.index[1] - y.index[0])
        days = pd.date_range(start, periods=self.event_horizon, freq=y.index[1] - y.index[0])
        return any(self.calendar.events_on(day.date()) for day in days)

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        require_fitted(self, "model_")
        horizon, level = check_horizon(horizon), check_level(level)
        raw = self.model_.predict(horizon, level)
        return Forecast(
            mean=raw.mean,
            lower=raw.mean - (raw.mean - raw.lower) * self.scale_,
            upper=raw.mean + (raw.upper - raw.mean) * self.scale_,
            level=level,
            model=f"{self.choice_} (auto)",
            note=raw.note,
        )

    def _candidates(self, y: pd.Series) -> list[str]:
        if self.candidates:
            return list(self.candidates)
        step = y.index[1] - y.index[0] if len(y) > 1 else pd.Timedelta(days=1)
        daily_year = step >= pd.Timedelta(days=1) and y.notna().sum() >= 365 * pd.Timedelta(days=1) / step
        return ["seasonal_naive", "ets", *(["prophet"] if daily_year else [])]

    def _make(self, name: str) -> Any:
        return make_model(name, **({"calendar": self.calendar} if name == "prophet" else {}))

    def _select(self, y: pd.Series) -> tuple[str, float, dict[str, float]]:
        """(best model, its calibration scale, MASE per candidate) from the short backtest."""
        cuts = _cuts(len(y), self.horizon, self.origins)
        candidates = self._candidates(y)
        if not cuts:  # too short to backtest: the simplest model, its own band
            return candidates[0], 1.0, {}
        scores: dict[str, float] = {}
        standardised: dict[str, list[float]] = {}
        for name in candidates:
            errors, ratios = [], []
            for cut in cuts:
                try:
                    forecast = self._make(name).fit(y.iloc[:cut]).predict(self.horizon, CALIBRATION_LEVEL)
                except FIT_ERRORS:
                    errors = []
                    break
                actual = y.iloc[cut : cut + self.horizon].to_numpy(dtype="float64")
                mean = forecast.mean.to_numpy(dtype="float64")
                sigma = (forecast.upper - forecast.lower).to_numpy(dtype="float64") / (2 * z_value(CALIBRATION_LEVEL))
                seen = ~np.isnan(actual)
                errors.extend(np.abs(actual - mean)[seen])
                ratios.extend(((actual - mean) / np.maximum(sigma, 1e-12))[seen])
            if errors:
                scores[name] = float(np.mean(errors)) / _naive_scale(y, cuts[0])
                standardised[name] = ratios
        if not scores:
            return candidates[0], 1.0, {}
        best = min(scores, key=lambda name: (round(scores[name], 3), candidates.index(name)))
        return best, _scale(standardised[best]), scores


def _cuts(n: int, horizon: int, origins: int) -> list[int]:
    """Backtest cut positions, latest last; [] when the series cannot spare them."""
    cuts = [n - horizon * (origins - i) for i in range(origins)]
    return cuts if cuts and cuts[0] >= max(3 * horizon, 30) else []


def _naive_scale(y: pd.Series, cut: int) -> float:
    """Mean |y_t - y_(t-1)| before the first cut: puts MASE on the series' own scale."""
    values = y.iloc[:cut].to_numpy(dtype="float64")
    diffs = np.abs(np.diff(values))
    diffs = diffs[~np.isnan(diffs)]
    scale = float(diffs.mean()) if len(diffs) else 1.0
    return scale if scale > 0 else 1.0


def _scale(ratios: list[float]) -> float:
    """The calibration factor: RMS of standardised errors, shrunk towards 1, within limits."""
    values = np.asarray(ratios, dtype="float64")
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return 1.0
    # Robust RMS: the median |z| of a standard normal is 0.6745, so one outlier cannot decide.
    observed = float(np.median(np.abs(values))) / 0.6745
    shrunk = math.sqrt((len(values) * observed**2 + PRIOR_WEIGHT) / (len(values) + PRIOR_WEIGHT))
    return float(min(max(shrunk, SCALE_LIMITS[0]), SCALE_LIMITS[1]))
