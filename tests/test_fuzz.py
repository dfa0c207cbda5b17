"""Fuzzed config files and data files through the CLI, in-process (click's CliRunner).

Whatever the input, kpiwatch answers with exit 0, 2 (bad input) or 3 (a source failed), never a
traceback, and an error is one line (`kpiwatch: error: ...`, the last line on stderr). The cases
are made by plain functions of a `random.Random` (`make_config`, `make_data`), seeded by
hypothesis in CI (150 configs, 80 data files: about 20 s); `benchmarks/fuzz.py` runs a bigger
sample with them and counts the cases that ended in a traceback or a hang (issue 17 #12).

Below the fuzz tests: one explicit regression test per data file that crashed before.
"""

from __future__ import annotations

import io
import os
import random
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecaster.cli import cli

AT = "2025-03-01T08:00"  # the generated data run from 2025-01-01 for up to 80 days
# CI keeps the fuzz short (about a minute for both tests); `KPIWATCH_FUZZ_EXAMPLES=500` runs more.
EXAMPLES = int(os.environ.get("KPIWATCH_FUZZ_EXAMPLES", "0")) or None


# -- the cases ---------------------------------------------------------------------------------

def good_config(data: Path, kind: str = "csv") -> dict[str, Any]:
    """A valid config over one data file: a count split by device and a ratio."""
    return {
        "timezone": "UTC",
        "sources": {"files": {"type": kind, "path": str(data)}},
        "alerting": {"routes": [{"channel": "#alerts"}, {"channel": "#paid", "kpis": ["cpa"]}]},
        "kpis": {
            "sessions": {"metric": "sessions", "source": "files", "segments": ["device"]},
            "cpa": {"ratio": {"numerator": "conversions", "denominator": "sessions"}, "source": "files",
                    "good": "down", "check_window": 7},
        },
    }


_KEYS = ["timezone", "country", "state_dir", "state", "events", "alerting", "daemon", "sources", "kpis", "routes",
         "channel", "repeat_hours", "dashboard_url", "max_hints", "charts", "snoozes", "health_port",
         "catch_up_periods", "misfire_grace_seconds", "job_timeout_seconds", "source_failures", "metric", "ratio",
         "numerator", "denominator", "good", "unit", "freq", "source", "segments", "filter", "model",
         "model_params", "level", "min_volume", "min_abs_change", "for_periods", "good_news", "event_margin",
         "check_window", "related", "schedule", "data_delay_hours", "completeness", "no_data_after_hours", "target",
         "tags", "catalog", "type", "path", "url", "table", "query", "timestamp", "metrics", "dimensions",
         "delay_hours", "connect_timeout", "value", "by", "start", "end", "name", "kpi", "until", "<<"]
_TEXTS = ["", " ", "sessions", "cpa", "device", "UTC", "Mars/Olympus", "D", "h", "W", "up", "down", "csv", "sql",
          "demo", "ets", "auto", "prophet", "every 30 seconds", "every 99999999999999999999 seconds",
          "every day at 25:00", "0 7 * * *", "61 * * * *", "https://bi/{kpi}", "https://bi/{kpi:d}",
          "https://bi/{nope}", "https://bi/{", "postgresql://u:p@h:abc/db", "postgresql://u:p@ss@h/db",
          "sqlite:///nowhere/x.db", "sqlite://", "${UNSET_FUZZ_VARIABLE}", "${HOME}", "2026-13-45", "2025-02-30",
          "2025-01-01", "03/12/2026", "ses\x00sions", "\x1b[31mred", "é" * 300, "#alerts", "C0123", "x" * 5000]
_NUMBERS: list[Any] = [0, -1, 1, 2, 7, 24, 0.5, 0.99, 1.5, 65536, 10**20, -(10**20), 1e12, 1e308, -1e308,
                       float("inf"), float("-inf"), float("nan"), 1e-320, True, False, None]


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A random YAML value: text, a number (huge, infinite, nan), a list or a map."""
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(_TEXTS)
    if roll < 0.7 or depth > 2:
        return rng.choice(_NUMBERS)
    if roll < 0.85:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(_KEYS): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _maps(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every map in `tree` (where a key can be set or replaced)."""
    found = [path] if isinstance(tree, dict) else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, item in items:
        found += _maps(item, (*path, key))
    return found


def _at(tree: Any, path: Sequence[Any]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


# Values a key may well have, so that many fuzzed configs are valid and reach `check`.
_PLAUSIBLE: dict[str, list[Any]] = {
    "level": [0.9, 0.95, 0.999, 0.5, 1.0], "check_window": [1, 7, 30, 90, 91], "for_periods": [1, 2, 7, 8],
    "min_volume": [0, 10, 1e6, 1e15], "min_abs_change": [0, 0.01, 100, 1e300], "good": ["up", "down", "both"],
    "good_news": [True, False], "event_margin": [0, 0.5, 1], "data_delay_hours": [0, 24, 336, 337],
    "completeness": [0, 0.5, 1], "no_data_after_hours": [1, 24, 8784, 8785], "repeat_hours": [0.5, 24, 8784, 8785],
    "unit": ["", "%", "€", "$", "s", "x"], "model": ["ets", "seasonal_naive", "auto"], "freq": ["D", "h"],
    "schedule": ["every 30 seconds", "every hour at :10", "0 7 * * *", "every 8785 hours"],
    "timezone": ["UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kathmandu"], "country": ["NL", "US", None],
    "segments": [[], ["device"], ["device", "device"], ["channel"]], "tags": [[], ["paid"]],
    "max_hints": [0, 3, 10], "charts": [True, False], "dashboard_url": ["https://bi/{kpi}?s={segment}&p={period}"],
    "job_timeout_seconds": [1, 900, 604800], "catch_up_periods": [1, 7, 1000], "health_port": [0, 8321, 65535],
    "filter": [{}, {"device": ["mobile"]}, {"device": []}], "related": [[], ["sessions"], ["cpa"]],
}


_WHERE = {"alerting": ("alerting",), "daemon": ("daemon",), "top": ()}
_PLACE = {"repeat_hours": "alerting", "max_hints": "alerting", "charts": "alerting", "dashboard_url": "alerting",
          "job_timeout_seconds": "daemon", "catch_up_periods": "daemon", "health_port": "daemon",
          "timezone": "top", "country": "top"}


def _plausible_change(rng: random.Random, tree: dict[str, Any]) -> None:
    """A key set where it belongs, to a value it may well have (many such configs are valid)."""
    key = rng.choice(list(_PLAUSIBLE))
    place = _PLACE.get(key)
    path = _WHERE[place] if place else ("kpis", rng.choice(list(tree["kpis"])))
    target = tree
    for part in path:
        target = target.setdefault(part, {})
    target[key] = rng.choice(_PLAUSIBLE[key])


def _mutate_tree(rng: random.Random, tree: dict[str, Any]) -> None:
    """Set, replace or delete a key somewhere in the config; half the time with a value such a
    key may well have (see `_PLAUSIBLE`), else with anything."""
    target = _at(tree, rng.choice(_maps(tree)))
    roll = rng.random()
    if roll < 0.15 and target:
        del target[rng.choice(list(target))]
        return
    key = rng.choice(list(target)) if roll < 0.5 and target else rng.choice([*_KEYS, *_PLAUSIBLE])
    if key in _PLAUSIBLE and rng.random() < 0.7:
        target[key] = rng.choice(_PLAUSIBLE[key])
    else:
        target[key] = _value(rng)


_BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
         + "".join(f'{c}: &{c} [{",".join(["*" + p] * 9)}]\n' for p, c in zip("abcdefgh", "bcdefghi")))


def _mutate_text(rng: random.Random, text: bytes) -> bytes:
    """A textual mutation: a random byte or character, a cut, a repeated line, deep nesting,
    aliases, a complex key, a BOM."""
    roll = rng.randrange(9)
    at = rng.randrange(len(text) + 1)
    if roll == 0:
        return text[:at] + bytes([rng.randrange(256)]) + text[at + 1:]
    if roll == 1:
        return text[:at] + rng.choice(["{", "}", "[", "]", ":", "- ", "&x ", "*x", "!!python/object ", "\t", "'", '"',
                                       "? ", "%", "\x00", "\u2028", "#"]).encode() + text[at:]
    if roll == 2:
        return text[:at]
    if roll == 3:
        lines = text.split(b"\n")
        i = rng.randrange(len(lines))
        return b"\n".join([*lines[: i + 1], lines[i], *lines[i + 1:]])
    if roll == 4:
        depth = rng.choice([10, 60, 2000])
        return text + b"extra: " + b"[" * depth + b"]" * depth + b"\n"
    if roll == 5:
        return _BOMB.encode() + text
    if roll == 6:
        return text.replace(b"kpis:\n", b"kpis:\n  ? [a, b]\n  : {metric: sessions}\n", 1)
    if roll == 7:
        return b"\xef\xbb\xbf" + text
    return text + b"x: &self [*self]\n"


def make_config(rng: random.Random, data: Path) -> bytes:
    """A config file's bytes: the good config with 1-3 structural and/or textual mutations."""
    tree = good_config(data)
    for _ in range(rng.choice([0, 1, 2, 3])):
        _plausible_change(rng, tree)
    for _ in range(rng.choice([0, 0, 1, 2])):
        _mutate_tree(rng, tree)
    try:
        text = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False).encode()
    except yaml.YAMLError:  # a value PyYAML cannot write: leave the tree as it was
        text = yaml.safe_dump(good_config(data), sort_keys=False).encode()
    for _ in range(rng.choice([0, 0, 0, 0, 1, 2])):
        text = _mutate_text(rng, text)
    return text


_DAYS = pd.date_range("2025-01-01", periods=80, freq="D")
_NUMBER_CELLS = ["", "NA", "nan", "inf", "-inf", "1e308", "-1e308", "1e15", "1,5", "1.234,5", "abc", "0", "-3",
                 "99999999999999999999999", "1e-300", " 12 ", "true"]


def _stamp(rng: random.Random, day: pd.Timestamp, style: int) -> str:
    return [f"{day:%Y-%m-%d}", f"{day:%Y-%m-%dT00:00:00Z}", f"{day:%Y-%m-%d} 00:00:00+01:00", f"{day:%d/%m/%Y}",
            f"{day:%m/%d/%Y}", f"{day:%Y-%m-%dT%H}", "", "garbage", f"{day:%Y%m%d}"][style]


def make_data(rng: random.Random) -> tuple[str, bytes]:
    """A data file: ("csv" | "parquet", its bytes), mostly close to a good daily export."""
    if rng.random() < 0.3:
        return "parquet", _make_parquet(rng)
    rows = rng.choice([0, 1, 5, 40, 80, 80])
    style = 0 if rng.random() < 0.7 else rng.randrange(9)
    sep = rng.choice([",", ",", ";", "\t"])
    header = ["timestamp", "device", "sessions", "conversions"]
    if rng.random() < 0.1:
        header = rng.sample(header, rng.randint(1, 4))
    if rng.random() < 0.05:
        header[rng.randrange(len(header))] = rng.choice(["SLACK_BOT_TOKEN=xoxb-1", "ses sions", "", "é"])
    devices = ("mobile",) if rng.random() < 0.5 else ("mobile", "desktop")  # one device: `forecast` reads it
    table = [{"timestamp": _stamp(rng, _DAYS[i], style), "device": device, "sessions": str(900 + (i * 37) % 200),
              "conversions": str(20 + (i * 7) % 20)} for i in range(rows) for device in devices]
    for _ in range(rng.choice([0, 0, 1, 2, 3]) if table else 0):  # a few odd cells
        cell = rng.choice(table)
        column = rng.choice(list(cell))
        cell[column] = {"timestamp": lambda: _stamp(rng, _DAYS[0], rng.randrange(9)),
                        "device": lambda: rng.choice(["", "\x00", "a,b", '"', "é", "mobile"]),
                        }.get(column, lambda: rng.choice(_NUMBER_CELLS))()
    out = io.StringIO()
    out.write(sep.join(header) + "\n")
    for cells in table:
        out.write(sep.join(cells[c] if c in cells else "1" for c in header) + "\n")
    raw = out.getvalue().encode()
    if rng.random() < 0.05:
        at = rng.randrange(len(raw) + 1)
        raw = raw[:at] + bytes([rng.randrange(256)]) + raw[at:]
    return "csv", raw


def _make_parquet(rng: random.Random) -> bytes:
    rows = rng.choice([0, 1, 40, 80])
    days = _DAYS[:rows]
    columns: dict[str, Any] = {
        "timestamp": rng.choice([days, days.strftime("%Y-%m-%d"), days.date, np.arange(rows)]),
        "device": rng.choice([["mobile"] * rows, [b"\x00\xff"] * rows, list(range(rows)), [None] * rows]),
        "sessions": rng.choice([np.full(rows, 1000.0), np.full(rows, 1e308), np.full(rows, np.inf),
                                np.arange(rows), ["12"] * rows, [True] * rows, np.full(rows, np.nan)]),
        "conversions": np.full(rows, 30.0),
    }
    for name in rng.sample(list(columns), rng.choice([0, 0, 0, 1])):
        del columns[name]
    buffer = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buffer, index=False)
    return buffer.getvalue()


# -- running and judging one case -------------------------------------------------------------

# The counting harness stops a run after this many seconds and counts it as a hang (0 = no limit).
_TIME_LIMIT = 0


class _Hang(Exception):
    """Raised by SIGALRM in the counting harness when a run takes longer than _TIME_LIMIT."""


def run_cli(args: Sequence[str]) -> Result:
    if _TIME_LIMIT:
        signal.alarm(_TIME_LIMIT)
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        if _TIME_LIMIT:
            signal.alarm(0)


def problem(result: Result) -> str:
    """"" when the CLI behaved (exit 0/2/3, no traceback, an error as one last line), else what
    went wrong, for a message or a count."""
    if isinstance(result.exception, _Hang):
        return f"hang (over {_TIME_LIMIT} s)"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"traceback: {type(result.exception).__name__}"
    if result.exit_code not in (0, 2, 3):
        return f"exit code {result.exit_code}"
    if "Traceback" in result.output:
        return "a traceback in the output"
    if result.exit_code in (2, 3):
        errors = [line for line in result.stderr.splitlines() if line.startswith("kpiwatch: error:")]
        lines = result.stderr.strip().splitlines()
        if len(errors) != 1 or not lines or lines[-1] != errors[0]:
            return f"not one error line: {result.stderr[-300:]!r}"
    return ""


def config_runs(folder: Path, rng: random.Random) -> list[tuple[list[str], Result]]:
    """`validate` on a fuzzed config, then (when it is valid) `check --dry-run` and `sources test`."""
    data = folder / "data.csv"
    if not data.exists():
        data.write_bytes(_good_csv())
    config = folder / "k.yaml"
    config.write_bytes(make_config(rng, data))
    runs = [(["validate", "--config", str(config)], run_cli(["validate", "--config", str(config)]))]
    if runs[0][1].exit_code == 0:
        for args in (["check", "--dry-run", "--at", AT], ["sources", "test", "--at", AT]):
            runs.append((args, run_cli([*args, "--config", str(config)])))
    return runs


def data_runs(folder: Path, rng: random.Random) -> list[tuple[list[str], Result]]:
    """`check --dry-run`, `sources test` and (for CSV) `forecast --csv` on a fuzzed data file."""
    kind, raw = make_data(rng)
    data = folder / f"data.{kind}"
    data.write_bytes(raw)
    config = folder / "k.yaml"
    config.write_text(yaml.safe_dump(good_config(data, kind)))
    runs = []
    for args in (["check", "--dry-run", "--at", AT, "--config", str(config)],
                 ["sources", "test", "--at", AT, "--config", str(config)]):
        runs.append((args, run_cli(args)))
    if kind == "csv":
        args = ["forecast", "--csv", str(data), "--value-col", "sessions", "--horizon", "3", "--format", "csv"]
        runs.append((args, run_cli(args)))
    return runs


def _good_csv() -> bytes:
    """The unmutated daily export: 80 days, two devices."""
    both = pd.concat([_frame(), _frame().assign(device="desktop")])
    return both.to_csv(index=False).encode()


def _check(runs: list[tuple[list[str], Result]]) -> None:
    for args, result in runs:
        assert not problem(result), (args, problem(result), result.output[-2000:])


# -- the tests ---------------------------------------------------------------------------------

def _fuzz(examples: int) -> settings:
    """Fixed cases (derandomize) so CI is repeatable; no deadline: a check takes a few tenths."""
    return settings(max_examples=EXAMPLES or examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # any state store lands here
    monkeypatch.delenv("KPIWATCH_CONFIG", raising=False)
    return tmp_path


# A seed, not hypothesis' own `randoms()`: those lean to the simplest choices (few mutations);
# a failing case is reproduced from the seed hypothesis prints.
@_fuzz(150)
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzzed_configs_exit_0_2_or_3_with_one_line(folder: Path, seed: int) -> None:
    _check(config_runs(folder, random.Random(seed)))


@_fuzz(80)
@given(seed=st.integers(0, 2**32 - 1))
def test_fuzzed_data_files_exit_0_2_or_3_with_one_line(folder: Path, seed: int) -> None:
    _check(data_runs(folder, random.Random(seed)))


# -- regressions: the data files that crashed (issue 17 #12) ----------------------------------

def _frame(rows: int = 80) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": _DAYS[:rows].strftime("%Y-%m-%d"), "device": "mobile",
                         "sessions": 900.0 + np.arange(rows) % 7 * 10, "conversions": 30.0})


def _one_line(result: Result, code: int, *fragments: str) -> None:
    assert not problem(result), (problem(result), result.output)
    assert result.exit_code == code, result.output
    for fragment in fragments:
        assert fragment in result.stderr.strip().splitlines()[-1], result.stderr


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_with_a_header_and_no_rows_is_no_data_not_a_traceback(folder: Path, kind: str) -> None:
    """Was TypeError ('Invalid comparison between dtype=datetime64[us] and Timestamp')."""
    data = folder / f"empty.{kind}"
    if kind == "csv":
        data.write_text("timestamp,device,sessions,conversions\n")
    else:
        _frame().iloc[:0].to_parquet(data, index=False)
    config = folder / "k.yaml"
    config.write_text(yaml.safe_dump(good_config(data, kind)))
    checked = run_cli(["check", "--dry-run", "--at", AT, "--config", str(config)])
    _one_line(checked, 0, "no data")
    tested = run_cli(["sources", "test", "--at", AT, "--config", str(config)])
    _one_line(tested, 0)
    assert "no rows" in tested.stdout


def test_a_binary_parquet_dimension_is_one_line(folder: Path) -> None:
    """Was UnicodeDecodeError."""
    data = folder / "binary.parquet"
    _frame().assign(device=[b"\x00\xff"] * 80).to_parquet(data, index=False)
    config = folder / "k.yaml"
    config.write_text(yaml.safe_dump(good_config(data, "parquet")))
    for args in (["check", "--dry-run", "--at", AT], ["sources", "test", "--at", AT]):
        _one_line(run_cli([*args, "--config", str(config)]), 2, "dimension 'device' holds binary values")


@pytest.mark.parametrize("value", [1e308, -1e308])
def test_a_huge_value_is_refused_where_it_enters(folder: Path, value: float) -> None:
    """`forecast` on +-1e308 overflowed in the model; three 1e308 cells summed to inf gave "no
    data: sessions" and a "cpa fell 100%" alert at once."""
    frame = _frame()
    frame.loc[76:78, "sessions"] = value
    data = folder / "big.csv"
    frame.to_csv(data, index=False)
    config = folder / "k.yaml"
    config.write_text(yaml.safe_dump(good_config(data)))
    line = f"line 78: column 'sessions' has {value:.6g}, beyond +-1e+15"
    forecast = run_cli(["forecast", "--csv", str(data), "--value-col", "sessions"])
    _one_line(forecast, 2, line)
    checked = run_cli(["check", "--dry-run", "--at", AT, "--config", str(config)])
    _one_line(checked, 2, line)
    assert "fell" not in checked.stdout and "no data" not in checked.stderr


# -- the counting harness -----------------------------------------------------------------------

def count(kind: str, cases: int, seed: int = 17) -> Counter[str]:
    """Run `cases` fuzzed cases of `kind` ("configs" or "data"); count the problems by kind."""
    runner: Callable[[Path, random.Random], list[tuple[list[str], Result]]] = (
        config_runs if kind == "configs" else data_runs)
    tally: Counter[str] = Counter()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as name:
        os.chdir(name)
        for _ in range(cases):
            with tempfile.TemporaryDirectory(dir=name) as case:
                runs = runner(Path(case), random.Random(rng.random()))
            found = {problem(result) for _, result in runs} - {""}
            tally["cases"] += 1
            tally["runs"] += len(runs)
            for args, result in runs:
                tally[f"{args[0]} exit {result.exit_code}"] += 1
            tally["cases with a problem"] += bool(found)
            for item in found:
                tally[item] += 1
    return tally


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang

