"""A conversion rate over a handful of sessions a day is noise: two years of it give no alert,
while the same relative drop on a large segment does (issue: ratios done right)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecaster.calendar import Calendar
from forecaster.pipeline import evaluate_series
from forecaster.settings import KPIConfig, RatioConfig
from forecaster.sources.base import to_kpi_series

DAYS = 730
WINDOW = 30  # judge a month per fit: 24 fits cover the two years


def conversion_rate(sessions_per_day: float, drop_from: int | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=DAYS, freq="D", tz="UTC")
    sessions = rng.poisson(sessions_per_day, DAYS).astype(float)
    rate = np.full(DAYS, 0.02)
    if drop_from is not None:
        rate[drop_from : drop_from + 3] *= 0.6  # the demo's mobile incident: -40% for 3 days
    conversions = rng.binomial(sessions.astype(int), rate).astype(float)
    ratio = np.where(sessions > 0, conversions / np.maximum(sessions, 1), np.nan)
    return to_kpi_series("conversion_rate", pd.Series(ratio, index=index),
                         denominator=pd.Series(sessions, index=index))


def alerts_over_history(series) -> list[pd.Timestamp]:
    """Judge the whole history month by month with default settings; the alerted periods."""
    kpi = KPIConfig(ratio=RatioConfig(numerator="conversions", denominator="sessions"), unit="%",
                    model="ets", check_window=WINDOW)
    flagged = []
    for end in range(120 + WINDOW - 1, DAYS, WINDOW):
        result = evaluate_series(series, kpi, Calendar(), series.values.index[end])
        flagged += [j.period for j in result.judgements if j.is_anomaly and j.actual < j.expected]
    return flagged


@pytest.mark.slow
def test_twelve_sessions_a_day_never_alert_in_two_years() -> None:
    assert alerts_over_history(conversion_rate(12)) == []


@pytest.mark.slow
def test_the_same_relative_drop_on_a_large_segment_alerts() -> None:
    drop_day = 500
    flagged = alerts_over_history(conversion_rate(50_000, drop_from=drop_day, seed=1))
    index = pd.date_range("2024-01-01", periods=DAYS, freq="D", tz="UTC")
    assert index[drop_day] in flagged
    assert len([t for t in flagged if t not in index[drop_day : drop_day + 3]]) <= 7  # ~1% of 600 days
