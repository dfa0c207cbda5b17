"""`kpiwatch replay --config`: a KPI's alerting guardrails decide the `anomaly` column.

Each rule on a small daily series (weekly season, noise sigma 5, band half-width ~12) with
changes put in by hand; without --config the output is the default detector's, unchanged.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from forecaster.calendar import Calendar, UserEvent
from forecaster.cli import cli
from forecaster.replay import ReplayConfig, _event_rows, replay, replay_rows
from forecaster.sources.base import to_kpi_series
from forecaster.sources.csv import read_csv_columns

START = pd.Timestamp("2024-01-01", tz="UTC")  # 200 days end in July: no retail peak in range
SPIKE, DROP, SHIFT = 120, 140, 160  # rows, well apart (an alert silences the next 3 periods)
SIZE = 60.0  # 12 noise sigmas: far outside the band, far inside an event day's (+150)
SOURCE = "sources: {default: {type: demo}}\n"


def daily(changes: dict[int, float], periods: int = 200) -> pd.Series:
    """A clean daily series (seed 0: no false alarm with default settings) plus `changes` by row."""
    values = 1000 + 100 * np.sin(2 * np.pi * np.arange(periods) / 7)
    values = values + np.random.default_rng(0).normal(0, 5, periods)
    for row, change in changes.items():
        values[row] += change
    return pd.Series(values, index=pd.date_range(START, periods=periods, freq="D"))


def write_csv(tmp_path: Path, series: pd.Series, name: str = "kpi.csv") -> Path:
    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows((f"{stamp:%Y-%m-%d}", repr(float(value))) for stamp, value in series.items())
    return path


def write_config(tmp_path: Path, kpis: str, top: str = "") -> Path:
    path = tmp_path / "kpiwatch.yaml"
    path.write_text(f"{top}{SOURCE}kpis:\n{kpis}", encoding="utf-8")
    return path


def run_replay(tmp_path: Path, source: Path, *args: str) -> tuple[Result, pd.DataFrame | None]:
    output = tmp_path / "out.csv"
    output.unlink(missing_ok=True)
    result = CliRunner().invoke(cli, ["replay", "--csv", str(source), "--output", str(output), *args])
    return result, pd.read_csv(output) if output.exists() else None


def alerted(frame: pd.DataFrame) -> list[int]:
    return np.flatnonzero(frame["anomaly"].to_numpy()).tolist()


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kpiwatch: error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_the_clean_series_alerts_only_where_changes_were_put() -> None:
    # The premise of every test below: the default detector flags each change and nothing else.
    frame, _ = replay_rows(daily({SPIKE: SIZE, DROP: -SIZE}), "x")
    assert alerted(frame) == [SPIKE, DROP]


def test_only_the_bad_direction_alerts_unless_good_news(tmp_path: Path) -> None:
    source = write_csv(tmp_path, daily({SPIKE: SIZE, DROP: -SIZE}))
    result, frame = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, "  orders: {metric: orders, good: up}\n")))
    assert result.exit_code == 0, result.output
    assert alerted(frame) == [DROP]  # orders up is good: the spike is not an incident
    assert "settings of KPI orders" in result.stdout and "alerts when down (good: up)" in result.stdout

    config = write_config(tmp_path, "  cost: {metric: cost, good: down}\n")
    assert alerted(run_replay(tmp_path, source, "--config", str(config))[1]) == [SPIKE]

    config = write_config(tmp_path, "  orders: {metric: orders, good: up, good_news: true}\n")
    assert alerted(run_replay(tmp_path, source, "--config", str(config))[1]) == [SPIKE, DROP]


def test_min_abs_change_above_the_change_silences_it(tmp_path: Path) -> None:
    source = write_csv(tmp_path, daily({DROP: -SIZE}))
    config = write_config(tmp_path, f"  orders: {{metric: orders, min_abs_change: {SIZE + 10}}}\n")
    result, frame = run_replay(tmp_path, source, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert alerted(frame) == []
    assert f"min_abs_change {SIZE + 10:g}" in result.stdout
    # the band and the score are the model's, whatever the guardrails say
    assert frame["score"].iloc[DROP] > 0.999 and frame["value"].iloc[DROP] < frame["lower"].iloc[DROP]

    config = write_config(tmp_path, f"  orders: {{metric: orders, min_abs_change: {SIZE - 20}}}\n")
    assert alerted(run_replay(tmp_path, source, "--config", str(config))[1]) == [DROP]


def test_for_periods_flags_a_shift_from_its_nth_period_and_not_a_single_spike(tmp_path: Path) -> None:
    shift = {SHIFT + k: -SIZE for k in range(3)}
    source = write_csv(tmp_path, daily({DROP: -SIZE, **shift}))
    config = write_config(tmp_path, "  orders: {metric: orders, for_periods: 3}\n")
    result, frame = run_replay(tmp_path, source, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert alerted(frame) == [SHIFT + 2]
    # the default: the spike and the shift's first period (then the return to normal, a jump up)
    assert alerted(run_replay(tmp_path, source)[1])[:2] == [DROP, SHIFT]


def test_an_event_day_widens_the_band_for_alerting(tmp_path: Path) -> None:
    event_day = (START + pd.Timedelta(days=DROP)).date()
    source = write_csv(tmp_path, daily({SPIKE: -SIZE, DROP: -SIZE}))  # the same bump twice
    top = f"events:\n  - {{name: Summer sale, start: {event_day}}}\n"
    result, frame = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, "  orders: {metric: orders}\n", top)))
    assert result.exit_code == 0, result.output
    assert alerted(frame) == [SPIKE]  # a normal day alerts; the sale day's bump is inside its margin
    assert "event_margin 0.15 (retail peaks, 1 own event(s)" in result.stdout

    config = write_config(tmp_path, "  orders: {metric: orders, event_margin: 0}\n", top)
    assert alerted(run_replay(tmp_path, source, "--config", str(config))[1]) == [SPIKE, DROP]


def test_event_days_are_dates_in_the_config_timezone() -> None:
    calendar = Calendar(None, False, (UserEvent("launch", date(2024, 5, 1), date(2024, 5, 1)),))
    config = ReplayConfig(event_margin=0.15, calendar=calendar, timezone="Europe/Amsterdam")
    # plain dates (midnight UTC) are the dates themselves, as the service labels its days
    labels = pd.date_range("2024-04-30", periods=3, freq="D", tz="UTC")
    assert _event_rows(labels, "D", config).tolist() == [False, True, False]
    # local midnights of an export with offsets (22:00 UTC the day before) fall on their local date
    local = pd.date_range("2024-04-30", periods=3, freq="D", tz="Europe/Amsterdam").tz_convert("UTC")
    assert _event_rows(local, "D", config).tolist() == [False, True, False]
    # as in `kpiwatch check`, only daily periods get the event margin
    hours = pd.date_range("2024-05-01", periods=3, freq="h", tz="UTC")
    assert not _event_rows(hours, "h", config).any()


def test_level_given_on_the_command_line_overrides_the_kpis(tmp_path: Path) -> None:
    source = write_csv(tmp_path, daily({DROP: -SIZE}))
    config = write_config(tmp_path, "  orders: {metric: orders, level: 0.95}\n")
    result, _ = run_replay(tmp_path, source, "--config", str(config))
    assert "level 0.95," in result.stdout
    result, _ = run_replay(tmp_path, source, "--config", str(config), "--level", "0.999")
    assert result.exit_code == 0, result.output
    assert "level 0.999," in result.stdout and "(--level given)" in result.stdout


def test_kpi_picks_one_of_several(tmp_path: Path) -> None:
    source = write_csv(tmp_path, daily({SPIKE: SIZE, DROP: -SIZE}))
    config = write_config(tmp_path, "  orders: {metric: orders}\n  cost: {metric: cost, good: down}\n")
    result, frame = run_replay(tmp_path, source, "--config", str(config), "--kpi", "cost")
    assert result.exit_code == 0, result.output
    assert alerted(frame) == [SPIKE] and "settings of KPI cost" in result.stdout


@pytest.mark.parametrize(
    ("kpis", "args", "fragments"),
    [
        ("  orders: {metric: orders, min_abs_chnage: 5}\n", [], ["min_abs_chnage"]),
        ("  orders: {metric: orders, for_periods: 0}\n", [], ["for_periods"]),
        ("  orders: {metric: orders}\n", ["--kpi", "revenue"], ["unknown KPI 'revenue'", "orders"]),
        ("  orders: {metric: orders}\n  cost: {metric: cost}\n", [], ["2 KPIs (cost, orders)", "--kpi NAME"]),
    ],
)
def test_bad_config_or_kpi_is_one_line_exit_2(tmp_path: Path, kpis: str, args: list[str], fragments: list[str]) -> None:
    source = write_csv(tmp_path, daily({}))
    result, frame = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, kpis)), *args)
    assert_one_line_error(result, *fragments)
    assert frame is None


def test_kpi_without_config_is_one_line_exit_2(tmp_path: Path) -> None:
    result, _ = run_replay(tmp_path, write_csv(tmp_path, daily({})), "--kpi", "orders")
    assert_one_line_error(result, "--kpi orders needs --config FILE")


def test_without_config_the_output_is_the_default_detectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # $KPIWATCH_CONFIG is not read by replay: a plain run must not change when it is set.
    monkeypatch.setenv("KPIWATCH_CONFIG", str(tmp_path / "missing.yaml"))
    source = write_csv(tmp_path, daily({SPIKE: SIZE, DROP: -SIZE, **{SHIFT + k: -SIZE for k in range(3)}}))
    result, _ = run_replay(tmp_path, source)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{source}: ") and "settings of KPI" not in result.stdout
    expected_file = tmp_path / "expected.csv"
    frame, _ = replay_rows(read_csv_columns(source), f"{source.name}:value", ReplayConfig())
    frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat())).to_csv(
        expected_file, index=False, float_format="%.10g"
    )
    assert (tmp_path / "out.csv").read_bytes() == expected_file.read_bytes()


def test_neutral_rules_take_the_same_decisions_as_the_defaults() -> None:
    # A guardrail that lets everything through runs the rules' own code path (not the fast path
    # for default settings) and must agree with it, on hourly data with spikes and a shift.
    index = pd.date_range("2025-01-01", periods=24 * 30, freq="h", tz="UTC")
    hours = np.arange(len(index))
    values = 100 + 20 * np.sin(2 * np.pi * hours / 24) + np.random.default_rng(7).normal(0, 2, len(index))
    values[24 * 12] += 40
    values[24 * 15] -= 40
    values[24 * 20:] += 30
    series = to_kpi_series("x", pd.Series(values, index=index))
    plain = replay(series)
    assert plain["anomaly"].sum() >= 3
    pd.testing.assert_frame_equal(replay(series, ReplayConfig(min_abs_change=1e-12)), plain)


def test_a_daily_export_at_local_midnights_keeps_its_days_across_dst(tmp_path: Path) -> None:
    # Local midnights in Amsterdam are 23:00 UTC in winter and 22:00 UTC in summer: every day must
    # stay its own period (no two days merged at the change on 30 March) and King's Day (27 April)
    # must get the event margin on its own row.
    days = pd.date_range("2025-01-01", periods=200, freq="D", tz="Europe/Amsterdam")
    series = daily({}).set_axis(days)
    path = tmp_path / "local.csv"
    series.rename("value").rename_axis("timestamp").to_csv(path, date_format="%Y-%m-%dT%H:%M:%S%z")
    raw = read_csv_columns(path, "timestamp", "value")
    frame, notes = replay_rows(raw, "local")
    assert notes == [] and len(frame) == 200
    config = ReplayConfig(event_margin=0.15, calendar=Calendar("NL", False), timezone="Europe/Amsterdam")
    series_grid = pd.date_range(raw.index[0], periods=200, freq="D")
    flagged = [stamp.tz_convert("Europe/Amsterdam").date() for stamp, on in
               zip(series_grid, _event_rows(series_grid, "D", config)) if on]
    # King's Day 2025 is kept on Saturday 26 April (the 27th is a Sunday); Good Friday 18 April.
    assert date(2025, 4, 26) in flagged and date(2025, 4, 18) in flagged
    assert date(2025, 4, 27) not in flagged and date(2025, 4, 19) not in flagged


def test_hourly_data_says_event_days_do_not_apply(tmp_path: Path) -> None:
    hours = pd.Series(100 + np.random.default_rng(1).normal(0, 1, 24 * 10),
                      index=pd.date_range("2024-05-01", periods=24 * 10, freq="h"))
    source = tmp_path / "hourly.csv"
    hours.rename("value").rename_axis("timestamp").to_csv(source)
    result, _ = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, "  orders: {metric: orders}\n")))
    assert result.exit_code == 0, result.output
    assert "no event days (they apply to daily data only)" in result.stdout


def test_a_bad_file_with_a_config_gets_only_its_one_line(tmp_path: Path) -> None:
    source = tmp_path / "short.csv"
    source.write_text("timestamp,value\n2024-01-01,1\n", encoding="utf-8")
    result, _ = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, "  orders: {metric: orders}\n")))
    assert_one_line_error(result)
    assert "settings of KPI" not in result.stdout
