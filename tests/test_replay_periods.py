"""`kpiwatch replay` on 5-minute, weekly, monthly and quarterly files, long-format exports, and
files too short to judge.

A file's rows are put on the grid of their usual spacing (`forecaster.timegrid`): monthly rows
step by calendar months (no fixed step fits months of 28-31 days) and get a yearly season of 12,
and their summary counts calendar days; a long-format export (several rows per period) is judged
on each period's sum; every file too short to judge a single period is one clear error with the
values needed and given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from forecaster.cli import cli
from forecaster.detect import Detector, history_needed
from forecaster.detect.engine import MIN_CALIBRATION, MIN_FIT, MIN_FIT_COARSE
from forecaster.replay import COLUMNS, default_detectors, replay_rows, summary
from forecaster.timegrid import alias, months_per_period, periods_per_day, season_length, usual_spacing
from forecaster.types import BadInputError
from conftest import assert_one_line_error


def yearly_pattern(stamps: pd.DatetimeIndex, seed: int = 0) -> pd.Series:
    """A slow trend, a yearly swing by calendar month and a little noise, at `stamps`."""
    rng = np.random.default_rng(seed)
    swing = 20 * np.sin(2 * np.pi * (stamps.month.to_numpy() - 1) / 12)
    return pd.Series(1000 + 0.5 * np.arange(len(stamps)) + swing + rng.normal(0, 2, len(stamps)), index=stamps)


def month_starts(periods: int, start: str = "1992-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq="MS", tz="UTC")


def first_judged(frame: pd.DataFrame) -> int:
    return int(np.flatnonzero(frame["score"].notna().to_numpy())[0])


def rows(raw: pd.Series, name: str = "x") -> tuple[pd.DataFrame, list[str]]:
    """`replay_rows` with the detectors `kpiwatch replay --csv` uses without a config."""
    return replay_rows(raw, name, default_detectors())


def freq_of(raw: pd.Series) -> str:
    """The alias replay puts `raw`'s rows on."""
    return alias(usual_spacing(pd.DatetimeIndex(raw.index).sort_values().unique()))




# --- the grid of a file's spacing (timegrid) -------------------------------------------------


@pytest.mark.parametrize(
    ("freq", "alias_", "season", "per_day", "months"),
    [
        ("5min", "5min", 288, 288.0, 0),
        ("h", "h", 24, 24.0, 0),
        ("D", "D", 7, 1.0, 0),
        ("W-MON", "7D", 52, 1 / 7, 0),
        ("MS", "MS", 12, 1 / (365.2425 / 12), 1),
        ("ME", "ME", 12, 1 / (365.2425 / 12), 1),
        ("QS", "3MS", 4, 1 / (3 * 365.2425 / 12), 3),
    ],
)
def test_a_files_spacing_gives_its_alias_season_and_periods_per_day(
    freq: str, alias_: str, season: int, per_day: float, months: int
) -> None:
    stamps = pd.date_range("2020-01-01", periods=40, freq=freq, tz="UTC")
    step = usual_spacing(stamps)
    assert alias(step) == alias_
    assert season_length(alias_) == season
    assert periods_per_day(alias_) == pytest.approx(per_day)
    assert months_per_period(alias_) == months
    assert Detector(freq=alias_).plan.season == season


def test_the_usual_spacing_is_the_most_common_one() -> None:
    stamps = pd.date_range("2025-01-01", periods=100, freq="5min", tz="UTC")
    irregular = stamps.delete([10, 50]).append(pd.DatetimeIndex([stamps[20] + pd.Timedelta(minutes=2)], tz="UTC"))
    assert alias(usual_spacing(irregular.sort_values())) == "5min"


def test_five_minute_rows_are_one_period_each_with_a_daily_season() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=600, freq="5min", tz="UTC"))
    frame, notes = rows(raw)
    assert notes == [] and len(frame) == 600 and (frame["timestamp"] == raw.index).all()
    assert first_judged(frame) == MIN_FIT + MIN_CALIBRATION  # the 91st value
    assert Detector(freq=freq_of(raw)).plan.season == 288
    assert summary(frame, "5min").startswith("0 alert(s) over 510 judged periods (1.8 days): 0.0 per 30 days")


def test_month_starts_are_one_period_each_with_a_yearly_season() -> None:
    raw = yearly_pattern(month_starts(120))
    frame, notes = rows(raw, "sales.csv:y")
    assert notes == []  # no month merged with another, none "between the steps"
    assert len(frame) == 120 and (frame["timestamp"] == raw.index).all()
    assert first_judged(frame) == MIN_FIT_COARSE + MIN_CALIBRATION  # the 61st value: 5 years and a month
    assert freq_of(raw) == "MS" and Detector(freq="MS").plan.season == 12


def test_month_ends_are_one_period_each() -> None:
    stamps = pd.date_range("2001-01-31", periods=96, freq="ME", tz="UTC")
    frame, notes = rows(yearly_pattern(stamps))
    assert notes == []
    assert frame["score"].notna().sum() == 96 - 60


def test_local_month_starts_an_hour_or_two_before_utc_midnight_stay_months() -> None:
    # 2020-01-01T00:00+01:00 in Amsterdam is 2019-12-31T23:00Z; summer months are at 22:00Z.
    local = pd.date_range("2015-01-01", periods=72, freq="MS", tz="Europe/Amsterdam")
    frame, notes = rows(yearly_pattern(local.tz_convert("UTC")))
    assert notes == []
    assert frame["score"].notna().sum() == 72 - 60


def test_a_monthly_summary_counts_calendar_days_and_rates_per_year() -> None:
    stamps = month_starts(84, start="1954-01-01")  # judged: 1959-01 .. 1960-12, two years, one leap day
    frame, _ = rows(yearly_pattern(stamps))
    frame.loc[frame.index[-1], "anomaly"] = 1  # one alert, to read the rate
    line = summary(frame, "MS")
    assert "over 24 judged periods (731.0 days): 0.5 per year; first 60 values used as history only" in line


def test_months_off_the_first_of_the_month_share_their_month() -> None:
    stamps = list(month_starts(100))
    stamps[70] = stamps[70] + pd.Timedelta(days=14)  # a mid-month row: its own month, between the steps
    stamps.insert(81, stamps[80] + pd.Timedelta(days=3))  # a second row in one month
    raw = yearly_pattern(pd.DatetimeIndex(stamps))
    frame, notes = rows(raw)
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
    frame, notes = rows(raw)
    assert notes == [] and frame["score"].notna().sum() == 80 - 60
    assert freq_of(raw) == "3MS" and Detector(freq="3MS").plan.season == 4
    assert "(1,826.0 days)" in summary(frame, "3MS")  # 20 quarters from 2005-01: 5 years, 1 leap day


def test_weeks_step_by_seven_days_with_a_yearly_season() -> None:
    stamps = pd.date_range("2020-01-06", periods=150, freq="W-MON", tz="UTC")
    raw = pd.Series(100 + np.random.default_rng(3).normal(0, 1, 150), index=stamps)
    frame, notes = rows(raw)
    assert notes == [] and first_judged(frame) == 60
    assert freq_of(raw) == "7D" and Detector(freq="7D").plan.season == 52
    assert "over 90 judged periods (630.0 days)" in summary(frame, "7D")
    assert "per year" in summary(frame, "7D")


# --- too short to judge: one clear error -----------------------------------------------------


@pytest.mark.parametrize(
    ("stamps", "need"),
    [
        (month_starts(61), MIN_FIT_COARSE + MIN_CALIBRATION + 1),  # 61 months
        (pd.date_range("2020-01-06", periods=61, freq="W-MON", tz="UTC"), MIN_FIT_COARSE + MIN_CALIBRATION + 1),
        (pd.date_range("2025-01-01", periods=91, freq="5min", tz="UTC"), MIN_FIT + MIN_CALIBRATION + 1),
        (pd.date_range("2025-01-01", periods=91, freq="h", tz="UTC"), MIN_FIT + MIN_CALIBRATION + 1),
        (pd.date_range("2025-01-01", periods=91, freq="D", tz="UTC"), MIN_FIT + MIN_CALIBRATION + 1),
    ],
    ids=["monthly", "weekly", "5-minute", "hourly", "daily"],
)
def test_the_stated_minimum_is_the_one_that_judges(stamps: pd.DatetimeIndex, need: int) -> None:
    raw = yearly_pattern(stamps)
    assert len(raw) == need == history_needed(freq_of(raw))
    frame, _ = rows(raw)
    assert frame["score"].notna().sum() == 1  # the last value is judged
    with pytest.raises(BadInputError) as caught:
        rows(raw.iloc[1:], "f.csv:y")  # one value fewer: nothing to judge, an error not exit 0
    assert str(caught.value) == (
        f"f.csv:y: too little history to replay: needs at least {need} values, got {need - 1}; give a longer file"
    )


def test_a_five_year_monthly_file_says_what_it_needs() -> None:
    with pytest.raises(BadInputError, match="needs at least 61 values, got 60; give a longer file"):
        rows(yearly_pattern(month_starts(60)))


def test_empty_cells_do_not_count_as_values() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=120, freq="h", tz="UTC"))
    raw.iloc[10:40] = np.nan
    with pytest.raises(BadInputError, match="needs at least 91 values, got 90; give a longer file"):
        rows(raw)


@pytest.mark.parametrize(
    ("rows_", "message"),
    [
        ("timestamp,value\n2025-01-01,1\n",
         "too little history to replay: needs at least 91 values (61 for weekly or monthly data), got 1; "
         "give a longer file"),
        ("timestamp,value\n2025-01-01,1\n2025-01-02,2\n",
         "too little history to replay: needs at least 91 values, got 2; give a longer file"),
        ("timestamp,value\n" + "".join(f"2025-01-{d:02d},{d}\n" for d in range(1, 31)),
         "too little history to replay: needs at least 91 values, got 30; give a longer file"),
        ("timestamp,value\n" + "".join(f"{y}-{m:02d}-01,{m}\n" for y in (2020, 2021) for m in range(1, 13)),
         "too little history to replay: needs at least 61 values, got 24; give a longer file"),
        ("timestamp,value\n" + "2025-01-01,1\n" * 3,
         "all 3 rows have the same timestamp (2025-01-01 00:00:00+00:00); give one row per period, "
         "each with its own timestamp"),
    ],
    ids=["one row", "two rows", "a month of days", "two years of months", "one timestamp"],
)
def test_replay_cli_short_files_are_one_line_exit_2(tmp_path: Path, rows_: str, message: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text(rows_)
    output = tmp_path / "o.csv"
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(output)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"kpiwatch: error: in.csv:value: {message}"]
    assert not output.exists()


def test_replay_cli_a_monthly_file_judges_by_calendar_month(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    raw = yearly_pattern(month_starts(293))
    source.write_text("ds,y\n" + "".join(f"{t.date()},{v:.1f}\n" for t, v in raw.items()))
    output = tmp_path / "o.csv"
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--timestamp-col", "ds", "--value-col", "y",
                                      "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "note:" not in result.stderr  # no month merged with another, none between the steps
    assert "over 233 judged periods (7,091.0 days)" in result.stdout
    assert "per year; first 60 values used as history only." in result.stdout
    written = pd.read_csv(output)
    assert list(written.columns) == COLUMNS and len(written) == 293


def test_replay_cli_a_five_minute_file_rates_per_30_days(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=288 * 2, freq="5min", tz="UTC"))
    raw.rename_axis("timestamp").rename("value").to_csv(source)
    output = tmp_path / "o.csv"
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "over 486 judged periods (1.7 days):" in result.stdout and "per 30 days" in result.stdout
    assert len(pd.read_csv(output)) == 288 * 2


# --- duplicates, irregular rows, long-format exports ----------------------------------------


def daily_with_changes(periods: int = 200, seed: int = 0) -> pd.Series:
    """A daily total with a weekly cycle, a spike and a drop (both far outside the band)."""
    t = np.arange(periods)
    values = 1000 + 100 * np.sin(2 * np.pi * t / 7) + np.random.default_rng(seed).normal(0, 5, periods)
    values[120] += 60.0
    values[150] -= 60.0
    return pd.Series(values, index=pd.date_range("2024-01-01", periods=periods, freq="D", tz="UTC"))


def long_format(total: pd.Series, shares: tuple[float, ...] = (0.5, 0.3, 0.2)) -> pd.Series:
    """`total` exported in long format: one row per channel and day, the channels summing to it
    (rows ordered by channel, then day, as a GROUP BY channel, day export may come)."""
    parts = [pd.Series(total.to_numpy() * share, index=total.index) for share in shares]
    return pd.concat(parts)


def test_a_long_format_export_is_judged_on_the_daily_total() -> None:
    total = daily_with_changes()
    by_day, day_notes = rows(total)
    assert day_notes == []
    assert by_day["anomaly"].iloc[[120, 150]].tolist() == [1, 1]  # the premise: both changes alert
    raw = long_format(total)
    frame, notes = rows(raw)
    assert len(frame) == 3 * 200 and (frame["timestamp"] == raw.index).all()
    assert (frame["value"].to_numpy() == raw.to_numpy()).all()  # each row keeps its own value
    assert notes == ["most D periods have several rows (a long-format export): each period is judged on the sum "
                     "of its rows (400 rows added to another)"]
    # every day is judged as the daily-total file judges it: one alert per day, on its first row
    per_day = frame.assign(day=frame["timestamp"]).groupby("day")
    assert (per_day["anomaly"].sum().to_numpy() == by_day["anomaly"].to_numpy()).all()
    first_rows = frame.iloc[:200]
    for column in ("expected", "lower", "upper", "score"):
        np.testing.assert_allclose(first_rows[column].to_numpy(), by_day[column].to_numpy(), rtol=1e-9)
    assert frame["anomaly"].iloc[200:].sum() == 0  # the other rows of a day never alert again


def test_replay_cli_a_long_format_export_says_it_summed(tmp_path: Path) -> None:
    total = daily_with_changes()
    raw = long_format(total)
    source = tmp_path / "channels.csv"
    pd.DataFrame({"timestamp": raw.index.strftime("%Y-%m-%d"), "value": raw.to_numpy()}).to_csv(source, index=False)
    daily = tmp_path / "daily.csv"
    pd.DataFrame({"timestamp": total.index.strftime("%Y-%m-%d"), "value": total.to_numpy()}).to_csv(daily, index=False)
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 0, result.output
    assert "note: most D periods have several rows (a long-format export): each period is judged on the sum" \
        in result.stderr
    by_day = CliRunner().invoke(cli, ["replay", "--csv", str(daily), "--output", str(tmp_path / "d.csv")])
    assert by_day.exit_code == 0, by_day.output
    long_out, day_out = pd.read_csv(tmp_path / "o.csv"), pd.read_csv(tmp_path / "d.csv")
    assert len(long_out) == 600 and len(day_out) == 200
    assert long_out.groupby("timestamp")["anomaly"].sum().tolist() == day_out["anomaly"].tolist()
    assert int(day_out["anomaly"].sum()) >= 2


def test_the_summary_of_a_long_format_export_counts_periods_not_rows(tmp_path: Path) -> None:
    total = daily_with_changes()
    raw = long_format(total).sort_index(kind="stable")  # day by day, a row per channel
    source = tmp_path / "channels.csv"
    pd.DataFrame({"timestamp": raw.index.strftime("%Y-%m-%d"), "value": raw.to_numpy()}).to_csv(source, index=False)
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 0, result.output
    daily_line = summary(rows(total)[0], "D")
    assert daily_line.startswith("2 alert(s) over 110 judged periods (110.0 days): 0.5 per 30 days")
    assert "over 110 judged periods (110.0 days): 0.5 per 30 days" in result.stdout, result.stdout


def test_a_stray_duplicate_is_judged_on_the_mean_not_the_sum() -> None:
    total = daily_with_changes()
    plain, _ = rows(total)
    raw = pd.concat([total, total.iloc[[100]]]).sort_index(kind="stable")  # day 100 written twice
    frame, notes = rows(raw)
    assert len(frame) == 201
    assert notes == ["1 row(s) shared a D period with another row (duplicate or irregular timestamps): "
                     "judged on their mean, alerting once"]
    # not doubled: the day is judged as if written once, and so is every other day
    once = frame.drop(index=101).reset_index(drop=True)
    pd.testing.assert_frame_equal(once, plain)
    assert frame["score"].iloc[101] == frame["score"].iloc[100] and frame["anomaly"].iloc[101] == 0


def test_rows_missing_from_the_file_are_noted_as_gaps() -> None:
    stamps = pd.date_range("2024-01-01", periods=200, freq="D", tz="UTC")
    raw = yearly_pattern(stamps).drop(stamps[list(range(20, 30)) + [150, 160]])
    frame, notes = rows(raw)
    assert len(frame) == 188  # one output row per input row
    assert "12 period(s) of the D grid have no row in the file: kept as gaps" in " ".join(notes)
    assert "over 98 judged periods" in summary(frame, "D")  # 200 periods less 12 gaps less 90 of history


def test_five_minute_rows_off_the_grid_are_judged_with_their_period() -> None:
    stamps = pd.date_range("2025-01-01", periods=400, freq="5min", tz="UTC")
    moved = stamps.to_series().copy()
    moved.iloc[200] += pd.Timedelta(minutes=2)  # inside its own 5 minutes
    moved.iloc[300] += pd.Timedelta(minutes=7)  # into the next period, which has its own row
    raw = yearly_pattern(pd.DatetimeIndex(moved)).sort_index(kind="stable")
    frame, notes = rows(raw)
    assert len(frame) == 400
    assert notes == [
        "1 row(s) shared a 5min period with another row (duplicate or irregular timestamps): judged on their mean, "
        "alerting once",
        "2 row(s) lie between the 5min steps and were judged with their period",
        "1 period(s) of the 5min grid have no row in the file: kept as gaps (not judged; the model carries on from "
        "its forecast)",
    ]


# --- summary: gaps are not history -----------------------------------------------------------


def test_summary_counts_gaps_apart_from_history() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="5min", tz="UTC"))
    raw.iloc[[5, 6, 150, 151, 152]] = np.nan
    frame, _ = rows(raw)
    line = summary(frame, "5min")
    # 90 values before the first judged one (two gaps among them); 205 judged; 5 empty rows
    assert line.endswith("over 205 judged periods (0.7 days): 0 in under a day; first 90 values used as history only; "
                         "5 row(s) without a value not judged")


def test_summary_without_gaps_is_unchanged() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="5min", tz="UTC"))
    frame, _ = rows(raw)
    assert summary(frame, "5min").endswith("first 90 values used as history only")


def test_summary_of_nothing_judged_says_so() -> None:
    frame = pd.DataFrame({column: [np.nan, np.nan] for column in COLUMNS}).assign(anomaly=[0, 0])
    assert summary(frame, "D") == "no period could be judged: the series is too short for one calibration window"


def test_history_rows_show_no_band() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="5min", tz="UTC"))
    frame, _ = rows(raw)
    unjudged = frame["score"].isna()
    assert frame.loc[unjudged, ["expected", "lower", "upper"]].isna().all().all()
    assert frame.loc[~unjudged, ["expected", "lower", "upper"]].notna().all().all()


def test_a_square_wave_is_quiet_once_the_daily_season_is_known() -> None:
    stamps = pd.date_range("2025-01-01", periods=288 * 5, freq="5min", tz="UTC")
    hours = stamps.hour.to_numpy()
    raw = pd.Series(np.where((hours >= 9) & (hours < 18), 80.0, 20.0), index=stamps)  # a clean square wave
    frame, notes = rows(raw)
    early = int(frame["anomaly"].iloc[: 2 * 288 + 10].sum())
    # An alert before two daily cycles were seen is said to be possibly the cycle itself.
    assert notes == ([f"{early} alert(s) in the first 2.0 days, judged before two daily cycles were seen (by a "
                      "model without the daily season): they may be the daily cycle itself"] if early else [])
    assert int(frame["anomaly"].iloc[2 * 288 + 10 :].sum()) == 0  # once the daily season is known: quiet


def test_no_notes_for_a_clean_daily_file() -> None:
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=300, freq="D", tz="UTC"))
    _, notes = rows(raw)
    assert notes == []


def test_replay_cli_the_output_may_not_be_the_input(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    raw = yearly_pattern(pd.date_range("2025-01-01", periods=120, freq="D", tz="UTC"))
    raw.rename_axis("timestamp").rename("value").to_csv(source)
    before = source.read_bytes()
    for output in (source, tmp_path / "." / "in.csv"):
        result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(output)])
        assert_one_line_error(result, f"--output {output} is the input file: it would be overwritten; write elsewhere")
    assert source.read_bytes() == before
