"""Tests of `forecaster.backtest`: origin positions, the metrics on tiny hand-computed arrays,
and the backtest loop (perfect forecasts, NaN actuals, fallbacks, determinism, bad arguments).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from conftest import make_series

from forecaster.backtest import (
    ModelScore,
    backtest,
    coverage,
    interval_score,
    mase,
    msis,
    naive_scale,
    rolling_origins,
    smape,
)
from forecaster.types import BadInputError

nan = float("nan")
WEEK = np.array([10.0, 12.0, 15.0, 14.0, 13.0, 8.0, 7.0])


def _daily(values: np.ndarray, start: str = "2024-01-01") -> pd.Series:
    index = pd.date_range(start, periods=len(values), freq="D", tz="UTC")
    return pd.Series(np.asarray(values, dtype="float64"), index=index, name="kpi")


def _periodic_with_noisy_start(weeks: int = 12, noisy_weeks: int = 4) -> pd.Series:
    """A weekly pattern repeated exactly, except for noise in the first `noisy_weeks` weeks.

    Seasonal naive then forecasts every later week perfectly, while the in-sample scale (which
    sees the noisy start) stays above 0, so MASE is exactly 0 rather than 0/0.
    """
    values = np.tile(WEEK, weeks)
    rng = np.random.default_rng(1)
    values[: 7 * noisy_weeks] += rng.normal(0.0, 1.0, 7 * noisy_weeks)
    return _daily(values)


def _without_timing(scores: list[ModelScore]) -> list[ModelScore]:
    return [dataclasses.replace(s, seconds_per_fit=0.0) for s in scores]


# --------------------------------------------------------------------------- rolling_origins


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"n": 10, "horizon": 2, "origins": 3}, [4, 6, 8]),
        ({"n": 10, "horizon": 2, "origins": 3, "step": 1}, [6, 7, 8]),
        ({"n": 10, "horizon": 2, "origins": 1}, [8]),
        ({"n": 10, "horizon": 2, "origins": 3, "min_train": 4}, [4, 6, 8]),  # exactly enough
        ({"n": 2964, "horizon": 28, "origins": 10}, [2684, 2712, 2740, 2768, 2796, 2824, 2852, 2880, 2908, 2936]),
    ],
)
def test_rolling_origins_positions(args: dict[str, int], expected: list[int]) -> None:
    assert rolling_origins(**args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"n": 10, "horizon": 2, "origins": 3, "min_train": 5},
         "needs at least 11 periods for 3 origins of 2; got 10. Use fewer --origins or a shorter --horizon"),
        ({"n": 7, "horizon": 2, "origins": 3},  # default min_train = horizon: 2 + 2 + 2 * 2
         "needs at least 8 periods for 3 origins of 2; got 7. Use fewer --origins or a shorter --horizon"),
        ({"n": 200, "horizon": 28, "origins": 10},
         "needs at least 308 periods for 10 origins of 28; got 200. Use fewer --origins or a shorter --horizon"),
    ],
)
def test_rolling_origins_too_short_message(args: dict[str, int], message: str) -> None:
    with pytest.raises(BadInputError) as info:
        rolling_origins(**args)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"horizon": 0}, "`horizon` must be a whole number >= 1. Got: 0"),
        ({"origins": 2.5}, "`origins` must be a whole number >= 1. Got: 2.5"),
        ({"step": True}, "`step` must be a whole number >= 1. Got: True"),
        ({"min_train": nan}, "`min_train` must be a whole number >= 1. Got: nan"),
    ],
)
def test_rolling_origins_rejects_bad_arguments(args: dict[str, object], message: str) -> None:
    call = {"n": 100, "horizon": 2, "origins": 3, **args}
    with pytest.raises(BadInputError) as info:
        rolling_origins(**call)  # type: ignore[arg-type]
    assert str(info.value) == message


# --------------------------------------------------------------------------- metrics on arrays


@pytest.mark.parametrize(
    ("train", "m", "expected"),
    [
        ([1, 2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6, 7, 8], 7, 1.0),  # every week one higher
        ([1, 3, 6], 2, 2.5),  # shorter than 2 seasons: plain naive, |3-1| and |6-3|
        ([1, nan, 4, 8], 1, 4.0),  # pairs with a gap are skipped: only |8-4|
        ([5], 1, nan),  # no pair at all
        (list(WEEK) * 3, 7, 0.0),  # exactly periodic
    ],
)
def test_naive_scale(train: list[float], m: int, expected: float) -> None:
    got = naive_scale(np.array(train, dtype="float64"), m)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_mase_of_a_perfect_forecast_is_zero_and_scales_the_mae() -> None:
    actual = np.array([3.0, 5.0, 7.0])
    assert mase(actual, actual, scale=2.0) == 0.0
    assert mase(actual, actual + np.array([1.0, -2.0, 3.0]), scale=2.0) == pytest.approx(1.0)  # MAE 2 / 2


def test_mase_is_undefined_without_a_scale_or_actuals() -> None:
    assert math.isnan(mase(np.array([1.0]), np.array([2.0]), scale=0.0))
    assert math.isnan(mase(np.array([1.0]), np.array([2.0]), scale=nan))
    assert math.isnan(mase(np.array([nan, nan]), np.array([2.0, 3.0]), scale=1.0))


def test_nan_actuals_are_skipped_by_every_metric() -> None:
    actual = np.array([1.0, nan, 3.0])
    forecast = np.array([2.0, 100.0, 3.0])
    lower, upper = np.array([0.0, 0.0, 4.0]), np.array([2.0, 0.0, 5.0])
    assert mase(actual, forecast, scale=1.0) == pytest.approx(0.5)  # (1 + 0) / 2
    assert smape(actual, forecast) == pytest.approx((200 * 1 / 3 + 0) / 2)
    assert coverage(actual, lower, upper) == pytest.approx(0.5)  # 1 inside, 3 below [4, 5]
    # widths 2 and 1; the miss at 3 below 4 costs (2 / 0.5) * 1 = 4
    assert interval_score(actual, lower, upper, level=0.5) == pytest.approx((2 + 1 + 4) / 2)


def test_smape_of_equal_arrays_is_zero_and_a_hand_case() -> None:
    same = np.array([0.0, 4.0, -2.0])
    assert smape(same, same.copy()) == 0.0  # 0 and 0 count as a perfect point, not 0/0
    assert smape(np.array([100.0]), np.array([50.0])) == pytest.approx(200 * 50 / 150)
    assert smape(np.array([1.0]), np.array([-1.0])) == pytest.approx(200.0)  # the maximum


def test_coverage_of_a_band_around_everything_is_one_and_edges_count_as_inside() -> None:
    actual = np.array([1.0, 5.0, 9.0, nan])
    assert coverage(actual, np.full(4, -np.inf), np.full(4, np.inf)) == 1.0
    assert coverage(actual, np.array([1.0, 5.0, 0.0, 0.0]), np.array([2.0, 6.0, 9.0, 0.0])) == 1.0
    assert coverage(actual, np.full(4, 2.0), np.full(4, 8.0)) == pytest.approx(1 / 3)
    assert math.isnan(coverage(np.array([nan]), np.array([0.0]), np.array([1.0])))


def test_msis_hand_case() -> None:
    # level 0.8: alpha 0.2, a miss costs 2 / 0.2 = 10 per unit. Band [2, 8], width 6.
    # y=1: 6 + 10 * (2 - 1) = 16;  y=5: 6;  y=10: 6 + 10 * (10 - 8) = 26;  mean 16.
    actual, lower, upper = np.array([1.0, 5.0, 10.0]), np.full(3, 2.0), np.full(3, 8.0)
    assert interval_score(actual, lower, upper, level=0.8) == pytest.approx(16.0)
    assert msis(actual, lower, upper, level=0.8, scale=4.0) == pytest.approx(4.0)
    assert math.isnan(msis(actual, lower, upper, level=0.8, scale=0.0))


# --------------------------------------------------------------------------- backtest


def test_seasonal_naive_forecasts_a_repeating_week_perfectly() -> None:
    y = _periodic_with_noisy_start()
    [score] = backtest(y, ["seasonal_naive"], horizon=7, origins=3)
    assert (score.model, score.origins, score.horizon, score.fallbacks) == ("seasonal_naive", 3, 7, 0)
    assert score.mase == 0.0 and score.smape == 0.0 and score.coverage == 1.0
    assert score.msis > 0.0  # a perfect point forecast still pays for its band's width
    assert score.seconds_per_fit > 0.0


def test_nan_actuals_in_a_test_window_are_skipped() -> None:
    y = _periodic_with_noisy_start()
    y.iloc[[-10, -3, -2]] = np.nan  # inside the last two test windows
    [score] = backtest(y, ["seasonal_naive"], horizon=7, origins=3)
    assert score.mase == 0.0 and score.smape == 0.0 and score.coverage == 1.0


def test_an_all_missing_test_window_leaves_the_other_origins_scored() -> None:
    y = _periodic_with_noisy_start()
    y.iloc[-7:] = np.nan
    [score] = backtest(y, ["seasonal_naive"], horizon=7, origins=3)
    assert score.origins == 3 and score.mase == 0.0 and score.coverage == 1.0


def test_seasonal_naive_on_seasonal_noise_scores_about_one() -> None:
    y = make_series(periods=400, season=7, noise=2.0, seed=3)
    [score] = backtest(y, ["seasonal_naive"], horizon=14, origins=5)
    # Its out-of-sample errors are distributed like its in-sample seasonal differences.
    assert 0.6 < score.mase < 1.5
    assert 0.0 < score.smape < 10.0 and 0.7 <= score.coverage <= 1.0


def test_scores_come_in_model_order_and_are_deterministic() -> None:
    y = make_series(periods=200, season=7, noise=2.0, seed=5)
    first = backtest(y, ["seasonal_naive", "ets"], horizon=7, origins=3, train_window=120)
    second = backtest(y, ["seasonal_naive", "ets"], horizon=7, origins=3, train_window=120)
    assert [s.model for s in first] == ["seasonal_naive", "ets"]
    assert _without_timing(first) == _without_timing(second)


def test_train_window_limits_the_history_each_origin_sees() -> None:
    # A level shift long before the last origins: with a 28-day window the scale never sees it.
    values = np.concatenate([np.tile(WEEK, 10) + 100.0, np.tile(WEEK, 10)])
    values[70:] += np.random.default_rng(2).normal(0.0, 1.0, 70)
    y = _daily(values)
    [windowed] = backtest(y, ["seasonal_naive"], horizon=7, origins=2, train_window=28)
    [full] = backtest(y, ["seasonal_naive"], horizon=7, origins=2)
    assert full.mase < windowed.mase  # the shift inflates the full-history scale


def test_failed_fits_are_counted_as_fallbacks() -> None:
    y = make_series(periods=120, season=7, seed=4)
    [score] = backtest(y, ["ets"], horizon=7, origins=2, params={"ets": {"trend": "bogus"}})
    assert score.fallbacks == 2 and score.origins == 2
    [plain] = backtest(y, ["seasonal_naive"], horizon=7, origins=2)
    assert score.mase == plain.mase  # seasonal naive stood in, honestly


def test_progress_reports_every_fit() -> None:
    calls: list[tuple[int, int]] = []
    y = make_series(periods=100, seed=6)
    backtest(y, ["seasonal_naive", "seasonal_naive", "ets"], horizon=7, origins=2,
             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the duplicate name runs once


def test_season_sets_the_scale_period() -> None:
    y = make_series(periods=200, season=7, noise=0.5, seed=7)
    [weekly] = backtest(y, ["seasonal_naive"], horizon=7, origins=2)
    [plain] = backtest(y, ["seasonal_naive"], horizon=7, origins=2, season=1)
    # Day-to-day changes of a weekly sine are large, so against that scale the error looks small.
    assert plain.mase < weekly.mase


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": ["arima"]}, "unknown model 'arima'; choose one of: "),
        ({"models": []}, "`models` is empty; choose one or more of: "),
        ({"params": {"ets": {"season": 7}}},
         "`params` has parameters for 'ets', which is not being backtested; backtested: seasonal_naive"),
        ({"train_window": 5}, "`train_window` must be at least 8 periods (the horizon, and never under 8). Got: 5"),
        ({"horizon": 0}, "`horizon` must be a whole number of periods >= 1. Got: 0"),
        ({"level": 95}, "`level` must be between 0 and 1 (exclusive), e.g. 0.95. Got: 95"),
        ({"origins": 20},
         "value: needs at least 148 periods for 20 origins of 7; got 60. Use fewer --origins or a shorter --horizon"),
    ],
)
def test_backtest_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    call: dict[str, object] = {"models": ["seasonal_naive"], "horizon": 7, "origins": 2, **kwargs}
    with pytest.raises(BadInputError) as info:
        backtest(make_series(periods=60), **call)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


def test_a_constant_training_window_names_the_origin() -> None:
    y = _daily(np.concatenate([np.full(30, 5.0), np.arange(14, dtype="float64")]))
    with pytest.raises(BadInputError) as info:
        backtest(y, ["seasonal_naive"], horizon=7, origins=2, train_window=20)
    assert str(info.value).startswith(
        "backtest origin 1 (training data up to 2024-01-30 00:00:00+00:00): kpi: every value is 5"
    )


def test_a_constant_series_is_said_once_not_as_an_origin() -> None:
    with pytest.raises(BadInputError) as info:
        backtest(_daily(np.full(60, 5.0)), ["seasonal_naive"], horizon=7, origins=2)
    assert str(info.value) == ("kpi: every value is 5, a constant series has nothing to forecast; "
                               "check the value column or the KPI's query")


def test_an_index_without_freq_is_a_caller_bug() -> None:
    y = make_series(periods=60)
    y.index.freq = None
    with pytest.raises(ValueError, match="freq"):
        backtest(y, ["seasonal_naive"], horizon=7, origins=2)


@pytest.mark.slow
def test_prophet_backtest_is_finite_and_repeatable() -> None:
    y = make_series(periods=120, season=7, noise=2.0, seed=8)
    first = backtest(y, ["prophet"], horizon=7, origins=2)
    second = backtest(y, ["prophet"], horizon=7, origins=2)
    [score] = first
    assert score.fallbacks == 0 and 0.0 < score.mase < 2.0 and 0.5 <= score.coverage <= 1.0
    assert _without_timing(first) == _without_timing(second)
