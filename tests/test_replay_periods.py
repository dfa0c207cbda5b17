"""`kpiwatch replay` on weekly, monthly and quarterly files, and on files too short to judge.

Monthly rows step by calendar months (no fixed step fits months of 28-31 days), get a yearly
season of 12, and their summary counts calendar days; every file too short to judge a single
period is one clear error with the values needed and given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from forecaster.cli import cli
from forecaster.replay import (
    MIN_CALIBRATION,
    MIN_FIT,
    _plan,
    ReplayConfig,
    replay_rows,
    summary,
)
from forecaster.sources.base import to_kpi_series
from forecaster.types import BadInputError

MIN_FIT_COARSE = 30  # values before the first fit on weekly and coarser data (MIN_FIT: 60)


def yearly_pattern(stamps: pd.DatetimeIndex, seed: int = 0) -> pd.Series:
    """A slow trend, a yearly swing by calendar month and a little noise, at `stamps`."""
    rng = np.random.default_rng(seed)
    swing = 20 * np.sin(2 * np.pi * (stamps.month.to_numpy() - 1) / 12)
    return pd.Series(1000 + 0.5 * np.arange(len(stamps)) + swing + rng.normal(0, 2, len(stamps)), index=stamps)


def month_starts(periods: int, start: str = "1992-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq="MS", tz="UTC")


def first_judged(frame: pd.DataFrame) -> int:
    return int(np.flatnonzero(frame["score"].notna().to_numpy())[0])


# --- calendar months ------------------------------------------------------------------------


def test_month_starts_are_one_period_each_with_a_yearly_season() -> None:
    raw = yearly_pattern(month_starts(120))
    frame, notes = replay_rows(raw, "sales.csv:y")
    assert notes == []  # no month merged with another, none "between the steps"
    assert len(frame) == 120 and (frame["timestamp"] == raw.index).all()
    assert first_judged(frame) == MIN_FIT_COARSE + MIN_CALIBRATION  # the 61st value: 5 years and a month
    assert _plan(to_kpi_series("x", raw), ReplayConfig()).season == 12


def test_month_ends_are_one_period_each() -> None:
    stamps = pd.date_range("2001-01-31", periods=96, freq="ME", tz="UTC")
    frame, notes = replay_rows(yearly_pattern(stamps), "x")
    assert notes == []
    assert frame["score"].notna().sum() == 96 - 60


def test_local_month_starts_an_hour_or_two_before_utc_midnight_stay_months() -> None:
    # 2020-01-01T00:00+01:00 in Amsterdam is 2019-12-31T23:00Z; summer months are at 22:00Z.
    local = pd.date_range("2015-01-01", periods=72, freq="MS", tz="Europe/Amsterdam")
    frame, notes = replay_rows(yearly_pattern(local.tz_convert("UTC")), "x")
    assert notes == []
    assert frame["score"].notna().sum() == 72 - 60


def test_a_monthly_summary_counts_calendar_days_and_rates_per_year() -> None:
    stamps = month_starts(84, start="1954-01-01")  # judged: 1959-01 .. 1960-12, two years, one leap day
    frame, _ = replay_rows(yearly_pattern(stamps), "x")
    frame.loc[frame.index[-1], "anomaly"] = 1  # one alert, to read the rate
    line = summary(frame, "MS")
    assert "over 24 judged periods (731.0 days): 0.5 per year; first 60 values used as history only" in line


def test_months_off_the_first_of_the_month_share_their_month() -> None:
    stamps = list(month_starts(100))
    stamps[70] = stamps[70] + pd.Timedelta(days=14)  # a mid-month row: its own month, between the steps
    stamps.insert(81, stamps[80] + pd.Timedelta(days=3))  # a second row in one month
    raw = yearly_pattern(pd.DatetimeIndex(stamps))
    frame, notes = replay_rows(raw, "x")
    assert len(frame) == 101
    assert notes == [
        "1 row(s) shared a calendar-month period with another row (duplicate or irregular timestamps): "
        "judged on their mean, alerting once",
        "2 row(s) lie between the calendar-month steps and were judged with their period",
    ]
    assert frame["score"].iloc[81] == frame["score"].iloc[80] and frame["anomaly"].iloc[81] == 0


def test_quarters_get_a_season_of_four() -> None:
    stamps = pd.date_range("1990-01-01", periods=80, freq="QS", tz="UTC")
    raw = yearly_pattern(stamps)
    frame, notes = replay_rows(raw, "x")
    assert notes == [] and frame["score"].notna().sum() == 80 - 60
    assert _plan(to_kpi_series("x", raw, freq="3MS"), ReplayConfig()).season == 4
    assert "(1,826.0 days)" in summary(frame, "3MS")  # 20 quarters from 2005-01: 5 years, 1 leap day


def test_weeks_step_by_seven_days_with_a_yearly_season() -> None:
    stamps = pd.date_range("2020-01-06", periods=150, freq="W-MON", tz="UTC")
    raw = pd.Series(100 + np.random.default_rng(3).normal(0, 1, 150), index=stamps)
    frame, notes = replay_rows(raw, "x")
    assert notes == [] and first_judged(frame) == 60
    assert _plan(to_kpi_series("x", raw), ReplayConfig()).season == 52
    assert "over 90 judged periods (630.0 days)" in summary(frame, "7D")


# --- too short to judge: one clear error -----------------------------------------------------


@pytest.mark.parametrize(
    ("stamps", "need"),
    [
        (month_starts(61), MIN_FIT_COARSE + MIN_CALIBRATION + 1),  # 61 months
        (pd.date_range("2025-01-01", periods=91, freq="h", tz="UTC"), MIN_FIT + MIN_CALIBRATION + 1),
        (pd.date_range("2025-01-01", periods=91, freq="D", tz="UTC"), MIN_FIT + MIN_CALIBRATION + 1),
    ],
    ids=["monthly", "hourly", "daily"],
)
def test_the_stated_minimum_is_the_one_that_judges(stamps: pd.DatetimeIndex, need: int) -> None:
    raw = yearly_pattern(stamps)
    assert len(raw) == need
    frame, _ = replay_rows(raw, "x")
    assert frame["score"].notna().sum() == 1  # the last value is judged
    with pytest.raises(BadInputError) as caught:
        replay_rows(raw.iloc[1:], "f.csv:y")  # one value fewer: nothing to judge, an error not exit 0
    assert str(caught.value) == (
        f"f.csv:y: too little history to replay: needs at least {need} values, got {need - 1}; give a longer file"
    )


def test_a_five_year_monthly_file_says_what_it_needs() -> None:
    with pytest.raises(BadInputError, match="needs at least 61 values, got 60; give a longer file"):
        replay_rows(yearly_pattern(month_starts(60)), "x")


def test_empty_cells_do_not_count_as_values() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=120, freq="h", tz="UTC"))
    raw.iloc[10:40] = np.nan
    with pytest.raises(BadInputError, match="needs at least 91 values, got 90; give a longer file"):
        replay_rows(raw, "x")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("timestamp,value\n2025-01-01,1\n",
         "too little history to replay: needs at least 91 values (61 for weekly or monthly data), got 1; "
         "give a longer file"),
        ("timestamp,value\n2025-01-01,1\n2025-01-02,2\n",
         "too little history to replay: needs at least 91 values, got 2; give a longer file"),
        ("timestamp,value\n" + "2025-01-01,1\n" * 3,
         "all 3 rows have the same timestamp (2025-01-01 00:00:00+00:00); give one row per period, "
         "each with its own timestamp"),
    ],
    ids=["one row", "two rows", "one timestamp"],
)
def test_replay_cli_short_files_are_one_line_exit_2(tmp_path: Path, rows: str, message: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text(rows)
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"kpiwatch: error: in.csv:value: {message}"]


def test_replay_cli_a_monthly_file_judges_by_calendar_month(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    raw = yearly_pattern(month_starts(293))
    source.write_text("ds,y\n" + "".join(f"{t.date()},{v:.1f}\n" for t, v in raw.items()))
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--timestamp-col", "ds", "--value-col", "y",
                                      "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 0, result.output
    assert "note:" not in result.stderr  # no month merged with another, none between the steps
    assert "over 233 judged periods (7,091.0 days)" in result.stdout
    assert "per year; first 60 values used as history only." in result.stdout


# --- summary: gaps are not history -----------------------------------------------------------


def test_summary_counts_gaps_apart_from_history() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="5min", tz="UTC"))
    raw.iloc[[5, 6, 150, 151, 152]] = np.nan
    frame, _ = replay_rows(raw, "x")
    line = summary(frame, "5min")
    # 90 values before the first judged one (two gaps among them); 205 judged; 5 empty rows
    assert line.endswith("over 205 judged periods (0.7 days): 0 in under a day; first 90 values used as history only; "
                         "5 row(s) without a value not judged")


def test_summary_without_gaps_is_unchanged() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="5min", tz="UTC"))
    frame, _ = replay_rows(raw, "x")
    assert summary(frame, "5min").endswith("first 90 values used as history only")


def test_rows_missing_from_the_file_are_noted_as_gaps() -> None:
    stamps = pd.date_range("2024-01-01", periods=200, freq="D", tz="UTC")
    raw = yearly_pattern(stamps).drop(stamps[list(range(20, 30)) + [150, 160]])
    frame, notes = replay_rows(raw, "x")
    assert len(frame) == 188  # one output row per input row
    assert "12 period(s) of the D grid have no row in the file: kept as gaps" in " ".join(notes)
    assert "over 98 judged periods" in summary(frame, "D")  # 200 periods less 12 gaps less 90 of history


def test_history_rows_show_no_band() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="5min", tz="UTC"))
    frame, _ = replay_rows(raw, "x")
    unjudged = frame["score"].isna()
    assert frame.loc[unjudged, ["expected", "lower", "upper"]].isna().all().all()
    assert frame.loc[~unjudged, ["expected", "lower", "upper"]].notna().all().all()


def test_alerts_before_two_daily_cycles_are_noted() -> None:
    stamps = pd.date_range("2025-01-01", periods=288 * 5, freq="5min", tz="UTC")
    hours = stamps.hour.to_numpy()
    raw = pd.Series(np.where((hours >= 9) & (hours < 18), 80.0, 20.0), index=stamps)  # a clean square wave
    frame, notes = replay_rows(raw, "x")
    early = int(frame["anomaly"].iloc[: 2 * 288 + 10].sum())
    warm_up = [note for note in notes if "before two daily cycles were seen" in note]
    assert early >= 1 and warm_up and warm_up[0].startswith(f"{early} alert(s) in the first 2.0 days")
    assert int(frame["anomaly"].iloc[2 * 288 + 10 :].sum()) == 0  # once the daily season is known: quiet


def test_no_warm_up_note_without_early_alerts() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="D", tz="UTC"))
    _, notes = replay_rows(raw, "x")
    assert not [note for note in notes if "daily cycles" in note]
