"""model: auto: chosen by a short backtest, band calibrated, choice remembered on a slow cadence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecaster.models.auto import AutoModel, _cuts, _scale
from forecaster.selection import Selection, SelectionCache


def weekly_pattern(periods: int = 200, noise: float = 1.0, seed: int = 0) -> pd.Series:
    index = pd.date_range("2025-01-01", periods=periods, freq="D", tz="UTC")
    pattern = np.tile([10.0, 50.0, 20.0, 80.0, 30.0, 5.0, 60.0], periods // 7 + 1)[:periods]
    return pd.Series(100 + pattern + np.random.default_rng(seed).normal(0, noise, periods), index=index)


def test_a_strong_weekly_pattern_is_not_given_to_a_model_without_seasonality() -> None:
    model = AutoModel(candidates=["ets", "seasonal_naive"]).fit(weekly_pattern())
    assert model.scores_["seasonal_naive"] < 1.0
    assert model.choice_ in {"ets", "seasonal_naive"}
    assert model.predict(7, 0.95).model.endswith("(auto)")


@pytest.mark.parametrize(
    "ratios,expected",
    [
        ([], 1.0),  # no evidence: keep the model's band
        ([1.959964] * 1000, pytest.approx(1.0, rel=1e-5)),  # 95% of |z| within 1.96: keep it
        ([0.5] * 50 + [-3.919928] * 950, pytest.approx(2.0, rel=0.01)),  # twice too narrow: double it
        ([0.0] * 949 + [10.0] * 51, 4.0),  # over 5% of errors at 10 sigma: the band must hold them (capped)
        ([0.0] * 960 + [10.0] * 40, 0.5),  # 96% tiny: the quantile is 0, the floor holds
        ([100.0] * 1000, 4.0),  # capped: a backtest this wild says more about the backtest
        ([3.919928] * 10, pytest.approx(np.sqrt((10 * 4 + 10) / 20), rel=1e-5)),  # shrunk towards 1
        (list(np.random.default_rng(0).normal(size=4000)), pytest.approx(1.0, abs=0.05)),  # normal: 1
    ],
)
def test_calibration_scale_table(ratios: list[float], expected: float) -> None:
    assert _scale(ratios) == expected


@pytest.mark.parametrize(
    "n,horizon,origins,expected",
    [
        (1095, 28, 6, [927, 955, 983, 1011, 1039, 1067]),  # a long series: all six
        (200, 28, 6, [88, 116, 144, 172]),  # shorter: as many as leave 3 horizons to train on
        (168, 28, 6, [84, 112, 140]),  # the fewest that still choose: three
        (167, 28, 6, []),  # fewer than three windows would choose by chance: no backtest
        (100, 7, 3, [79, 86, 93]),
        (50, 7, 1, [43]),  # asked for one, given one
    ],
)
def test_backtest_cuts_table(n: int, horizon: int, origins: int, expected: list[int]) -> None:
    assert _cuts(n, horizon, origins) == expected


def test_calibrated_band_is_the_model_band_scaled_around_the_mean() -> None:
    y = weekly_pattern(seed=1)
    plain = AutoModel(choice="ets", scale=1.0).fit(y).predict(5, 0.9)
    wide = AutoModel(choice="ets", scale=2.0).fit(y).predict(5, 0.9)
    pd.testing.assert_series_equal(plain.mean, wide.mean)
    np.testing.assert_allclose((wide.upper - wide.mean).to_numpy(), 2 * (plain.upper - plain.mean).to_numpy())


def test_a_remembered_choice_skips_the_backtest() -> None:
    model = AutoModel(choice="seasonal_naive", scale=1.3).fit(weekly_pattern())
    assert model.scores_ == {} and model.choice_ == "seasonal_naive" and model.scale_ == 1.3


def test_a_calendar_event_ahead_brings_in_prophet() -> None:
    index = pd.date_range("2023-11-01", "2024-11-27", freq="D", tz="UTC")  # Black Friday 2024 is 2 days on
    y = pd.Series(100 + np.random.default_rng(2).normal(0, 1, len(index)), index=index)
    model = AutoModel(choice="seasonal_naive", scale=1.0, country="NL")
    assert model._event_ahead(y)
    quiet_index = pd.date_range("2023-05-01", "2024-06-01", freq="D", tz="UTC")
    assert not model._event_ahead(pd.Series(1.0, index=quiet_index))


@pytest.mark.parametrize("freq", ["W-MON", "MS"])
def test_weekly_and_monthly_data_keep_the_backtest_choice_across_holidays(freq: str) -> None:
    # Seven weeks or months ahead nearly always hold a holiday: with the event rule on coarse
    # data, air passengers (monthly) got a flat Prophet forecast the backtest ranked worst.
    index = pd.date_range("2000-01-01", periods=240, freq=freq, tz="UTC")
    season = np.tile(np.arange(12.0), 20) if freq == "MS" else np.zeros(240)
    y = pd.Series(100 + 5 * season + np.random.default_rng(3).normal(0, 1, 240), index=index)
    model = AutoModel(country="NL").fit(y)
    assert not model._event_ahead(y)
    assert model.choice_ == min(model.scores_, key=model.scores_.get), model.scores_


def test_twelve_years_of_monthly_data_are_backtested_over_years_not_28_months() -> None:
    index = pd.date_range("2000-01-01", periods=144, freq="MS", tz="UTC")  # air passengers' length
    y = pd.Series(100 + 5 * np.tile(np.arange(12.0), 12) + np.random.default_rng(4).normal(0, 1, 144), index=index)
    model = AutoModel().fit(y)
    assert set(model.scores_) >= {"seasonal_naive", "ets"}  # chosen by a backtest, not by default
    assert model.choice_ == min(model.scores_, key=model.scores_.get)


def test_selection_cache_round_trip_and_cadence(tmp_path: Path) -> None:
    cache = SelectionCache(tmp_path, reselect_days=30)
    cache.remember("sessions", Selection("prophet", 1.2, "2025-01-01T00:00:00+00:00"))
    cache.save()
    again = SelectionCache(tmp_path, reselect_days=30)
    day = pd.Timestamp("2025-01-20", tz="UTC")
    assert again.fresh("sessions", day) == Selection("prophet", 1.2, "2025-01-01T00:00:00+00:00")
    assert again.fresh("sessions", pd.Timestamp("2025-02-05", tz="UTC")) is None  # 35 days: choose again
    assert again.fresh("sessions", pd.Timestamp("2024-12-01", tz="UTC")) is None  # replaying the past
    assert again.fresh("other", day) is None


def test_a_damaged_cache_file_means_choose_again(tmp_path: Path) -> None:
    (tmp_path / "model-choices.json").write_text("{not json")
    assert SelectionCache(tmp_path, 30).entries == {}
