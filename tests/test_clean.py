"""Past outliers are kept out of fits; level shifts and calendar peaks are not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecaster.clean import mask_outliers


def daily(weeks: int = 20, seed: int = 0) -> pd.Series:
    index = pd.date_range("2025-01-06", periods=7 * weeks, freq="D", tz="UTC")
    weekly = np.tile([100.0, 110, 105, 120, 130, 80, 70], weeks)
    return pd.Series(weekly + np.random.default_rng(seed).normal(0, 2, len(index)), index=index)


def test_a_one_day_outage_is_masked_and_nothing_else() -> None:
    y = daily()
    y.iloc[60] = 3.0  # tracking outage
    cleaned = mask_outliers(y, "D")
    assert np.isnan(cleaned.iloc[60])
    assert cleaned.drop(y.index[60]).notna().all()


def test_a_lasting_level_shift_becomes_normal_within_a_few_weeks() -> None:
    y = daily()
    y.iloc[70:] += 60.0
    masked = mask_outliers(y, "D").isna()
    assert not masked.iloc[70 + 4 * 7 :].any()  # from the fifth week on it is the norm


def test_calendar_days_are_never_masked() -> None:
    y = daily()
    y.iloc[80] *= 2.5  # Black Friday
    assert np.isnan(mask_outliers(y, "D").iloc[80])
    assert mask_outliers(y, "D", keep=[y.index[80]]).iloc[80] == y.iloc[80]


def test_short_or_flat_histories_are_left_alone() -> None:
    short = daily(weeks=3)
    short.iloc[10] = 0.0
    pd.testing.assert_series_equal(mask_outliers(short, "D"), short)
    flat = pd.Series(5.0, index=daily().index)
    pd.testing.assert_series_equal(mask_outliers(flat, "D"), flat)
