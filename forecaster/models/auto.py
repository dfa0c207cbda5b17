"""`auto`: choose a model per series by a short backtest, then calibrate its band.

Selection: each candidate is fitted at `origins` rolling origins just before the end of the
history (fewer, down to 3, when the history cannot spare them) and scored by MASE on the
`horizon` periods after each origin; the best mean wins (ties: the simpler model, listed first).
Six origins, not three: on Peyton Manning three 28-day windows picked ETS or seasonal naive at 4
of 10 origins where Prophet was better on the next 28 days (MASE 0.985 against 0.892); six
picked Prophet at all 10. Prophet is a candidate only for daily or weekly data with a year
of history (it has nothing to add on shorter or sub-daily series and costs the most).

Across a known calendar event (a holiday, Black Friday) in the forecast window, a model that
knows the calendar (Prophet) forecasts even when an ordinary-week backtest preferred another.

Calibration: model intervals assume their own error model (Gaussian, no parameter
uncertainty) and are too narrow or too wide on real data. The same backtest gives out-of-sample
errors; dividing each by the model's own normal-equivalent sigma at that horizon step gives
standardised errors, and `scale` is their 95% quantile of |z| over the normal one (1.96):
split-conformal calibration at the 95% point, the most extreme quantile ~170 backtest errors
estimate steadily (a 99% band extends it with the normal's shape). The median |z| used before
assumed Gaussian tails: the daily web series have heavier ones, and it left the 95% band at
0.91 coverage on Peyton Manning and 0.80 on pedestrians (0.96 and 0.95 with the quantile).
The scale is shrunk towards 1 with a prior worth `PRIOR_WEIGHT` errors, since a short backtest
holds few of them. The final band is the chosen model's band with every half-width multiplied
by `scale`: it keeps the model's shape over the horizon (wider further out) and gets the width
the data show.

`choice` and `scale` may be passed in to skip the backtest (a remembered selection).

One-step selection (`selection="one_step"`, what the detector uses): each candidate is fitted on
the history before its last `holdout` periods, then stepped over them with `update` (its
parameters kept), and the one with the smaller mean |one-step error| there is refitted on the
whole history. That is the error the detector's band is made of; no scale is learned, since the
detector calibrates every model's band from its own one-step errors.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import pandas as pd

from forecaster.calendar import Calendar
from forecaster.models.base import (
    check_horizon,
    check_level,
    make_model,
    register,
    require_fitted,
    season_length,
    z_value,
)
from forecaster.models.fallback import FIT_ERRORS
from forecaster.types import Forecast

CALENDAR_MODELS = ("prophet",)  # models that learn holiday and retail-peak effects
PRIOR_WEIGHT = 10.0  # standardised errors' worth of belief that the model's own band is right
SCALE_LIMITS = (0.5, 4.0)  # a calibration outside these says more about the backtest than the band
MIN_ORIGINS = 3  # fewer backtest windows choose by chance
CALIBRATION_LEVEL = 0.8  # the model band read for its sigma (central, so tails do not distort it)
CALIBRATION_QUANTILE = 0.95  # the quantile of |standardised error| the band's width is matched at


@register("auto")
class AutoModel:
    """Pick among `candidates` by a short backtest and calibrate the band (see module docstring).

    candidates: model names tried in order of simplicity (default: seasonal_naive, ets, and
        prophet when the data allow). origins: backtest origins (default 6; as many as the
        history allows when shorter, no backtest under 3). horizon: periods
        per origin (default by step, `_backtest_horizon`: 28 for daily data, four weeks of days
        show a model's weekly and trend errors; with 7 the choice on Peyton Manning was MASE
        1.03 against 0.95, BENCHMARKS.md; 13 for weekly, 12 for monthly data). country / calendar: holidays and events for
        Prophet and for spotting an event ahead (calendar wins when both are given).
    choice, scale: a remembered selection; both given = no backtest.
    event_horizon: periods ahead in which a calendar event brings in Prophet (default 7; the
        pipeline passes its check window).
    """

    name = "auto"

    def __init__(
        self,
        candidates: list[str] | None = None,
        origins: int = 6,
        horizon: int | None = None,
        country: str | None = None,
        choice: str | None = None,
        scale: float | None = None,
        calendar: Calendar | None = None,
        event_horizon: int = 7,
        selection: str = "backtest",
        holdout: int | None = None,
        candidate_params: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.candidates = candidates
        self.origins = origins
        self.horizon = horizon
        self.country = country
        self.calendar = calendar or Calendar(country)
        self.event_horizon = event_horizon
        self.choice = choice
        self.scale = scale
        if selection not in ("backtest", "one_step"):
            raise ValueError(f"auto: `selection` must be 'backtest' or 'one_step'. Got: {selection!r}")
        self.selection = selection
        self.holdout = holdout
        self.candidate_params = candidate_params or {}
        self.model_: Any = None
        self.choice_: str | None = None
        self.scale_: float = 1.0
        self.scores_: dict[str, float] = {}
        self.scales_: dict[str, float] = {}

    def fit(self, y: pd.Series) -> Self:
        if self.selection == "one_step":
            self.choice_, self.scale_ = self.choice or self._select_one_step(y), 1.0
            self.model_ = self._make(self.choice_).fit(y)
            return self
        if self.choice is not None and self.scale is not None:
            self.choice_, self.scale_ = self.choice, float(self.scale)
        else:
            self.choice_, self.scales_, self.scores_ = self._select(y)
            self.scale_ = self.scales_.get(self.choice_, 1.0)
        if self.choice_ not in CALENDAR_MODELS and self._event_ahead(y):
            # A backtest on ordinary weeks cannot show that a model without holidays will miss
            # Black Friday: across a known event, a model that knows the calendar forecasts,
            # with the calibration its own backtest errors gave (its own band when none).
            self.choice_ = CALENDAR_MODELS[0]
            self.scale_ = self.scales_.get(self.choice_, 1.0)
        self.model_ = self._make(self.choice_).fit(y)
        return self

    def _event_ahead(self, y: pd.Series) -> bool:
        """A holiday or retail peak in the next `event_horizon` days, with a year of daily
        history. Daily data only: seven weeks or months ahead nearly always hold a holiday, and
        one day of a week or month is not the event a daily model misses."""
        if len(y) < 2 or y.index[1] - y.index[0] != pd.Timedelta(days=1) or "prophet" not in self._candidates(y):
            return False
        days = pd.date_range(y.index[-1] + pd.Timedelta(days=1), periods=self.event_horizon, freq="D")
        return any(self.calendar.events_on(day.date()) for day in days)

    def next_value(self) -> float:
        require_fitted(self, "model_")
        return float(self.model_.next_value())

    def push(self, value: float) -> None:
        self.model_.push(value)

    def update(self, y: pd.Series) -> Self:
        require_fitted(self, "model_")
        self.model_.update(y)
        return self

    @property
    def seasonal_(self) -> bool:
        """Whether the chosen model has a season (the detector's band keeps errors per form)."""
        return bool(getattr(self.model_, "seasonal_", True))

    def _select_one_step(self, y: pd.Series) -> str:
        """The candidate with the smallest mean |one-step error| over the last `holdout` periods
        (default: four seasons, at least 28 and at most a quarter of the history), each fitted
        on the periods before them; the first candidate when the history cannot spare them."""
        candidates = self._candidates(y)
        season = season_length(y.index.freqstr or "D")
        holdout = self.holdout or min(max(28, 4 * season), len(y) // 4)
        if holdout < 7:
            return candidates[0]
        train, test = y.iloc[:-holdout], y.iloc[-holdout:].to_numpy(dtype="float64")
        errors: dict[str, float] = {}
        for name in candidates:
            try:
                model = self._make(name).fit(train)
            except FIT_ERRORS:
                continue
            total, count = 0.0, 0
            for value in test:
                if not np.isnan(value):
                    total += abs(value - model.next_value())
                    count += 1
                model.push(float(value))
            errors[name] = total / count if count else math.inf
        if not errors:
            return candidates[0]
        return min(errors, key=lambda name: (errors[name], candidates.index(name)))

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
        if name in self.candidate_params:
            return make_model(name, **self.candidate_params[name])
        if name == "prophet":
            # The band is recalibrated from backtest errors, so Prophet's 1,000 simulated paths
            # would only give its shape: the analytic band has the same shape, ~20 ms sooner.
            return make_model(name, calendar=self.calendar, uncertainty_samples=0)
        return make_model(name)

    def _select(self, y: pd.Series) -> tuple[str, dict[str, float], dict[str, float]]:
        """(best model, calibration scale per candidate, MASE per candidate) from the short backtest."""
        horizon = self.horizon or _backtest_horizon(y)
        cuts = _cuts(len(y), horizon, self.origins)
        candidates = self._candidates(y)
        if not cuts:  # too short to backtest: the simplest model, its own band
            return candidates[0], {}, {}
        scores: dict[str, float] = {}
        standardised: dict[str, list[float]] = {}
        for name in candidates:
            errors, ratios = [], []
            for cut in cuts:
                try:
                    forecast = self._make(name).fit(y.iloc[:cut]).predict(horizon, CALIBRATION_LEVEL)
                except FIT_ERRORS:
                    errors = []
                    break
                actual = y.iloc[cut : cut + horizon].to_numpy(dtype="float64")
                mean = forecast.mean.to_numpy(dtype="float64")
                sigma = (forecast.upper - forecast.lower).to_numpy(dtype="float64") / (2 * z_value(CALIBRATION_LEVEL))
                seen = ~np.isnan(actual)
                errors.extend(np.abs(actual - mean)[seen])
                ratios.extend(((actual - mean) / np.maximum(sigma, 1e-12))[seen])
            if errors:
                scores[name] = float(np.mean(errors)) / _naive_scale(y, cuts[0])
                standardised[name] = ratios
        if not scores:
            return candidates[0], {}, {}
        best = min(scores, key=lambda name: (round(scores[name], 3), candidates.index(name)))
        return best, {name: _scale(ratios) for name, ratios in standardised.items()}, scores


def _backtest_horizon(y: pd.Series) -> int:
    """Periods per backtest origin by the data's step: 28 for daily and finer data (four weekly
    cycles), 13 for weekly (a quarter), 12 for monthly and coarser (a year). 28 months or weeks
    would leave most monthly and weekly KPIs too short to backtest at all."""
    step = y.index[1] - y.index[0] if len(y) > 1 else pd.Timedelta(days=1)
    if step <= pd.Timedelta(days=1):
        return 28
    return 13 if step <= pd.Timedelta(days=7) else 12


def _cuts(n: int, horizon: int, origins: int) -> list[int]:
    """Backtest cut positions, latest last: up to `origins`, each leaving at least
    max(3 * horizon, 30) periods to train on; [] when fewer than min(3, origins) fit."""
    fit = min(origins, (n - max(3 * horizon, 30)) // horizon)
    if fit < min(MIN_ORIGINS, origins):
        return []
    return [n - horizon * (fit - i) for i in range(fit)]


def _naive_scale(y: pd.Series, cut: int) -> float:
    """Mean |y_t - y_(t-1)| before the first cut: puts MASE on the series' own scale."""
    values = y.iloc[:cut].to_numpy(dtype="float64")
    diffs = np.abs(np.diff(values))
    diffs = diffs[~np.isnan(diffs)]
    scale = float(diffs.mean()) if len(diffs) else 1.0
    return scale if scale > 0 else 1.0


def _scale(ratios: list[float]) -> float:
    """The calibration factor: the `CALIBRATION_QUANTILE` quantile of |standardised error| over
    the standard normal's (1.96 at 0.95), shrunk towards 1, within `SCALE_LIMITS`.

    The quantile is split-conformal's: the ceil((n + 1) q)-th smallest of n, so a band scaled by
    it holds at least q of errors like these.
    """
    values = np.abs(np.asarray(ratios, dtype="float64"))
    values = np.sort(values[np.isfinite(values)])
    if len(values) == 0:
        return 1.0
    rank = min(math.ceil((len(values) + 1) * CALIBRATION_QUANTILE), len(values))
    observed = float(values[rank - 1]) / z_value(CALIBRATION_QUANTILE)
    shrunk = math.sqrt((len(values) * observed**2 + PRIOR_WEIGHT) / (len(values) + PRIOR_WEIGHT))
    return float(min(max(shrunk, SCALE_LIMITS[0]), SCALE_LIMITS[1]))
