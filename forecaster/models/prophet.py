"""Prophet (Meta): trend + weekly/yearly seasonality + holiday effects.

Prophet is loud and leaky, so this wrapper: silences the `prophet`/`cmdstanpy` loggers, deletes
cmdstan's temporary files after every fit, builds one fresh Prophet per fit, turns yearly
seasonality on from one year of data (Prophet's own default waits for two), and sets the interval
width explicitly (Prophet's default is 0.80).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Self

import numpy as np
import pandas as pd

from forecaster.calendar import Calendar
from forecaster.models.base import (
    check_horizon,
    check_level,
    future_index,
    register,
    require_fitted,
    update_by_push,
    z_value,
)
from forecaster.types import Forecast

PATH_CHUNK = 400  # periods of the fitted curve computed at once for stepping (over a year of days)


def quiet_prophet() -> None:
    """Silence Prophet and cmdstanpy in this process (call in every worker, before and after import).

    Prophet sets its logger to INFO when imported, and a logger without handlers still reaches
    stderr through logging's last-resort handler, so each gets a NullHandler and a high level.
    """
    for name in ("prophet", "prophet.plot", "prophet.models", "cmdstanpy"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL + 1)
        logger.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


@register("prophet")
class ProphetModel:
    """Prophet with explicit, documented defaults.

    country: ISO code whose public holidays become effects (None = none).
    retail_events: add Black Friday, Sinterklaas and Christmas windows (default True).
    seasonality_mode: "additive", "multiplicative", or "auto" (default): multiplicative for a
        positive history, where a peak is a percentage of the level (Black Friday doubles traffic
        whatever its size), additive once zeros or negatives occur.
    uncertainty_samples: simulations behind the interval (default 1000; fewer is faster, noisier).
        0 = no simulation: the band is the analytic one Prophet's simulation approximates (see
        `analytic_sigma`), about 20 ms less per predict on 1,095 days; `auto` uses it, since it
        calibrates the width from backtest errors and needs only the band's shape.
    changepoint_prior_scale: trend flexibility (Prophet's default 0.05).
    calendar: holidays, retail peaks and user events (default: from `country`, `retail_events`).
    """

    name = "prophet"

    def __init__(
        self,
        country: str | None = None,
        retail_events: bool = True,
        seasonality_mode: str = "auto",
        uncertainty_samples: int = 1000,
        changepoint_prior_scale: float = 0.05,
        calendar: Calendar | None = None,
    ) -> None:
        self.country = country
        self.calendar = calendar or Calendar(country, retail_events)
        self.retail_events = retail_events
        self.seasonality_mode = seasonality_mode
        self.uncertainty_samples = uncertainty_samples
        self.changepoint_prior_scale = changepoint_prior_scale
        self.prophet_: Any = None
        self.y_: pd.Series | None = None
        self.fitted_y_: pd.Series | None = None  # the history of the last fit: the path starts after it
        self.path_: np.ndarray | None = None  # the fitted curve's means after that history
        self.pushed_ = 0  # values taken in since the fit

    def fit(self, y: pd.Series) -> Self:
        Prophet = _prophet_class()  # imported late: ~1 s, only when Prophet is really used
        ds = y.index.tz_convert("UTC").tz_localize(None)
        span = ds[-1] - ds[0]
        step = ds[1] - ds[0] if len(ds) > 1 else pd.Timedelta(days=1)
        model = Prophet(
            growth="linear",
            yearly_seasonality=bool(span >= pd.Timedelta(days=365) and step <= pd.Timedelta(days=7)),
            weekly_seasonality=bool(step < pd.Timedelta(days=7) and span >= pd.Timedelta(days=14)),
            daily_seasonality=bool(step < pd.Timedelta(days=1) and span >= pd.Timedelta(days=2)),
            holidays=self._holidays(ds) if step <= pd.Timedelta(days=1) else None,
            seasonality_mode=self._mode(y),
            changepoint_prior_scale=self.changepoint_prior_scale,
            uncertainty_samples=self.uncertainty_samples,
            interval_width=0.95,
        )
        frame = pd.DataFrame({"ds": ds, "y": y.to_numpy(dtype="float64")}).dropna()  # Prophet skips gaps itself
        with _private_cmdstan_folder(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pandas deprecations inside Prophet
            model.fit(frame)
        self.prophet_ = model
        self.y_ = self.fitted_y_ = y
        self.path_, self.pushed_ = None, 0
        return self

    def next_value(self) -> float:
        """The fitted curve at the next period. Values taken in since the fit do not move it:
        Prophet's update is its fitted forecast, used until the next refit."""
        require_fitted(self, "prophet_")
        if self.path_ is None or self.pushed_ >= len(self.path_):
            self._extend_path(self.pushed_ + PATH_CHUNK)
        assert self.path_ is not None
        return float(self.path_[self.pushed_])

    def push(self, value: float) -> None:
        """Move one period on (the value itself waits for the next fit)."""
        self.pushed_ += 1

    def update(self, y: pd.Series) -> Self:
        update_by_push(self, y)
        return self

    def _extend_path(self, steps: int) -> None:
        """The fitted curve's means for the `steps` periods after the fitted history (one
        Prophet predict for many steps: a predict costs ~20 ms whatever its length)."""
        assert self.fitted_y_ is not None
        index = future_index(self.fitted_y_, steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = self.prophet_.predict(pd.DataFrame({"ds": index.tz_convert("UTC").tz_localize(None)}))
        self.path_ = out["yhat"].to_numpy(dtype="float64")

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (the daemon stores a detector's state) through Prophet's own JSON form: the
        fitted Stan backend does not pickle reliably."""
        state = dict(self.__dict__)
        if state.get("prophet_") is not None:
            from prophet.serialize import model_to_json

            state["prophet_"] = model_to_json(state["prophet_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("prophet_"), str):
            _prophet_class()  # quiet loggers before prophet's import
            from prophet.serialize import model_from_json

            state["prophet_"] = model_from_json(state["prophet_"])
        self.__dict__.update(state)

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        require_fitted(self, "prophet_")
        assert self.y_ is not None
        horizon, level = check_horizon(horizon), check_level(level)
        index = future_index(self.y_, horizon)
        if self.uncertainty_samples == 0:
            return self._predict_analytic(index, level)
        # Prophet draws its interval at predict time from `interval_width`, so one fit serves any level.
        self.prophet_.interval_width = level
        # Seeded so the same fit gives the same band (Prophet samples trend changes at random).
        state = np.random.get_state()
        np.random.seed(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                out = self.prophet_.predict(pd.DataFrame({"ds": index.tz_convert("UTC").tz_localize(None)}))
        finally:
            np.random.set_state(state)
        return Forecast(
            mean=pd.Series(out["yhat"].to_numpy(), index=index),
            lower=pd.Series(out["yhat_lower"].to_numpy(), index=index),
            upper=pd.Series(out["yhat_upper"].to_numpy(), index=index),
            level=level,
            model=self.name,
        )

    def _predict_analytic(self, index: pd.DatetimeIndex, level: float) -> Forecast:
        """Mean from Prophet, band mean +- z * `analytic_sigma` (no simulation, deterministic)."""
        ds = index.tz_convert("UTC").tz_localize(None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = self.prophet_.predict(pd.DataFrame({"ds": ds}))
        mean = out["yhat"].to_numpy(dtype="float64")
        half = z_value(level) * analytic_sigma(self.prophet_, out)
        return Forecast.symmetric(mean, half, index, level, self.name)

    def _mode(self, y: pd.Series) -> str:
        if self.seasonality_mode != "auto":
            return self.seasonality_mode
        return "multiplicative" if float(y.min()) > 0 else "additive"

    def _holidays(self, ds: pd.DatetimeIndex) -> pd.DataFrame | None:
        years = range(ds[0].year, ds[-1].year + 2)  # +1 so forecasts into next year see its events
        frame = self.calendar.frame(years)
        return frame if len(frame) else None


def analytic_sigma(prophet: Any, out: pd.DataFrame) -> np.ndarray:
    """Standard deviation of Prophet's predictive distribution at each row of `out` (data units).

    Prophet simulates yhat = trend * (1 + multiplicative terms) + additive terms + noise, where
    the noise is N(0, sigma_obs) and the future trend gains changepoints as a Poisson process of
    rate S per unit of scaled time (S = the history's changepoints) with Laplace(0, lambda)
    slope changes (lambda = mean |delta| of the fit). A slope change at c moves the trend at t by
    delta * (t - c), so at h = t - 1 (scaled time past the history's end) the trend's variance is
    S * h * 2 lambda^2 * h^2 / 3 (compound Poisson, c uniform on (1, t)). The two variances add;
    this is the Gaussian with the simulation's variance, without drawing 1,000 paths.

    out: Prophet's `predict` frame for future dates (columns ds, multiplicative_terms).
    """
    params = prophet.params
    y_scale = float(prophet.y_scale)
    sigma_obs = float(np.asarray(params["sigma_obs"]).ravel()[0]) * y_scale
    deltas = np.asarray(params["delta"], dtype="float64").ravel()
    rate = len(prophet.changepoints_t) if prophet.changepoints_t is not None else 0
    spread = float(np.mean(np.abs(deltas))) if len(deltas) else 0.0
    t = ((out["ds"] - prophet.start) / prophet.t_scale).to_numpy(dtype="float64")
    h = np.clip(t - 1.0, 0.0, None)
    trend_var = rate * 2.0 * spread**2 * h**3 / 3.0
    factor = 1.0 + out["multiplicative_terms"].to_numpy(dtype="float64")
    return np.sqrt(sigma_obs**2 + trend_var * (factor * y_scale) ** 2)


@lru_cache(maxsize=1)
def _prophet_class() -> Any:
    """Prophet with two shortcuts that give the same numbers sooner (~20 ms per fit + predict).

    `make_holiday_features`: Prophet builds each holiday column day by day in Python (a Timestamp
    and an index lookup per day of every event window: ~7 ms for the retail calendar over three
    years, at fit and again at predict); this builds the same frame (column names, order,
    values, prior scales) with numpy in ~1 ms. Frames with per-holiday `prior_scale` go to
    Prophet's own code. `regressor_column_matrix`: reused at predict (see there).
    """
    quiet_prophet()
    from prophet import Prophet

    quiet_prophet()  # again: importing prophet resets its logger to INFO

    class FastHolidayProphet(Prophet):  # type: ignore[misc]
        def make_holiday_features(self, dates: pd.Series, holidays: pd.DataFrame) -> tuple[pd.DataFrame, list[float], list[str]]:
            if "prior_scale" in holidays.columns or self.holidays_prior_scale <= 0:
                return super().make_holiday_features(dates, holidays)
            features, names = holiday_features(dates, holidays)
            if self.train_holiday_names is None:
                self.train_holiday_names = pd.Series(names)
            return features, [float(self.holidays_prior_scale)] * features.shape[1], names

        def regressor_column_matrix(self, seasonal_features: pd.DataFrame, modes: dict) -> tuple[pd.DataFrame, dict]:
            # At predict Prophet rebuilds the feature-to-component matrix fit already built (a
            # pandas crosstab, ~8 ms): with the same feature columns it is the same matrix.
            columns = list(seasonal_features.columns)
            if self.train_component_cols is not None and columns == getattr(self, "kpiwatch_features_", None):
                return self.train_component_cols, self.component_modes
            self.kpiwatch_features_ = columns
            return super().regressor_column_matrix(seasonal_features, modes)

    return FastHolidayProphet


def holiday_features(dates: pd.Series, holidays: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Prophet's holiday indicator columns for `dates`, and the holiday names in frame order.

    One column per (holiday, day offset in its window), named like Prophet's
    ("christmas_delim_-11", "black_friday_delim_+0"), sorted by name; 1.0 on the rows whose
    calendar date is that day, else 0.0. Rows are matched by date, so hourly rows of a holiday
    all get the 1, as in Prophet.
    holidays: columns holiday, ds and optional lower_window / upper_window (whole days).
    """
    lower, upper = (
        holidays[name].fillna(0).astype("int64").to_numpy() if name in holidays.columns else np.zeros(len(holidays), "int64")
        for name in ("lower_window", "upper_window")
    )
    widths = np.maximum(upper - lower + 1, 0)
    rows = np.repeat(np.arange(len(holidays)), widths)
    offsets = np.arange(len(rows)) - np.repeat(np.cumsum(widths) - widths, widths) + lower[rows]
    names = holidays["holiday"].astype(str).to_numpy()[rows]
    keys = [f"{name}_delim_{'+' if off >= 0 else '-'}{abs(off)}" for name, off in zip(names, offsets.tolist(), strict=True)]
    columns = sorted(set(keys))
    position = {key: i for i, key in enumerate(columns)}
    occurrence_day = _days(holidays["ds"])[rows] + offsets
    occurrence_col = np.array([position[key] for key in keys], dtype="int64")
    # Every date row matching an occurrence's day: a sorted search, so repeated dates (hourly
    # rows) all match.
    day = _days(dates)
    order = np.argsort(day, kind="stable")
    first = np.searchsorted(day[order], occurrence_day, side="left")
    last = np.searchsorted(day[order], occurrence_day, side="right")
    counts = last - first
    hit_rows = order[np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)]
    matrix = np.zeros((len(dates), len(columns)))
    matrix[hit_rows, np.repeat(occurrence_col, counts)] = 1.0
    return pd.DataFrame(matrix, columns=columns), list(dict.fromkeys(holidays["holiday"].astype(str)))


def _days(values: pd.Series) -> np.ndarray:
    """Whole days since 1970-01-01 of each timestamp (its calendar date), as int64."""
    return pd.to_datetime(values).to_numpy().astype("datetime64[D]").astype("int64")


# cmdstanpy modules that copied the package's temp folder name at import time.
_CMDSTAN_TMPDIR_MODULES = ("cmdstanpy", "cmdstanpy.model", "cmdstanpy.stanfit.runset", "cmdstanpy.stanfit.mcmc",
                           "cmdstanpy.utils.filesystem")


@contextmanager
def _private_cmdstan_folder() -> Iterator[None]:
    """Point cmdstanpy at a fresh temp folder for one fit, and delete it afterwards.

    cmdstanpy writes every fit's data and output files into one process-wide folder that it only
    removes at exit: a daemon would fill the disk, and worker processes forked from one parent
    share that folder, so cleaning it in one worker would delete another's files mid-fit.
    """
    import importlib

    folder = tempfile.mkdtemp(prefix="kpiwatch-cmdstan-")
    modules = [importlib.import_module(name) for name in _CMDSTAN_TMPDIR_MODULES]
    previous = [getattr(module, "_TMPDIR", None) for module in modules]
    for module in modules:
        if hasattr(module, "_TMPDIR"):
            module._TMPDIR = folder
    filesystem = importlib.import_module("cmdstanpy.utils.filesystem")
    writer = filesystem.write_stan_json
    filesystem.write_stan_json = _json_writer(writer)
    try:
        yield
    finally:
        filesystem.write_stan_json = writer
        for module, old in zip(modules, previous, strict=True):
            if old is not None:
                module._TMPDIR = old
        shutil.rmtree(folder, ignore_errors=True)


def _json_writer(fallback: Callable[[str, Mapping[str, Any]], None]) -> Callable[[str, Mapping[str, Any]], None]:
    """cmdstanpy's Stan-input writer, made ~3x faster for the plain data Prophet passes.

    stanio (behind cmdstanpy) walks every number of Prophet's lists in Python and streams the JSON
    through the pure-Python encoder: ~45 ms of a ~170 ms fit on 1,095 days. Prophet's data and
    inits are ints, floats and (nested) lists of floats, which `json.dumps` (C encoder) writes
    as the same JSON. Anything else (bools, numpy values, NaN) goes to stanio unchanged. Applied
    inside `_private_cmdstan_folder`, so the benchmark's plain-Prophet peer gets it too.
    """

    def write(path: str, data: Mapping[str, Any]) -> None:
        try:
            # NaN and infinity are written by stanio's rules, not Python's: leave them to it.
            text = json.dumps(dict(data), allow_nan=False) if all(map(_plain_json, data.values())) else None
        except ValueError:
            text = None
        if text is None:
            fallback(path, data)
            return
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)

    return write


def _plain_json(value: Any) -> bool:
    """True for an int, a float, or a list (of lists) of them; a bool or numpy value is not plain."""
    items = value if type(value) is list else [value]
    if items and type(items[0]) is list:
        if not all(type(row) is list for row in items):
            return False
        items = [x for row in items for x in row]
    return all(type(x) is int or type(x) is float for x in items)
