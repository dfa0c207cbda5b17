"""Forecasting models behind one contract; import this package to register them all."""

from __future__ import annotations

from forecaster.models import auto, ets, naive, prophet  # noqa: F401  (registration side effect)
from forecaster.models.base import Model, make_model, model_names, season_length
from forecaster.models.fallback import fit_forecast, fit_forecast_with_model

__all__ = ["Model", "fit_forecast", "fit_forecast_with_model", "make_model", "model_names", "season_length"]
