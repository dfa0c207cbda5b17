"""Completeness of a period: its raw rows against the median of the periods before it."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from forecaster.completeness import completeness, is_complete, rows_per_period, usual_phase

DAY = pd.Timedelta(days=1)
HOUR = pd.Timedelta(hours=1)
LAST = pd.Timestamp("2025-12-09", tz="UTC")


def _rows(counts: list[float | None], end: pd.Timestamp = LAST, step: pd.Timedelta = DAY) -> pd.Series:
    """Rows per period ending at `end`; None = the period is absent from the source."""
    index = pd.date_range(end=end, periods=len(counts), freq=step)
    series = pd.Series(counts, index=index, dtype="float64")
    return series.dropna()


# Hand-computed cases: rows of the previous periods (oldest first), then the period's own.
CASES = [
    # 28 steady days of 10 rows, the last one has 4: 4 / 10
    {"before": [10] * 28, "rows": 4, "share": 0.40},
    {"before": [10] * 28, "rows": 10, "share": 1.0},
    {"before": [10] * 28, "rows": 12, "share": 1.2},  # more rows than usual is complete, not an error
    {"before": [10] * 28, "rows": None, "share": 0.0},  # nothing yet for the period
    # the median, not the mean: one doubled and one half-written day do not move the bar
    {"before": [10] * 26 + [20, 5], "rows": 9, "share": 0.9},
    # only the 28 periods right before count: older ones (here 100 rows) are ignored
    {"before": [100] * 5 + [10] * 28, "rows": 5, "share": 0.5},
    # absent earlier periods are left out of the median, not read as 0 rows
    {"before": [None] * 20 + [8] * 8, "rows": 4, "share": 0.5},
    # the median of an even count: (8 + 12) / 2 = 10
    {"before": [8, 12], "rows": 5, "share": 0.5},
    # nothing to compare with: unknown
    {"before": [], "rows": 3, "share": None},
    {"before": [None, None], "rows": 3, "share": None},
]


@pytest.mark.parametrize("case", CASES)
def test_share_of_the_usual_rows(case: dict) -> None:
    rows = _rows([*case["before"], case["rows"]])
    got = completeness(rows, LAST, DAY)
    if case["share"] is None:
        assert got is None
    else:
        assert got == pytest.approx(case["share"])


def test_hourly_periods_step_by_hours() -> None:
    end = pd.Timestamp("2025-12-09 14:00", tz="UTC")
    rows = _rows([6] * 28 + [3], end, HOUR)
    assert completeness(rows, end, HOUR) == pytest.approx(0.5)
    assert completeness(rows, end - HOUR, HOUR) == pytest.approx(1.0)


def test_a_baseline_can_be_shorter() -> None:
    rows = _rows([100] * 10 + [10] * 3 + [5])
    assert completeness(rows, LAST, DAY, baseline=3) == pytest.approx(0.5)


@pytest.mark.parametrize(("share", "required", "complete"), [
    (0.4, 0.9, False),
    (0.9, 0.9, True),
    (0.89, 0.9, False),
    (1.3, 0.9, True),
    (0.0, 0.0, True),  # 0 turns the check off
    (None, 0.9, True),  # the source cannot count rows: judged as before
])
def test_is_complete(share: float | None, required: float, complete: bool) -> None:
    assert is_complete(share, required) is complete


def test_rows_per_period_sums_over_dimension_values() -> None:
    days = pd.to_datetime(["2025-12-08", "2025-12-08", "2025-12-09"]).tz_localize("UTC")
    frame = pd.DataFrame({"timestamp": days, "channel": ["a", "b", "a"], "leads": [1.0, 2.0, math.nan],
                          "_rows": [3.0, 4.0, 2.0]})
    got = rows_per_period(frame)
    assert got is not None
    assert got.to_dict() == {pd.Timestamp("2025-12-08", tz="UTC"): 7.0, pd.Timestamp("2025-12-09", tz="UTC"): 2.0}
    assert rows_per_period(frame.drop(columns="_rows")) is None  # a query, GA4, the demo


def test_days_compare_with_the_same_weekday_and_hours_with_the_same_hour() -> None:
    """An event table has far fewer rows on Sundays: a normal Sunday is complete, a half one is not."""
    step, baseline = usual_phase("D")
    assert (step, baseline) == (pd.Timedelta(days=7), 4)
    days = pd.date_range(end=LAST, periods=29, freq="D")  # LAST is a Tuesday
    weekday_rows = [40.0 if d.day_of_week == 6 else 100.0 for d in days]
    rows = pd.Series(weekday_rows, index=days)
    sunday = LAST - pd.Timedelta(days=2)
    assert completeness(rows, sunday, step, baseline) == pytest.approx(1.0)  # 40 of the usual Sunday 40
    half = rows.copy()
    half[sunday] = 20.0
    assert completeness(half, sunday, step, baseline) == pytest.approx(0.5)
    assert usual_phase("h") == (pd.Timedelta(hours=24), 7)
