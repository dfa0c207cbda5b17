"""Rolling-origin backtests: how accurate each model's forecasts and bands were on past data.

Pure computation on one series (no I/O, no printing), so the CLI (`kpiwatch backtest`), the
benchmarks and a future batch worker all call the same function.

Protocol: the series is cut at `origins` positions spaced `step` periods apart (default: one
horizon, so test windows do not overlap), the last test window ending at the series' end. At
each cut every model is fitted on the periods before the cut (only the last `train_window` of
them when given) through `fit_forecast`, so a model that fails is replaced by seasonal naive
exactly as in production and the failure is counted, not hidden. Its forecast of the next
`horizon` periods is compared with what really happened; missing actuals (NaN) are skipped.

Metrics (all skip NaN actuals; `e = actual - forecast`):
- MASE: per origin, mean |e| over the test window divided by the in-sample mean absolute
  error of the seasonal naive forecast on that origin's training data (`naive_scale`); the
  score is the mean over origins of these per-origin values (as Prophet-paper-style peers
  report it), not the pooled ratio. < 1 beats seasonal naive fitted in-sample.
- sMAPE, percent: mean over all test points of 200 * |e| / (|actual| + |forecast|) (a term
  whose denominator is 0 has actual = forecast = 0 and counts as 0).
- coverage: share (0..1) of all test actuals inside [lower, upper], both ends included.
- alert band coverage: the detector's view (`forecaster.detect`, the one engine the daemon,
  `check` and `replay` judge with): the model stepped one period at a time over the whole series
  with its conformal band at `level` (per period: the level for daily data, tighter for finer
  data); the share of judged periods inside that band. It says how often a normal period would
  be flagged with this model, which the multi-step coverage above does not.
- MSIS (Gneiting & Raftery 2007; M4 competition): per origin, the mean over the test window
  of (U - L) + (2/a)(L - y)[y < L] + (2/a)(y - U)[y > U], a = 1 - level, divided by the same
  seasonal naive scale as MASE; the score is the mean over origins. Lower is better; it
  rewards narrow bands and penalises misses by 2/a (40x at 95%) times the miss.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forecaster.detect import Detector, Rules, walk_forward
from forecaster.models import fit_forecast, model_names, season_length
from forecaster.models.base import check_horizon, check_level
from forecaster.models.fallback import reject_constant
from forecaster.sources.base import MIN_POINTS
from forecaster.types import BadInputError, Forecast, KPISeries

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelScore:
    """One model's backtest result on one series.

    origins: forecast origins evaluated; horizon: periods forecast from each.
    mase: mean over origins of the per-origin MASE (NaN when no origin has a defined one).
    smape: percent (0..200). coverage: share of actuals inside the band (0..1).
    msis: mean over origins of the per-origin scaled interval score (band width + miss
    penalty, in units of the in-sample seasonal naive MAE).
    seconds_per_fit: wall-clock seconds of one fit + predict (via `fit_forecast`), averaged.
    fallbacks: fits where the model failed and seasonal naive stood in (`Forecast.note` set).
    alert_coverage: share (0..1) of the periods the detector judged that lay inside its band
        with this model (NaN when the series is too short for the detector).
    """

    model: str
    origins: int
    horizon: int
    mase: float
    smape: float
    coverage: float
    msis: float
    seconds_per_fit: float
    fallbacks: int
    alert_coverage: float = math.nan


# --------------------------------------------------------------------------- origins


def rolling_origins(
    n: int,
    horizon: int,
    origins: int,
    step: int | None = None,
    min_train: int | None = None,
) -> list[int]:
    """Cut positions for a rolling-origin backtest of a series of `n` periods, ascending.

    At cut c the model trains on `y[:c]` and is tested on `y[c:c + horizon]`. The last cut is
    `n - horizon` (its test window ends at the series' end); the others lie `step` periods
    before each other. step: default None = `horizon` (test windows touch, never overlap).
    min_train: the fewest training periods the first origin may have; default None = `horizon`.

    Raises `BadInputError` when `n` is too short, e.g. "needs at least 308 periods for 10
    origins of 28; got 200. Use fewer --origins or a shorter --horizon".
    """
    horizon = _whole(horizon, "horizon", 1)
    origins = _whole(origins, "origins", 1)
    step = horizon if step is None else _whole(step, "step", 1)
    min_train = horizon if min_train is None else _whole(min_train, "min_train", 1)
    need = min_train + horizon + step * (origins - 1)
    if n < need:
        raise BadInputError(
            f"needs at least {need} periods for {origins} origins of {horizon}; got {n}. "
            "Use fewer --origins or a shorter --horizon"
        )
    last = n - horizon
    return [last - step * (origins - 1 - i) for i in range(origins)]


def _whole(value: Any, name: str, minimum: int) -> int:
    """`value` as an int >= `minimum`; booleans, fractions and smaller numbers are rejected."""
    whole = (
        not isinstance(value, bool)
        and isinstance(value, int | np.integer | float)
        and float(value).is_integer()  # False for 2.5, nan and inf alike
    )
    if not whole or value < minimum:
        raise BadInputError(f"`{name}` must be a whole number >= {minimum}. Got: {value!r}")
    return int(value)


# --------------------------------------------------------------------------- metrics on arrays


def naive_scale(train: np.ndarray, m: int) -> float:
    """In-sample mean absolute error of the seasonal naive forecast: mean |y_t - y_(t-m)|.

    m: season length in periods; 1 (plain naive) is used instead when `train` holds fewer
    than 2 * m values, as the seasonal naive model itself does. Pairs with a NaN are skipped.
    Returns NaN when no pair is left; 0.0 when the training data repeat exactly every m.
    """
    train = np.asarray(train, dtype="float64")
    m = m if m >= 1 and len(train) >= 2 * m else 1
    if len(train) <= m:
        return math.nan
    diffs = np.abs(train[m:] - train[:-m])
    diffs = diffs[~np.isnan(diffs)]
    return float(diffs.mean()) if len(diffs) else math.nan


def mase(actual: np.ndarray, forecast: np.ndarray, scale: float) -> float:
    """Mean |actual - forecast| over non-NaN actuals divided by `scale` (see `naive_scale`).

    NaN when no actual is present or the scale is NaN or 0 (a perfectly periodic history
    gives seasonal naive no error to compare with, so the ratio means nothing).
    """
    actual, forecast = _pair(actual, forecast)
    if not len(actual) or not scale > 0:
        return math.nan
    return float(np.mean(np.abs(actual - forecast)) / scale)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200): mean of 200 * |e| / (|actual| + |forecast|).

    NaN actuals are skipped; a point where both are 0 counts as 0 (a perfect forecast).
    NaN when no actual is present.
    """
    actual, forecast = _pair(actual, forecast)
    if not len(actual):
        return math.nan
    denominator = np.abs(actual) + np.abs(forecast)
    terms = np.divide(
        200.0 * np.abs(actual - forecast), denominator, out=np.zeros_like(actual), where=denominator > 0
    )
    return float(terms.mean())


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share (0..1) of non-NaN actuals with lower <= actual <= upper; NaN when none is present."""
    present = ~np.isnan(np.asarray(actual, dtype="float64"))
    if not present.any():
        return math.nan
    y = np.asarray(actual, dtype="float64")[present]
    lo = np.asarray(lower, dtype="float64")[present]
    hi = np.asarray(upper, dtype="float64")[present]
    return float(np.mean((y >= lo) & (y <= hi)))


def interval_score(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> float:
    """Mean interval score (Gneiting & Raftery 2007) over non-NaN actuals, in the data's units.

    Per point: (U - L) + (2/a)(L - y)[y < L] + (2/a)(y - U)[y > U], with a = 1 - level.
    NaN when no actual is present.
    """
    present = ~np.isnan(np.asarray(actual, dtype="float64"))
    if not present.any():
        return math.nan
    y = np.asarray(actual, dtype="float64")[present]
    lo = np.asarray(lower, dtype="float64")[present]
    hi = np.asarray(upper, dtype="float64")[present]
    alpha = 1.0 - level
    penalty = (2.0 / alpha) * (np.clip(lo - y, 0.0, None) + np.clip(y - hi, 0.0, None))
    return float(np.mean((hi - lo) + penalty))


def msis(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float, scale: float) -> float:
    """`interval_score` divided by `scale` (the in-sample seasonal naive MAE), as in M4.

    NaN when no actual is present or the scale is NaN or 0.
    """
    if not scale > 0:
        return math.nan
    return interval_score(actual, lower, upper, level) / scale


def _pair(actual: np.ndarray, forecast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`actual` and `forecast` as float arrays with the positions of NaN actuals dropped."""
    actual = np.asarray(actual, dtype="float64")
    forecast = np.asarray(forecast, dtype="float64")
    if actual.shape != forecast.shape:
        raise ValueError(f"actual has shape {actual.shape} but forecast has {forecast.shape}")
    present = ~np.isnan(actual)
    return actual[present], forecast[present]


def _mean_defined(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none (without numpy's empty-mean warning)."""
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


# --------------------------------------------------------------------------- the backtest


@dataclass
class _Tally:
    """What one model accumulates over the origins."""

    mase: list[float] = field(default_factory=list)
    msis: list[float] = field(default_factory=list)
    actual: list[np.ndarray] = field(default_factory=list)
    mean: list[np.ndarray] = field(default_factory=list)
    lower: list[np.ndarray] = field(default_factory=list)
    upper: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0
    fits: int = 0
    fallbacks: int = 0

    def add(self, actual: np.ndarray, forecast: Forecast, scale: float, level: float, seconds: float) -> None:
        mean, lower, upper = (s.to_numpy(dtype="float64") for s in (forecast.mean, forecast.lower, forecast.upper))
        self.mase.append(mase(actual, mean, scale))
        self.msis.append(msis(actual, lower, upper, level, scale))
        self.actual.append(actual)
        self.mean.append(mean)
        self.lower.append(lower)
        self.upper.append(upper)
        self.seconds += seconds
        self.fits += 1
        self.fallbacks += int(bool(forecast.note))

    def score(self, model: str, horizon: int) -> ModelScore:
        actual = np.concatenate(self.actual)
        return ModelScore(
            model=model,
            origins=self.fits,
            horizon=horizon,
            mase=_mean_defined(self.mase),
            smape=smape(actual, np.concatenate(self.mean)),
            coverage=coverage(actual, np.concatenate(self.lower), np.concatenate(self.upper)),
            msis=_mean_defined(self.msis),
            seconds_per_fit=self.seconds / self.fits,
            fallbacks=self.fallbacks,
        )


def backtest(
    y: pd.Series,
    models: Sequence[str],
    horizon: int = 28,
    origins: int = 10,
    level: float = 0.95,
    train_window: int | None = None,
    season: int | None = None,
    progress: Progress | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ModelScore]:
    """Rolling-origin backtest of `models` on `y`; one `ModelScore` per model, in `models` order.

    y: float series on a regular tz-aware DatetimeIndex with `freq` set (`KPISeries.values`);
    NaN = missing (skipped as actuals; each model handles gaps in its training data).
    models: registry names (see `forecaster.models.model_names()`); duplicates are dropped.
    horizon: periods forecast from each origin; default 28. origins: default 10, spaced one
    horizon apart, the last ending at the series' end (see `rolling_origins`); every origin
    trains on at least max(horizon, 8) periods. level: band probability; default 0.95.
    train_window: fit on only the last this-many periods before each cut; default None = all.
    season: the season length m of the MASE/MSIS scale; default None = from the frequency
    (`season_length`: 7 for daily, 24 for hourly). It does not reach the models: give those
    their own through `params`, e.g. {"ets": {"season": 24}}.
    progress: called as progress(fits_done, fits_total) after every fit (for a progress bar).
    params: model name -> constructor parameters, passed to `fit_forecast`.

    Deterministic for deterministic models (all but Prophet's sampling are; kpiwatch seeds it).
    Raises `BadInputError` (one line) on bad arguments, a series too short for the origins, or a
    training window `fit_forecast` rejects (all missing or constant), naming the origin.
    """
    horizon, level = check_horizon(horizon), check_level(level)
    names = _check_models(models, params)
    freq = _freq_of(y)
    m = season_length(freq) if season is None else _whole(season, "season", 1)
    min_train = max(horizon, MIN_POINTS)
    if train_window is not None:
        train_window = _whole(train_window, "train_window", 1)
        if train_window < min_train:
            raise BadInputError(
                f"`train_window` must be at least {min_train} periods (the horizon, and never under "
                f"{MIN_POINTS}). Got: {train_window}"
            )
    label = str(y.name) if y.name is not None else "series"
    reject_constant(y, label)  # said once for the series, not as the first origin's failure
    try:
        cuts = rolling_origins(len(y), horizon, origins, min_train=min_train)
    except BadInputError as err:
        raise BadInputError(f"{label}: {err}") from None
    values = y.to_numpy(dtype="float64", na_value=np.nan)
    tallies = {name: _Tally() for name in names}
    total, done = len(cuts) * len(names), 0
    for number, cut in enumerate(cuts, start=1):
        start = 0 if train_window is None else max(0, cut - train_window)
        train = y.iloc[start:cut]  # a positional slice keeps the index's freq
        actual = values[cut : cut + horizon]
        scale = naive_scale(values[start:cut], m)
        for name in names:
            began = time.perf_counter()
            try:
                forecast = fit_forecast(train, name, horizon, level, params=(params or {}).get(name), name=label)
            except BadInputError as err:
                raise BadInputError(f"backtest origin {number} (training data up to {y.index[cut - 1]}): {err}") from None
            tallies[name].add(actual, forecast, scale, level, time.perf_counter() - began)
            done += 1
            if progress is not None:
                progress(done, total)
    scores = [tallies[name].score(name, horizon) for name in names]
    return [dataclasses.replace(score, alert_coverage=alert_coverage(y, score.model, level, (params or {}).get(score.model)))
            for score in scores]


def alert_coverage(y: pd.Series, model: str, level: float, params: Mapping[str, Any] | None = None) -> float:
    """The share of periods the detector judges with `model` that lie inside its band at `level`."""
    series = KPISeries(str(y.name) if y.name is not None else "series", y, _freq_of(y))
    detector = Detector(Rules(level=level), series.freq, model=model, model_params=dict(params or {}))
    judged = [j for j in walk_forward(detector, series) if not math.isnan(j.score)]
    if not judged:
        return math.nan
    return sum(j.lower <= j.actual <= j.upper for j in judged) / len(judged)


def _check_models(models: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """The model names, order kept, duplicates dropped; unknown names and stray params rejected."""
    if isinstance(models, str):  # "ets" would otherwise iterate as "e", "t", "s"
        models = [models]
    names = list(dict.fromkeys(models))
    known = model_names()
    if not names:
        raise BadInputError(f"`models` is empty; choose one or more of: {', '.join(known)}")
    for name in names:
        if name not in known:
            raise BadInputError(f"unknown model {name!r}; choose one of: {', '.join(known)}")
    for name in params or {}:
        if name not in names:
            raise BadInputError(
                f"`params` has parameters for {name!r}, which is not being backtested; "
                f"backtested: {', '.join(names)}"
            )
    return names


def _freq_of(y: pd.Series) -> str:
    """The alias of `y`'s index freq; a caller bug (not user input) when it is missing."""
    if not isinstance(y.index, pd.DatetimeIndex) or y.index.freq is None:
        raise ValueError("backtest needs a DatetimeIndex with freq set; build the series with sources.base.to_kpi_series")
    return y.index.freqstr
