"""Tests of the forecasting models: one contract for every registered model, interval coverage,
`fit_forecast` (constant series, fallback, clipping), `season_length`, and the Prophet wrapper.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import re
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_series

from forecaster.models import base, fit_forecast, make_model, model_names, season_length
from forecaster.models.base import future_index
from forecaster.types import BadInputError, Forecast

MODELS = [pytest.param(n, marks=pytest.mark.slow) if n == "prophet" else n for n in model_names()]
nan = float("nan")
LEVEL_MESSAGE = "`level` must be between 0 and 1 (exclusive), e.g. 0.95. Got: {}"
# prophet.serialize.model_from_json calls pandas' read_json the way pandas 3 deprecates
PROPHET_FROM_JSON = "ignore:The 'convert_dates' keyword"


def _with_gaps(y: pd.Series, positions: list[int]) -> pd.Series:
    out = y.copy()
    out.iloc[positions] = np.nan
    return out


# --------------------------------------------------------------------------- the conftest helpers


def test_make_series_is_seeded_regular_utc_float(make_series: Callable[..., pd.Series]) -> None:
    y = make_series(freq="h", periods=48, season=24, noise=0.0)
    assert len(y) == 48 and y.dtype == "float64"
    assert str(y.index.tz) == "UTC" and y.index.freqstr == "h"
    assert y.iloc[0] == pytest.approx(100.0) and y.iloc[6] == pytest.approx(110.0)  # sin(pi / 2) = 1
    pd.testing.assert_series_equal(make_series(seed=3), make_series(seed=3))
    assert not make_series(seed=3).equals(make_series(seed=4))


def test_with_drop_by_position_or_timestamp(with_drop: Callable[..., pd.Series]) -> None:
    y = pd.Series([10.0, 10.0, nan, 10.0], index=pd.date_range("2025-01-01", periods=4, freq="D", tz="UTC"))
    expected = [10.0, 10.0, nan, 7.5]
    np.testing.assert_array_equal(with_drop(y, 3, 0.25).to_numpy(), expected)
    np.testing.assert_array_equal(with_drop(y, "2025-01-04", 0.25).to_numpy(), expected)
    np.testing.assert_array_equal(with_drop(y, 1, 1.0).to_numpy(), [10.0, 0.0, nan, 0.0])
    assert y.iloc[3] == 10.0  # the input is left alone


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("freq", ["D", "h"])
@pytest.mark.parametrize("name", MODELS)
def test_model_contract(name: str, freq: str) -> None:
    season = 7 if freq == "D" else 24
    # Gaps inside and at the very end: the future still starts one period after the last stamp.
    y = _with_gaps(make_series(freq=freq, periods=200, season=season, seed=1), [5, 60, 61, 62, 199])
    model = make_model(name)

    with pytest.raises(RuntimeError, match=f"^{re.escape(f'{name}: call fit() before predict()')}$"):
        model.predict(3)

    assert model.fit(y) is model

    horizon = 10
    narrow, wide = model.predict(horizon, 0.8), model.predict(horizon, 0.99)
    expected_index = pd.date_range(y.index[-1] + pd.tseries.frequencies.to_offset(freq), periods=horizon,
                                   freq=freq, tz="UTC")
    for forecast, level in ((narrow, 0.8), (wide, 0.99)):
        assert isinstance(forecast, Forecast)
        # `auto` names the model it chose, e.g. "ets (auto)": the forecast says who really made it
        assert forecast.model == name or (name == "auto" and forecast.model.endswith(" (auto)"))
        assert forecast.level == level
        assert forecast.note == ""
        for part in (forecast.mean, forecast.lower, forecast.upper):
            assert len(part) == horizon
            pd.testing.assert_index_equal(part.index, expected_index)
            assert part.index.freq == y.index.freq
            assert str(part.index.tz) == "UTC"
            assert np.all(np.isfinite(part.to_numpy(dtype="float64")))
        assert (forecast.lower <= forecast.mean).all()
        assert (forecast.mean <= forecast.upper).all()
    assert ((wide.upper - wide.lower) > (narrow.upper - narrow.lower)).all()

    for bad in (0.0, 1.0, 95, -0.5, 1.5):
        with pytest.raises(BadInputError) as info:
            model.predict(horizon, bad)
        assert str(info.value) == LEVEL_MESSAGE.format(bad)


# --------------------------------------------------------------------------- stepping: update, next_value, push


@pytest.mark.filterwarnings(PROPHET_FROM_JSON)  # the twin is a deep copy: Prophet's JSON round trip
@pytest.mark.parametrize("name", MODELS)
def test_update_next_value_and_push(name: str) -> None:
    # The detector's side of the contract: fit on a part, take the rest in without refitting.
    y = _with_gaps(make_series(periods=200, seed=1), [5, 150, 175, 199])  # gaps in both parts and at the end
    fit_part, rest = y.iloc[:150], y.iloc[150:]
    unfitted = make_model(name)
    message = f"^{re.escape(f'{name}: call fit() before predict()')}$"
    for call in (lambda: unfitted.predict(3), unfitted.next_value, lambda: unfitted.update(rest)):
        with pytest.raises(RuntimeError, match=message):
            call()

    model = make_model(name).fit(fit_part)
    twin = copy.deepcopy(model)
    # Straight after the fit the one-step mean is the model's own first forecast.
    assert model.next_value() == pytest.approx(model.predict(1).mean.iloc[0], rel=1e-12)
    # Prophet's fitted curve over the periods after the fitted ones.
    curve = make_model(name).fit(fit_part).predict(len(rest) + 2).mean if name == "prophet" else None

    assert model.update(rest) is model
    forecast = model.predict(4, 0.9)
    day = pd.Timedelta(days=1)
    # Labelled after the updated values, not after the fitted ones.
    pd.testing.assert_index_equal(forecast.mean.index, pd.date_range(y.index[-1] + day, periods=4, freq="D"))
    assert forecast.mean.index.freq == y.index.freq
    assert model.next_value() == pytest.approx(forecast.mean.iloc[0], rel=1e-12)

    # `update` is `push` over the values: a twin that took them one at a time is the same model.
    for value in rest:
        twin.push(float(value))
    assert twin.next_value() == model.next_value()

    model.push(250.0)
    if name == "prophet":
        # Prophet's update is its fitted forecast: the curve goes on, the values wait for a refit.
        assert curve is not None
        assert forecast.mean.iloc[0] == pytest.approx(curve.iloc[len(rest)], rel=1e-9)
        assert model.next_value() == pytest.approx(curve.iloc[len(rest) + 1], rel=1e-9)
    else:
        # The value pushed moved the states: the next one-step mean is the one-step forecast.
        assert model.next_value() == pytest.approx(model.predict(1).mean.iloc[0], rel=1e-12)

    # A gap (NaN) is a period the model carries on through from its own forecast.
    gapped = copy.deepcopy(model)
    for _ in range(9):
        gapped.push(nan)
        model.push(model.next_value())
        assert gapped.next_value() == pytest.approx(model.next_value(), rel=1e-12)


@pytest.mark.filterwarnings(PROPHET_FROM_JSON)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("pushed", [0, 9], ids=["fitted", "pushed"])
def test_a_pickled_model_forecasts_and_steps_the_same(name: str, pushed: int) -> None:
    # The daemon keeps a fitted model inside the detector's state in its store.
    y = make_series(periods=100, seed=3)
    model = make_model(name).fit(y.iloc[:-pushed] if pushed else y)
    for value in y.iloc[len(y) - pushed:]:
        model.push(float(value))
    again = pickle.loads(pickle.dumps(model))
    assert again.next_value() == pytest.approx(model.next_value(), rel=1e-12)
    np.testing.assert_allclose(again.predict(7).mean.to_numpy(), model.predict(7).mean.to_numpy(), rtol=1e-9)
    for value in (80.0, nan, 120.0):
        model.push(value)
        again.push(value)
        assert again.next_value() == pytest.approx(model.next_value(), rel=1e-12)


def test_seasonal_naive_updated_is_seasonal_naive_refitted() -> None:
    # Its only state is the last value of each phase, so updating is refitting (gaps keep a phase's value).
    y = _with_gaps(make_series(periods=120, seed=2), [90, 100, 101, 119])
    updated = make_model("seasonal_naive").fit(y.iloc[:80]).update(y.iloc[80:])
    refitted = make_model("seasonal_naive").fit(y)
    assert updated.next_value() == refitted.next_value()
    pd.testing.assert_series_equal(updated.predict(14).mean, refitted.predict(14).mean)


@pytest.mark.parametrize(
    "params",
    [{}, {"trend": None, "initialization": "heuristic"}, {"damped": False, "season": 14}],
    ids=["damped-trend", "detectors-no-trend-heuristic", "trend-season-14"],
)
def test_ets_update_runs_statsmodels_own_filter(params: dict) -> None:
    # The hand-written recursion after the fit equals statsmodels smoothing the whole series with
    # the fitted parameters: `update` keeps the parameters and moves only the states.
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    y = make_series(periods=200, seed=1)
    model = make_model("ets", **params).fit(y.iloc[:160]).update(y.iloc[160:])
    spec = model.result_.model  # type: ignore[attr-defined]
    whole = ETSModel(pd.Series(y.to_numpy()), error="add", trend=spec.trend, damped_trend=spec.damped_trend,
                     seasonal=spec.seasonal, seasonal_periods=spec.seasonal_periods,
                     initialization_method=spec.initialization_method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smoothed = whole.smooth(model.result_.params)  # type: ignore[attr-defined]
    assert model.seasonal_
    np.testing.assert_allclose(model.predict(10).mean.to_numpy(), smoothed.forecast(10).to_numpy(), rtol=1e-12)
    assert model.next_value() == pytest.approx(float(smoothed.forecast(1).iloc[0]), rel=1e-12)


# --------------------------------------------------------------------------- coverage

# (model, seed): several origins per series; the seeds make the counts exact and repeatable.
COVERAGE_CASES = [("ets", 0), ("ets", 3), ("seasonal_naive", 0), ("seasonal_naive", 3)]


@pytest.mark.parametrize(("name", "seed"), COVERAGE_CASES)
def test_95_percent_band_covers_most_fresh_points(name: str, seed: int) -> None:
    full = make_series(periods=500, seed=seed)
    inside = 0
    total = 0
    for origin in (250, 300, 350, 400):  # 4 origins x 50 fresh points = 200 points
        fresh = full.iloc[origin : origin + 50]
        forecast = make_model(name).fit(full.iloc[:origin]).predict(50, 0.95)
        inside += int(((fresh >= forecast.lower) & (fresh <= forecast.upper)).sum())
        total += len(fresh)
    assert total == 200
    assert 0.80 <= inside / total <= 1.0


# --------------------------------------------------------------------------- fit_forecast


def test_constant_series_is_rejected_with_its_name() -> None:
    y = pd.Series(5.0, index=pd.date_range("2025-01-01", periods=30, freq="D", tz="UTC"))
    y.iloc[3] = np.nan  # a gap does not make it less constant
    with pytest.raises(BadInputError) as info:
        fit_forecast(y, "ets", 7, name="sessions[device=mobile]")
    assert str(info.value) == (
        "sessions[device=mobile]: every value is 5, a constant series has nothing to forecast; "
        "check the value column or the KPI's query"
    )


class _Failing:
    """A test model whose fit or predict raises `error`; registered per test as `failing`."""

    name = "failing"

    def __init__(self, error: BaseException | None = None, at: str = "fit") -> None:
        self.error = error
        self.at = at
        self.y_: pd.Series | None = None

    def fit(self, y: pd.Series) -> _Failing:
        if self.at == "fit" and self.error is not None:
            raise self.error
        self.y_ = y
        return self

    def predict(self, horizon: int, level: float = 0.95) -> Forecast:
        assert self.y_ is not None
        if self.at == "predict" and self.error is not None:
            raise self.error
        index = future_index(self.y_, horizon)
        values = np.full(horizon, np.inf if self.at == "inf" else 1.0)
        series = pd.Series(values, index=index)
        return Forecast(series, series - 1, series + 1, level, self.name)


@pytest.fixture
def failing_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register `_Failing` as "failing" in a copy of the registry that is undone after the test."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    base.register("failing")(_Failing)
    return "failing"


@pytest.mark.parametrize(
    ("params", "note"),
    [
        ({"error": ValueError("SVD did not converge\nsecond line")},
         "failing failed (SVD did not converge); used seasonal_naive"),
        ({"error": RuntimeError("optimizer diverged")}, "failing failed (optimizer diverged); used seasonal_naive"),
        ({"error": ZeroDivisionError()}, "failing failed (ZeroDivisionError); used seasonal_naive"),
        ({"error": np.linalg.LinAlgError("singular matrix")},
         "failing failed (singular matrix); used seasonal_naive"),
        ({"error": ValueError("bad horizon"), "at": "predict"}, "failing failed (bad horizon); used seasonal_naive"),
        ({"at": "inf"}, "failing failed (non-finite values in the forecast); used seasonal_naive"),
    ],
)
def test_a_failing_model_falls_back_to_seasonal_naive(failing_model: str, params: dict, note: str) -> None:
    y = make_series(periods=60)
    forecast = fit_forecast(y, failing_model, 7, 0.9, params=params)
    assert forecast.model == "seasonal_naive"
    assert forecast.note == note
    assert forecast.level == 0.9
    direct = make_model("seasonal_naive").fit(y).predict(7, 0.9)
    pd.testing.assert_series_equal(forecast.mean, direct.mean)
    pd.testing.assert_series_equal(forecast.upper, direct.upper)


def test_a_model_bug_is_not_hidden_by_the_fallback(failing_model: str) -> None:
    with pytest.raises(KeyError):
        fit_forecast(make_series(periods=60), failing_model, 7, params={"error": KeyError("typo")})


def test_a_working_model_has_no_note(failing_model: str) -> None:
    forecast = fit_forecast(make_series(periods=60), failing_model, 3)
    assert (forecast.model, forecast.note) == ("failing", "")
    assert forecast.mean.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("level", "horizon"), [(95, 7), (0.0, 7), (1.0, 7)])
def test_fit_forecast_checks_level(level: float, horizon: int) -> None:
    with pytest.raises(BadInputError) as info:
        fit_forecast(make_series(periods=60), "seasonal_naive", horizon, level)
    assert str(info.value) == LEVEL_MESSAGE.format(level)


@pytest.mark.parametrize("horizon", [0, -1, 2.5])
def test_fit_forecast_checks_horizon(horizon: float) -> None:
    with pytest.raises(BadInputError) as info:
        fit_forecast(make_series(periods=60), "seasonal_naive", horizon)  # type: ignore[arg-type]
    assert str(info.value) == f"`horizon` must be a whole number of periods >= 1. Got: {horizon}"


@pytest.mark.parametrize("name", ["ets", "seasonal_naive"])
def test_non_negative_history_is_clipped_at_zero(name: str) -> None:
    # Small counts with large noise: the raw band reaches below zero.
    y = make_series(periods=120, level=3.0, amplitude=1.0, noise=3.0, seed=4).abs()
    raw = make_model(name).fit(y).predict(14, 0.95)
    assert (raw.lower < 0).any()  # otherwise this test proves nothing
    clipped = fit_forecast(y, name, 14, 0.95)
    for part in (clipped.mean, clipped.lower, clipped.upper):
        assert (part >= 0).all()
    pd.testing.assert_series_equal(clipped.lower, raw.lower.clip(lower=0.0))


def test_history_with_negatives_is_not_clipped() -> None:
    y = make_series(periods=120, level=3.0, amplitude=1.0, noise=3.0, seed=4)
    assert y.min() < 0
    forecast = fit_forecast(y, "seasonal_naive", 14, 0.95)
    assert (forecast.lower < 0).any()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", ["ets", "seasonal_naive"])
def test_all_missing_history_is_bad_input(name: str) -> None:
    y = pd.Series(np.nan, index=pd.date_range("2025-01-01", periods=60, freq="D", tz="UTC"))
    with pytest.raises(BadInputError):
        fit_forecast(y, name, 7, name="sessions")


@pytest.mark.parametrize(
    ("name", "params"),
    [("ets", {"season": "7"}), ("seasonal_naive", {"season": "7"}), ("seasonal_naive", {"season": 7.0}),
     ("seasonal_naive", {"season": -3})],
)
def test_bad_model_params_are_bad_input(name: str, params: dict) -> None:
    with pytest.raises(BadInputError):
        fit_forecast(make_series(periods=60), name, 3, params=params)


def test_unknown_model_param_is_bad_input() -> None:
    with pytest.raises(BadInputError) as info:
        fit_forecast(make_series(periods=60), "ets", 3, params={"seasn": 7})
    assert str(info.value) == (
        "model 'ets': bad parameter (ETS.__init__() got an unexpected keyword argument 'seasn')"
    )


def test_unknown_model_name_lists_the_models() -> None:
    with pytest.raises(BadInputError) as info:
        make_model("arima")
    assert str(info.value) == "unknown model 'arima'; choose one of: auto, ets, prophet, seasonal_naive"


# --------------------------------------------------------------------------- season_length


@pytest.mark.parametrize(
    ("freq", "season"),
    [("h", 24), ("D", 7), ("5min", 288), ("15min", 96), ("W-SUN", 52), ("W", 52), ("MS", 12), ("QS", 4),
     ("2D", 1)],
)
def test_season_length(freq: str, season: int) -> None:
    assert season_length(freq) == season


# --------------------------------------------------------------------------- seasonal naive by hand


def test_seasonal_naive_by_hand() -> None:
    # season 2, values [1, 3, 2, nan, 4, 5]: last seen per phase = [4, 5];
    # y_t - y_(t-2) = [2-1, nan-3, 4-2, 5-nan]; pairs with a NaN are skipped: |errors| = [1, 2].
    index = pd.date_range("2025-01-01", periods=6, freq="D", tz="UTC")
    y = pd.Series([1.0, 3.0, 2.0, np.nan, 4.0, 5.0], index=index)
    forecast = make_model("seasonal_naive", season=2).fit(y).predict(4, 0.5)
    half = 1.5  # the median of [1, 2]
    assert forecast.mean.tolist() == [4.0, 5.0, 4.0, 5.0]
    widths = [half, half, half * math.sqrt(2), half * math.sqrt(2)]
    np.testing.assert_allclose((forecast.upper - forecast.mean).to_numpy(), widths)
    np.testing.assert_allclose((forecast.mean - forecast.lower).to_numpy(), widths)


# --------------------------------------------------------------------------- Prophet


@pytest.fixture(scope="module")
def prophet_fit() -> tuple[object, pd.Series]:
    y = make_series(periods=400, seed=2)
    return make_model("prophet").fit(y), y


@pytest.mark.slow
def test_prophet_turns_yearly_seasonality_on_from_one_year(prophet_fit: tuple[object, pd.Series]) -> None:
    model, _ = prophet_fit
    assert model.prophet_.yearly_seasonality  # type: ignore[attr-defined]


@pytest.mark.slow
def test_prophet_leaves_yearly_seasonality_off_under_a_year() -> None:
    model = make_model("prophet", uncertainty_samples=0).fit(make_series(periods=200, seed=2))
    assert not model.prophet_.yearly_seasonality  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("level", [0.8, 0.95])
def test_prophet_interval_width_is_the_level_asked(prophet_fit: tuple[object, pd.Series], level: float) -> None:
    model, y = prophet_fit
    forecast = model.predict(14, level)  # type: ignore[attr-defined]
    assert model.prophet_.interval_width == level  # type: ignore[attr-defined]
    # The band is exactly the central `level` of Prophet's own predictive samples (same seed).
    frame = pd.DataFrame({"ds": future_index(y, 14).tz_localize(None)})
    state = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pandas deprecations inside Prophet
            samples = model.prophet_.predictive_samples(frame)["yhat"]  # type: ignore[attr-defined]
    finally:
        np.random.set_state(state)
    tail = 100 * (1 - level) / 2
    np.testing.assert_allclose(forecast.lower.to_numpy(), np.nanpercentile(samples, tail, axis=1))
    np.testing.assert_allclose(forecast.upper.to_numpy(), np.nanpercentile(samples, 100 - tail, axis=1))


def test_the_cmdstanpy_internals_we_repoint_still_exist() -> None:
    """pyproject pins cmdstanpy below the next minor release; this says plainly when a bump breaks it."""
    import importlib

    from forecaster.models.prophet import _CMDSTAN_TMPDIR_MODULES

    for name in _CMDSTAN_TMPDIR_MODULES:
        assert isinstance(getattr(importlib.import_module(name), "_TMPDIR", None), str), f"{name}._TMPDIR is gone"
    assert callable(importlib.import_module("cmdstanpy.utils.filesystem").write_stan_json)


@pytest.mark.slow
def test_prophet_fit_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cmdstanpy

    folder = cmdstanpy._TMPDIR
    before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # any other temp file would land here
    make_model("prophet", uncertainty_samples=0).fit(make_series(periods=300, seed=5))
    after = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    assert after - before == set()
    assert cmdstanpy._TMPDIR == folder
    assert list(tmp_path.iterdir()) == []


PROPHET_SCRIPT = textwrap.dedent(
    """
    import numpy as np, pandas as pd
    from forecaster.models import make_model
    index = pd.date_range("2024-01-01", periods=400, freq="D", tz="UTC")
    y = pd.Series(100 + 10 * np.sin(2 * np.pi * np.arange(400) / 7)
                  + np.random.default_rng(0).normal(0, 2, 400), index=index)
    model = make_model("prophet", uncertainty_samples=100).fit(y)
    print("fitted", bool(model.prophet_.yearly_seasonality))
    """
)


@pytest.mark.slow
def test_prophet_fit_writes_nothing_to_stderr(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # In-process (pytest's own logging capture hides some of Prophet's noise here) ...
    make_model("prophet", uncertainty_samples=0).fit(make_series(periods=200, seed=6))
    # ... and in a fresh interpreter, where `import prophet` and cmdstanpy would print to fd 2.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    subprocess.run([sys.executable, "-c", PROPHET_SCRIPT], check=True, cwd=tmp_path, env=env, timeout=120)
    captured = capfd.readouterr()
    assert "fitted True" in captured.out
    assert captured.err == ""


# --------------------------------------------------------------------------- Prophet, the fast paths


@pytest.mark.parametrize(
    "dates",
    [
        pd.date_range("2022-11-01", "2024-01-10", freq="D"),  # every event window, some cut at the ends
        pd.date_range("2023-12-20", periods=24 * 10, freq="h"),  # hourly: all hours of a holiday get the 1
        pd.date_range("2024-03-01", periods=28, freq="D"),  # no event at all: zero columns, same names
    ],
    ids=["daily", "hourly", "quiet"],
)
def test_vectorised_holiday_features_equal_prophets_own(dates: pd.DatetimeIndex) -> None:
    from forecaster.calendar import Calendar, UserEvent
    from forecaster.models.prophet import _prophet_class

    launch = UserEvent("launch", pd.Timestamp("2023-06-01").date(), pd.Timestamp("2023-06-04").date())
    holidays = Calendar("NL", events=(launch,)).frame(range(2022, 2025))
    fast_class = _prophet_class()
    prophet_class = fast_class.__mro__[1]
    mine, theirs = fast_class(holidays=holidays), prophet_class(holidays=holidays)
    ours = mine.make_holiday_features(pd.Series(dates), holidays)
    own = prophet_class.make_holiday_features(theirs, pd.Series(dates), holidays)
    pd.testing.assert_frame_equal(ours[0], own[0])
    assert ours[1:] == own[1:]
    assert list(mine.train_holiday_names) == list(theirs.train_holiday_names)


@pytest.mark.parametrize(
    "data,fast",
    [
        ({"T": 3, "tau": 0.05, "y": [0.1, 0.2, 0.3], "X": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]}, True),
        ({"T": 0, "y": [], "X": []}, True),
        ({"flag": True}, False),  # Stan wants 1, json.dumps would write true
        ({"y": [0.1, float("nan")]}, False),  # NaN: stanio's spelling, not Python's
        ({"k": np.float64(0.5), "y": np.array([1.0, 2.0])}, False),  # numpy: stanio converts
        ({"X": [[1.0], 2.0]}, False),  # ragged
    ],
)
def test_stan_json_writer_is_stanios_output_or_stanio_itself(tmp_path: Path, data: dict, fast: bool) -> None:
    import json

    import stanio

    from forecaster.models.prophet import _json_writer

    fell_back: list[str] = []
    _json_writer(lambda path, d: fell_back.append(path) or stanio.write_stan_json(path, d))(str(tmp_path / "d.json"), data)
    assert fell_back == ([] if fast else [str(tmp_path / "d.json")])
    text = (tmp_path / "d.json").read_text()
    assert json.loads(text) == json.loads(stanio.dump_stan_json(data)) or not fast


@pytest.mark.slow
def test_prophet_without_samples_gives_the_analytic_band_of_its_simulation() -> None:
    y = make_series(periods=500, seed=7)
    sampled = make_model("prophet").fit(y).predict(28, 0.9)
    analytic = make_model("prophet", uncertainty_samples=0).fit(y)
    first, again = analytic.predict(28, 0.9), analytic.predict(28, 0.9)
    pd.testing.assert_series_equal(first.upper, again.upper)  # nothing random
    pd.testing.assert_series_equal(first.mean, sampled.mean)
    np.testing.assert_allclose((first.upper - first.mean).to_numpy(), (first.mean - first.lower).to_numpy())
    half, simulated = (first.upper - first.lower).mean(), (sampled.upper - sampled.lower).mean()
    assert abs(half / simulated - 1) < 0.1  # the same spread as 1,000 simulated paths, to ~10%
    additive = make_model("prophet", uncertainty_samples=0, seasonality_mode="additive").fit(y).predict(28, 0.9)
    assert (additive.upper - additive.mean).is_monotonic_increasing  # trend uncertainty grows with the horizon


@pytest.mark.slow
def test_prophet_predict_reuses_the_component_matrix_without_changing_a_number() -> None:
    model = make_model("prophet", country="NL", uncertainty_samples=0).fit(make_series(periods=400, seed=8))
    prophet = model.prophet_  # type: ignore[attr-defined]
    future = pd.DataFrame({"ds": pd.date_range(prophet.history["ds"].iloc[-1] + pd.Timedelta(days=1), periods=60)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reused = prophet.predict(future)
        prophet.kpiwatch_features_ = None  # forget the training columns: Prophet's own crosstab again
        rebuilt = prophet.predict(future)
    pd.testing.assert_frame_equal(reused, rebuilt)
