"""The model contract, shared helpers, and the registry every model is found through.

Contract (statsforecast-style): a fresh instance per fit; parameters go to `__init__`, fitted
state lives in attributes ending in `_`; `fit(y) -> self`; `update(y) -> self` takes in the
values that followed, parameters kept (sktime's `update(update_params=False)`, statsforecast's
`forward`); `predict(horizon, level) -> Forecast` forecasts from the last value seen.
`y` is a float series on a regular, tz-aware DatetimeIndex whose `freq` is set; NaN = missing.

The detector's hot path steps one value at a time without pandas: `next_value()` is the
one-step mean, `push(value)` takes one value in (NaN: a gap, the model carries on from its
forecast). `update(y)` is `push` over `y`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, Self

import numpy as np
import pandas as pd
from scipy import stats

from forecaster.timegrid import season_length  # noqa: F401  (models read the season here)
from forecaster.types import BadInputError, Forecast


class Model(Protocol):
    """What every forecasting model offers."""

    name: str

    def fit(self, y: pd.Series) -> Self: ...

    def update(self, y: pd.Series) -> Self: ...

    def predict(self, horizon: int, level: float = 0.95) -> Forecast: ...

    def next_value(self) -> float: ...

    def push(self, value: float) -> None: ...


def update_by_push(model: Any, y: pd.Series) -> None:
    """The contract's `update`: push every value of `y` (which follows what the model has seen)
    and extend `model.y_`, so `predict` labels its periods after the new values."""
    require_fitted(model, "y_")
    for value in y.to_numpy(dtype="float64", na_value=np.nan):
        model.push(float(value))
    model.y_ = pd.concat([model.y_, y]).asfreq(model.y_.index.freq)


def check_level(level: float) -> float:
    """Reject a level outside (0, 1): `level` is a probability such as 0.95, not a percentage."""
    if not 0.0 < level < 1.0:
        raise BadInputError(
            f"`level` must be between 0 and 1 (exclusive), e.g. 0.95. Got: {level}"
        )
    return float(level)


def check_season(season: int | None) -> int | None:
    """Reject a `season` parameter that is not a whole number of periods >= 2 (None = from freq)."""
    if season is None:
        return None
    if isinstance(season, bool) or not isinstance(season, int) or season < 2:
        raise BadInputError(f"model parameter `season` must be a whole number of periods >= 2, e.g. 7. Got: {season!r}")
    return season


def check_horizon(horizon: int) -> int:
    """Reject a horizon that is not a positive whole number of periods."""
    if int(horizon) != horizon or horizon < 1:
        raise BadInputError(f"`horizon` must be a whole number of periods >= 1. Got: {horizon}")
    return int(horizon)


def future_index(y: pd.Series, horizon: int) -> pd.DatetimeIndex:
    """The `horizon` period starts that follow the last timestamp of `y` (same freq and tz)."""
    freq = y.index.freq
    if freq is None:
        raise ValueError("the series index has no freq; build it with sources.base.to_kpi_series")
    return pd.date_range(y.index[-1] + freq, periods=horizon, freq=freq)


@functools.lru_cache(maxsize=64)
def z_value(level: float) -> float:
    """The standard normal quantile of a central interval: 0.95 -> 1.96 (the one helper; cached,
    since the detector asks it once per judged period)."""
    return float(stats.norm.ppf(0.5 + level / 2.0))


def require_fitted(model: Any, attribute: str) -> None:
    """Raise the contract's RuntimeError when `predict` comes before `fit`."""
    if getattr(model, attribute, None) is None:
        raise RuntimeError(f"{model.name}: call fit() before predict()")


def interpolate_gaps(y: pd.Series) -> pd.Series:
    """Fill NaN for models that cannot skip them: linear inside, nearest at the ends.

    Only the model's *input* is filled; the series a user sees keeps its gaps.
    """
    filled = y.interpolate(method="linear", limit_direction="both")
    return filled.fillna(0.0) if filled.isna().all() else filled


ModelFactory = Callable[..., Model]
_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Class decorator: make a model available by `name` in config and on the CLI."""

    def add(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name] = factory
        return factory

    return add


def model_names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def make_model(name: str, **params: Any) -> Model:
    """A fresh, unfitted model by registry name; unknown names list what exists."""
    if name not in _REGISTRY:
        raise BadInputError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    try:
        return _REGISTRY[name](**params)
    except TypeError as exc:  # an unknown parameter name in config
        raise BadInputError(f"model {name!r}: bad parameter ({exc})") from None


def as_float_array(values: pd.Series) -> np.ndarray:
    """Values as float64 numpy, NaN kept."""
    return values.to_numpy(dtype="float64", na_value=np.nan)
