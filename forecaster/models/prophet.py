"""Prophet (Meta): trend + weekly/yearly seasonality + holiday effects.

Prophet is loud and leaky, so this wrapper: silences the `prophet`/`cmdstanpy` loggers, deletes
cmdstan's temporary files after every fit, builds one fresh Prophet per fit, turns yearly
seasonality on from one year of data (Prophet's own default waits for two), and sets the interval
width explicitly (Prophet's default is 0.80).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import numpy as np
import pandas as pd

from forecaster.calendar import Calendar
from forecaster.models.base import check_horizon, check_level, future_index, register, require_fitted
from forecaster.types import Forecast


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

    def fit(self, y: pd.Series) -> Self:
        quiet_prophet()
        from prophet import Prophet  # imported late: ~1 s, only when Prophet is really used

        quiet_prophet()  # again: importing prophet resets its logger to INFO

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
        self.y_ = y
        return self

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        require_fitted(self, "prophet_")
        assert self.y_ is not None
        horizon, level = check_horizon(horizon), check_level(level)
        index = future_index(self.y_, horizon)
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

    def _mode(self, y: pd.Series) -> str:
        if self.seasonality_mode != "auto":
            return self.seasonality_mode
        return "multiplicative" if float(y.min()) > 0 else "additive"

    def _holidays(self, ds: pd.DatetimeIndex) -> pd.DataFrame | None:
        years = range(ds[0].year, ds[-1].year + 2)  # +1 so forecasts into next year see its events
        frame = self.calendar.frame(years)
        return frame if len(frame) else None


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
    try:
        yield
    finally:
        for module, old in zip(modules, previous, strict=True):
            if old is not None:
                module._TMPDIR = old
        shutil.rmtree(folder, ignore_errors=True)
