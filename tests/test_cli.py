"""The CLI in-process (click's CliRunner): exit codes, output shapes, one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from forecaster.cli import cli
from forecaster.demo import INCIDENTS
from conftest import assert_one_line_error

PEYTON = Path(__file__).resolve().parent / "fixtures" / "prophet-examples" / "example_wp_log_peyton_manning.csv"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)




def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo_json(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`kpiwatch demo --format json`, run once for the tests that read it."""
    result = run("demo", "--format", "json", "--out", str(tmp_path_factory.mktemp("demo")))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_demo_json_lists_the_live_incidents_with_hints_and_charts(demo_json: dict) -> None:
    alerts = demo_json["alerts"]
    live = [i for i in INCIDENTS if i.number in (1, 3)]
    for incident in live:
        for expected in incident.expected:
            matches = [a for a in alerts if a["kpi"] == expected.kpi and a["segment"] == dict(expected.segment)]
            assert matches and matches[0]["direction"] == expected.direction, (expected, [a["text"] for a in alerts])
    for alert in alerts:
        assert set(alert) >= {"kpi", "segment", "period", "actual", "expected", "lower", "upper", "direction",
                              "severity", "score", "text", "hints"}
        assert 0.0 <= alert["score"] <= 1.0
        assert alert["hints"] and all(h["kind"] in {"related", "component", "segment", "context", "impact"}
                                      for h in alert["hints"])
        assert Path(alert["chart"]).stat().st_size > 10_000  # a real PNG, not an empty file
    assert all(a["period"] == "2025-12-10T00:00:00+00:00" for a in alerts)


@pytest.mark.slow
def test_demo_json_groups_the_alerts_into_the_two_injected_incidents_by_root_cause(demo_json: dict) -> None:
    incidents = demo_json["incidents"]
    summary = [(i["root_cause"]["kpi"], i["root_cause"]["segment"], [(m["kpi"], m["segment"]) for m in i["members"]])
               for i in incidents]
    assert len(incidents) == 2, summary
    mobile, paid = {"device": "mobile"}, {"channel": "paid_search"}
    slowdown, spike = incidents
    assert (slowdown["root_cause"]["kpi"], slowdown["root_cause"]["segment"]) == ("page_load_time", mobile), summary
    assert [(m["kpi"], m["segment"]) for m in slowdown["members"]] == [
        ("page_load_time", mobile), ("bounce_rate", mobile), ("conversion_rate", mobile), ("cpa", mobile)]
    assert (spike["root_cause"]["kpi"], spike["root_cause"]["segment"]) == ("cpc", paid), summary
    assert [(m["kpi"], m["segment"]) for m in spike["members"]][:3] == [("cpc", paid), ("cpa", paid), ("roas", paid)]
    assert slowdown["injected"] == {"number": 1, "name": "mobile landing-page slowdown"}
    assert spike["injected"] == {"number": 3, "name": "paid-search CPC spike"}
    assert "upstream of bounce_rate, conversion_rate, cpa" in slowdown["root_cause"]["why"]
    grouped = sorted((m["kpi"], json.dumps(m["segment"])) for i in incidents for m in i["members"])
    assert grouped == sorted((a["kpi"], json.dumps(a["segment"])) for a in demo_json["alerts"])  # each alert once


@pytest.mark.slow
def test_demo_text_names_kpi_segment_and_direction(tmp_path: Path) -> None:
    result = run("demo", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "conversion_rate on device=mobile fell" in result.stdout
    assert "cpa on channel=paid_search rose" in result.stdout
    assert "chart: " in result.stdout
    lines = result.stdout.splitlines()
    assert lines[2].startswith("Incident 1: page_load_time on device=mobile rose "), lines[:3]
    assert sum(line.startswith("Incident ") for line in lines) == 2
    # Each incident names the row of the README's table it is: kpiwatch's 2nd is the injected 3rd.
    injected = [line for line in lines if line.startswith("  demo: this is the injected incident")]
    assert [line.split()[6] for line in injected] == ["1", "3"], injected
    assert lines[-1].startswith("2 incident(s) from 8 alert(s) "), lines[-1]


@pytest.mark.slow
def test_forecast_csv_prints_28_future_rows_with_bounds() -> None:
    result = run("forecast", "--csv", str(PEYTON), "--timestamp-col", "ds", "--value-col", "y",
                 "--horizon", "28", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 28
    assert list(rows[0]) == ["timestamp", "forecast", "lower", "upper"]
    assert rows[0]["timestamp"].startswith("2016-01-21")
    assert all(float(r["lower"]) < float(r["forecast"]) < float(r["upper"]) for r in rows)


def test_forecast_a_config_kpi_as_json_with_a_plot(tmp_path: Path) -> None:
    png = tmp_path / "f.png"
    result = run("forecast", "sessions", "--segment", "channel=email", "--model", "ets", "--horizon", "5",
                 "--format", "json", "--plot", str(png))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["series"] == "sessions[channel=email]" and payload["model"] == "ets"
    assert len(payload["forecast"]) == 5
    assert png.stat().st_size > 10_000


def test_check_dry_run_json_quiet_day_has_no_alerts() -> None:
    result = run("check", "--kpi", "page_load_time", "--at", "2025-11-20T08:00", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["alerts"] == []
    assert payload["judged"] == {"page_load_time": "2025-11-19T00:00:00+00:00"}


def test_validate_the_demo_config() -> None:
    result = run("validate")
    assert result.exit_code == 0, result.output
    assert "OK: 7 KPI(s) (bounce_rate, " in result.stdout
    assert "1 source(s) (default)" in result.stdout


@pytest.mark.parametrize(
    "text,fragments",
    [
        ("sources: {default: {type: demo}}\nkpis:\n  s: {metric: sessions, goood: up}\n",
         ["kpis.s.goood: unknown key; allowed here: metric, ratio, good"]),
        ("sources: {default: {type: demo}}\nkpis:\n  s: {metric: sessions, level: high}\n",
         ["kpis.s.level:", "'high'"]),
        ("sources: {default: {type: demo}}\nkpis:\n  s: {metric: sessions, model: profet}\n",
         ["kpis.s.model: unknown model 'profet'; choose one of: auto, ets, prophet, seasonal_naive"]),
        ("sources: {default: {type: demo}}\nkpis:\n  s: {metric: sessions, source: warehouse}\n",
         ["uses source 'warehouse'"]),
    ],
    ids=["unknown-key", "wrong-type", "unknown-model", "unknown-source"],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, text: str, fragments: list[str]) -> None:
    config = write(tmp_path, "bad.yaml", text)
    for command in ("validate", "check"):
        assert_one_line_error(run(command, "--config", str(config)), str(config), *fragments)


def _daily(rows: list[str], header: str = "ds,y") -> str:
    return "\n".join([header, *rows]) + "\n"


GOOD_ROWS = [f"2024-01-{day:02d},{100 + day % 7}" for day in range(1, 21)]


@pytest.mark.parametrize(
    "content,args,fragments",
    [
        (_daily(GOOD_ROWS), ["--timestamp-col", "ts"], ["no column 'ts'; columns are: ds, y"]),
        (_daily([*GOOD_ROWS, GOOD_ROWS[-1]]), [], ["data.csv, column 'y': line 22 repeats the timestamp "
                                                  "2024-01-20 of line 21; keep one row per period"]),
        (_daily([*GOOD_ROWS[:5], "2024-13-45,3", *GOOD_ROWS[5:]]), [], ["line 7", "2024-13-45"]),
        (_daily([*GOOD_ROWS[:3], "2024-01-04,abc", *GOOD_ROWS[4:]]), [], ["line 5", "'abc'", "not a number"]),
        (_daily(GOOD_ROWS[:3]), [], ["needs at least 8 values, got 3"]),
        (_daily([f"2024-01-{d:02d},5" for d in range(1, 21)]), [], ["every value is 5", "constant"]),
    ],
    ids=["no-such-column", "duplicates", "bad-date", "non-numeric", "too-few", "constant"],
)
def test_bad_csv_is_one_line_exit_2(tmp_path: Path, content: str, args: list[str], fragments: list[str]) -> None:
    path = write(tmp_path, "data.csv", content)
    result = run("forecast", "--csv", str(path), "--timestamp-col", "ds", "--value-col", "y", *args)
    assert_one_line_error(result, *fragments)


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["check", "--kpi", "nope"], ["unknown KPI 'nope'; the config defines: bounce_rate"]),
        (["check", "--at", "garbage"], ["--at 'garbage': not a timestamp"]),
        (["forecast", "sessions", "--level", "95"], ["--level '95': `level` must be between 0 and 1"]),
        (["forecast", "sessions", "--horizon", "0"], ["--horizon '0': `horizon` must be a whole number"]),
        (["forecast", "sessions", "--segment", "device"], ["use DIMENSION=VALUE"]),
        (["forecast", "sessions", "--segment", "device=phone"],
         ["no data for segment device=phone; device is one of desktop, mobile, tablet (--segment DIM=VALUE)"]),
        (["forecast", "sessions", "--model", "arima"], ["unknown model 'arima'"]),
        (["forecast"], ["give a KPI name or --csv FILE"]),
        (["validate", "--config", "missing.yaml"], ["missing.yaml: no such config file"]),
    ],
    ids=["unknown-kpi", "bad-at", "level-percent", "horizon-0", "bad-segment", "unknown-segment-value",
         "unknown-model", "nothing", "no-config"],
)
def test_bad_arguments_are_one_line_exit_2(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(run(*args), *fragments)


@pytest.mark.parametrize(
    "args,message",
    [
        (["forecast", "f.csv", "--horizon", "-3"],
         "--horizon '-3': `horizon` must be a whole number of periods >= 1, e.g. --horizon 28"),
        (["forecast", "sessions", "--horizon", "two"],
         "--horizon 'two': `horizon` must be a whole number of periods >= 1, e.g. --horizon 28"),
        (["forecast", "sessions", "--level", "95"],
         "--level '95': `level` must be between 0 and 1 (exclusive), e.g. --level 0.95 for a 95% band"),
        (["forecast", "sessions", "--level", "1"],
         "--level '1': `level` must be between 0 and 1 (exclusive), e.g. --level 0.95 for a 95% band"),
        (["forecast", "sessions", "--level", "nan"],
         "--level 'nan': `level` must be between 0 and 1 (exclusive), e.g. --level 0.95 for a 95% band"),
        (["backtest", "sessions", "--horizon", "0"],
         "--horizon '0': `horizon` must be a whole number of periods >= 1, e.g. --horizon 28"),
        (["backtest", "sessions", "--origins", "0"],
         "--origins '0': `origins` must be a whole number >= 1, e.g. --origins 10"),
        (["backtest", "sessions", "--train-window", "-1"],
         "--train-window '-1': `train-window` must be a whole number of periods >= 1, e.g. --train-window 365"),
        (["backtest", "sessions", "--level", "0"],
         "--level '0': `level` must be between 0 and 1 (exclusive), e.g. --level 0.95 for a 95% band"),
        (["replay", "--csv", "x.csv", "--output", "o.csv", "--level", "99"],
         "--level '99': `level` must be between 0 and 1 (exclusive), e.g. --level 0.99 for a 99% band"),
        (["alerts", "--limit", "0"], "--limit '0': `limit` must be a whole number from 1 to 1000, e.g. --limit 20"),
        (["sources", "test", "--periods", "400"],
         "--periods '400': `periods` must be a whole number from 1 to 366, e.g. --periods 3"),
        # click's other usage errors are one line too, with where to look
        (["forecast", "sessions", "--horizn", "3"],
         "No such option '--horizn'. Did you mean '--horizon'? (see 'kpiwatch forecast --help')"),
        (["replay", "--csv", "x.csv"], "Missing option '--output' (see 'kpiwatch replay --help')"),
        (["check", "--format", "xml"],
         "Invalid value for '--format': 'xml' is not one of 'text', 'json' (see 'kpiwatch check --help')"),
    ],
    ids=["horizon-negative", "horizon-text", "level-percent", "level-1", "level-nan", "backtest-horizon",
         "backtest-origins", "backtest-train-window", "backtest-level", "replay-level", "alerts-limit",
         "sources-periods", "unknown-option", "missing-option", "bad-choice"],
)
def test_bad_option_values_name_the_option_as_typed(args: list[str], message: str) -> None:
    # Checked where they enter, before any config or file is read: one line, exit 2.
    result = CliRunner().invoke(cli, args, prog_name="kpiwatch", catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"kpiwatch: error: {message}"]
    assert result.stdout == ""


def test_a_group_without_its_command_still_prints_its_help() -> None:
    result = CliRunner().invoke(cli, ["sources"], prog_name="kpiwatch")
    assert "Usage: kpiwatch sources" in result.output and "kpiwatch: error" not in result.output


def test_forecast_table_of_a_segment_names_the_segment() -> None:
    # rich read "[device=mobile]" in the title as a style tag and dropped it: the table said
    # "conversion_rate: ...", as if it were the KPI's total.
    result = run("forecast", "conversion_rate", "--segment", "device=mobile", "--model", "seasonal_naive",
                 "--horizon", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "conversion_rate[device=mobile]: 1 period ahead, 95% band, model seasonal_naive"
    backtest = run("backtest", "conversion_rate", "--segment", "device=mobile", "--models", "seasonal_naive",
                   "--horizon", "3", "--origins", "2")
    assert backtest.exit_code == 0, backtest.output
    assert backtest.stdout.splitlines()[0] == "conversion_rate[device=mobile]: 2 origins x 3 periods, 95% band"


def _dst_hourly_csv(tmp_path: Path) -> Path:
    """Naive Amsterdam wall-clock hours over the end of DST: 2025-10-26 02:00 appears twice."""
    hours = pd.date_range("2025-10-20", periods=24 * 10, freq="h", tz="UTC").tz_convert("Europe/Amsterdam")
    values = 100 + np.arange(len(hours)) % 24
    return write(tmp_path, "local.csv", "timestamp,value\n" + "".join(
        f"{t:%Y-%m-%d %H:%M},{v}\n" for t, v in zip(hours, values)))


def test_forecast_of_local_times_across_dst_says_why_an_hour_repeats(tmp_path: Path) -> None:
    path = _dst_hourly_csv(tmp_path)
    for command in ("forecast", "backtest"):
        assert_one_line_error(run(command, "--csv", str(path)), f"{path}, column 'value': line 147 repeats the "
                              "timestamp 2025-10-26 02:00 of line 146; these look like local times repeated by a "
                              "clock change: write UTC times or add the UTC offset (e.g. 2025-10-26T02:00:00+01:00)")


def test_replay_of_local_times_across_dst_adds_the_hint_to_its_note(tmp_path: Path) -> None:
    # replay judges rows sharing a period on their mean (forecaster.replay); the hint says why they do
    path = _dst_hourly_csv(tmp_path)
    result = run("replay", "--csv", str(path), "--output", str(tmp_path / "out.csv"))
    assert result.exit_code == 0, result.output
    assert f"note: 2025-10-26 02:00 appears twice in {path}; these look like local times repeated by a clock " \
           "change: write UTC times or add the UTC offset (e.g. 2025-10-26T02:00:00+01:00)" in result.stderr.splitlines()


def test_snooze_with_a_bad_until_names_until(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = Path(__file__).resolve().parent.parent / "config" / "kpiwatch.yaml"
    monkeypatch.chdir(tmp_path)  # the default state store is relative: nothing lands in the checkout
    result = run("snooze", "sessions", "--until", "tomorrow", "--config", str(config))
    assert_one_line_error(result, "--until 'tomorrow': not a timestamp")
    assert "--at" not in result.stderr


def test_snooze_of_a_dimension_the_kpi_is_not_split_by_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = Path(__file__).resolve().parent.parent / "config" / "kpiwatch.yaml"
    monkeypatch.chdir(tmp_path)
    result = run("snooze", "sessions", "--segment", "country=NL", "--until", "2030-01-31", "--config", str(config))
    assert_one_line_error(result, "KPI sessions is not split by 'country'", "channel")
    assert not (tmp_path / ".kpiwatch").exists() or "country" not in run(
        "alerts", "--config", str(config)).stdout  # nothing stored


def test_sources_test_lists_every_kpi_of_the_demo(tmp_path):
    from click.testing import CliRunner

    from forecaster.cli import cli

    result = CliRunner().invoke(cli, ["sources", "test", "--config", str(Path(__file__).parent.parent / "config" / "kpiwatch.yaml")])
    assert result.exit_code == 0, result.output
    for kpi in ("sessions", "conversion_rate", "cpc"):
        assert kpi in result.output
    assert "2025-12-10 00:00" in result.output and "FAILED" not in result.output


def test_sources_test_names_a_failing_source_and_exits_3(tmp_path):
    from click.testing import CliRunner

    from forecaster.cli import cli

    config = tmp_path / "k.yaml"
    config.write_text(
        "sources:\n  files: {type: csv, path: '" + str(tmp_path / "missing-*.csv") + "'}\n  default: {type: demo}\n"
        "kpis:\n  leads: {metric: leads, source: files}\n  sessions: {metric: sessions}\n"
    )
    result = CliRunner().invoke(cli, ["sources", "test", "--config", str(config)])
    assert result.exit_code == 3
    assert "FAILED" in result.output and "sessions" in result.output  # the others are still probed
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kpiwatch: error: 1 of 2 KPI source(s) failed; first: leads:")


def test_sources_test_at_a_past_moment_finds_the_rows_of_a_source_that_ended_then(tmp_path):
    days = pd.date_range("2025-01-01", "2025-03-31", freq="D")
    pd.DataFrame({"timestamp": days.strftime("%Y-%m-%d"), "leads": range(len(days))}).to_csv(tmp_path / "leads.csv", index=False)
    config = tmp_path / "k.yaml"
    config.write_text("sources:\n  files: {type: csv, path: '" + str(tmp_path / "leads.csv") + "'}\n"
                      "kpis:\n  leads: {metric: leads, source: files}\n")
    today = CliRunner().invoke(cli, ["sources", "test", "--config", str(config)])
    then = CliRunner().invoke(cli, ["sources", "test", "--config", str(config), "--at", "2025-03-15T09:00"])
    assert today.exit_code == 0 and then.exit_code == 0, today.output + then.output
    assert "no rows" in today.output  # the file ended long before the wall clock's now
    assert "no rows" not in then.output and "2025-03-14 00:00" in then.output
    bad = CliRunner().invoke(cli, ["sources", "test", "--config", str(config), "--at", "mid-march"])
    assert bad.exit_code == 2 and "--at 'mid-march'" in bad.stderr


def test_an_output_path_that_cannot_be_written_is_one_line_and_the_input_is_never_overwritten(tmp_path):
    days = pd.date_range("2025-01-01", periods=120, freq="D")
    data = tmp_path / "series.csv"
    pd.DataFrame({"timestamp": days.strftime("%Y-%m-%d"), "value": np.arange(120.0) % 7}).to_csv(data, index=False)
    before = data.read_bytes()
    same = CliRunner().invoke(cli, ["replay", "--csv", str(data), "--output", str(data)])
    assert_one_line_error(same, "is the input file")
    assert data.read_bytes() == before
    under_a_file = CliRunner().invoke(cli, ["replay", "--csv", str(data), "--output", str(data / "out.csv")])
    assert_one_line_error(under_a_file, "cannot use", str(data))
    plot = CliRunner().invoke(cli, ["forecast", "--csv", str(data), "--plot", str(data / "p.png")])
    assert plot.exit_code == 2 and "Traceback" not in plot.output
    assert plot.stderr.strip().splitlines()[-1].startswith("kpiwatch: error: cannot use")


@pytest.mark.parametrize(
    "args,message",
    [
        (["check", "--at", "03/12/2026"], "--at '03/12/2026' is ambiguous (3 December or 12 March?); use ISO 8601"),
        (["check", "--at", "12.03.2026"], "--at '12.03.2026' is ambiguous (12 March or 3 December?); use ISO 8601"),
        (["check", "--at", "13/12/2026"], "--at '13/12/2026': day and month order differ by country; use ISO 8601"),
        (["check", "--at", "Dec 3 2026"], "--at 'Dec 3 2026': not a timestamp; use ISO 8601: YYYY-MM-DD"),
        (["check", "--at", "2026-12"], "--at '2026-12': not a timestamp; use ISO 8601: YYYY-MM-DD"),
        (["check", "--at", "2026-02-30"], "--at '2026-02-30': not a real time (day is out of range for month)"),
        (["check", "--at", "0001-01-01"], "--at '0001-01-01': the year must be from 1900 to 2200"),
        (["sources", "test", "--at", "03/12/2026"], "--at '03/12/2026' is ambiguous"),
        (["snooze", "sessions", "--until", "01/02/2030"], "--until '01/02/2030' is ambiguous"),
        (["replay", "sessions", "--output", "/nonexistent-kpiwatch-dir/o.csv", "--from", "1/2/2025"], "--from '1/2/2025' is ambiguous"),
    ],
    ids=["day-month", "dotted", "day-13", "words", "month-only", "no-such-day", "year-1", "sources-test",
         "snooze-until", "replay-from"],
)
def test_times_are_iso_8601_only_and_an_ambiguous_one_is_named(args: list[str], message: str) -> None:
    """Issue 17 #3: `--at 03/12/2026` was silently read as 12 March."""
    result = run(*args)
    assert_one_line_error(result, message)
    assert "e.g. 2026-12-03 or 2026-12-03T10:00+01:00" in result.stderr or "year" in result.stderr


@pytest.mark.parametrize("at", ["2025-11-20", "2025-11-20T08:00", "2025-11-20 08:00:00+01:00", "2025-11-20T07:00Z"])
def test_check_text_names_the_judged_day_first(at: str) -> None:
    """Issue 17 #3: the text output named no day, so a misread --at went unnoticed."""
    result = run("check", "--kpi", "page_load_time", "--at", at, "--dry-run")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("Judged Wed 19 Nov 2025 (1 KPI), as of 2025-11-20 "), first


def test_sources_test_exits_2_on_an_unknown_column_as_check_does(tmp_path):
    """Issue 17 #8: `sources test` said 3 (a source failing) for a mistake in the config."""
    days = pd.date_range("2025-01-01", "2025-03-31", freq="D")
    pd.DataFrame({"timestamp": days.strftime("%Y-%m-%d"), "leads": range(len(days))}).to_csv(tmp_path / "leads.csv", index=False)
    config = write(tmp_path, "k.yaml", "sources:\n  files: {type: csv, path: '" + str(tmp_path / "leads.csv") + "'}\n"
                   "  gone: {type: csv, path: '" + str(tmp_path / "missing-*.csv") + "'}\n"
                   "kpis:\n  lost: {metric: leads, source: gone}\n  signups: {metric: signups, source: files}\n")
    checked = run("check", "--config", str(config), "--kpi", "signups", "--at", "2025-03-15T09:00", "--dry-run")
    assert_one_line_error(checked, "'signups'")
    tested = run("sources", "test", "--config", str(config), "--at", "2025-03-15T09:00")
    assert tested.exit_code == 2, tested.output
    last = tested.stderr.strip().splitlines()[-1]
    assert last.startswith("kpiwatch: error: 2 of 2 KPI source(s) failed; first: signups:") and "'signups'" in last


TOKEN = "xoxb-1111-2222-SeCrEtToKeN"
PASSWORD = "Pa55-SeCrEt-w0rd"


def test_error_paths_never_echo_a_secret(tmp_path, monkeypatch):
    """Issue 17 #13: a file source at `.env` echoed "columns are: SLACK_BOT_TOKEN=xoxb-...", an
    unescaped `@` broke the password masking and an unparseable URL was printed whole. Every
    line of every error path here is searched for the token and the password (and their tails)."""
    from fakeslack import FakeSlack

    monkeypatch.chdir(tmp_path)
    env = tmp_path / ".env"
    env.write_text(f"SLACK_BOT_TOKEN={TOKEN}\nKPIWATCH_DB_PASSWORD={PASSWORD}\n")
    demo = "  default: {type: demo}\n"
    kpi = "kpis:\n  leads: {metric: leads, source: s}\n  visits: {metric: sessions}\n"
    configs = {
        "dotenv": f"sources:\n  s: {{type: csv, path: '{env}'}}\n{demo}{kpi}",
        "dotenv-parquet": f"sources:\n  s: {{type: parquet, path: '{env}'}}\n{demo}{kpi}",
        "sql-refused": f"sources:\n  s: {{type: sql, url: 'postgresql://bob:{PASSWORD}@127.0.0.1:1/x', table: t, "
                       f"connect_timeout: 1}}\n{demo}{kpi}",
        "sql-at": f"sources:\n  s: {{type: sql, url: 'postgresql://bob:{PASSWORD}@x@127.0.0.1:1/x', table: t}}\n{demo}{kpi}",
        "sql-hash": f"sources:\n  s:\n    type: sql\n    url: postgresql://bob:{PASSWORD} #x@127.0.0.1/x\n    table: t\n"
                    f"{demo}{kpi}",
        "sql-no-scheme-colon": f"sources:\n  s: {{type: sql, url: 'postgresql//bob:{PASSWORD}@db/x', table: t}}\n{demo}{kpi}",
        "sql-port": f"sources:\n  s: {{type: sql, url: 'postgresql://bob:{PASSWORD}@db:port/x', table: t}}\n{demo}{kpi}",
        "state-refused": f"state: 'postgresql://bob:{PASSWORD}@127.0.0.1:1/x'\nsources:\n{demo}"
                         "kpis:\n  visits: {metric: sessions}\n",
        "state-at": f"state: 'postgresql://bob:{PASSWORD}@x@127.0.0.1/x'\nsources:\n{demo}"
                    "kpis:\n  visits: {metric: sessions}\n",
    }
    at = ["--at", "2025-11-20T08:00"]
    outputs = []
    with FakeSlack(tokens=()) as slack:  # every token is refused: invalid_auth
        monkeypatch.setenv("SLACK_API_URL", slack.url)
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("KPIWATCH_DB_PASSWORD", PASSWORD)
        for name, text in configs.items():
            config = write(tmp_path, f"{name}.yaml", text)
            for args in (["validate"], ["sources", "test", *at], ["check", "--dry-run", *at],
                         ["check", "--kpi", "visits", *at], ["alerts"], ["outbox", "retry"]):
                result = CliRunner().invoke(cli, [*args, "--config", str(config)])
                assert result.exit_code in (0, 2, 3), (name, args, result.output)
                assert "Traceback" not in result.output, (name, args, result.output)
                outputs.append((name, args, result.output))
    assert any("does not look like a header" in out for _, _, out in outputs)
    assert any("unescaped '@'" in out for _, _, out in outputs)
    assert any("does not parse" in out for _, _, out in outputs)
    for name, args, output in outputs:
        for line in output.splitlines():
            for secret in (TOKEN, PASSWORD, "SeCrEt", "w0rd"):
                assert secret not in line, (name, args, line)
