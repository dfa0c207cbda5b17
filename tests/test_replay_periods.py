"""`kpiwatch replay` on weekly, monthly and quarterly files, and on files too short to judge.

Monthly rows step by calendar months (no fixed step fits months of 28-31 days), get a yearly
season of 12, and their summary counts calendar days; every file too short to judge a single
period is one clear error with the values needed and given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecaster.replay import replay_rows, summary


def yearly_pattern(stamps: pd.DatetimeIndex, seed: int = 0) -> pd.Series:
    """A slow trend, a yearly swing by calendar month and a little noise, at `stamps`."""
    rng = np.random.default_rng(seed)
    swing = 20 * np.sin(2 * np.pi * (stamps.month.to_numpy() - 1) / 12)
    return pd.Series(1000 + 0.5 * np.arange(len(stamps)) + swing + rng.normal(0, 2, len(stamps)), index=stamps)


# --- summary: gaps are not history -----------------------------------------------------------


def test_summary_counts_gaps_apart_from_history() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="5min", tz="UTC"))
    raw.iloc[[5, 6, 150, 151, 152]] = np.nan
    frame, _ = replay_rows(raw, "x")
    line = summary(frame, "5min")
    # 90 values before the first judged one (two gaps among them); 205 judged; 5 empty rows
    assert line.endswith("over 205 judged periods (0.7 days): 0 in under a day; first 90 periods used as history only; "
                         "5 period(s) without a value not judged")


def test_summary_without_gaps_is_unchanged() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="5min", tz="UTC"))
    frame, _ = replay_rows(raw, "x")
    assert summary(frame, "5min").endswith("first 90 periods used as history only")
