"""Fit a model by name and forecast, falling back to seasonal naive when the fit fails."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from forecaster.models.base import Model, check_horizon, check_level, make_model
from forecaster.types import BadInputError, Forecast

FALLBACK_MODEL = "seasonal_naive"

# What a model's numerical fit may raise on hostile data; anything else is a bug and propagates.
FIT_ERRORS = (ValueError, RuntimeError, ArithmeticError, IndexError, np.linalg.LinAlgError)


def fit_forecast(
    y: pd.Series,
    model: str,
    horizon: int,
    level: float = 0.95,
    params: Mapping[str, Any] | None = None,
    name: str = "series",
) -> Forecast:
    """`fit_forecast_with_model` without the fitted model."""
    return fit_forecast_with_model(y, model, horizon, level, params, name)[0]


def fit_forecast_with_model(
    y: pd.Series,
    model: str,
    horizon: int,
    level: float = 0.95,
    params: Mapping[str, Any] | None = None,
    name: str = "series",
) -> tuple[Forecast, Model]:
    """Fit `model` on `y` and forecast `horizon` periods at `level`.

    A constant or all-missing history is rejected (nothing to learn; the fix is in the data). When the model
    fails to fit or forecast, seasonal naive takes over and `Forecast.note` says why. A history
    that never goes below zero (counts, money, rates) gets a forecast clipped at zero.
    """
    horizon, level = check_horizon(horizon), check_level(level)
    reject_constant(y, name)
    fitted = make_model(model, **dict(params or {}))
    try:
        forecast = fitted.fit(y).predict(horizon, level)
        _reject_non_finite(forecast)
    except FIT_ERRORS as exc:
        if model == FALLBACK_MODEL:
            raise
        fitted = make_model(FALLBACK_MODEL)
        forecast = fitted.fit(y).predict(horizon, level)
        forecast = _with_note(forecast, f"{model} failed ({_short(exc)}); used {FALLBACK_MODEL}")
    if np.nanmin(y.to_numpy(dtype="float64")) >= 0:
        forecast = _clip_at_zero(forecast)
    return forecast, fitted


def reject_constant(y: pd.Series, name: str) -> None:
    """BadInputError (one line, naming the series) when `y` has no values or only one value."""
    observed = y.dropna()
    if observed.empty:
        raise BadInputError(f"{name}: no values in the history (every period is missing); check the source or the dates")
    if len(observed) and float(observed.max()) == float(observed.min()):
        raise BadInputError(
            f"{name}: every value is {float(observed.iloc[0]):g}, a constant series has nothing to "
            "forecast; check the value column or the KPI's query"
        )


def _reject_non_finite(forecast: Forecast) -> None:
    for part in (forecast.mean, forecast.lower, forecast.upper):
        if not np.all(np.isfinite(part.to_numpy(dtype="float64"))):
            raise ValueError("non-finite values in the forecast")


def _clip_at_zero(forecast: Forecast) -> Forecast:
    return Forecast(
        mean=forecast.mean.clip(lower=0.0),
        lower=forecast.lower.clip(lower=0.0),
        upper=forecast.upper.clip(lower=0.0),
        level=forecast.level,
        model=forecast.model,
        note=forecast.note,
    )


def _with_note(forecast: Forecast, note: str) -> Forecast:
    return Forecast(forecast.mean, forecast.lower, forecast.upper, forecast.level, forecast.model, note)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
