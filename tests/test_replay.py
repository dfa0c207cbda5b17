"""Replay: causal, one output row per input row, calibrated quiet on normal data, loud on a shift."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from forecaster.cli import cli
from forecaster.replay import COLUMNS, replay, replay_rows
from forecaster.sources.base import to_kpi_series
from forecaster.types import BadInputError


def hourly(periods: int = 24 * 30, seed: int = 0, noise: float = 2.0) -> pd.Series:
    index = pd.date_range("2025-01-01", periods=periods, freq="h", tz="UTC")
    hours = np.arange(periods)
    values = 100 + 20 * np.sin(2 * np.pi * hours / 24) + np.random.default_rng(seed).normal(0, noise, periods)
    return pd.Series(values, index=index)


def test_normal_data_gives_at_most_a_rare_alert() -> None:
    frame = replay(to_kpi_series("x", hourly(seed=1)))
    assert list(frame.columns) == COLUMNS
    judged = frame["score"].notna()
    assert judged.sum() > 0.8 * len(frame)
    # default: ~1% of *days* may hold a false alarm; 30 days of clean data should give 0 or 1
    assert frame["anomaly"].sum() <= 1


def test_a_level_shift_alerts_once_then_becomes_the_new_normal() -> None:
    y = hourly(seed=2)
    y.iloc[24 * 20:] += 40.0  # a lasting shift of 20 noise sigmas
    frame = replay(to_kpi_series("x", y))
    alerts = frame.index[frame["anomaly"] == 1].tolist()
    assert alerts and alerts[0] == 24 * 20, alerts  # the first shifted hour, not later
    after = frame.iloc[24 * 23:]
    assert after["anomaly"].sum() == 0  # accepted after a day: no days of repeated alerts
    assert (after["expected"] - after["value"]).abs().median() < 5.0


def test_a_spike_does_not_drag_the_forecast_or_widen_the_band() -> None:
    y = hourly(seed=3)
    y.iloc[24 * 15] += 200.0
    frame = replay(to_kpi_series("x", y))
    assert frame["anomaly"].iloc[24 * 15] == 1
    band_before = (frame["upper"] - frame["lower"]).iloc[24 * 15 - 1]
    band_after = (frame["upper"] - frame["lower"]).iloc[24 * 15 + 1]
    assert band_after == pytest.approx(band_before, rel=0.05)
    assert abs(frame["expected"].iloc[24 * 15 + 1] - y.iloc[24 * 15 + 1]) < 15


def test_each_row_is_judged_from_earlier_rows_only() -> None:
    y = hourly(seed=4)
    full = replay(to_kpi_series("x", y))
    cut = replay(to_kpi_series("x", y.iloc[: 24 * 25]))
    pd.testing.assert_frame_equal(full.iloc[: 24 * 25], cut)


def test_scores_are_in_unit_interval_and_monotone_in_distance() -> None:
    frame = replay(to_kpi_series("x", hourly(seed=5)))
    judged = frame.dropna(subset=["score"])
    assert judged["score"].between(0, 1).all()
    distance = (judged["value"] - judged["expected"]).abs() / (judged["upper"] - judged["expected"])
    order = np.argsort(distance.to_numpy())
    assert np.all(np.diff(judged["score"].to_numpy()[order]) >= -1e-12)


def test_gaps_stay_gaps_and_are_not_judged() -> None:
    y = hourly(seed=6)
    y.iloc[300:310] = np.nan
    frame = replay(to_kpi_series("x", y))
    assert frame["score"].iloc[300:310].isna().all()
    assert frame["anomaly"].iloc[300:310].sum() == 0


def test_duplicate_and_irregular_rows_keep_one_output_row_each() -> None:
    y = hourly(seed=7)
    stamps = list(y.index)
    stamps[400] = stamps[399]  # a duplicate timestamp
    stamps[500] = stamps[500] + pd.Timedelta(minutes=7)  # off the grid
    raw = pd.Series(y.to_numpy(), index=pd.DatetimeIndex(stamps))
    frame, notes = replay_rows(raw, "x")
    assert len(frame) == len(raw)
    assert (frame["timestamp"] == raw.index).all()
    assert any("shared" in note for note in notes) and any("between" in note for note in notes)


def test_too_little_history_is_one_clear_error() -> None:
    with pytest.raises(BadInputError, match="too little history to replay: needs at least 60 values, got 20"):
        replay(to_kpi_series("x", hourly(periods=20)))


def test_a_constant_stretch_gives_no_alert_storm() -> None:
    y = hourly(seed=8)
    y.iloc[200:400] = 50.0
    frame = replay(to_kpi_series("x", y))
    assert frame["anomaly"].sum() <= 3  # entering and leaving the flat stretch, not every wiggle


def test_replay_cli_writes_the_columns_and_prints_the_summary(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    hourly(seed=9).rename_axis("timestamp").rename("value").to_csv(source)
    output = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "alert(s) over" in result.stdout and "per 30 days" in result.stdout
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS and len(rows) == 24 * 30
    assert {row["anomaly"] for row in rows} <= {"0", "1"}


def test_replay_cli_bad_file_is_one_line(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("timestamp,value\n2025-01-01,1\n2025-01-02,oops\n")
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"kpiwatch: error: {source}: line 3: column 'value' has 'oops', not a number; give a number with '.' "
        "as the decimal point, or leave the cell empty for a missing value"
    ]


def test_backtest_cli_json_has_the_metrics(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    hourly(seed=10).rename_axis("timestamp").rename("value").to_csv(source)
    result = CliRunner().invoke(cli, ["backtest", "--csv", str(source), "--models", "seasonal_naive,ets",
                                      "--horizon", "24", "--origins", "3", "--format", "json"])
    assert result.exit_code == 0, result.output
    scores = {s["model"]: s for s in json.loads(result.stdout)["scores"]}
    assert set(scores) == {"seasonal_naive", "ets"}
    for score in scores.values():
        assert score["mase"] > 0 and 0 <= score["coverage"] <= 1 and score["msis"] > 0


def test_replay_config_level_is_checked() -> None:
    result = CliRunner().invoke(cli, ["replay", "--csv", "x.csv", "--output", "o.csv", "--level", "99"])
    assert result.exit_code == 2 and "`level` must be between 0 and 1" in result.stderr
