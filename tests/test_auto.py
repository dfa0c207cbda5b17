"""model: auto. Two ways to choose: a short multi-step backtest with a calibrated band (`selection=
"backtest"`, the forecast face) and one-step errors over a holdout (`selection="one_step"`, what the
detector uses; its state keeps the fitted choice between refits, so nothing is cached on disk)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest

from forecaster.detect import Detector, walk_forward
from forecaster.models import base, make_model
from forecaster.models.auto import AutoModel, _cuts, _scale
from forecaster.sources.base import to_kpi_series

PATTERN = [10.0, 50.0, 20.0, 80.0, 30.0, 5.0, 60.0]


def weekly_pattern(periods: int = 200, noise: float = 1.0, seed: int = 0) -> pd.Series:
    index = pd.date_range("2025-01-01", periods=periods, freq="D", tz="UTC")
    pattern = np.tile(PATTERN, periods // 7 + 1)[:periods]
    return pd.Series(100 + pattern + np.random.default_rng(seed).normal(0, noise, periods), index=index)


def random_walk(periods: int = 200, seed: int = 0) -> pd.Series:
    index = pd.date_range("2025-01-01", periods=periods, freq="D", tz="UTC")
    return pd.Series(500 + np.cumsum(np.random.default_rng(seed).normal(0, 5, periods)), index=index)


# --------------------------------------------------------------------------- one-step selection

# ETS given a wrong season (5 days) against seasonal naive on the right one (7): the weekly
# pattern goes to seasonal naive; a random walk, where last week's value is a poor guess and the
# last value a good one, goes to ETS.
ONE_STEP_PARAMS = {"ets": {"trend": None, "season": 5, "initialization": "heuristic"}, "seasonal_naive": {"season": 7}}


@pytest.mark.parametrize(
    ("series", "candidates", "chosen"),
    [
        (weekly_pattern(), ["ets", "seasonal_naive"], "seasonal_naive"),
        (weekly_pattern(), ["seasonal_naive", "ets"], "seasonal_naive"),
        (random_walk(), ["seasonal_naive", "ets"], "ets"),
        (random_walk(), ["ets", "seasonal_naive"], "ets"),
    ],
    ids=["weekly-ets-first", "weekly-naive-first", "walk-naive-first", "walk-ets-first"],
)
def test_one_step_selection_picks_the_smaller_one_step_error(series: pd.Series, candidates: list[str],
                                                             chosen: str) -> None:
    model = AutoModel(selection="one_step", candidates=candidates, candidate_params=ONE_STEP_PARAMS).fit(series)
    assert model.choice_ == chosen
    assert model.scale_ == 1.0  # no band calibration: the detector calibrates every model itself
    assert model.scores_ == {}  # no backtest ran
    # The chosen model is refitted on the whole history with its own parameters and forecasts.
    alone = make_model(chosen, **ONE_STEP_PARAMS[chosen]).fit(series)
    assert model.next_value() == pytest.approx(alone.next_value(), rel=1e-12)
    forecast = model.predict(3, 0.9)
    assert forecast.model == f"{chosen} (auto)"
    pd.testing.assert_series_equal(forecast.mean, alone.predict(3, 0.9).mean)
    assert model.seasonal_ is getattr(alone, "seasonal_", True)  # seasonal naive is seasonal by nature


def test_one_step_selection_is_the_mean_absolute_one_step_error_over_the_holdout() -> None:
    # By hand: each candidate fitted before the last `holdout` periods, stepped over them with
    # push (parameters kept), a gap skipped; the smaller mean |error| wins.
    y = weekly_pattern(noise=8.0, seed=5)
    y.iloc[-10] = np.nan
    holdout = 40
    errors = {}
    for name in ("ets", "seasonal_naive"):
        stepped = make_model(name, **ONE_STEP_PARAMS[name]).fit(y.iloc[:-holdout])
        seen = []
        for value in y.iloc[-holdout:]:
            if not math.isnan(value):
                seen.append(abs(value - stepped.next_value()))
            stepped.push(value)
        errors[name] = np.mean(seen)
    model = AutoModel(selection="one_step", candidates=["ets", "seasonal_naive"], candidate_params=ONE_STEP_PARAMS,
                      holdout=holdout).fit(y)
    assert model.choice_ == min(errors, key=errors.get)


def test_a_history_too_short_for_a_holdout_takes_the_first_candidate() -> None:
    # 24 values: a quarter is 6 periods, under the 7 a one-step comparison needs.
    y = random_walk(periods=24)
    model = AutoModel(selection="one_step", candidates=["seasonal_naive", "ets"], candidate_params=ONE_STEP_PARAMS).fit(y)
    assert model.choice_ == "seasonal_naive"  # although ETS would win on a longer random walk


def test_a_given_choice_skips_the_one_step_selection() -> None:
    model = AutoModel(selection="one_step", choice="seasonal_naive", candidates=["ets", "seasonal_naive"]).fit(random_walk())
    assert model.choice_ == "seasonal_naive"


class _Broken:
    """A candidate whose fit always fails the way a numerical fit may (registered per test)."""

    name = "broken"

    def fit(self, y: pd.Series) -> _Broken:
        raise ValueError("SVD did not converge")


def test_a_candidate_that_fails_to_fit_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    base.register("broken")(_Broken)
    model = AutoModel(selection="one_step", candidates=["broken", "seasonal_naive"]).fit(weekly_pattern())
    assert model.choice_ == "seasonal_naive"


def test_an_unknown_selection_is_refused() -> None:
    with pytest.raises(ValueError, match="`selection` must be 'backtest' or 'one_step'"):
        AutoModel(selection="cheapest")


@pytest.mark.parametrize(("series", "chosen"), [(weekly_pattern(periods=240), "seasonal"), (random_walk(periods=240), "ets")])
def test_the_detector_keeps_autos_choice_in_its_state(series: pd.Series, chosen: str) -> None:
    # The engine's auto: ETS (no trend) and seasonal naive on the frequency's season, chosen by
    # one-step errors at each refit; the choice lives in the state, so a pickled state (the
    # daemon's store) carries it and goes on forecasting the same way.
    detector = Detector(model="auto")
    kpi = to_kpi_series("sessions", series, freq="D", origin="test")
    state = detector.warm_up(kpi)
    auto = state.model
    assert isinstance(auto, AutoModel) and auto.selection == "one_step"
    assert auto.choice_ in {"ets", "seasonal_naive"}
    if chosen == "ets":
        assert auto.choice_ == "ets"
    else:
        assert auto.seasonal_  # whichever won, it has the weekly season
    again = pickle.loads(pickle.dumps(state))
    assert again.model.choice_ == auto.choice_
    assert again.model.next_value() == auto.next_value()
    judged = [j for j in walk_forward(detector, kpi) if not math.isnan(j.score)]
    assert judged and {j.model for j in judged} == {"auto"}


# --------------------------------------------------------------------------- backtest selection


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


@pytest.mark.parametrize("freq", ["W-MON", pytest.param("MS", marks=pytest.mark.slow)])  # MS: Prophet is a candidate
def test_weekly_and_monthly_data_keep_the_backtest_choice_across_holidays(freq: str) -> None:
    # Seven weeks or months ahead nearly always hold a holiday: with the event rule on coarse
    # data, air passengers (monthly) got a flat Prophet forecast the backtest ranked worst.
    index = pd.date_range("2000-01-01", periods=240, freq=freq, tz="UTC")
    season = np.tile(np.arange(12.0), 20) if freq == "MS" else np.zeros(240)
    y = pd.Series(100 + 5 * season + np.random.default_rng(3).normal(0, 1, 240), index=index)
    model = AutoModel(country="NL").fit(y)
    assert not model._event_ahead(y)
    assert model.choice_ == min(model.scores_, key=model.scores_.get), model.scores_


@pytest.mark.slow  # Prophet is a candidate at six origins
def test_twelve_years_of_monthly_data_are_backtested_over_years_not_28_months() -> None:
    index = pd.date_range("2000-01-01", periods=144, freq="MS", tz="UTC")  # air passengers' length
    y = pd.Series(100 + 5 * np.tile(np.arange(12.0), 12) + np.random.default_rng(4).normal(0, 1, 144), index=index)
    model = AutoModel().fit(y)
    assert set(model.scores_) >= {"seasonal_naive", "ets"}  # chosen by a backtest, not by default
    assert model.choice_ == min(model.scores_, key=model.scores_.get)
