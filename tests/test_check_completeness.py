"""`kpiwatch check` and a half-written export: the latest complete period is judged, never the
partial one read as a drop (the daemon waits instead: tests/test_daemon.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from forecaster.cli import cli

CONFIG = """
timezone: UTC
state: sqlite:///{state}
state_dir: {tmp}/state
sources:
  export: {{type: csv, path: "{data}", timestamp: hour}}
kpis:
  leads:
    metric: leads
    source: export
    model: ets
"""
CHANNELS, HOURS = ("email", "search"), (8, 10, 12, 14, 16)  # 10 export rows a day


def write_export(path: Path, share_of: dict[str, float]) -> None:
    """An hourly export from August to 5 Dec 2025, one row per channel and hour; a day in
    `share_of` keeps only that share of its rows (still being written)."""
    rows = []
    for day in pd.date_range("2025-08-01", "2025-12-05", freq="D"):
        day_rows = [(f"{day:%Y-%m-%d}T{hour:02d}:00:00", channel, 12 + 3 * (day.day_of_week < 5) + hour % 3)
                    for hour in HOURS for channel in CHANNELS]
        rows.extend(day_rows[: round(len(day_rows) * share_of.get(f"{day:%Y-%m-%d}", 1.0))])
    pd.DataFrame(rows, columns=["hour", "channel", "leads"]).to_csv(path, index=False)


def check_json(tmp_path: Path, share_of: dict[str, float]):
    data = tmp_path / "export.csv"
    write_export(data, share_of)
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", tmp=tmp_path, data=data))
    result = CliRunner().invoke(cli, ["check", "--config", str(config), "--at", "2025-12-06T06:00", "--dry-run",
                                      "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_complete_latest_day_is_judged_as_usual(tmp_path):
    report = check_json(tmp_path, {})
    assert report["judged"] == {"leads": "2025-12-05T00:00:00+00:00"}
    assert report["incomplete"] == []


def test_a_half_written_latest_day_is_not_judged_the_day_before_is(tmp_path):
    report = check_json(tmp_path, {"2025-12-05": 0.4})
    assert report["judged"] == {"leads": "2025-12-04T00:00:00+00:00"}
    assert report["alerts"] == []  # 40% of a day's leads is not reported as a drop
    assert report["incomplete"] == [
        "leads: Fri 05 Dec 2025 has 40% of its usual rows (completeness 0.9 needed): judged Thu 04 Dec 2025, "
        "the latest complete day; run again once the export is complete"]


def test_no_complete_day_in_a_week_judges_nothing_and_says_why(tmp_path):
    days = pd.date_range("2025-11-27", "2025-12-05", freq="D").strftime("%Y-%m-%d")
    report = check_json(tmp_path, {day: 0.5 for day in days})
    assert report["judged"] == {} and report["series"] == 0
    assert len(report["incomplete"]) == 1
    assert report["incomplete"][0].startswith("leads: Fri 05 Dec 2025 has 50% of its usual rows")
    assert "none of the 7 days before it is" in report["incomplete"][0]


def test_the_text_output_names_the_incomplete_day_on_stderr(tmp_path):
    data = tmp_path / "export.csv"
    write_export(data, {"2025-12-05": 0.4})
    config = tmp_path / "kpiwatch.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.db", tmp=tmp_path, data=data))
    result = CliRunner().invoke(cli, ["check", "--config", str(config), "--at", "2025-12-06T06:00", "--dry-run"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "incomplete: leads: Fri 05 Dec 2025 has 40% of its usual rows" in result.stderr
    assert "Traceback" not in result.output


def test_a_day_after_the_export_stopped_is_not_judged_and_says_no_data(tmp_path):
    data = tmp_path / "export.csv"
    write_export(data, {})  # the last rows are of 5 Dec 2025
    config = tmp_path / "kpiwatch.yaml"
    # Row counting off, so the period is fetched and found empty (with it on, the empty days read
    # as incomplete and the latest complete one is judged instead: the tests above).
    config.write_text(CONFIG.format(state=tmp_path / "state.db", tmp=tmp_path, data=data) + "    completeness: 0\n")
    result = CliRunner().invoke(cli, ["check", "--config", str(config), "--at", "2025-12-09T06:00"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "every KPI is inside its band" not in result.stdout  # not judged is not normal
    assert "1 not judged (no data)" in result.stdout
    assert ("no data: leads: no value for Mon 08 Dec 2025 (its latest value is for Fri 05 Dec 2025): not judged"
            in result.stderr)
    stored = pd.read_sql("SELECT * FROM evaluations", f"sqlite:///{tmp_path / 'state.db'}")
    assert stored.empty  # nothing recorded as a normal day
    as_json = CliRunner().invoke(cli, ["check", "--config", str(config), "--at", "2025-12-09T06:00", "--dry-run",
                                       "--format", "json"], catch_exceptions=False)
    report = json.loads(as_json.stdout)
    assert report["judged"] == {} and report["no_data"][0].startswith("leads: no value for Mon 08 Dec 2025")
