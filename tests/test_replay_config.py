"""`kpiwatch replay --config`: a KPI's rules decide the `anomaly` column; `kpiwatch replay KPI`:
the daemon rehearsing on a simulated clock over a configured KPI.

The rules are the engine's (`forecaster.detect.Rules`), the same for every face: each rule on a
small daily series (weekly season, noise sigma 5, band half-width ~13) with changes put in by
hand; without --config the output is the default detector's, unchanged.
"""

from __future__ import annotations

import csv
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from forecaster.calendar import Calendar, UserEvent
from forecaster.cli import cli
from forecaster.detect import Detector, Rules
from forecaster.replay import COLUMNS, default_detectors, replay, replay_rows
from forecaster.settings import DEFAULT_MODEL
from forecaster.sources.base import to_kpi_series
from forecaster.sources.csv import read_csv_columns
from conftest import assert_one_line_error

START = pd.Timestamp("2024-01-08", tz="UTC")  # 200 days to late July: no retail peak in range (1 January is)
SPIKE, DROP, SHIFT = 120, 140, 160  # rows, well apart (an episode ends after a calm day)
SIZE = 60.0  # 12 noise sigmas: far outside the band, far inside an event day's (+150)
SOURCE = "sources: {default: {type: demo}}\n"
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "kpiwatch.yaml"


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


def unjudged_days(frame: pd.DataFrame, timezone: str = "UTC", after: int = 100) -> list[date]:
    """Local dates of the rows after the warm-up (`after` rows) that have no score."""
    stamps = pd.DatetimeIndex(frame["timestamp"]).tz_convert(timezone)
    rows = np.flatnonzero(frame["score"].isna().to_numpy())
    return [stamps[row].date() for row in rows if row >= after]




def test_the_clean_series_alerts_only_where_changes_were_put() -> None:
    # The premise of every test below: the default detector flags each change and nothing else.
    frame, _ = replay_rows(daily({SPIKE: SIZE, DROP: -SIZE}), "x", default_detectors())
    assert alerted(frame) == [SPIKE, DROP]


def test_only_the_bad_direction_alerts_unless_good_news(tmp_path: Path) -> None:
    source = write_csv(tmp_path, daily({SPIKE: SIZE, DROP: -SIZE}))
    result, frame = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, "  orders: {metric: orders, good: up}\n")))
    assert result.exit_code == 0, result.output
    assert alerted(frame) == [DROP]  # orders up is good: the spike is not an incident
    assert "settings of KPI orders" in result.stdout and "alerts when down (good: up)" in result.stdout
    # the band and the score are the model's, whatever the direction: the spike is still outside
    assert frame["score"].iloc[SPIKE] > 0.999 and frame["value"].iloc[SPIKE] > frame["upper"].iloc[SPIKE]

    config = write_config(tmp_path, "  cost: {metric: cost, good: down}\n")
    assert alerted(run_replay(tmp_path, source, "--config", str(config))[1]) == [SPIKE]

    config = write_config(tmp_path, "  orders: {metric: orders, good: up, good_news: true}\n")
    result, frame = run_replay(tmp_path, source, "--config", str(config))
    assert alerted(frame) == [SPIKE, DROP]
    assert "alerts either way (good news when up)" in result.stdout


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


def test_min_volume_above_the_series_silences_it(tmp_path: Path) -> None:
    source = write_csv(tmp_path, daily({DROP: -SIZE}))
    result, frame = run_replay(tmp_path, source, "--config",
                               str(write_config(tmp_path, "  orders: {metric: orders, min_volume: 5000}\n")))
    assert result.exit_code == 0, result.output
    assert alerted(frame) == [] and "min_volume 5000" in result.stdout
    config = write_config(tmp_path, "  orders: {metric: orders, min_volume: 500}\n")
    assert alerted(run_replay(tmp_path, source, "--config", str(config))[1]) == [DROP]


def test_for_periods_flags_a_shift_from_its_nth_period_and_not_a_single_spike(tmp_path: Path) -> None:
    shift = {SHIFT + k: -SIZE for k in range(3)}
    source = write_csv(tmp_path, daily({DROP: -SIZE, **shift}))
    config = write_config(tmp_path, "  orders: {metric: orders, for_periods: 3}\n")
    result, frame = run_replay(tmp_path, source, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert alerted(frame) == [SHIFT + 2]
    assert "for_periods 3" in result.stdout
    # the default: the spike and the shift's first period (then the return to normal, a jump up)
    assert alerted(run_replay(tmp_path, source)[1])[:2] == [DROP, SHIFT]


def test_an_event_day_widens_the_band_for_alerting(tmp_path: Path) -> None:
    # The same sale twice: its first day is learned (not judged), its second judged with the
    # effect learned and a band widened by event_margin of the expected value.
    first, second = ((START + pd.Timedelta(days=day)).date() for day in (DROP - 35, DROP))
    source = write_csv(tmp_path, daily({SPIKE: -SIZE, DROP: -SIZE}))  # the same bump twice
    top = f"events:\n  - {{name: Summer sale, start: {first}}}\n  - {{name: Summer sale, start: {second}}}\n"
    result, frame = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, "  orders: {metric: orders}\n", top)))
    assert result.exit_code == 0, result.output
    assert alerted(frame) == [SPIKE]  # a normal day alerts; the sale day's bump is inside its margin
    assert unjudged_days(frame) == [first]  # the first sale day: its effect learned, not judged
    assert frame["score"].iloc[DROP] > 0  # the second is judged
    assert "event_margin 0.15 (retail peaks, 2 own event(s); days in UTC)" in result.stdout

    config = write_config(tmp_path, "  orders: {metric: orders, event_margin: 0}\n", top)
    assert alerted(run_replay(tmp_path, source, "--config", str(config))[1]) == [SPIKE, DROP]


def event_detectors(calendar: Calendar, timezone: str):
    return lambda freq: Detector(Rules(), freq, DEFAULT_MODEL, calendar=calendar, timezone=timezone)


def test_event_days_are_dates_in_the_config_timezone() -> None:
    calendar = Calendar(None, False, (UserEvent("launch", date(2024, 5, 1), date(2024, 5, 1)),))
    detector_for = event_detectors(calendar, "Europe/Amsterdam")
    # plain dates (midnight UTC) are the dates themselves, as the service labels its days
    frame, _ = replay_rows(daily({}), "x", detector_for)
    assert unjudged_days(frame) == [date(2024, 5, 1)]
    # local midnights of an export with offsets (22:00 UTC the day before) fall on their local date
    local = daily({}).set_axis(pd.date_range("2024-01-01", periods=200, freq="D", tz="Europe/Amsterdam").tz_convert("UTC"))
    frame, notes = replay_rows(local, "x", detector_for)
    assert notes == []
    assert frame["timestamp"].iloc[121] == pd.Timestamp("2024-04-30T22:00Z")
    assert unjudged_days(frame, "Europe/Amsterdam") == [date(2024, 5, 1)]
    # as in `kpiwatch check`, only daily periods are event days
    hours = pd.Series(100 + np.random.default_rng(1).normal(0, 1, 24 * 10),
                      index=pd.date_range("2024-04-28", periods=24 * 10, freq="h", tz="UTC"))
    frame, _ = replay_rows(hours, "x", detector_for)
    assert frame["score"].iloc[90:].notna().all()
    assert Detector(Rules(), "h", calendar=calendar).calendar is None


def test_level_given_on_the_command_line_overrides_the_kpis(tmp_path: Path) -> None:
    source = write_csv(tmp_path, daily({DROP: -SIZE}))
    config = write_config(tmp_path, "  orders: {metric: orders, level: 0.95}\n")
    result, narrow = run_replay(tmp_path, source, "--config", str(config))
    assert "level 0.95," in result.stdout and "(--level given)" not in result.stdout
    result, wide = run_replay(tmp_path, source, "--config", str(config), "--level", "0.999")
    assert result.exit_code == 0, result.output
    assert "level 0.999," in result.stdout and "(--level given)" in result.stdout
    judged = narrow["score"].notna()
    assert ((wide["upper"] - wide["lower"])[judged] > (narrow["upper"] - narrow["lower"])[judged]).all()


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
    # $KPIWATCH_CONFIG is not read by replay --csv: a plain run must not change when it is set.
    monkeypatch.setenv("KPIWATCH_CONFIG", str(tmp_path / "missing.yaml"))
    source = write_csv(tmp_path, daily({SPIKE: SIZE, DROP: -SIZE, **{SHIFT + k: -SIZE for k in range(3)}}))
    result, _ = run_replay(tmp_path, source)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{source}: ") and "settings of KPI" not in result.stdout
    expected_file = tmp_path / "expected.csv"
    frame, _ = replay_rows(read_csv_columns(source), f"{source.name}:value", default_detectors())
    frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat())).to_csv(
        expected_file, index=False, float_format="%.10g"
    )
    assert (tmp_path / "out.csv").read_bytes() == expected_file.read_bytes()


def test_a_config_with_default_rules_judges_as_no_config(tmp_path: Path) -> None:
    # A KPI without `good:` etc. is judged by the same engine with the same defaults (its `good`
    # defaults to up, so only the direction of the alerts may differ; no event day in range):
    # the band is the same.
    source = write_csv(tmp_path, daily({SPIKE: SIZE, DROP: -SIZE}))
    plain = run_replay(tmp_path, source)[1]
    configured = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, "  orders: {metric: orders}\n")))[1]
    pd.testing.assert_frame_equal(plain.drop(columns="anomaly"), configured.drop(columns="anomaly"))


def test_neutral_rules_take_the_same_decisions_as_the_defaults() -> None:
    # A guardrail that lets everything through goes through the guardrail's checks and must agree
    # with the defaults, on hourly data with spikes and a shift.
    index = pd.date_range("2025-01-01", periods=24 * 30, freq="h", tz="UTC")
    hours = np.arange(len(index))
    values = 100 + 20 * np.sin(2 * np.pi * hours / 24) + np.random.default_rng(7).normal(0, 2, len(index))
    values[24 * 12] += 40
    values[24 * 15] -= 40
    values[24 * 20:] += 30
    series = to_kpi_series("x", pd.Series(values, index=index))
    plain = replay(series, default_detectors()("h"))
    assert plain["anomaly"].sum() >= 3
    neutral = replay(series, default_detectors(Rules(min_abs_change=1e-12, min_volume=-1.0))("h"))
    pd.testing.assert_frame_equal(neutral, plain)


def test_a_daily_export_at_local_midnights_keeps_its_days_across_dst(tmp_path: Path) -> None:
    # Local midnights in Amsterdam are 23:00 UTC in winter and 22:00 UTC in summer: every day must
    # stay its own period (no two days merged at the change on 30 March) and King's Day (27 April)
    # must be an event day on its own row.
    days = pd.date_range("2025-01-01", periods=200, freq="D", tz="Europe/Amsterdam")
    series = daily({}).set_axis(days)
    path = tmp_path / "local.csv"
    series.rename("value").rename_axis("timestamp").to_csv(path, date_format="%Y-%m-%dT%H:%M:%S%z")
    raw = read_csv_columns(path, "timestamp", "value")
    frame, notes = replay_rows(raw, "local", default_detectors())
    assert notes == [] and len(frame) == 200
    frame, _ = replay_rows(raw, "local", event_detectors(Calendar("NL", False), "Europe/Amsterdam"))
    # each holiday is seen for the first time: learned, not judged, on its own local date.
    # King's Day 2025 is kept on Saturday 26 April (the 27th is a Sunday); Good Friday 18 April.
    flagged = unjudged_days(frame, "Europe/Amsterdam")
    assert date(2025, 4, 26) in flagged and date(2025, 4, 18) in flagged
    assert date(2025, 4, 27) not in flagged and date(2025, 4, 19) not in flagged


def test_hourly_data_gets_no_event_days(tmp_path: Path) -> None:
    hours = pd.Series(100 + np.random.default_rng(1).normal(0, 1, 24 * 10),
                      index=pd.date_range("2024-05-01", periods=24 * 10, freq="h"))
    source = tmp_path / "hourly.csv"
    hours.rename("value").rename_axis("timestamp").to_csv(source)
    top = "events:\n  - {name: launch, start: 2024-05-08}\n"
    result, frame = run_replay(tmp_path, source, "--config",
                               str(write_config(tmp_path, "  orders: {metric: orders}\n", top)))
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("settings of KPI orders")]
    assert "event_margin" not in line
    assert frame["score"].iloc[90:].notna().all()  # the launch day's hours are judged as any


def test_a_bad_file_with_a_config_gets_only_its_one_line(tmp_path: Path) -> None:
    source = tmp_path / "short.csv"
    source.write_text("timestamp,value\n2024-01-01,1\n", encoding="utf-8")
    result, _ = run_replay(tmp_path, source, "--config", str(write_config(tmp_path, "  orders: {metric: orders}\n")))
    assert_one_line_error(result, "too little history to replay")
    assert "settings of KPI" not in result.stdout


# --- kpiwatch replay KPI: the daemon rehearsing over the demo -------------------------------


def replay_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(tmp_path)  # nothing the rehearsal might write lands in the checkout
    return CliRunner().invoke(cli, ["replay", *args, "--config", str(DEMO_CONFIG), "--output", str(tmp_path / "out.csv")])


SUMMARY = re.compile(
    r"^(?P<label>\S+): (?P<periods>\d+) period\(s\) judged \((?P<span>[^)]*)\): the daemon would have sent "
    r"(?P<messages>\d+) Slack message\(s\) with (?P<alerts>\d+) alert\(s\) and (?P<resolves>\d+) resolve\(s\) for "
    r"every segment of the KPI; (?P<announced>\d+) announced for this series\. Written to (?P<output>.+)$"
)


def test_replay_kpi_rehearses_the_daemon_over_the_demo_incident(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Demo incident 1: mobile pages load 2.5x slower from 8 December; page_load_time is good: down.
    result = replay_demo(tmp_path, monkeypatch, "page_load_time", "--segment", "device=mobile", "--from", "2025-12-01")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.strip().splitlines()
    summary = SUMMARY.match(line)
    assert summary, line
    assert summary["label"] == "page_load_time[device=mobile]"
    assert summary["periods"] == "10" and summary["span"] == "Mon 01 Dec 2025 to Wed 10 Dec 2025"
    assert summary["output"] == str(tmp_path / "out.csv")
    frame = pd.read_csv(tmp_path / "out.csv")
    assert list(frame.columns) == COLUMNS and len(frame) == 10
    assert frame["timestamp"].tolist() == [f"2025-12-{day:02d}T00:00:00+00:00" for day in range(1, 11)]
    assert frame["value"].notna().all() and frame["score"].notna().all()
    announced = frame.loc[frame["anomaly"] == 1, "timestamp"].tolist()
    assert announced[0] == "2025-12-08T00:00:00+00:00"  # the first slow day, announced that day
    assert frame["anomaly"].iloc[:7].sum() == 0  # quiet before the incident
    assert int(summary["announced"]) == int(frame["anomaly"].sum())
    assert 1 <= int(summary["messages"]) <= int(summary["alerts"])
    assert int(summary["alerts"]) >= int(summary["announced"])


def test_replay_kpi_total_to_a_moment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --to: the last period closed at that moment (Amsterdam time); the total series by default
    result = replay_demo(tmp_path, monkeypatch, "sessions", "--from", "2025-12-01", "--to", "2025-12-04T08:00")
    assert result.exit_code == 0, result.output
    summary = SUMMARY.match(result.stdout.strip())
    assert summary, result.stdout
    assert summary["label"] == "sessions" and summary["periods"] == "3"
    assert summary["span"] == "Mon 01 Dec 2025 to Wed 03 Dec 2025"
    frame = pd.read_csv(tmp_path / "out.csv")
    assert list(frame.columns) == COLUMNS and len(frame) == 3 and frame["value"].notna().all()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["sessions", "--segment", "country=NL"], ["sessions is not split by country; its segments are channel, device"]),
        (["sessions", "--segment", "channel"], ["--segment 'channel': use DIMENSION=VALUE"]),
        (["revenue"], ["unknown KPI 'revenue'", "sessions"]),
        (["sessions", "--from", "2026-01-05"], ["is after the last closed period Wed 10 Dec 2025",
                                                "give an earlier --from"]),
        (["sessions", "--from", "yesterday"], ["--from 'yesterday': not a timestamp"]),
        (["sessions", "--kpi", "sessions"], ["--kpi is for --csv"]),
        (["sessions", "--csv", "x.csv"], ["give a KPI name or --csv FILE (one of the two)"]),
    ],
    ids=["unknown-dimension", "segment-without-value", "unknown-kpi", "from-after-the-end", "bad-from", "kpi-option",
         "kpi-and-csv"],
)
def test_replay_kpi_bad_arguments_are_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], fragments: list[str]
) -> None:
    result = replay_demo(tmp_path, monkeypatch, *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out.csv").exists()


def test_replay_csv_refuses_the_options_of_a_configured_kpi(tmp_path: Path) -> None:
    source = write_csv(tmp_path, daily({}))
    for option in (["--segment", "device=mobile"], ["--from", "2024-03-01"], ["--to", "2024-03-01"]):
        result, frame = run_replay(tmp_path, source, *option)
        assert_one_line_error(result, "--segment, --from, --to and --feedback are for a configured KPI")
        assert frame is None


def test_replay_kpi_of_an_unknown_segment_value_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = replay_demo(tmp_path, monkeypatch, "sessions", "--segment", "channel=nope", "--from", "2025-12-09")
    assert_one_line_error(result, "channel=nope")
